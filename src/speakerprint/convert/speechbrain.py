"""SpeechBrain's ECAPA-TDNN (``spkrec-ecapa-voxceleb``) and x-vector (``spkrec-xvect-voxceleb``)
to speakerprint bundles.

Which of the two a checkpoint holds is read from its tensor names (``blocks.0.conv.conv.weight``:
``ECAPA_TDNN``; ``blocks.0.conv.weight``: ``Xvector``).

ECAPA-TDNN
----------

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

x-vector
--------
``speechbrain.lobes.models.Xvector.Xvector`` is a ``ModuleList``: for each TDNN block i a
``Conv1d`` (``blocks.3i.conv``), the activation and a ``BatchNorm1d`` (``blocks.3i+2.norm``), then
``StatisticsPooling`` and a ``Linear`` (``blocks.3N+1.w``). It maps one to one onto
:class:`~speakerprint.models.tdnn.XVectorTdnn` with ``negative_slope=0.01`` (LeakyReLU),
``padding_mode="reflect"`` and ``pooling_std="unbiased"``; the module docstring of
``speakerprint.models.tdnn`` lists what differs (SpeechBrain's pooling noise, which is left out).
The widths come from the tensor shapes; the dilations and the activation, which the weights do not
hold, from ``hyperparams.yaml`` (without it, SpeechBrain's defaults: dilations 1, 2, 3, 1, 1 and
LeakyReLU, which ``spkrec-xvect-voxceleb`` uses, with 24 mel bins).

The global embedding statistics
-------------------------------
Both hub folders hold ``mean_var_norm_emb.ckpt``, the state of an ``InputNormalization``
(``{"count", "glob_mean", "glob_std", ...}``) over training embeddings.
``EncoderClassifier.encode_batch`` subtracts it only when called with ``normalize=True``; its
default (``normalize=False``, what ``verify_batch`` and SpeechT5's speaker embeddings use) does
not. The bundle gives that default embedding: the file is checked (its size must be the
embedding's) and recorded in the bundle's info, not applied.
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
from speakerprint.models.tdnn import FRAME_CONTEXTS, XVectorTdnn
from speakerprint.utils.hashing import sha256_file

__all__ = ["convert"]

HYPERPARAMS_FILE = "hyperparams.yaml"
EMBEDDING_NORM_FILE = "mean_var_norm_emb.ckpt"
PEER_CLASS = "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN"
XVECTOR_CLASS = "speechbrain.lobes.models.Xvector.Xvector"
# Xvector's defaults, which spkrec-xvect-voxceleb keeps; only these layers are supported.
XVECTOR_KERNEL_SIZES = [5, 3, 3, 1, 1]
XVECTOR_DILATIONS = [1, 2, 3, 1, 1]
LEAKY_RELU_SLOPE = 0.01  # torch.nn.LeakyReLU's default
# Keys of other SpeechBrain modules that can sit in the same dict as the embedding model; they
# are not part of the embedding and are dropped (and listed in the bundle's info).
_FOREIGN_PREFIXES = ("classifier.", "mean_var_norm_emb.", "compute_features.", "mean_var_norm.")


LAYOUT = (
    "a folder with embedding_model.ckpt (and hyperparams.yaml, mean_var_norm_emb.ckpt), as on "
    "the hub (ECAPA_TDNN or Xvector)"
)


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
        checkpoint: the ECAPA_TDNN or Xvector state dict saved by SpeechBrain (``torch.save``);
            a ``mean_var_norm_emb.ckpt`` beside it is checked and recorded.
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
    if _is_xvector(state, checkpoint):
        encoder, features, peer_class, peer_args = _convert_xvector(state, hyper, checkpoint)
        notes = (
            "LeakyReLU, reflect padding and SpeechBrain's std (unbiased, + 1e-5) reproduced; "
            "the noise SpeechBrain's StatisticsPooling adds to the pooled mean is left out."
        )
    else:
        encoder, features, peer_args = _convert_ecapa(state, hyper, checkpoint)
        peer_class = PEER_CLASS
        notes = (
            "Res2Net channel groups permuted (SpeechBrain passes its first group through, "
            "speakerprint its last); SE convs and fc (Conv1d k=1) stored as Linear; attention "
            "variance floor 1e-7 instead of SpeechBrain's 1e-12."
        )
    info = {
        "source": "speechbrain",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "hyperparams": None if config is None else Path(config).name,
        "hyperparams_sha256": None if config is None else sha256_file(Path(config)),
        "peer_model": {"class": peer_class, "args": peer_args},
        "peer_features": (
            "speechbrain.lobes.features.Fbank + speechbrain.processing.features."
            "InputNormalization(norm_type='sentence', std_norm=False)"
        ),
        "embedding_normalization": _embedding_norm(checkpoint.parent, encoder.embed_dim),
        "dropped_keys": dropped,
        "notes": notes,
    }
    return save_bundle(out, encoder.eval(), features, info=info)  # type: ignore[arg-type]


def _convert_ecapa(
    state: dict[str, torch.Tensor], hyper: dict[str, Any] | None, checkpoint: Path
) -> tuple[EcapaTdnn, SpeechBrainFbankConfig, dict[str, Any]]:
    """The ECAPA_TDNN with its weights loaded, its features and SpeechBrain's arguments."""
    peer_args = _infer_peer_args(state, checkpoint)
    if hyper is not None:
        config = hyper["__path__"]
        peer_args = _check_against_hyperparams(peer_args, hyper, checkpoint, config)
        features = _features_from_hyperparams(hyper, config, peer_args["input_size"])
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
    return encoder, features, peer_args


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
    _check_keys(state, expected, path, "SpeechBrain's ECAPA_TDNN")
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


