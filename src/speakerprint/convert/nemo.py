"""NVIDIA NeMo's TitaNet (``.nemo`` archive) to a speakerprint bundle.

A ``.nemo`` file is a tar archive (uncompressed since NeMo 1.7, gzip before) holding
``model_config.yaml`` (the model's config, interpolations resolved) and ``model_weights.ckpt`` (the
``torch.save``d state dict of ``EncDecSpeakerLabelModel``). TitaNet is a ``ConvASREncoder`` of
``JasperBlock``s and a ``SpeakerDecoder`` with ``pool_mode: attention``; key by key:

=============================================================== ==================================
NeMo                                                            speakerprint ``TitaNet``
=============================================================== ==================================
``encoder.encoder.{b}.mconv.{5i}.conv.weight``                  ``<block>.convs.{i}.depthwise``
``encoder.encoder.{b}.mconv.{5i+1}.conv.weight``                ``<block>.convs.{i}.pointwise``
``encoder.encoder.{b}.mconv.{5i+2}.*`` (BatchNorm, eps 1e-3)    ``<block>.convs.{i}.norm``
``encoder.encoder.{b}.mconv.{5(R-1)+3}.fc.{0,2}.weight``        ``<block>.se.{squeeze,excite}``
``encoder.encoder.{b}.res.0.0.conv.weight``, ``res.0.1.*``      ``<block>.residual_{conv,norm}``
``decoder._pooling.attention_layer.0.conv_layer.*``             ``pool.attention_hidden``
``decoder._pooling.attention_layer.0.bn.*``                     ``pool.attention_norm``
``decoder._pooling.attention_layer.2.*``                        ``pool.attention_out``
``decoder.emb_layers.0.0.*`` (BatchNorm)                        ``pool_norm``
``decoder.emb_layers.0.1.*`` (1x1 Conv1d)                       ``embedding`` (Linear)
``decoder.final.*`` (the speaker head)                          dropped, listed in the info
``preprocessor.featurizer.{fb,window}``                         checked against our features
=============================================================== ==================================

with ``<block>`` = ``prolog`` for b = 0, ``mega_blocks.{b-1}``, ``epilog`` for the last; sub-block
i of R occupies 5 ``mconv`` entries (depthwise, pointwise, BatchNorm, ReLU, dropout), the last
sub-block only 3 and then the SE. (``conv_mask: false`` drops the ``.conv`` of the conv keys.)
The layout arguments ``se_bias=False``, ``norm_eps=1e-3``, ``pooling_eps=1e-10`` and
``attention_norm=True`` make our TitaNet compute NeMo's function; the features are NeMo's own
(:mod:`speakerprint.features.nemo`).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

import torch
import yaml

from speakerprint.convert._checkpoint import read_state_dict
from speakerprint.errors import BundleError
from speakerprint.features.nemo import NemoFeatures, NemoFeaturesConfig
from speakerprint.models.bundle import save_bundle
from speakerprint.models.titanet import TitaNet
from speakerprint.utils.hashing import sha256_file

CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
_OPTIONAL = ("num_batches_tracked",)  # unused in eval; absent from very old checkpoints
_HEAD_PREFIX = "decoder.final."
_FEATURE_BUFFERS = ("preprocessor.featurizer.fb", "preprocessor.featurizer.window")
_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


LAYOUT = "a .nemo archive (or a folder holding one, or its extracted model_config.yaml + model_weights.ckpt)"


def find(path: Path) -> tuple[Path, Path | None] | None:
    """``(archive or extracted folder, None)`` when ``path`` is in NeMo's layout."""
    if path.is_file():
        return (path, None) if path.suffix == ".nemo" else None
    if (path / CONFIG_MEMBER).is_file() and (path / WEIGHTS_MEMBER).is_file():
        return path, None
    archives = sorted(path.glob("*.nemo"))
    return (archives[0], None) if len(archives) == 1 else None


