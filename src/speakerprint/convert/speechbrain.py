"""SpeechBrain's ECAPA-TDNN (``spkrec-ecapa-voxceleb``) to a speakerprint bundle.

SpeechBrain's ``embedding_model.ckpt`` is the bare ``state_dict()`` of
``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``; ``hyperparams.yaml`` beside it (HyperPyYAML)
holds the model's arguments, its ``Fbank`` settings and the ``InputNormalization`` before it. The
weights map onto :class:`~speakerprint.models.ecapa.EcapaTdnn` with ``mfa_norm``,
``attention_norm``, ``embedding_norm=False`` and ``padding_mode="reflect"``, and the features onto
:class:`~speakerprint.features.speechbrain.SpeechBrainFbank`. What differs, and how it is handled:

* Res2Net order: SpeechBrain passes its *first* channel group through unchanged and convolves the
  others in order; ours (WeSpeaker's) convolves groups 0 .. s-2 and passes the *last* one. The two
  are the same computation up to a channel permutation (SpeechBrain's groups 1 .. s-1, 0), which
  is folded into the output channels of the 1x1 conv + BN before the Res2 conv and the input
  channels of the 1x1 conv after it.
* The SE convs and the final ``fc`` are Conv1d with kernel 1 where ours are Linear; there is no BN
  after ``fc`` (``embedding_norm=False``).
* The attention's variance is clamped at 1e-12 in SpeechBrain and at 1e-7 here: the two differ
  only for a channel whose variance over the utterance is below 1e-7, which trained models on
  real speech do not produce.
* SpeechBrain reflects each conv's input at the ends of the padded batch tensor, speakerprint at
  each utterance's own ends; for one utterance (or equal lengths) they agree, and in a padded
  batch speakerprint's is the one that does not depend on the padding.

Widths (C, M, attention channels, embedding size, feature size, number of blocks, Res2 scale, SE
bottleneck) are read from the tensor shapes and cross-checked with ``hyperparams.yaml`` when it is
given or found beside the checkpoint. Without it the block dilations and the feature settings are
those of ``spkrec-ecapa-voxceleb`` (dilations 2, 3, 4; ``Fbank`` defaults with ``n_mels`` = the
model's input size; sentence mean normalisation).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import yaml

from speakerprint.convert._checkpoint import read_state_dict
from speakerprint.errors import BundleError, ConfigError
from speakerprint.features.speechbrain import SpeechBrainFbankConfig
from speakerprint.models.bundle import save_bundle
from speakerprint.models.ecapa import EcapaTdnn
from speakerprint.utils.hashing import sha256_file

__all__ = ["convert"]

HYPERPARAMS_FILE = "hyperparams.yaml"
PEER_CLASS = "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
# Keys of other SpeechBrain modules that can sit in the same dict as the embedding model; they
# are not part of the embedding and are dropped (and listed in the bundle's info).
_FOREIGN_PREFIXES = ("classifier.", "mean_var_norm_emb.", "compute_features.", "mean_var_norm.")
_MODEL_PREFIXES = ("blocks.", "mfa.", "asp.", "asp_bn.", "fc.")


LAYOUT = "a folder with embedding_model.ckpt (and hyperparams.yaml), as on the hub"


def find(path: Path) -> tuple[Path, Path | None] | None:
    """``(embedding_model.ckpt, hyperparams.yaml or None)`` when ``path`` is in SpeechBrain's
    layout: the file itself or a folder holding it."""
    checkpoint = path / "embedding_model.ckpt" if path.is_dir() else path
    if checkpoint.name != "embedding_model.ckpt" or not checkpoint.is_file():
        return None
    hyper = checkpoint.parent / HYPERPARAMS_FILE
    return checkpoint, hyper if hyper.is_file() else None


def convert(checkpoint: Path, out: Path, *, config: Path | None = None) -> Path:
    """Write a bundle at ``out`` from SpeechBrain's ``embedding_model.ckpt``.

    Args:
        checkpoint: the ECAPA_TDNN state dict saved by SpeechBrain (``torch.save``).
        out: the bundle folder to write.
        config: SpeechBrain's ``hyperparams.yaml``; ``None`` looks for one beside the checkpoint.

    Returns:
        ``out``.

    Raises:
        BundleError: the file is not a checkpoint, or a key is missing, unexpected or misshapen.
        ConfigError: ``hyperparams.yaml`` is unreadable, disagrees with the weights, or asks for
            features or a layout this converter does not reproduce.

    >>> convert(Path("embedding_model.ckpt"), Path("bundles/sb_ecapa"))  # doctest: +SKIP
    """
    checkpoint = Path(checkpoint)
    state, dropped = _load_state(checkpoint)
    if config is None and (checkpoint.parent / HYPERPARAMS_FILE).is_file():
        config = checkpoint.parent / HYPERPARAMS_FILE
    hyper = _read_hyperparams(Path(config)) if config is not None else None

    peer_args = _infer_peer_args(state, checkpoint)
    if hyper is not None:
        peer_args = _check_against_hyperparams(peer_args, hyper, checkpoint, Path(config))
        features = _features_from_hyperparams(hyper, Path(config), peer_args["input_size"])
    else:
        if len(peer_args["channels"]) != 5:
            raise BundleError(
                f"{checkpoint}: {len(peer_args['channels']) - 2} SE-Res2 blocks, whose dilations "
                f"are not stored in the weights; pass SpeechBrain's {HYPERPARAMS_FILE} (--config)"
            )
        peer_args["dilations"] = [1, 2, 3, 4, 1]
        features = SpeechBrainFbankConfig(num_mel_bins=peer_args["input_size"])

    encoder = _build_encoder(peer_args, checkpoint)
    encoder.load_state_dict(_map_state(state, encoder, checkpoint), strict=True)
    info = {
        "source": "speechbrain",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "hyperparams": None if config is None else Path(config).name,
        "hyperparams_sha256": None if config is None else sha256_file(Path(config)),
        "peer_model": {"class": PEER_CLASS, "args": peer_args},
        "peer_features": (
            "speechbrain.lobes.features.Fbank + speechbrain.processing.features."
            "InputNormalization(norm_type='sentence', std_norm=False)"
        ),
        "dropped_keys": dropped,
        "notes": (
            "Res2Net channel groups permuted (SpeechBrain passes its first group through, "
            "speakerprint its last); SE convs and fc (Conv1d k=1) stored as Linear; attention "
            "variance floor 1e-7 instead of SpeechBrain's 1e-12."
        ),
    }
    return save_bundle(out, encoder.eval(), features, info=info)  # type: ignore[arg-type]


# --- the checkpoint --------------------------------------------------------------------------


def _load_state(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The embedding model's tensors (``module.`` prefixes removed) and the foreign keys dropped."""
    state: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in read_state_dict(path, str(path)).items():
        if key.startswith(_FOREIGN_PREFIXES):
            dropped.append(key)
        else:
            state[key] = value
    return state, sorted(dropped)


