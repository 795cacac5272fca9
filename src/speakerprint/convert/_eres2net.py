"""3D-Speaker's ERes2Net and ERes2NetV2 state dicts onto speakerprint's ``eres2net`` encoder.

Used by the ``speakerlab`` source (:mod:`speakerprint.convert.speakerlab`), which reads the
ModelScope folder (``configuration.json`` and the checkpoint, a bare state dict of the embedding
model), owns the front end and writes the bundle. This module only recognises the two layouts by
their tensor names and maps the weights:

================================ ========================================= =====================
3D-Speaker class (infer_sv.py)   tensors that tell it                      speakerprint encoder
================================ ========================================= =====================
``ERes2Net`` (base, large)       ``layer1_downsample``, ``fuse_mode12``    ``global_fusion_from=1``
``ERes2Net_huge.ERes2Net``       the same, blocks with expansion 4         ``global_fusion_from=1``
``ERes2NetV2`` (and w24s4ep4)    ``layer3_ds``, ``fuse34``                 ``global_fusion_from=3``
================================ ========================================= =====================

Every width (``m_channels``, ``baseWidth``, ``scale``, ``expansion``, blocks per stage, the embedding
size) is read from the tensor shapes, so any width converts; the values that ModelScope's
``model_config`` states (``channels``, ``baseWidth``, ``scale``, ``expansion``, ``embed_dim``,
``fbank_dim``) are checked against them. Refused by name: the second embedding layer
(``two_emb_layer``, tensor ``seg_2``) and poolings other than TSTP (mean and std; a ``seg_1`` input
that is not twice the last stage's channels times the pooled frequency bins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from speakerprint.convert._checkpoint import map_prefixed
from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.models.base import EncoderModule
from speakerprint.models.registry import create_model

__all__ = ["PEER_MODEL", "build", "matches"]

PEER_MODEL = "speakerlab.models.eres2net ERes2Net / ERes2NetV2"

_STAGES = 4
# 3D-Speaker hard-codes 80 mel bins in its ModelScope pipelines.
_DEFAULT_FEAT_DIM = 80
_V1_KEYS = ("layer1_downsample.weight", "fuse_mode12.local_att.0.weight")
_V2_KEYS = ("layer3_ds.weight", "fuse34.local_att.0.weight")
_COMMON_KEYS = ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "seg_1.weight")
# AFF's nn.Sequential: conv 0, BN 1, SiLU 2, conv 3, BN 4.
_AFF = [("local_att.0.", "hidden."), ("local_att.1.", "hidden_norm."), ("local_att.3.", "out."),
        ("local_att.4.", "out_norm.")]  # fmt: skip


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` is the state dict of a 3D-Speaker ERes2Net or ERes2NetV2."""
    return all(k in state for k in _COMMON_KEYS) and (
        all(k in state for k in _V1_KEYS) or all(k in state for k in _V2_KEYS)
    )