def convert(checkpoint: Path, out: Path, *, config: Path | None = None) -> Path:
    """Write a bundle at ``out`` from a NeMo TitaNet ``.nemo`` archive.

    Args:
        checkpoint: the ``.nemo`` file (or the folder it was extracted to).
        out: the bundle folder to write.
        config: a ``model_config.yaml`` to use instead of the archive's (like NeMo's
            ``override_config_path``); a full training yaml with a ``model:`` section also works.

    Raises:
        BundleError: naming the archive and the problem: not an archive, a member missing, a
            config this converter cannot reproduce exactly, a key that is missing, left over or of
            the wrong shape, or stored filters that differ from the features' own.
    """
    checkpoint = Path(checkpoint)
    config_text, state = _read_archive(checkpoint)
    config_source = f"{checkpoint}:{CONFIG_MEMBER}"
    if config is not None:
        try:
            config_text = Path(config).read_text(encoding="utf-8")
        except OSError as e:
            raise BundleError(f"cannot read NeMo config {config}: {e}") from None
        config_source = str(config)
    model_cfg = _parse_config(config_text, config_source)

    features_config = features_config_from_nemo(model_cfg, config_source)
    model_args = titanet_args_from_nemo(model_cfg, config_source)
    encoder = TitaNet(**model_args)
    mapped, dropped = map_state_dict(
        state, model_args, conv_mask=_conv_mask(model_cfg), where=checkpoint
    )
    _check_and_load(encoder, mapped, checkpoint)
    checks = _check_feature_buffers(state, NemoFeatures(features_config), checkpoint)

    decoder = model_cfg["decoder"]
    info = {
        "source": "nemo",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": _sha256(checkpoint),
        "model": str(model_cfg.get("name") or "TitaNet"),
        "peer_config": {
            "preprocessor": model_cfg["preprocessor"],
            "encoder": model_cfg["encoder"],
            "decoder": decoder,
        },
        "num_training_speakers": decoder.get("num_classes"),
        "dropped_keys": dropped,
        "checked_buffers": checks,
        "config_file": None if config is None else Path(config).name,
    }
    return save_bundle(out, encoder.eval(), features_config, info=info)


# ---------------------------------------------------------------- archive


def _read_archive(path: Path) -> tuple[str, dict[str, Any]]:
    """-> the config text and the state dict of a ``.nemo`` file or extracted folder."""
    if path.is_dir():
        files = {p.name: p for p in path.rglob("*") if p.is_file()}
        missing = [m for m in (CONFIG_MEMBER, WEIGHTS_MEMBER) if m not in files]
        if missing:
            raise BundleError(f"NeMo checkpoint folder {path}: {', '.join(missing)} missing")
        config_bytes = files[CONFIG_MEMBER].read_bytes()
        weights_bytes = files[WEIGHTS_MEMBER].read_bytes()
    else:
        if not path.is_file():
            raise BundleError(f"NeMo checkpoint {path} does not exist")
        try:
            with tarfile.open(path, "r:*") as tar:  # plain (NeMo >= 1.7) or gzip
                members = {_member_name(m.name): m for m in tar.getmembers() if m.isfile()}
                found = {}
                for wanted in (CONFIG_MEMBER, WEIGHTS_MEMBER):
                    if wanted in members:
                        found[wanted] = members[wanted]
                        continue
                    nested = [m for n, m in members.items() if n.rsplit("/", 1)[-1] == wanted]
                    if len(nested) != 1:
                        raise BundleError(
                            f"NeMo archive {path}: no {wanted} member "
                            f"(members: {sorted(members)[:10]})"
                        )
                    found[wanted] = nested[0]
                config_bytes = tar.extractfile(found[CONFIG_MEMBER]).read()
                weights_bytes = tar.extractfile(found[WEIGHTS_MEMBER]).read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise BundleError(f"{path} is not a NeMo .nemo archive (a tar file): {e}") from None
    state = read_state_dict(weights_bytes, f"NeMo archive {path}: {WEIGHTS_MEMBER}")
    try:
        text = config_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"NeMo archive {path}: {CONFIG_MEMBER} is not UTF-8 text") from None
    return text, state


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _sha256(path: Path) -> str:
    if path.is_dir():
        return sha256_file(path / WEIGHTS_MEMBER)
    return sha256_file(path)