def _shape(state: dict[str, torch.Tensor], key: str, ndim: int, path: Path) -> tuple[int, ...]:
    if key not in state:
        raise BundleError(f"{path}: missing key {key!r} (not a SpeechBrain ECAPA_TDNN state dict?)")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise BundleError(f"{path}: tensor {key!r} has shape {shape}, expected {ndim} dimensions")
    return shape


def _infer_peer_args(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """SpeechBrain's ECAPA_TDNN arguments read from the tensor shapes (dilations excepted)."""
    channels, feat_dim, stem_kernel = _shape(state, "blocks.0.conv.conv.weight", 3, path)
    block_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    num_blocks = len(block_ids) - 1
    if num_blocks < 1 or block_ids != list(range(num_blocks + 1)):
        raise BundleError(
            f"{path}: expected blocks.0 (the first TDNN) and blocks.1 .. blocks.N (SE-Res2 "
            f"blocks), found blocks {block_ids}"
        )
    res2 = {
        int(m.group(1))
        for k in state
        if (m := re.match(r"blocks\.1\.res2net_block\.blocks\.(\d+)\.conv\.conv\.weight$", k))
    }
    if not res2:
        raise BundleError(
            f"{path}: missing key 'blocks.1.res2net_block.blocks.0.conv.conv.weight' (a Res2Net "
            "scale of 1 has no convolutions, which speakerprint's Res2 block cannot reproduce)"
        )
    width, _, res2_kernel = _shape(
        state, "blocks.1.res2net_block.blocks.0.conv.conv.weight", 3, path
    )
    se_channels = _shape(state, "blocks.1.se_block.conv1.conv.weight", 3, path)[0]
    mfa_channels, mfa_in, mfa_kernel = _shape(state, "mfa.conv.conv.weight", 3, path)
    attention_channels, attention_in, _ = _shape(state, "asp.tdnn.conv.conv.weight", 3, path)
    embed_dim = _shape(state, "fc.conv.weight", 3, path)[0]
    return {
        "input_size": feat_dim,
        "channels": [channels] * (num_blocks + 1) + [mfa_channels],
        "kernel_sizes": [stem_kernel] + [res2_kernel] * num_blocks + [mfa_kernel],
        "attention_channels": attention_channels,
        "res2net_scale": max(res2) + 2,
        "se_channels": se_channels,
        "global_context": attention_in == 3 * mfa_channels,
        "lin_neurons": embed_dim,
        "_res2_width": width,
        "_mfa_in": mfa_in,
    }


def _build_encoder(peer: dict[str, Any], path: Path) -> EcapaTdnn:
    """The speakerprint model with SpeechBrain's layout; layouts it lacks are a BundleError."""
    channels, kernels, dilations = peer["channels"], peer["kernel_sizes"], peer["dilations"]
    num_blocks = len(channels) - 2
    problems = []
    if kernels[0] != 5 or kernels[-1] != 1 or any(k != 3 for k in kernels[1:-1]):
        problems.append(f"kernel sizes {kernels} (speakerprint's ECAPA has 5, 3 ..., 1)")
    if dilations[0] != 1 or dilations[-1] != 1:
        problems.append(f"dilations {dilations} (the first and last layer must have dilation 1)")
    if peer["_res2_width"] * peer["res2net_scale"] != channels[0]:
        problems.append(
            f"Res2 groups of {peer['_res2_width']} channels x scale {peer['res2net_scale']} "
            f"!= {channels[0]} channels"
        )
    if peer["_mfa_in"] != channels[0] * num_blocks:
        problems.append(f"an MFA conv over {peer['_mfa_in']} channels, not {num_blocks} x C")
    if problems:
        raise BundleError(f"{path}: unsupported ECAPA_TDNN layout: " + "; ".join(problems))
    del peer["_res2_width"], peer["_mfa_in"]
    return EcapaTdnn(
        feat_dim=peer["input_size"],
        channels=channels[0],
        mfa_channels=channels[-1],
        embed_dim=peer["lin_neurons"],
        res2_scale=peer["res2net_scale"],
        se_channels=peer["se_channels"],
        attention_channels=peer["attention_channels"],
        dilations=dilations[1:-1],
        global_context=peer["global_context"],
        mfa_norm=True,
        attention_norm=True,
        embedding_norm=False,
        padding_mode="reflect",
    )


def _peer_key(key: str) -> tuple[str, str]:
    """speakerprint state-dict key -> (SpeechBrain key, transform), the transform one of
    ``copy``, ``linear`` (drop the trailing kernel dim), ``permute_out``, ``permute_in``."""

    def conv_bn(rest: str) -> str:  # ConvReluBn "conv.P"/"norm.P" -> TDNNBlock's wrapped modules
        module, _, param = rest.partition(".")
        return f"{module}.{module}.{param}"

    if key.startswith("stem."):
        return "blocks.0." + conv_bn(key[len("stem.") :]), "copy"
    if m := re.match(r"blocks\.(\d+)\.(\w+)\.(.+)$", key):
        block, part, rest = f"blocks.{int(m.group(1)) + 1}", m.group(2), m.group(3)
        if part == "conv_in":
            kind = "copy" if rest.endswith("num_batches_tracked") else "permute_out"
            return f"{block}.tdnn1.{conv_bn(rest)}", kind
        if part == "conv_out":
            kind = "permute_in" if rest == "conv.weight" else "copy"
            return f"{block}.tdnn2.{conv_bn(rest)}", kind
        if part == "res2":
            conv, _, inner = rest.removeprefix("convs.").partition(".")
            return f"{block}.res2net_block.blocks.{conv}.{conv_bn(inner)}", "copy"
        if part == "se":
            layer, _, param = rest.partition(".")
            sb = {"squeeze": "conv1", "excite": "conv2"}[layer]
            return f"{block}.se_block.{sb}.conv.{param}", "linear" if param == "weight" else "copy"
    head = {
        "aggregate.": "mfa.conv.conv.",
        "aggregate_norm.": "mfa.norm.norm.",
        "pool.attention_hidden.": "asp.tdnn.conv.conv.",
        "pool.attention_norm.": "asp.tdnn.norm.norm.",
        "pool.attention_out.": "asp.conv.conv.",
        "pool_norm.": "asp_bn.norm.",
        "embedding.": "fc.conv.",
    }
    for ours, theirs in head.items():
        if key.startswith(ours):
            param = key[len(ours) :]
            return theirs + param, "linear" if key == "embedding.weight" else "copy"
    raise AssertionError(f"no SpeechBrain key for {key}")  # a model change this file missed


def _map_state(
    state: dict[str, torch.Tensor], encoder: EcapaTdnn, path: Path
) -> dict[str, torch.Tensor]:
    """SpeechBrain's tensors rearranged into ``encoder``'s state dict; every key checked."""
    ours = encoder.state_dict()
    width = encoder.blocks[0].res2.width
    channels = encoder.blocks[0].res2.width * encoder.blocks[0].res2.scale
    # Our channel j is SpeechBrain's channel perm[j]: its groups 1 .. s-1, then its group 0.
    perm = torch.cat([torch.arange(width, channels), torch.arange(0, width)])
    plan = {key: _peer_key(key) for key in ours}
    expected = {
        sb: ours[key].shape + ((1,) if kind == "linear" else ()) for key, (sb, kind) in plan.items()
    }
    missing = sorted(
        sb for sb in expected if sb not in state and not sb.endswith("num_batches_tracked")
    )
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in state and state[k].shape != expected[k]
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            foreign = [k for k in unexpected if not k.startswith(_MODEL_PREFIXES)]
            parts.append(
                f"unexpected keys {unexpected[:8]}"
                + (" ..." if len(unexpected) > 8 else "")
                + (" (not part of an ECAPA_TDNN)" if foreign else "")
            )
        if wrong:
            parts.append(f"wrong shapes: {'; '.join(wrong[:8])}")
        raise BundleError(
            f"{path}: does not match SpeechBrain's ECAPA_TDNN with the widths its tensors imply: "
            + "; ".join(parts)
        )
    mapped = {}
    for key, (sb, kind) in plan.items():
        if sb not in state:  # num_batches_tracked, absent from old checkpoints
            mapped[key] = ours[key]
            continue
        value = state[sb]
        value = value.float() if value.is_floating_point() else value
        if kind == "linear":
            value = value.squeeze(-1)
        elif kind == "permute_out":
            value = value[perm]
        elif kind == "permute_in":
            value = value[:, perm]
        mapped[key] = value.contiguous()
    return mapped


# --- hyperparams.yaml --------------------------------------------------------------------------


class _Ref(str):
    """A HyperPyYAML ``!ref <name>``, resolved only where its value is needed."""


class _HyperLoader(yaml.SafeLoader):
    """Reads HyperPyYAML without importing anything: ``!new:``/``!name:``/``!apply:`` nodes become
    ``{"__tag__": tag, **args}`` dicts, ``!ref`` a :class:`_Ref`."""


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    tag = "!" + suffix
    if isinstance(node, yaml.MappingNode):
        return {"__tag__": tag, **loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {"__tag__": tag, "__args__": loader.construct_sequence(node, deep=True)}
    value = loader.construct_scalar(node)
    if tag == "!ref":
        return _Ref(value)
    return {"__tag__": tag, "__args__": value}


_HyperLoader.add_multi_constructor("!", _construct_tagged)


def _read_hyperparams(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such hyperparams file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_HyperLoader)  # noqa: S506
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not readable as HyperPyYAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data["__path__"] = path
    return data


def _resolve(value: Any, hyper: dict[str, Any], where: str, depth: int = 0) -> Any:
    """A value with its ``!ref <name>`` (also ``<a.b>``) references replaced, recursively."""
    if isinstance(value, _Ref):
        m = re.fullmatch(r"\s*<([\w.]+)>\s*", value)
        if m is None or depth > 20:
            raise ConfigError(
                f"{hyper['__path__']}: {where}: cannot evaluate !ref {str(value)!r} (only plain "
                "<name> references are read)"
            )
        target: Any = hyper
        for part in m.group(1).split("."):
            if not isinstance(target, dict) or part not in target:
                raise ConfigError(f"{hyper['__path__']}: {where}: !ref {value} names nothing")
            target = target[part]
        return _resolve(target, hyper, where, depth + 1)
    if isinstance(value, list):
        return [_resolve(v, hyper, where, depth) for v in value]
    return value


def _section(hyper: dict[str, Any], name: str, class_suffix: str) -> dict[str, Any] | None:
    node = _resolve(hyper.get(name), hyper, name)
    if node is None:
        return None
    tag = node.get("__tag__", "") if isinstance(node, dict) else ""
    if not tag.endswith(class_suffix):
        raise ConfigError(
            f"{hyper['__path__']}: {name} is {tag or type(node).__name__!r}, not "
            f"!new:...{class_suffix}"
        )
    return {k: _resolve(v, hyper, f"{name}.{k}") for k, v in node.items() if not k.startswith("__")}


def _check_against_hyperparams(
    peer: dict[str, Any], hyper: dict[str, Any], checkpoint: Path, config: Path
) -> dict[str, Any]:
    """``peer`` with the dilations from ``embedding_model``; any disagreement is an error."""
    args = _section(hyper, "embedding_model", "ECAPA_TDNN.ECAPA_TDNN")
    if args is None:
        raise ConfigError(f"{config}: no embedding_model entry")
    declared = {
        "input_size": args.get("input_size"),
        "channels": args.get("channels", [512, 512, 512, 512, 1536]),
        "kernel_sizes": args.get("kernel_sizes", [5, 3, 3, 3, 1]),
        "attention_channels": args.get("attention_channels", 128),
        "res2net_scale": args.get("res2net_scale", 8),
        "se_channels": args.get("se_channels", 128),
        "global_context": args.get("global_context", True),
        "lin_neurons": args.get("lin_neurons", 192),
    }
    disagree = [
        f"{k}: {declared[k]!r} in {config.name}, {peer[k]!r} in the weights"
        for k in declared
        if declared[k] != peer[k]
    ]
    if disagree:
        raise ConfigError(f"{config} does not describe {checkpoint}: " + "; ".join(disagree))
    dilations = args.get("dilations", [1, 2, 3, 4, 1])
    if not isinstance(dilations, list) or len(dilations) != len(peer["channels"]):
        raise ConfigError(
            f"{config}: embedding_model.dilations {dilations!r} needs one entry per layer "
            f"({len(peer['channels'])})"
        )
    groups = args.get("groups", [1] * len(peer["channels"]))
    if any(g != 1 for g in groups):
        raise ConfigError(f"{config}: grouped convolutions (groups {groups}) are not supported")
    activation = args.get("activation")
    if activation is not None and not str(activation.get("__tag__", "")).endswith("ReLU"):
        raise ConfigError(f"{config}: activation {activation!r} is not supported (only ReLU)")
    return {**peer, "dilations": [int(d) for d in dilations]}


def _features_from_hyperparams(
    hyper: dict[str, Any], config: Path, input_size: int
) -> SpeechBrainFbankConfig:
    fbank = _section(hyper, "compute_features", "lobes.features.Fbank")
    if fbank is None:
        raise ConfigError(f"{config}: no compute_features entry (SpeechBrain's Fbank)")
    for name, default in [
        ("deltas", False),
        ("context", False),
        ("requires_grad", False),
        ("filter_shape", "triangular"),
    ]:
        if fbank.get(name, default) != default:
            raise ConfigError(
                f"{config}: compute_features.{name}={fbank[name]!r} is not supported "
                f"(only {default!r})"
            )
    sample_rate = fbank.get("sample_rate", 16000)
    f_max = fbank.get("f_max")
    try:
        features = SpeechBrainFbankConfig(
            sample_rate=sample_rate,
            num_mel_bins=fbank.get("n_mels", 40),
            n_fft=fbank.get("n_fft", 400),
            frame_length_ms=fbank.get("win_length", 25),
            frame_shift_ms=fbank.get("hop_length", 10),
            f_min_hz=fbank.get("f_min", 0),
            f_max_hz=sample_rate // 2 if f_max is None else f_max,
        )
    except ConfigError as e:
        raise ConfigError(f"{config}: compute_features: {e}") from None
    if features.num_mel_bins != input_size:
        raise ConfigError(
            f"{config}: compute_features gives {features.num_mel_bins} mel bins, the model takes "
            f"{input_size}"
        )
    norm = _section(hyper, "mean_var_norm", "processing.features.InputNormalization")
    if norm is None:
        raise ConfigError(
            f"{config}: no mean_var_norm entry; SpeechBrain's speaker models normalise their "
            "features (InputNormalization, norm_type: sentence, std_norm: False)"
        )
    setting = {
        "norm_type": norm.get("norm_type", "global"),
        "mean_norm": norm.get("mean_norm", True),
        "std_norm": norm.get("std_norm", True),
    }
    if setting != {"norm_type": "sentence", "mean_norm": True, "std_norm": False}:
        raise ConfigError(
            f"{config}: mean_var_norm {setting} is not supported (only sentence mean "
            "normalisation: norm_type sentence, std_norm False)"
        )
    return features