# --- the x-vector ------------------------------------------------------------------------------


def _is_xvector(state: dict[str, torch.Tensor], path: Path) -> bool:
    """True for an Xvector state dict, False for an ECAPA_TDNN one; neither is a BundleError."""
    if "blocks.0.conv.conv.weight" in state:
        return False
    if "blocks.0.conv.weight" in state:
        return True
    raise BundleError(
        f"{path}: neither SpeechBrain's ECAPA_TDNN (no key 'blocks.0.conv.conv.weight') nor its "
        f"Xvector (no key 'blocks.0.conv.weight'); keys start {sorted(state)[:4]}"
    )


def _xvector_shapes(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Xvector's arguments that its tensor shapes hold."""
    convs = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"blocks\.(\d+)\.conv\.weight", k))
    )
    num_blocks = len(convs)
    if convs != [3 * i for i in range(num_blocks)]:
        raise BundleError(
            f"{path}: Xvector convolutions at blocks {convs}, expected blocks 0, 3, 6, ... "
            "(conv, activation, batch norm per TDNN block)"
        )
    shapes = [_shape(state, f"blocks.{3 * i}.conv.weight", 3, path) for i in range(num_blocks)]
    linear = f"blocks.{3 * num_blocks + 1}.w.weight"
    embed_dim, pooled = _shape(state, linear, 2, path)
    return {
        "in_channels": shapes[0][1],
        "tdnn_blocks": num_blocks,
        "tdnn_channels": [shape[0] for shape in shapes],
        "tdnn_kernel_sizes": [shape[2] for shape in shapes],
        "lin_neurons": embed_dim,
        "_pooled": pooled,
    }


def _activation_slope(node: Any, config: Path) -> float:
    """The negative slope of ``activation: !name:torch.nn.LeakyReLU`` (or 0 for ReLU)."""
    tag = str(node.get("__tag__", "")) if isinstance(node, dict) else ""
    args = {k: v for k, v in node.items() if not k.startswith("__")} if tag else {}
    if tag.endswith("torch.nn.LeakyReLU"):
        return float(args.get("negative_slope", LEAKY_RELU_SLOPE))
    if tag.endswith("torch.nn.ReLU"):
        return 0.0
    raise ConfigError(
        f"{config}: embedding_model.activation {node!r} is not supported (only "
        "torch.nn.LeakyReLU or torch.nn.ReLU)"
    )


def _convert_xvector(
    state: dict[str, torch.Tensor], hyper: dict[str, Any] | None, checkpoint: Path
) -> tuple[XVectorTdnn, SpeechBrainFbankConfig, str, dict[str, Any]]:
    """The Xvector as an XVectorTdnn with its weights loaded, its features, its class, its args."""
    peer = _xvector_shapes(state, checkpoint)
    pooled = peer.pop("_pooled")
    dilations, slope = list(XVECTOR_DILATIONS), LEAKY_RELU_SLOPE
    if hyper is not None:
        config = hyper["__path__"]
        args = _section(hyper, "embedding_model", "Xvector.Xvector")
        if args is None:
            raise ConfigError(f"{config}: no embedding_model entry")
        declared = {  # Xvector's defaults where the file is silent
            "in_channels": args.get("in_channels", 40),
            "tdnn_blocks": args.get("tdnn_blocks", 5),
            "tdnn_channels": args.get("tdnn_channels", [512, 512, 512, 512, 1500]),
            "tdnn_kernel_sizes": args.get("tdnn_kernel_sizes", XVECTOR_KERNEL_SIZES),
            "lin_neurons": args.get("lin_neurons", 512),
        }
        disagree = [
            f"{k}: {declared[k]!r} in {config.name}, {peer[k]!r} in the weights"
            for k in declared
            if declared[k] != peer[k]
        ]
        if disagree:
            raise ConfigError(f"{config} does not describe {checkpoint}: " + "; ".join(disagree))
        dilations = args.get("tdnn_dilations", dilations)
        if "activation" in args:
            slope = _activation_slope(args["activation"], config)
        features = _features_from_hyperparams(hyper, config, peer["in_channels"])
    else:
        features = SpeechBrainFbankConfig(num_mel_bins=peer["in_channels"])
    peer_args = {**peer, "tdnn_dilations": dilations, "activation_negative_slope": slope}

    channels = peer["tdnn_channels"]
    problems = []
    contexts = list(zip(peer["tdnn_kernel_sizes"], dilations))
    if contexts != [list(c) for c in FRAME_CONTEXTS] and contexts != list(FRAME_CONTEXTS):
        problems.append(
            f"kernel sizes {peer['tdnn_kernel_sizes']} and dilations {dilations} (speakerprint's "
            f"x-vector has {XVECTOR_KERNEL_SIZES} and {XVECTOR_DILATIONS})"
        )
    elif len(set(channels[:-1])) != 1:
        problems.append(f"channels {channels} (the first four must be equal)")
    if pooled != 2 * channels[-1]:
        problems.append(f"a Linear over {pooled} inputs, not mean + std of {channels[-1]}")
    if problems:
        raise BundleError(f"{checkpoint}: unsupported Xvector layout: " + "; ".join(problems))
    encoder = XVectorTdnn(
        feat_dim=peer["in_channels"],
        channels=channels[0],
        stats_channels=channels[-1],
        embed_dim=peer["lin_neurons"],
        negative_slope=slope,
        padding_mode="reflect",
        pooling_std="unbiased",
    )
    encoder.load_state_dict(_map_xvector_state(state, encoder, checkpoint), strict=True)
    return encoder, features, XVECTOR_CLASS, peer_args