# ---------------------------------------------------------------- config


def _parse_config(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BundleError(f"NeMo config {where} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"NeMo config {where} is not a mapping")
    root = data
    if "encoder" not in data and isinstance(data.get("model"), dict):
        data = data["model"]  # a training yaml (name, model, trainer, ...) rather than the model's
    data = _resolve(data, root, where)
    for section in ("preprocessor", "encoder", "decoder"):
        if not isinstance(data.get(section), dict):
            raise BundleError(f"NeMo config {where}: no {section!r} section")
    return data


def _resolve(node: Any, root: dict[str, Any], where: str, depth: int = 0) -> Any:
    """Resolve whole-value OmegaConf interpolations ``${a.b.c}`` (NeMo saves them resolved;
    the training yamls in its examples have them)."""
    if depth > 20:
        raise BundleError(f"NeMo config {where}: interpolations nest too deep")
    if isinstance(node, dict):
        return {k: _resolve(v, root, where, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, where, depth) for v in node]
    if isinstance(node, str) and "${" in node:
        match = _INTERPOLATION.match(node.strip())
        if match is None:
            raise BundleError(f"NeMo config {where}: cannot resolve {node!r}")
        value: Any = root
        for part in match.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise BundleError(f"NeMo config {where}: {node!r} names no value")
            value = value[part]
        return _resolve(value, root, where, depth + 1)
    return node


def _single_int(value: Any, name: str, where: str) -> int:
    """NeMo writes kernel, stride and dilation as one-element lists."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"NeMo config {where}: {name} must be an int or [int], got {value!r}")
    return value


def _kernel_size(kernel: int, factor: float) -> int:
    """NeMo's ``compute_new_kernel_size``: scaled, at least 1, rounded up to odd."""
    size = max(int(kernel * factor), 1)
    return size + 1 if size % 2 == 0 else size


def _conv_mask(model_cfg: dict[str, Any]) -> bool:
    return bool(model_cfg["encoder"].get("conv_mask", True))


def titanet_args_from_nemo(model_cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """TitaNet constructor arguments reproducing a NeMo TitaNet config exactly.

    Raises BundleError for configs outside what :class:`~speakerprint.models.titanet.TitaNet`
    computes (other activations or norms, strides, dilations, grouped or non-separable convs,
    dense residuals, mega blocks of different widths or depths, several embedding layers).
    """
    encoder, decoder = model_cfg["encoder"], model_cfg["decoder"]

    def unsupported(what: str) -> BundleError:
        return BundleError(f"NeMo config {where}: {what}; only TitaNet's layout converts")

    target = str(encoder.get("_target_", "ConvASREncoder"))
    if not target.endswith("ConvASREncoder"):
        raise unsupported(f"encoder {target}")
    if str(encoder.get("activation", "relu")) != "relu":
        raise unsupported(f"activation {encoder.get('activation')!r}")
    if str(encoder.get("normalization_mode", "batch")) != "batch":
        raise unsupported(f"normalization_mode {encoder.get('normalization_mode')!r}")
    if int(encoder.get("frame_splicing", 1)) != 1:
        raise unsupported("frame_splicing != 1")
    blocks = encoder.get("jasper")
    if not isinstance(blocks, list) or len(blocks) < 3:
        raise unsupported("encoder.jasper must list a prolog, mega blocks and an epilog")

    parsed = []
    for index, block in enumerate(blocks):
        name = f"encoder.jasper[{index}]"
        if not isinstance(block, dict):
            raise unsupported(f"{name} is not a mapping")
        try:
            filters, repeat = int(block["filters"]), int(block["repeat"])
            kernel = _single_int(block["kernel"], f"{name}.kernel", where)
            residual = bool(block["residual"])
        except KeyError as e:
            raise BundleError(f"NeMo config {where}: {name} has no {e}") from None
        for key, default in [("stride", 1), ("dilation", 1)]:
            if _single_int(block.get(key, [default]), f"{name}.{key}", where) != 1:
                raise unsupported(f"{name}.{key} != 1")
        checks = [
            ("separable", False, True),
            ("se", False, True),
            ("residual_dense", False, False),
            ("groups", 1, 1),
            ("heads", -1, -1),
            ("residual_mode", str(encoder.get("residual_mode", "add")), "add"),
            ("future_context", -1, -1),
        ]
        for key, default, wanted in checks:
            if block.get(key, default) != wanted:
                raise unsupported(f"{name}.{key} = {block.get(key, default)!r} (needs {wanted!r})")
        factor = float(block.get("kernel_size_factor", 1.0))
        parsed.append(
            {
                "filters": filters,
                "repeat": repeat,
                "kernel": _kernel_size(kernel, factor),
                "residual": residual,
                "se_reduction": int(block.get("se_reduction_ratio", 8)),
            }
        )

    prolog, mega, epilog = parsed[0], parsed[1:-1], parsed[-1]
    if prolog["repeat"] != 1 or prolog["residual"]:
        raise unsupported("the first block must have repeat 1 and no residual")
    if epilog["repeat"] != 1 or epilog["residual"] or epilog["kernel"] != 1:
        raise unsupported("the last block must have repeat 1, kernel 1 and no residual")
    channels, repeat = prolog["filters"], mega[0]["repeat"]
    for index, block in enumerate(mega, start=1):
        if block["filters"] != channels or block["repeat"] != repeat or not block["residual"]:
            raise unsupported(
                f"encoder.jasper[{index}] must be a residual block of {channels} filters and "
                f"repeat {repeat} like the others"
            )
    reductions = {block["se_reduction"] for block in parsed}
    if len(reductions) != 1:
        raise unsupported(f"different se_reduction_ratio per block {sorted(reductions)}")

    target = str(decoder.get("_target_", "SpeakerDecoder"))
    if not target.endswith("SpeakerDecoder"):
        raise unsupported(f"decoder {target}")
    if str(decoder.get("pool_mode", "xvector")).lower() != "attention":
        raise unsupported(f"decoder.pool_mode {decoder.get('pool_mode')!r} (needs 'attention')")
    emb_sizes = decoder.get("emb_sizes", 256)
    if isinstance(emb_sizes, list):
        if len(emb_sizes) != 1:
            raise unsupported(f"decoder.emb_sizes {emb_sizes} (one embedding layer converts)")
        emb_sizes = emb_sizes[0]
    if int(decoder.get("feat_in", epilog["filters"])) != epilog["filters"]:
        raise unsupported("decoder.feat_in differs from the last block's filters")
    feat_in = int(encoder.get("feat_in", 0))
    return {
        "feat_dim": feat_in,
        "channels": channels,
        "epilog_channels": epilog["filters"],
        "embed_dim": int(emb_sizes),
        "kernel_sizes": [block["kernel"] for block in mega],
        "repeat": repeat,
        "prolog_kernel_size": prolog["kernel"],
        "se_reduction": reductions.pop(),
        "attention_channels": int(decoder.get("attention_channels", 128)),
        "dropout": 0.0,
        "attention_norm": True,
        "se_bias": False,
        "norm_eps": 1e-3,
        "pooling_eps": 1e-10,
    }


def features_config_from_nemo(model_cfg: dict[str, Any], where: str) -> NemoFeaturesConfig:
    """Our :class:`NemoFeaturesConfig` from NeMo's ``preprocessor`` section (its defaults where
    the section leaves a value out, as ``AudioToMelSpectrogramPreprocessor`` has them)."""
    pre = model_cfg["preprocessor"]
    target = str(pre.get("_target_", "AudioToMelSpectrogramPreprocessor"))
    if not target.endswith("AudioToMelSpectrogramPreprocessor"):
        raise BundleError(f"NeMo config {where}: preprocessor {target} is not supported")
    if pre.get("use_torchaudio", False):
        raise BundleError(f"NeMo config {where}: use_torchaudio features are not supported")
    if int(pre.get("frame_splicing", 1)) != 1:
        raise BundleError(f"NeMo config {where}: frame_splicing != 1 is not supported")
    sample_rate = int(pre.get("sample_rate", 16000))

    def samples(seconds_key: str, samples_key: str, default: float) -> int:
        if pre.get(samples_key):
            return int(pre[samples_key])
        return int(float(pre.get(seconds_key, default) or default) * sample_rate)  # NeMo truncates

    win_length = samples("window_size", "n_window_size", 0.02)
    n_fft = pre.get("n_fft") or 2 ** (win_length - 1).bit_length()
    guard = pre.get("log_zero_guard_value", 2**-24)
    if guard in ("tiny", "eps"):
        finfo = torch.finfo(torch.float32)
        guard = finfo.tiny if guard == "tiny" else finfo.eps
    normalize = pre.get("normalize", "per_feature") or "none"
    if not isinstance(normalize, str):
        raise BundleError(f"NeMo config {where}: fixed normalize statistics are not supported")
    highfreq = pre.get("highfreq") or sample_rate / 2
    pad_to = pre.get("pad_to", 16)
    if pad_to == "max":
        raise BundleError(f"NeMo config {where}: pad_to 'max' is not supported")
    try:
        return NemoFeaturesConfig(
            sample_rate=sample_rate,
            win_length=win_length,
            hop_length=samples("window_stride", "n_window_stride", 0.01),
            n_fft=int(n_fft),
            window=str(pre.get("window", "hann")),
            num_mel_bins=int(pre.get("features", 64)),
            low_freq_hz=float(pre.get("lowfreq", 0) or 0),
            high_freq_hz=float(highfreq),
            mel_norm=str(pre.get("mel_norm", "slaney") or "none"),
            preemphasis=float(pre.get("preemph", 0.97) or 0.0),
            dither=float(pre.get("dither", 1e-5) or 0.0),
            log=bool(pre.get("log", True)),
            log_zero_guard_type=str(pre.get("log_zero_guard_type", "add")),
            log_zero_guard_value=float(guard),
            normalize=normalize,
            mag_power=float(pre.get("mag_power", 2.0)),
            pad_to=int(pad_to or 0),
            pad_value=float(pre.get("pad_value", 0)),
            exact_pad=bool(pre.get("exact_pad", False)),
        )
    except (ValueError, TypeError) as e:
        raise BundleError(f"NeMo config {where}: preprocessor: {e}") from None


# ---------------------------------------------------------------- weights


def _key_pairs(model_args: dict[str, Any], conv_mask: bool) -> list[tuple[str, str, bool]]:
    """(our key, NeMo key, required) for every tensor of the converted TitaNet."""
    conv = ".conv.weight" if conv_mask else ".weight"
    pairs: list[tuple[str, str, bool]] = []

    def norm(ours: str, theirs: str) -> None:
        pairs.extend((f"{ours}.{t}", f"{theirs}.{t}", True) for t in _BN_TENSORS)
        pairs.extend((f"{ours}.{t}", f"{theirs}.{t}", False) for t in _OPTIONAL)

    num_mega = len(model_args["kernel_sizes"])
    for b in range(num_mega + 2):
        ours = "prolog" if b == 0 else "epilog" if b == num_mega + 1 else f"mega_blocks.{b - 1}"
        theirs = f"encoder.encoder.{b}"
        repeat = model_args["repeat"] if 0 < b <= num_mega else 1
        for i in range(repeat):
            base = 5 * i
            pairs.append(
                (f"{ours}.convs.{i}.depthwise.weight", f"{theirs}.mconv.{base}{conv}", True)
            )
            pairs.append(
                (f"{ours}.convs.{i}.pointwise.weight", f"{theirs}.mconv.{base + 1}{conv}", True)
            )
            norm(f"{ours}.convs.{i}.norm", f"{theirs}.mconv.{base + 2}")
        se = f"{theirs}.mconv.{5 * (repeat - 1) + 3}.fc"
        pairs.append((f"{ours}.se.squeeze.weight", f"{se}.0.weight", True))
        pairs.append((f"{ours}.se.excite.weight", f"{se}.2.weight", True))
        if 0 < b <= num_mega:
            pairs.append((f"{ours}.residual_conv.weight", f"{theirs}.res.0.0{conv}", True))
            norm(f"{ours}.residual_norm", f"{theirs}.res.0.1")

    attention = "decoder._pooling.attention_layer"
    for t in ("weight", "bias"):
        pairs.append((f"pool.attention_hidden.{t}", f"{attention}.0.conv_layer.{t}", True))
        pairs.append((f"pool.attention_out.{t}", f"{attention}.2.{t}", True))
        pairs.append((f"embedding.{t}", f"decoder.emb_layers.0.1.{t}", True))
    norm("pool.attention_norm", f"{attention}.0.bn")
    norm("pool_norm", "decoder.emb_layers.0.0")
    return pairs


def map_state_dict(
    state: dict[str, torch.Tensor],
    model_args: dict[str, Any],
    *,
    conv_mask: bool = True,
    where: str | Path = "<state dict>",
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """NeMo TitaNet state dict -> (our state dict, NeMo keys dropped: the speaker head and the
    feature buffers). Raises BundleError naming ``where`` and every missing or unplaced key."""
    mapped: dict[str, torch.Tensor] = {}
    missing = []
    used = set()
    for ours, theirs, required in _key_pairs(model_args, conv_mask):
        if theirs in state:
            tensor = state[theirs]
            if ours == "embedding.weight" and tensor.dim() == 3 and tensor.shape[-1] == 1:
                tensor = tensor.squeeze(-1)  # the 1x1 Conv1d is a Linear
            mapped[ours] = tensor.float() if tensor.is_floating_point() else tensor
            used.add(theirs)
        elif required:
            missing.append(theirs)
    dropped = sorted(k for k in state if k not in used and k.startswith(_HEAD_PREFIX))
    dropped += [k for k in _FEATURE_BUFFERS if k in state]
    unplaced = sorted(k for k in state if k not in used and k not in dropped)
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} key(s) the config's TitaNet needs: {missing[:8]}")
    if unplaced:
        problems.append(
            f"has {len(unplaced)} key(s) with no place in the config's TitaNet: {unplaced[:8]}"
        )
    if problems:
        raise BundleError(f"NeMo archive {where}: {WEIGHTS_MEMBER} " + "; ".join(problems))
    return mapped, dropped


def _check_and_load(encoder: TitaNet, mapped: dict[str, torch.Tensor], where: Path) -> None:
    expected = encoder.state_dict()
    for key, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise BundleError(
                f"NeMo archive {where}: tensor for {key} has shape {tuple(tensor.shape)}, the "
                f"config's TitaNet needs {tuple(expected[key].shape)}"
            )
    full = {k: mapped.get(k, v) for k, v in expected.items()}  # optional counters stay at 0
    encoder.load_state_dict(full, strict=True)


def _check_feature_buffers(
    state: dict[str, torch.Tensor], features: NemoFeatures, where: Path
) -> list[str]:
    """Compare NeMo's stored mel filters and window with ours; -> the names checked."""
    checked = []
    ours_by_key = {
        "preprocessor.featurizer.fb": features.mel_filters.unsqueeze(0),  # NeMo: (1, F, K)
        "preprocessor.featurizer.window": features.window if features.has_window else None,
    }
    for key, ours in ours_by_key.items():
        if key not in state or ours is None:
            continue
        theirs = state[key].float()
        if theirs.shape != ours.shape:
            raise BundleError(
                f"NeMo archive {where}: {key} has shape {tuple(theirs.shape)}, the config's "
                f"features give {tuple(ours.shape)}"
            )
        scale = float(theirs.abs().max()) or 1.0
        error = float((theirs - ours).abs().max()) / scale
        if error > 1e-5:
            raise BundleError(
                f"NeMo archive {where}: {key} differs from the features the config describes "
                f"(max relative difference {error:.2e}); the converted model would not give "
                "NeMo's embeddings"
            )
        checked.append(key)
    return checked
