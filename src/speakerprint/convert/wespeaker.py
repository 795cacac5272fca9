"""WeSpeaker's ECAPA-TDNN and ResNet checkpoints (``avg_model.pt`` + ``config.yaml``) to bundles.

WeSpeaker's pretrained VoxCeleb models ship as a folder with ``avg_model.pt``, a ``torch.save``'d
state dict of the speaker model and (under ``projection.*``) its AAM-softmax head, and
``config.yaml``, the training config: ``model`` names a factory of ``wespeaker/models`` and
``model_args`` its arguments, ``dataset_args.fbank_args`` the features. The head is dropped (its
keys are listed in the bundle's ``info``); everything else must land on a speakerprint tensor of
the same shape, or the conversion fails naming the key.

======================================= ============================================================
WeSpeaker ``model``                     speakerprint encoder
======================================= ============================================================
``ECAPA_TDNN_GLOB_c512``, ``_c1024``    ``ecapa_tdnn`` with ``global_context=True``, ``mfa_norm``
                                        and ``attention_norm`` off, ``embedding_norm = emb_bn``
``ECAPA_TDNN_c512``, ``_c1024``         the same with ``global_context=False``
``ECAPA_TDNN`` (the class itself)       ``global_context = model_args.global_context_att``
``ResNet18``, ``ResNet34``              ``resnet`` with ``unbiased_std=True`` (WeSpeaker's TSTP)
``ResNet152``, ``ResNet221``,           the same with ``block="bottleneck"`` (1x1, strided 3x3,
``ResNet293``                           1x1 with 4x expansion)
======================================= ============================================================

Widths (channels, the aggregation and attention sizes, the SE bottleneck, the embedding size) are
read from the tensors, so a checkpoint of any width converts; ``feat_dim`` and ``embed_dim`` in
``model_args`` are checked against them. Only the ``ASTP`` pooling for ECAPA, ``TSTP`` for ResNet,
and ``two_emb_layer: false`` are supported (those of WeSpeaker's VoxCeleb recipes); anything else
is refused by name.

Features: WeSpeaker computes ``torchaudio.compliance.kaldi.fbank`` on int16-scale audio with a
Hamming window, ``use_energy=False``, dither 0 at test time and the torchaudio defaults otherwise
(pre-emphasis 0.97, DC removal, mel filters from 20 Hz to Nyquist, ``snip_edges``), then subtracts
the utterance mean (no variance normalisation). That is speakerprint's Kaldi :class:`Fbank` with
``window="hamming"`` and ``mean_norm=True``.

One difference remains in ECAPA: WeSpeaker's attentive pooling appends the *unbiased* std of the
frames as global context, speakerprint's ECAPA the population one. On utterances of a few seconds
(hundreds of frames) the two differ by a factor ``sqrt(T / (T - 1))`` and the embeddings by a
cosine distance under 1e-6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from speakerprint.convert._checkpoint import load_prefixed, read_state_dict
from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.features import FbankConfig
from speakerprint.models.base import EncoderModule
from speakerprint.models.bundle import save_bundle
from speakerprint.models.registry import create_model
from speakerprint.utils.hashing import sha256_file

__all__ = ["convert", "load_weights", "resnet_encoder"]

# WeSpeaker ResNet name -> (block type, blocks per stage), from wespeaker/models/resnet.py.
_RESNET_BLOCKS = {
    "ResNet18": ("basic", (2, 2, 2, 2)),
    "ResNet34": ("basic", (3, 4, 6, 3)),
    "ResNet152": ("bottleneck", (3, 8, 36, 3)),
    "ResNet221": ("bottleneck", (6, 16, 48, 3)),
    "ResNet293": ("bottleneck", (10, 20, 64, 3)),
}
# Per block type, WeSpeaker's convolution and BN names -> ours (the shortcut is common to both).
_RESNET_BLOCK_LAYERS = {"basic": ("1", "2"), "bottleneck": ("1", "2", "3")}
_ECAPA_GLOBAL_CONTEXT = {
    "ECAPA_TDNN_c512": False,
    "ECAPA_TDNN_c1024": False,
    "ECAPA_TDNN_GLOB_c512": True,
    "ECAPA_TDNN_GLOB_c1024": True,
}
# WeSpeaker's ECAPA-TDNN: three SE-Res2Blocks, Res2Net scale 8 (7 convolved groups).
_ECAPA_BLOCKS = 3
_ECAPA_RES2_CONVS = 7
_HEAD_PREFIX = "projection."


LAYOUT = "a folder with avg_model.pt and config.yaml, as WeSpeaker's model downloads"


def find(path: Path) -> tuple[Path, Path | None] | None:
    """``(checkpoint, config)`` when ``path`` is in WeSpeaker's layout: a ``.pt`` file with
    ``config.yaml`` beside it (a recipe's exp folder, ``avg_model.pt``) or a YAML of the same stem
    (the hub's ``voxceleb_resnet221_LM.pt`` + ``.yaml``), or a folder holding ``avg_model.pt`` (or a
    single ``.pt``) and its config."""
    if path.is_dir():
        candidates = [path / "avg_model.pt"] if (path / "avg_model.pt").is_file() else []
        candidates = candidates or sorted(path.glob("*.pt"))
        if len(candidates) != 1:
            return None
        path = candidates[0]
    if path.suffix != ".pt" or not path.is_file():
        return None
    for config in (path.parent / "config.yaml", path.with_suffix(".yaml")):
        if config.is_file():
            return path, config
    return None


def convert(checkpoint: Path, out: Path, *, config: Path | None = None) -> Path:
    """Write a speakerprint bundle at ``out`` from WeSpeaker's ``avg_model.pt`` and its config.

    Args:
        checkpoint: the state dict WeSpeaker saved (``avg_model.pt`` or ``model_N.pt``).
        out: the bundle folder to write.
        config: WeSpeaker's ``config.yaml``; by default the one beside ``checkpoint``.

    Raises:
        BundleError: an unreadable file, an unsupported model, or a tensor that is missing,
            unexpected or of the wrong shape (named).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    config_path = Path(config) if config is not None else checkpoint.parent / "config.yaml"
    settings = _read_config(config_path)
    state = _read_state_dict(checkpoint)
    head = sorted(k for k in state if k.startswith(_HEAD_PREFIX))
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIX)}

    model_name = settings["model"]
    model_args = settings["model_args"]
    if model_name.startswith("ECAPA_TDNN"):
        encoder, prefixes = _ecapa(checkpoint, state, model_name, model_args)
    elif model_name in _RESNET_BLOCKS:
        encoder, prefixes = resnet_encoder(checkpoint, state, model_name, model_args)
    else:
        raise BundleError(
            f"{config_path}: WeSpeaker model {model_name!r} is not supported; supported: "
            f"{sorted([*_ECAPA_GLOBAL_CONTEXT, 'ECAPA_TDNN', *_RESNET_BLOCKS])}"
        )
    load_weights(checkpoint, encoder, state, prefixes)
    fbank_config = _fbank_config(config_path, settings, encoder.feat_dim)
    info = {
        "source": "wespeaker",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "config": config_path.name,
        "peer_model": model_name,
        "peer_model_args": model_args,
        "peer_features": "torchaudio.compliance.kaldi.fbank (hamming, int16 scale, dither 0) + CMN",
        "dropped_keys": head,
    }
    return save_bundle(out, encoder, fbank_config, info=info)