def _xvector_peer_key(key: str, num_blocks: int) -> str:
    """speakerprint XVectorTdnn key -> SpeechBrain Xvector key."""
    if m := re.fullmatch(r"frame_layers\.(\d+)\.(conv|norm)\.(\w+)", key):
        layer, part, param = int(m.group(1)), m.group(2), m.group(3)
        if part == "conv":
            return f"blocks.{3 * layer}.conv.{param}"
        return f"blocks.{3 * layer + 2}.norm.{param}"
    if m := re.fullmatch(r"embedding\.(\w+)", key):
        return f"blocks.{3 * num_blocks + 1}.w.{m.group(1)}"
    raise AssertionError(f"no SpeechBrain key for {key}")  # a model change this file missed


def _map_xvector_state(
    state: dict[str, torch.Tensor], encoder: XVectorTdnn, path: Path
) -> dict[str, torch.Tensor]:
    """SpeechBrain's Xvector tensors under ``encoder``'s names; every key checked."""
    ours = encoder.state_dict()
    plan = {key: _xvector_peer_key(key, len(encoder.frame_layers)) for key in ours}
    expected = {sb: ours[key].shape for key, sb in plan.items()}
    _check_keys(state, expected, path, "SpeechBrain's Xvector")
    mapped = {}
    for key, sb in plan.items():
        if sb not in state:  # num_batches_tracked, absent from old checkpoints
            mapped[key] = ours[key]
        else:
            value = state[sb]
            mapped[key] = (value.float() if value.is_floating_point() else value).contiguous()
    return mapped


def _check_keys(
    state: dict[str, torch.Tensor], expected: dict[str, Any], path: Path, what: str
) -> None:
    """A BundleError naming every missing, unexpected and misshapen key of ``state``."""
    missing = sorted(
        k for k in expected if k not in state and not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
        for k in expected
        if k in state and state[k].shape != expected[k]
    )
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:8]}" + (" ..." if len(unexpected) > 8 else ""))
    if wrong:
        parts.append(f"wrong shapes: {'; '.join(wrong[:8])}")
    raise BundleError(
        f"{path}: does not match {what} with the widths its tensors imply: " + "; ".join(parts)
    )


# --- mean_var_norm_emb.ckpt --------------------------------------------------------------------


def _embedding_norm(folder: Path, embed_dim: int) -> dict[str, Any] | None:
    """What ``mean_var_norm_emb.ckpt`` beside the checkpoint holds (checked), or None if absent.

    It is recorded, not applied: ``EncoderClassifier.encode_batch`` uses it only with
    ``normalize=True``, and the bundle gives its default embedding.
    """
    path = folder / EMBEDDING_NORM_FILE
    if not path.is_file():
        return None
    try:
        stats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from None
    means = stats.get("glob_mean") if isinstance(stats, dict) else None
    stds = stats.get("glob_std") if isinstance(stats, dict) else None
    for name, value in [("glob_mean", means), ("glob_std", stds)]:
        if not isinstance(value, torch.Tensor) or value.numel() != embed_dim:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise BundleError(
                f"{path}: {name} should be a tensor of the embedding's {embed_dim} values, "
                f"found {found} (not SpeechBrain's InputNormalization state for this model?)"
            )
    return {
        "file": EMBEDDING_NORM_FILE,
        "sha256": sha256_file(path),
        "count": int(stats.get("count", 0)),
        "applied": False,
        "why": (
            "EncoderClassifier.encode_batch subtracts these global statistics only with "
            "normalize=True; the bundle gives its default (normalize=False) embedding"
        ),
    }
