"""ONNX export, registry-driven: onnxruntime's output equals eager torch for every family.

Tolerances: without features the graphs agree with eager to ~1e-6 (float32 reassociation); with
features the exported DFT matmul differs from Fbank's FFT by up to ~2e-3 on log-mel values (see
test_features.py), which moves these small random models' embeddings by up to ~1e-4 relative to
their scale. The asserted bounds leave a margin above what was measured.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from speakerprint.errors import BundleError, ConfigError, QuantizationError
from speakerprint.eval.cache import bundle_fingerprint
from speakerprint.export import export_onnx, quantize_onnx_int8
from speakerprint.export.onnx import FLOAT_TAIL
from speakerprint.features import Fbank, FbankConfig
from speakerprint.features.fbank import ExportFbank
from speakerprint.models.bundle import load_bundle
from speakerprint.onnx_runtime import read_sidecar
from tests.models.test_encoders import FAMILIES, _build

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

FEATS_ATOL = 1e-4
WAVEFORM_RTOL = 1e-3  # of the largest embedding component
ONNX_FAMILIES = [f for f in FAMILIES if f != "lstm_dvector"]
# GE2E's weights are LSTM layers but for one Linear, which the float tail keeps: int8 refuses it.
INT8_FAMILIES = [f for f in ONNX_FAMILIES if f != "ge2e_lstm"]

# (batch, padded length, valid lengths): one row, several, padded rows, a row at the minimum.
FRAME_CASES = [(1, 30, [30]), (3, 57, [57, 20, 33]), (2, 90, [90, 12])]


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", ONNX_FAMILIES)
def test_onnx_without_features_equals_eager(family, tmp_path):
    model = _build(family).eval()
    path = export_onnx(model, tmp_path / "m.onnx", with_features=False)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["feats", "lengths"]
    generator = torch.Generator().manual_seed(3)
    for batch, frames, lengths in FRAME_CASES:
        frames = max(frames, model.min_frames)
        lengths = torch.tensor([max(n, model.min_frames) for n in lengths])
        feats = torch.randn(batch, frames, model.feat_dim, generator=generator)
        with torch.no_grad():
            expected = model(feats, lengths).numpy()
        (emb,) = session.run(None, {"feats": feats.numpy(), "lengths": lengths.numpy()})
        np.testing.assert_allclose(emb, expected, rtol=0, atol=FEATS_ATOL)
    meta = read_sidecar(path)
    assert meta["input_kind"] == "features" and meta["embed_dim"] == model.embed_dim


@pytest.mark.parametrize("family", ONNX_FAMILIES)
def test_onnx_with_features_equals_eager(family, tmp_path):
    model = _build(family).eval()
    config = FbankConfig(num_mel_bins=model.feat_dim)
    path = export_onnx(model, tmp_path / "m.onnx", with_features=True, fbank_config=config)
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["wav", "lengths"]
    fbank = Fbank(config).eval()
    min_samples = read_sidecar(path)["min_samples"]
    generator = torch.Generator().manual_seed(4)
    for batch, num_samples, lengths in [
        (1, 4000, [4000]),
        (3, 9100, [9100, 3000, 6543]),
        (2, 16000, [16000, min_samples]),
    ]:
        wav = 0.1 * torch.randn(batch, num_samples, generator=generator)
        lengths = torch.tensor(lengths)
        with torch.no_grad():
            expected = model(*fbank(wav, lengths)).numpy()
        (emb,) = session.run(None, {"wav": wav.numpy(), "lengths": lengths.numpy()})
        atol = WAVEFORM_RTOL * float(np.abs(expected).max())
        np.testing.assert_allclose(emb, expected, rtol=0, atol=atol)


def test_lstm_dvector_names_why_it_has_no_onnx_export(tmp_path):
    with pytest.raises(BundleError, match="no projection"):
        export_onnx(_build("lstm_dvector"), tmp_path / "m.onnx", with_features=False)
    assert not (tmp_path / "m.onnx").exists()


def test_sidecar_of_a_bundle_names_its_fingerprint_and_threshold(small_bundle, tmp_path):
    path = export_onnx(small_bundle, tmp_path / "m.onnx", with_features=True)
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["source_bundle_fingerprint"] == bundle_fingerprint(small_bundle)
    assert meta["threshold"]["value"] == 0.25
    assert meta["sample_rate"] == 16000 and meta["input_kind"] == "waveform"
    assert meta["model_format"] == "onnx" and meta["quantization"] is None
    onnx.checker.check_model(onnx.load(str(path)))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _speechlike(seed: int, num_samples: int) -> np.ndarray:
    """Noise shaped by a slow random envelope: activations with speech-like dynamics."""
    rng = np.random.default_rng(seed)
    envelope = np.repeat(rng.uniform(0.01, 0.3, num_samples // 800 + 1), 800)[:num_samples]
    return (envelope * rng.standard_normal(num_samples)).astype(np.float32)


def test_dynamic_int8_quantises_the_encoder_not_the_features(small_bundle, tmp_path):
    fp32 = export_onnx(small_bundle, tmp_path / "m.onnx", with_features=True)
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx")
    nodes = onnx.load(str(int8)).graph.node
    quantised = [n.name for n in nodes if n.op_type in ("ConvInteger", "MatMulInteger")]
    assert quantised and not any(name.startswith("/fbank/") for name in quantised)
    assert read_sidecar(int8)["quantization"] == "int8-dynamic"
    wav = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(5))
    inputs = {"wav": wav.numpy(), "lengths": np.array([24000, 11000])}
    (a,) = _session(fp32).run(None, inputs)
    (b,) = _session(int8).run(None, inputs)
    assert (_cosines(a, b) > 0.99).all(), _cosines(a, b)
    assert not np.array_equal(a, b)  # the quantised graph really computes something else


def test_int8_of_a_model_with_nothing_to_quantise_is_refused_by_name(tmp_path):
    model = _build("ge2e_lstm").eval()
    config = FbankConfig(num_mel_bins=model.feat_dim)
    fp32 = export_onnx(model, tmp_path / "m.onnx", with_features=False, fbank_config=config)
    calibration = [_speechlike(seed, 8000 + 1000 * seed) for seed in range(2)]
    with pytest.raises(QuantizationError, match="quantise nothing.*LSTM"):
        quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration=calibration)
    assert not (tmp_path / "m.int8.onnx").exists()


@pytest.mark.parametrize("with_features", [True, False])
@pytest.mark.parametrize("family", INT8_FAMILIES)
def test_static_int8_of_every_family_follows_the_float_model(family, with_features, tmp_path):
    model = _build(family).eval()
    config = FbankConfig(num_mel_bins=model.feat_dim)
    fp32 = export_onnx(model, tmp_path / "m.onnx", with_features=with_features, fbank_config=config)
    calibration = [_speechlike(seed, 8000 + 1000 * seed) for seed in range(6)]
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration=calibration)
    meta = read_sidecar(int8)
    assert meta["quantization"] == "int8-static" and meta["calibration_utterances"] == 6
    nodes = onnx.load(str(int8)).graph.node
    weights_int8 = [n for n in nodes if n.op_type == "DequantizeLinear" and "weight" in n.input[0]]
    assert weights_int8, "no weight was quantised"
    # The features stay float32: no fbank node reads a dequantised tensor.
    dequantised = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    fbank = [n for n in nodes if n.name.startswith("/fbank/")]
    assert fbank or not with_features
    assert not any(dequantised.intersection(n.input) for n in fbank)
    # Held-out inputs, padded batch included.
    wav = np.stack([_speechlike(10, 12000), np.pad(_speechlike(11, 9000), (0, 3000))])
    lengths = np.array([12000, 9000])
    if with_features:
        inputs = {"wav": wav, "lengths": lengths}
    else:
        feats, frames = Fbank(config).eval()(torch.from_numpy(wav), torch.from_numpy(lengths))
        inputs = {"feats": feats.numpy(), "lengths": frames.numpy()}
    (a,) = _session(fp32).run(None, inputs)
    (b,) = _session(int8).run(None, inputs)
    assert (_cosines(a, b) > 0.995).all(), _cosines(a, b)
    assert not np.array_equal(a, b)
    # The default scheme cannot saturate x86's u8 x s8 pair sums (vpmaddubsw, 16 bits) on CPUs
    # without VNNI: every int8 weight lies in [-64, 64], so a pair sums to at most
    # 255 * 64 * 2 = 32640 < 32767.
    weights = _int8_weights(int8)
    assert weights and all(np.abs(w.astype(np.int32)).max() <= 64 for w in weights)
    check = meta["int8"]["check"]
    assert meta["int8"]["scheme"] == "u8s7" and check["utterances"] == 6
    assert 0.995 <= check["min_cosine"] <= check["mean_cosine"] < 1.0


def _int8_weights(path) -> list[np.ndarray]:
    """The int8 initialisers that feed a DequantizeLinear of a weight."""
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return [
        inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
    ]


def test_static_int8_keeps_the_encoders_ends_in_float(tmp_path):
    model = _build("ecapa_tdnn").eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", with_features=False)
    calibration = [_speechlike(seed, 8000) for seed in range(3)]
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration=calibration)
    graph = onnx.load(str(int8)).graph
    inits = {t.name: t for t in graph.initializer}
    float_weighted = [
        n.name
        for n in graph.node
        if n.op_type in ("Conv", "MatMul", "Gemm")
        and any(i in inits and inits[i].data_type == onnx.TensorProto.FLOAT for i in n.input)
    ]
    quantised = [n.name for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert quantised[0] in float_weighted  # the first layer reads the features in float
    assert quantised[-1] in float_weighted  # the embedding layer writes in float
    assert len(float_weighted) < len(quantised) / 2  # the rest is int8
    assert read_sidecar(int8)["int8"]["float_nodes"] >= 1 + FLOAT_TAIL


def test_static_int8_refuses_a_model_under_the_cosine_floor(tmp_path):
    model = _build("xvector").eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", with_features=False)
    calibration = [_speechlike(seed, 8000) for seed in range(3)]
    with pytest.raises(
        QuantizationError,
        match=r"cosine of only 0\.9\d+ to the float .* under the floor of 1.0; nothing was written",
    ):
        quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration=calibration, min_cosine=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]


def test_u8u8_scheme_is_recorded_and_unknown_schemes_are_named(tmp_path):
    model = _build("xvector").eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", with_features=False)
    calibration = [_speechlike(seed, 8000) for seed in range(3)]
    int8 = quantize_onnx_int8(fp32, tmp_path / "u8.onnx", calibration=calibration, scheme="u8u8")
    assert read_sidecar(int8)["int8"]["scheme"] == "u8u8"
    model_weights = onnx.load(str(int8)).graph.initializer
    assert any(t.data_type == onnx.TensorProto.UINT8 and t.dims for t in model_weights)
    with pytest.raises(ConfigError, match=r"one of \['u8s7', 'u8u8'\], got 'u8s8'"):
        quantize_onnx_int8(fp32, tmp_path / "x.onnx", calibration=calibration, scheme="u8s8")


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ([], "at least one calibration waveform"),
        ([np.zeros((2, 8000), np.float32)], "calibration waveform 0: expected a finite 1-D"),
        ([np.zeros(8000, np.float32), np.zeros(10, np.float32)], "calibration waveform 1"),
        ([np.full(8000, np.nan, np.float32)], "calibration waveform 0"),
    ],
)
def test_static_int8_rejects_bad_calibration(small_bundle, tmp_path, calibration, message):
    fp32 = export_onnx(small_bundle, tmp_path / "m.onnx", with_features=True)
    with pytest.raises(ConfigError, match=message):
        quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calibration=calibration)
    assert not (tmp_path / "m.int8.onnx").exists()


def test_export_of_a_loaded_bundle_equals_its_embed_batch(small_bundle, tmp_path):
    bundle = load_bundle(small_bundle)
    path = export_onnx(bundle, tmp_path / "m.onnx", with_features=True)
    assert read_sidecar(path)["source_bundle_fingerprint"] is None  # no folder to hash
    wav = 0.1 * torch.randn(2, 20000, generator=torch.Generator().manual_seed(6))
    lengths = torch.tensor([20000, 9000])
    (emb,) = _session(path).run(None, {"wav": wav.numpy(), "lengths": lengths.numpy()})
    expected = bundle.embed_batch(wav, lengths).numpy()
    np.testing.assert_allclose(emb, expected, rtol=0, atol=WAVEFORM_RTOL * np.abs(expected).max())


def test_export_rejects_a_fbank_that_does_not_fit_the_model(tmp_path):
    with pytest.raises(BundleError, match="mel bins"):
        export_onnx(
            _build("xvector"),
            tmp_path / "m.onnx",
            with_features=True,
            fbank_config=FbankConfig(num_mel_bins=40),
        )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_fbank_graph_is_the_fbank(tmp_path):
    """The features alone through onnxruntime, against Fbank."""
    fbank = Fbank().eval()
    wav = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(7))
    lengths = torch.tensor([12000, 5000])
    path = tmp_path / "fbank.onnx"
    torch.onnx.export(
        ExportFbank(fbank), (wav, lengths), str(path), dynamo=False, opset_version=17,
        input_names=["wav", "lengths"], output_names=["feats", "frames"],
        dynamic_axes={"wav": {0: "b", 1: "n"}, "lengths": {0: "b"}, "feats": {0: "b", 1: "t"}},
    )  # fmt: skip
    other = 0.1 * torch.randn(3, 7000, generator=torch.Generator().manual_seed(8))
    other_lengths = torch.tensor([7000, 400, 6001])
    feats, frames = _session(path).run(
        None, {"wav": other.numpy(), "lengths": other_lengths.numpy()}
    )
    expected, expected_frames = fbank(other, other_lengths)
    np.testing.assert_array_equal(frames, expected_frames.numpy())
    np.testing.assert_allclose(feats, expected.numpy(), rtol=0, atol=5e-3)