def build(
    path: Path, state: dict[str, torch.Tensor], model_config: dict[str, Any]
) -> tuple[EncoderModule, dict[str, torch.Tensor], str]:
    """The encoder for ``state``, loaded, with its state dict in speakerprint's names.

    Args:
        path: the checkpoint, for messages.
        state: its tensors (3D-Speaker names, no ``module.`` prefix).
        model_config: ModelScope's ``configuration.json`` ``model.model_config`` (may be empty).

    Returns:
        ``(encoder, state_dict, peer_model)``: the eval-mode encoder, the tensors loaded into it
        (speakerprint names) and 3D-Speaker's class, ``"ERes2Net"``, ``"ERes2Net_huge"`` or
        ``"ERes2NetV2"``.

    Raises:
        BundleError: not an ERes2Net, an unsupported option, a ``model_config`` value the tensors
            contradict, or a tensor that is missing, unexpected or misshapen (named).
    """
    if not matches(state):
        raise BundleError(
            f"{path}: not a 3D-Speaker ERes2Net/ERes2NetV2 state dict (expected tensors "
            f"{list(_COMMON_KEYS)} and either {list(_V1_KEYS)} or {list(_V2_KEYS)})"
        )
    v2 = all(k in state for k in _V2_KEYS)
    if "seg_2.weight" in state:
        raise BundleError(
            f"{path}: ERes2Net with two_emb_layer (tensor 'seg_2.weight') is not supported"
        )

    base_channels = _shape(path, state, "conv1.weight", 4)[0]
    blocks = []
    for stage in range(1, _STAGES + 1):
        count = 0
        while f"layer{stage}.{count}.conv1.weight" in state:
            count += 1
        if count == 0:
            raise BundleError(f"{path}: missing tensor 'layer{stage}.0.conv1.weight'")
        blocks.append(count)
    expansion, remainder = divmod(_shape(path, state, "layer1.0.conv3.weight", 4)[0], base_channels)
    scale = 0
    while f"layer1.0.convs.{scale}.weight" in state:
        scale += 1
    if remainder or scale == 0:
        raise BundleError(
            f"{path}: 'layer1.0.conv3.weight' or 'layer1.0.convs.*' do not fit ERes2Net"
        )
    widths = [_shape(path, state, f"layer{stage}.0.convs.0.weight", 4)[0] for stage in range(1, 5)]
    base_width = _base_width(path, base_channels, widths)

    embed_dim, stats_dim = _shape(path, state, "seg_1.weight", 2)
    channels_out = expansion * base_channels * 2 ** (_STAGES - 1)
    freq, remainder = divmod(stats_dim, 2 * channels_out)
    if remainder:
        raise BundleError(
            f"{path}: 'seg_1.weight' takes {stats_dim} inputs, not mean and std of "
            f"{channels_out} channels (only the TSTP pooling is supported)"
        )
    feat_dim = model_config.get("fbank_dim", model_config.get("feat_dim", _DEFAULT_FEAT_DIM))
    if isinstance(feat_dim, bool) or not isinstance(feat_dim, int) or -(-feat_dim // 8) != freq:
        raise BundleError(
            f"{path}: 'seg_1.weight' pools {freq} frequency bins after three halvings, which does "
            f"not fit {feat_dim!r} mel bins"
        )
    found = {"channels": base_channels, "m_channels": base_channels, "embed_dim": embed_dim,
             "embedding_size": embed_dim, "expansion": expansion, "scale": scale}  # fmt: skip
    for name, value in found.items():
        if name in model_config and model_config[name] != value:
            raise BundleError(
                f"{path}: model_config {name} is {model_config[name]!r} but the tensors give {value}"
            )
    if "baseWidth" in model_config and _widths(base_channels, model_config["baseWidth"]) != widths:
        raise BundleError(
            f"{path}: model_config baseWidth {model_config['baseWidth']!r} does not give the "
            f"tensors' group widths {widths}"
        )

    try:
        encoder = create_model(
            "eres2net",
            feat_dim=feat_dim,
            base_channels=base_channels,
            blocks=blocks,
            embed_dim=embed_dim,
            base_width=base_width,
            scale=scale,
            expansion=expansion,
            global_fusion_from=_STAGES - 1 if v2 else 1,
        )
    except SpeakerprintError as e:
        raise BundleError(f"{path}: the checkpoint's sizes give no valid eres2net: {e}") from None
    converted = map_prefixed(path, encoder, state, _prefixes(blocks, scale, v2))
    peer_model = "ERes2NetV2" if v2 else "ERes2Net_huge" if expansion == 4 else "ERes2Net"
    return encoder, converted, peer_model


def _shape(path: Path, state: dict[str, torch.Tensor], key: str, dims: int) -> torch.Size:
    if key not in state:
        raise BundleError(f"{path}: missing tensor {key!r}")
    shape = state[key].shape
    if len(shape) != dims:
        raise BundleError(f"{path}: tensor {key!r} has shape {tuple(shape)}, expected {dims} dims")
    return shape


def _widths(base_channels: int, base_width: object) -> list[int] | None:
    if isinstance(base_width, bool) or not isinstance(base_width, int):
        return None
    return [base_channels * 2**i * base_width // 64 for i in range(_STAGES)]


def _base_width(path: Path, base_channels: int, widths: list[int]) -> int:
    """The smallest ``baseWidth`` whose ``floor(planes * baseWidth / 64)`` gives every stage's
    group width (any such value builds the same tensors)."""
    for base_width in range(1, 64 * (widths[0] + 1) // base_channels + 1):
        if _widths(base_channels, base_width) == widths:
            return base_width
    raise BundleError(
        f"{path}: group widths {widths} ('layer*.0.convs.0.weight') fit no baseWidth for "
        f"m_channels {base_channels}"
    )


def _prefixes(blocks: list[int], scale: int, v2: bool) -> list[tuple[str, str]]:
    """(3D-Speaker prefix, speakerprint prefix) pairs covering every tensor of the encoder."""
    prefixes = [("conv1.", "stem.conv."), ("bn1.", "stem.norm.")]
    for stage, num_blocks in enumerate(blocks):
        for block in range(num_blocks):
            peer, ours = f"layer{stage + 1}.{block}.", f"stages.{stage}.{block}."
            prefixes += [
                (peer + "conv1.", ours + "conv_in.conv."),
                (peer + "bn1.", ours + "conv_in.norm."),
                (peer + "conv3.", ours + "conv_out.conv."),
                (peer + "bn3.", ours + "conv_out.norm."),
                (peer + "shortcut.0.", ours + "shortcut.conv."),
                (peer + "shortcut.1.", ours + "shortcut.norm."),
            ]
            for group in range(scale):
                prefixes += [
                    (peer + f"convs.{group}.", ours + f"groups.{group}.conv.conv."),
                    (peer + f"bns.{group}.", ours + f"groups.{group}.conv.norm."),
                ]
                if group > 0:
                    fuse_peer = peer + f"fuse_models.{group - 1}."
                    fuse_ours = ours + f"groups.{group}.fuse."
                    prefixes += [(fuse_peer + p, fuse_ours + o) for p, o in _AFF]
    if v2:
        fusions = [("layer3_ds.", "fuse34.")]
    else:
        fusions = [("layer1_downsample.", "fuse_mode12."), ("layer2_downsample.", "fuse_mode123."),
                   ("layer3_downsample.", "fuse_mode1234.")]  # fmt: skip
    for k, (downsample, fuse) in enumerate(fusions):
        prefixes.append((downsample, f"fusions.{k}.downsample."))
        prefixes += [(fuse + p, f"fusions.{k}.fuse.{o}") for p, o in _AFF]
    prefixes.append(("seg_1.", "embedding."))
    return prefixes