def _read_config(path: Path) -> dict[str, Any]:
    """WeSpeaker's config.yaml -> {"model": str, "model_args": dict, "dataset_args": dict}."""
    if not path.is_file():
        raise BundleError(
            f"WeSpeaker config {path} not found: pass the config.yaml that came with the "
            "checkpoint (--config)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not a readable YAML file: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise BundleError(f"{path}: not a WeSpeaker config (no 'model' name)")
    model_args = data.get("model_args") or {}
    dataset_args = data.get("dataset_args") or {}
    if not isinstance(model_args, dict) or not isinstance(dataset_args, dict):
        raise BundleError(f"{path}: 'model_args' and 'dataset_args' must be mappings")
    return {"model": data["model"], "model_args": model_args, "dataset_args": dataset_args}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a WeSpeaker checkpoint, without DDP's ``module.`` prefix."""
    return read_state_dict(path, f"WeSpeaker checkpoint {path}")


def _anchor(path: Path, state: dict[str, torch.Tensor], key: str, dims: int) -> torch.Size:
    if key not in state:
        raise BundleError(f"{path}: missing tensor {key!r}")
    shape = state[key].shape
    if len(shape) != dims:
        raise BundleError(f"{path}: tensor {key!r} has shape {tuple(shape)}, expected {dims} dims")
    return shape


def _check_arg(path: Path, model_args: dict[str, Any], name: str, found: int, key: str) -> None:
    if name in model_args and model_args[name] != found:
        raise BundleError(
            f"{path}: model_args.{name} is {model_args[name]!r} but tensor {key!r} has {found}"
        )


def _build(path: Path, family: str, **args: Any) -> EncoderModule:
    try:
        return create_model(family, **args)
    except SpeakerprintError as e:
        raise BundleError(f"{path}: the checkpoint's sizes give no valid {family}: {e}") from None


def _ecapa(
    path: Path, state: dict[str, torch.Tensor], name: str, model_args: dict[str, Any]
) -> tuple[EncoderModule, list[tuple[str, str]]]:
    if name == "ECAPA_TDNN":
        global_context = bool(model_args.get("global_context_att", False))
    elif name in _ECAPA_GLOBAL_CONTEXT:
        global_context = _ECAPA_GLOBAL_CONTEXT[name]
    else:
        raise BundleError(f"{path}: unknown WeSpeaker ECAPA-TDNN variant {name!r}")
    pooling = model_args.get("pooling_func", "ASTP")
    if pooling != "ASTP":
        raise BundleError(f"{path}: ECAPA-TDNN with pooling_func {pooling!r} is not supported")
    emb_bn = bool(model_args.get("emb_bn", False))

    channels, feat_dim, _ = _anchor(path, state, "layer1.conv.weight", 3)
    mfa_channels = _anchor(path, state, "conv.weight", 3)[0]
    attention_channels = _anchor(path, state, "pool.linear1.weight", 3)[0]
    se_channels = _anchor(path, state, "layer2.se_res2block.3.linear1.weight", 2)[0]
    embed_dim = _anchor(path, state, "linear.weight", 2)[0]
    _check_arg(path, model_args, "feat_dim", feat_dim, "layer1.conv.weight")
    _check_arg(path, model_args, "embed_dim", embed_dim, "linear.weight")
    _check_arg(path, model_args, "channels", channels, "layer1.conv.weight")
    encoder = _build(
        path,
        "ecapa_tdnn",
        feat_dim=feat_dim,
        channels=channels,
        mfa_channels=mfa_channels,
        embed_dim=embed_dim,
        res2_scale=_ECAPA_RES2_CONVS + 1,
        se_channels=se_channels,
        attention_channels=attention_channels,
        dilations=[2, 3, 4],
        global_context=global_context,
        mfa_norm=False,
        attention_norm=False,
        context_std_unbiased=True,
        embedding_norm=emb_bn,
        padding_mode="zeros",
    )
    prefixes = [("layer1.conv.", "stem.conv."), ("layer1.bn.", "stem.norm.")]
    for i in range(_ECAPA_BLOCKS):
        peer, ours = f"layer{i + 2}.se_res2block.", f"blocks.{i}."
        prefixes += [
            (peer + "0.conv.", ours + "conv_in.conv."),
            (peer + "0.bn.", ours + "conv_in.norm."),
            (peer + "2.conv.", ours + "conv_out.conv."),
            (peer + "2.bn.", ours + "conv_out.norm."),
            (peer + "3.linear1.", ours + "se.squeeze."),
            (peer + "3.linear2.", ours + "se.excite."),
        ]
        for j in range(_ECAPA_RES2_CONVS):
            prefixes += [
                (peer + f"1.convs.{j}.", ours + f"res2.convs.{j}.conv."),
                (peer + f"1.bns.{j}.", ours + f"res2.convs.{j}.norm."),
            ]
    prefixes += [
        ("conv.", "aggregate."),
        ("pool.linear1.", "pool.attention_hidden."),
        ("pool.linear2.", "pool.attention_out."),
        ("bn.", "pool_norm."),
        ("linear.", "embedding."),
        ("bn2.", "embedding_norm."),
    ]
    return encoder, prefixes


def resnet_encoder(
    path: Path, state: dict[str, torch.Tensor], name: str, model_args: dict[str, Any]
) -> tuple[EncoderModule, list[tuple[str, str]]]:
    """The ``resnet`` encoder for WeSpeaker's ``name`` (``ResNet34``...) with the checkpoint's
    widths, and the (WeSpeaker prefix, speakerprint prefix) pairs that map its tensors; also used
    for pyannote's packaging of the same models (``speakerprint.convert.pyannote``)."""
    pooling = model_args.get("pooling_func", "TSTP")
    if pooling != "TSTP":
        raise BundleError(f"{path}: {name} with pooling_func {pooling!r} is not supported")
    if model_args.get("two_emb_layer", False):
        raise BundleError(f"{path}: {name} with two_emb_layer: true is not supported")
    feat_dim = model_args.get("feat_dim")
    if isinstance(feat_dim, bool) or not isinstance(feat_dim, int):
        raise BundleError(f"{path}: model_args.feat_dim must be an int, got {feat_dim!r}")
    base_channels = _anchor(path, state, "conv1.weight", 4)[0]
    embed_dim = _anchor(path, state, "seg_1.weight", 2)[0]
    _check_arg(path, model_args, "embed_dim", embed_dim, "seg_1.weight")
    block_type, blocks = _RESNET_BLOCKS[name]
    encoder = _build(
        path,
        "resnet",
        feat_dim=feat_dim,
        base_channels=base_channels,
        blocks=list(blocks),
        embed_dim=embed_dim,
        unbiased_std=True,
        block=block_type,
    )
    return encoder, _resnet_prefixes(block_type, blocks)


def _resnet_prefixes(block_type: str, blocks: tuple[int, ...]) -> list[tuple[str, str]]:
    """(WeSpeaker prefix, speakerprint prefix) of every layer of a ``resnet`` encoder."""
    prefixes = [("conv1.", "stem.conv."), ("bn1.", "stem.norm.")]
    for stage, num_blocks in enumerate(blocks):
        for block in range(num_blocks):
            peer, ours = f"layer{stage + 1}.{block}.", f"stages.{stage}.{block}."
            for i in _RESNET_BLOCK_LAYERS[block_type]:
                prefixes += [
                    (peer + f"conv{i}.", ours + f"conv{i}.conv."),
                    (peer + f"bn{i}.", ours + f"conv{i}.norm."),
                ]
            prefixes += [
                (peer + "shortcut.0.", ours + "shortcut.conv."),
                (peer + "shortcut.1.", ours + "shortcut.norm."),
            ]
    prefixes.append(("seg_1.", "embedding."))
    return prefixes


def load_weights(
    path: Path,
    encoder: EncoderModule,
    state: dict[str, torch.Tensor],
    prefixes: list[tuple[str, str]],
) -> None:
    """Copy ``state`` (WeSpeaker names) into ``encoder`` strictly, naming every key that fails."""
    load_prefixed(path, encoder, state, prefixes)


def _fbank_config(path: Path, settings: dict[str, Any], feat_dim: int) -> FbankConfig:
    dataset_args = settings["dataset_args"]
    frontend = dataset_args.get("frontend", "fbank")
    if frontend != "fbank":
        raise BundleError(f"{path}: frontend {frontend!r} is not supported, only 'fbank'")
    fbank_args = dataset_args.get("fbank_args") or {}
    if not isinstance(fbank_args, dict):
        raise BundleError(f"{path}: dataset_args.fbank_args must be a mapping")
    num_mel_bins = fbank_args.get("num_mel_bins", 80)
    if num_mel_bins != feat_dim:
        raise BundleError(
            f"{path}: fbank_args.num_mel_bins is {num_mel_bins!r} but the model takes "
            f"{feat_dim} features per frame"
        )
    try:
        return FbankConfig(
            sample_rate=dataset_args.get("resample_rate", 16000),
            num_mel_bins=num_mel_bins,
            frame_length_ms=fbank_args.get("frame_length", 25),
            frame_shift_ms=fbank_args.get("frame_shift", 10),
            preemphasis=0.97,
            dither=0.0,  # WeSpeaker extracts embeddings without dither
            low_freq_hz=20.0,
            high_freq_hz=0.0,
            window="hamming",
            remove_dc_offset=True,
            mean_norm=True,
        )
    except SpeakerprintError as e:
        raise BundleError(f"{path}: bad feature settings: {e}") from None
