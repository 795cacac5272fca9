"""ONNX export of a bundle or an encoder, and int8 quantisation (dynamic or static) of the result.

Uses torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): torch 2.13's
default dynamo exporter needs the ``onnxscript`` package, which the ``[onnx]`` extra does not
install, while the TorchScript-based one needs nothing beyond torch and exports every registered
family but the LSTM d-vector (ONNX's LSTM has no projection, and LSTMP is the GE2E model). It traces
the model once; the batch and time axes are left dynamic (``dynamic_axes``), and the tests hold
onnxruntime's output to eager torch for several batch sizes and lengths, padded batches included.
Features inside the graph use :class:`~speakerprint.features.fbank.ExportFbank` (the exporter
cannot export ``rfft`` or a dynamic ``unfold``).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from speakerprint.errors import BundleError, ConfigError, QuantizationError
from speakerprint.export.common import Source, resolve_source, write_sidecar
from speakerprint.features import FbankConfig
from speakerprint.utils.export_format import read_sidecar
from speakerprint.utils.io import atomic_write_bytes

__all__ = [
    "DEFAULT_MIN_COSINE",
    "DEFAULT_OPSET",
    "INT8_SCHEMES",
    "export_onnx",
    "quantize_onnx_int8",
]

#: Opset 17: supported by onnxruntime >= 1.14 and by every operator these graphs use.
DEFAULT_OPSET = 17

_FEATURE_SCOPE = "/fbank/"  # node-name prefix of the features inside a with-features graph

_QUANTISED_OPS = ("Conv", "MatMul", "Gemm")

#: Static schemes: (activation type, weight type, 7-bit weights). See quantize_onnx_int8.
INT8_SCHEMES = {
    "u8s7": ("QUInt8", "QInt8", True),
    "u8u8": ("QUInt8", "QUInt8", False),
}

#: The floor of the static export's self-check: the lowest cosine between the float and the
#: int8 model's embeddings of the calibration audio.
DEFAULT_MIN_COSINE = 0.995

#: Quantisable nodes at the end of the encoder that stay float32 in a static export.
FLOAT_TAIL = 4


def _import_onnx_tools():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "ONNX export needs onnx and onnxruntime: pip install 'speakerprint[onnx]'"
        ) from e


def export_onnx(
    bundle_or_model: Source,
    path: str | os.PathLike,
    *,
    with_features: bool,
    opset: int = DEFAULT_OPSET,
    fbank_config: FbankConfig | None = None,
) -> Path:
    """Write an ONNX model and its sidecar JSON (``path + '.json'``).

    Args:
        bundle_or_model: a bundle folder (the sidecar then records its fingerprint and
            threshold), a loaded :class:`~speakerprint.models.bundle.Bundle`, or an encoder.
        path: the ``.onnx`` file, written atomically.
        with_features: ``True``: inputs ``wav`` (B, N) float32 in [-1, 1] and ``lengths`` (B,)
            int64 samples, each at least the sidecar's ``min_samples``; fbank and mean
            normalisation run inside the graph. ``False``: inputs ``feats`` (B, T, F) and
            ``lengths`` (B,) int64 frames. Output ``emb`` (B, D) float32 either way.
        opset: ONNX opset version.
        fbank_config: features of a bare encoder (default: ``FbankConfig`` with the encoder's
            ``feat_dim`` mel bins); bundles carry their own.

    Returns:
        ``path``.

    >>> export_onnx("runs/x/bundle", "x.onnx", with_features=True)  # doctest: +SKIP
    PosixPath('x.onnx')
    """
    _import_onnx_tools()
    source = resolve_source(bundle_or_model, fbank_config)
    if source.encoder.family == "lstm_dvector":
        raise BundleError(
            "the LSTM d-vector does not export to ONNX: ONNX's LSTM operator has no projection "
            "(LSTMP); use --format torchscript"
        )
    module = source.module(with_features)
    generator = torch.Generator().manual_seed(0)
    if with_features:
        # Long enough for every family's minimum, and two rows of different lengths so that the
        # trace records the masking as it is used on padded batches.
        num_samples = max(source.min_samples, source.fbank.config.sample_rate)
        inputs = (
            0.1 * torch.randn(2, num_samples, generator=generator),
            torch.tensor([num_samples, num_samples - source.fbank.config.window_shift * 3]),
        )
        names, time_axis = ["wav", "lengths"], "samples"
    else:
        num_frames = max(source.encoder.min_frames, 64)
        inputs = (
            torch.randn(2, num_frames, source.encoder.feat_dim, generator=generator),
            torch.tensor([num_frames, num_frames - 3]),
        )
        names, time_axis = ["feats", "lengths"], "frames"
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python ints from tensor shapes: those values are recomputed from
        # the dynamic shapes in the graph, which the parity tests check.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=["emb"],
            dynamic_axes={
                names[0]: {0: "batch", 1: time_axis},
                "lengths": {0: "batch"},
                "emb": {0: "batch"},
            },
            do_constant_folding=True,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    write_sidecar(path, source.sidecar("onnx", with_features, opset=opset, quantization=None))
    return path


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx_int8(
    source: str | os.PathLike,
    path: str | os.PathLike,
    *,
    calibration: Iterable[np.ndarray] | None = None,
    scheme: str = "u8s7",
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> Path:
    """Int8 quantisation (onnxruntime) of an exported model's encoder, with its sidecar.

    The features (DFT basis, mel filters) stay float32: their inputs span many orders of
    magnitude, and int8 would wreck the log-mel values.

    - ``calibration=None``: *dynamic*. The weights of the encoder's Conv, MatMul and Gemm nodes
      are stored as uint8 and activations are quantised per call (uint8 x uint8 products, which
      no x86 kernel saturates). uint8 rather than int8 weights: with int8 weights onnxruntime's
      ``ConvInteger`` ran slower than the float32 model.
    - ``calibration``: *static*, the faster form (QDQ, per-channel weights, uint8 activations
      whose ranges come from the calibration audio: min/max over it). Give waveforms (1-D
      float32 in [-1, 1] at the sidecar's sample rate) of real speech of the kind the model will
      see, a few dozen utterances. For an export that takes features, the waveforms go through
      the sidecar's front end.

    Static schemes (``scheme``), both exact on every x86 CPU, with or without AVX-512 VNNI:

    - ``"u8s7"`` (default): int8 weights in a 7-bit range (onnxruntime's ``reduce_range``).
      Without VNNI, x86 multiplies uint8 by int8 with ``vpmaddubsw``, which saturates the sum of
      a pair of products at 32767; full 8-bit weights overflow it (on an emulated Haswell the
      shipped model's held-out cosine to its float model fell to 0.72, bench/int8_portability.md),
      weights in [-64, 64] cannot (255 * 64 * 2 = 32640), so every CPU computes the same
      integers.
    - ``"u8u8"``: uint8 weights, also exact everywhere, but slower (onnxruntime's u8 x u8
      kernels are not its fast path on x86).

    The first quantisable node and the last :data:`FLOAT_TAIL` (pooling and embedding layers,
    where int8 error reaches the embedding undamped) stay float32, as do nodes whose output goes
    through a ``Where`` (the masking of padded frames before the pooling's softmax: onnxruntime's
    quantiser loses the tensor between them). With 8-bit weights, this alone kept the shipped
    model's Haswell cosine at a min of 0.9967 (``u8s8`` against ``u8s8-all`` in bench/int8_portability.md);
    the 7-bit range makes it hold by construction.

    A static export checks itself: it embeds the calibration audio with the float and the int8
    model and refuses (:class:`~speakerprint.errors.QuantizationError`, nothing written) when the
    lowest cosine is under ``min_cosine``; the cosines are recorded in the sidecar.

    Returns:
        ``path``; its sidecar is the source's with ``"quantization"`` ``"int8-dynamic"`` or
        ``"int8-static"``, and ``"int8"``: the scheme, what stays float and the self-check.
    """
    _import_onnx_tools()
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if scheme not in INT8_SCHEMES:
        raise ConfigError(f"int8 scheme must be one of {sorted(INT8_SCHEMES)}, got {scheme!r}")
    source, path = Path(source), Path(path)
    meta = read_sidecar(source)
    if meta.get("model_format") != "onnx":
        raise BundleError(f"{source} is a {meta.get('model_format')} export, not ONNX")
    model = onnx.load(str(source))
    feeds = None if calibration is None else _calibration_feeds(calibration, meta)
    exclude = _float_nodes(model, ends=feeds is not None)
    quantisable = [
        node.name
        for node in model.graph.node
        if node.op_type in _QUANTISED_OPS and node.name not in exclude
    ]
    if not quantisable:
        ops = sorted({node.op_type for node in model.graph.node if node.op_type in ("LSTM", "GRU")})
        raise QuantizationError(
            f"{source}: int8 would quantise nothing in this model (it quantises {', '.join(_QUANTISED_OPS)} "
            f"layers and keeps the first and last ones float{'; its weights are in ' + ', '.join(ops) + ' layers' if ops else ''}); "
            "use the fp32 export"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    quiet = _DropPreprocessHint()
    root.addFilter(quiet)  # onnxruntime logs this hint on the root logger at every call
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
            tmp_path = Path(tmp) / path.name
            if feeds is None:
                quantize_dynamic(
                    str(source),
                    str(tmp_path),
                    weight_type=QuantType.QUInt8,
                    op_types_to_quantize=list(_QUANTISED_OPS),
                    nodes_to_exclude=exclude,
                )
                record: dict[str, object] = {"scheme": "u8u8-dynamic", "check": None}
            else:

                class _Reader(CalibrationDataReader):
                    def __init__(self) -> None:
                        self._feeds = iter(feeds)

                    def get_next(self) -> dict[str, np.ndarray] | None:
                        return next(self._feeds, None)

                activations, weights, reduce_range = INT8_SCHEMES[scheme]
                quantize_static(
                    str(source),
                    str(tmp_path),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=getattr(QuantType, activations),
                    weight_type=getattr(QuantType, weights),
                    per_channel=True,
                    reduce_range=reduce_range,
                    op_types_to_quantize=list(_QUANTISED_OPS),
                    nodes_to_exclude=exclude,
                    extra_options={"CalibTensorRangeSymmetric": False},
                )
                cosines = _cosines_to_float(source, tmp_path, feeds)
                check = {
                    "utterances": len(feeds),
                    "min_cosine": float(cosines.min()),
                    "mean_cosine": float(cosines.mean()),
                    "floor": min_cosine,
                }
                if cosines.min() < min_cosine:
                    worst = int(cosines.argmin())
                    raise QuantizationError(
                        f"int8 export of {source}: on the calibration audio its embeddings reach "
                        f"a cosine of only {cosines.min():.7f} to the float model's (calibration "
                        f"utterance {worst}; mean {cosines.mean():.7f}), under the floor of "
                        f"{min_cosine}; nothing was written. Use the float32 export, calibrate "
                        "on more speech like the one it will embed, or lower the floor "
                        "(--min-cosine) to accept it"
                    )
                record = {"scheme": scheme, "check": check}
            atomic_write_bytes(path, tmp_path.read_bytes())
    finally:
        root.removeFilter(quiet)
    record["float_nodes"] = len(exclude)
    extra: dict[str, object] = {
        "quantization": "int8-dynamic" if feeds is None else "int8-static",
        "int8": record,
    }
    if feeds is not None:
        extra["calibration_utterances"] = len(feeds)
    write_sidecar(path, {**meta, **extra})
    return path


def _float_nodes(model, *, ends: bool) -> list[str]:
    """Names of the nodes the quantiser must leave alone: the features, the feeds of Where, and
    (``ends``) the encoder's first quantisable node and its last :data:`FLOAT_TAIL`."""
    into_where = {
        name for node in model.graph.node if node.op_type == "Where" for name in node.input
    }
    keep = [
        node.name
        for node in model.graph.node
        if node.name.startswith(_FEATURE_SCOPE)
        or (node.op_type in _QUANTISED_OPS and into_where.intersection(node.output))
    ]
    if ends:
        # ONNX graphs list their nodes in topological order. The tail counts every quantisable
        # node of the encoder, those already kept float included, so that it is the pooling and
        # embedding layers and never reaches back into the frame-level layers.
        encoder = [
            node.name
            for node in model.graph.node
            if node.op_type in _QUANTISED_OPS and not node.name.startswith(_FEATURE_SCOPE)
        ]
        tail = encoder[1:][-FLOAT_TAIL:]
        keep += [name for name in encoder[:1] + tail if name not in keep]
    return keep


def _cosines_to_float(
    float_path: Path, int8_path: Path, feeds: list[dict[str, np.ndarray]]
) -> np.ndarray:
    """The cosine between the two models' embeddings of each feed, one thread each."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = [
        ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        for p in (float_path, int8_path)
    ]
    cosines = []
    for feed in feeds:
        a, b = (s.run(None, feed)[0][0].astype(np.float64) for s in sessions)
        cosines.append(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return np.array(cosines)


def _calibration_feeds(
    calibration: Iterable[np.ndarray], meta: dict
) -> list[dict[str, np.ndarray]]:
    """One feed per waveform, in the graph's input kind (features through the sidecar's front end)."""
    frontend = None
    if meta["input_kind"] != "waveform":
        from speakerprint.features import frontend_from_dict

        frontend = frontend_from_dict(meta["features"]).eval()
    feeds = []
    for i, wav in enumerate(calibration):
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or len(wav) < meta["min_samples"] or not np.isfinite(wav).all():
            raise ConfigError(
                f"calibration waveform {i}: expected a finite 1-D array of at least "
                f"{meta['min_samples']} samples, got shape {wav.shape}"
            )
        if frontend is None:
            feeds.append({"wav": wav[None], "lengths": np.array([len(wav)], dtype=np.int64)})
        else:
            with torch.no_grad():
                feats, frames = frontend(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
            feeds.append({"feats": feats.numpy(), "lengths": frames.numpy().astype(np.int64)})
    if not feeds:
        raise ConfigError("static int8 quantisation needs at least one calibration waveform")
    return feeds
