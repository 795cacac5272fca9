"""3D-Speaker's CAM++ (``speakerlab.models.campplus.DTDNN.CAMPPlus``) state dicts, in our names.

One family of :mod:`speakerprint.convert.speakerlab`, which reads the files, the front end and the
errors common to 3D-Speaker's models; this module answers whether a state dict is a CAM++ one and
maps it onto :class:`~speakerprint.models.campplus.CamPlusPlus`.

Widths are read from the tensors (the head's channels and blocks, the TDNN's channels, the growth
rate, the bottleneck, the CAM kernel and reduction, the number of dense blocks and of their layers,
the embedding size; ``feat_dim`` from the TDNN's input), so a checkpoint of any width converts.
Two things are not in the tensors and are 3D-Speaker's fixed choices: the dilations of the dense
blocks (1, then 2) and the 100-frame CAM segments. ``model_config``'s ``fbank_dim`` and
``emb_size`` (ModelScope's configuration.json) are checked against the tensors.

=============================================== ==============================================
3D-Speaker                                      speakerprint
=============================================== ==============================================
``head.conv1`` / ``bn1``                        ``head.stem.conv`` / ``.norm``
``head.layer{s}.{b}.conv1``, ``bn1``, ...       ``head.stages.{s-1}.{b}.conv1.conv``, ``.norm``
``head.layer{s}.{b}.shortcut.0`` / ``.1``       ``head.stages.{s-1}.{b}.shortcut.conv`` / ``.norm``
``head.conv2`` / ``bn2``                        ``head.out.conv`` / ``.norm``
``xvector.tdnn.linear``                         ``tdnn``
``xvector.tdnn.nonlinear.batchnorm``            ``tdnn_norm``
``xvector.block{i}.tdnnd{j}.nonlinear1``,       ``blocks.{i-1}.layers.{j-1}.norm_in``,
``linear1``, ``nonlinear2``, ``cam_layer.*``    ``bottleneck``, ``norm_mid``, ``cam.*``
``xvector.transit{i}``                          ``blocks.{i-1}.transit``
``xvector.out_nonlinear.batchnorm``             ``out_norm``
``xvector.dense.linear`` (a k=1 Conv1d)         ``embedding`` (a Linear: the last dim dropped)
``xvector.dense.nonlinear.batchnorm``           ``embedding_norm`` (no affine in either)
=============================================== ==============================================
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

PEER_MODEL = "speakerlab.models.campplus.DTDNN.CAMPPlus"
_TDNN = "xvector.tdnn.linear.weight"
_FIRST_CAM = "xvector.block1.tdnnd1.cam_layer.linear_local.weight"
# 3D-Speaker's FCM halves the mel axis three times; its TDNN takes head channels x F / 8.
_HEAD_FREQ_REDUCTION = 8


def matches(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` has CAM++'s landmarks: the FCM head, the TDNN, a CAM layer."""
    return "head.conv1.weight" in state and _TDNN in state and _FIRST_CAM in state


def build(
    path: Path, state: dict[str, torch.Tensor], model_config: dict[str, Any]
) -> tuple[EncoderModule, dict[str, torch.Tensor], str]:
    """The CAM++ encoder that ``state`` fits, ``state`` in its key names, and the peer model.

    Args:
        path: the checkpoint, for messages.
        state: 3D-Speaker's tensors by name.
        model_config: configuration.json's ``model.model_config`` (may be empty).

    Raises:
        BundleError: naming ``path`` and the tensor: a landmark missing or misshapen, sizes that
            disagree with ``model_config``, tensors missing, left over or of the wrong shape.
    """
    head_channels = _anchor(path, state, "head.conv1.weight", 4)[0]
    head_blocks = []
    while f"head.layer{len(head_blocks) + 1}.0.conv1.weight" in state:
        stage = len(head_blocks) + 1
        head_blocks.append(_count(state, f"head.layer{stage}.{{}}.conv1.weight"))
    tdnn_channels, tdnn_inputs, _ = _anchor(path, state, _TDNN, 3)
    if tdnn_inputs % head_channels != 0:
        raise BundleError(
            f"{path}: tensor {_TDNN!r} takes {tdnn_inputs} channels, not a multiple of the "
            f"head's {head_channels}"
        )
    feat_dim = tdnn_inputs // head_channels * _HEAD_FREQ_REDUCTION
    block_layers = []
    while f"xvector.block{len(block_layers) + 1}.tdnnd1.linear1.weight" in state:
        block = len(block_layers) + 1
        block_layers.append(_count(state, f"xvector.block{block}.tdnnd{{}}.linear1.weight", 1))
    growth_rate, bottleneck, kernel_size = _anchor(path, state, _FIRST_CAM, 3)
    squeeze = _anchor(path, state, "xvector.block1.tdnnd1.cam_layer.linear1.weight", 3)[0]
    embed_dim = _anchor(path, state, "xvector.dense.linear.weight", 3)[0]
    if bottleneck % growth_rate != 0 or bottleneck % squeeze != 0:
        raise BundleError(
            f"{path}: the CAM layers' widths (bottleneck {bottleneck}, growth {growth_rate}, "
            f"context {squeeze}) are not those of a 3D-Speaker CAMPPlus"
        )
    _check(path, model_config, "fbank_dim", feat_dim, _TDNN)
    _check(path, model_config, "emb_size", embed_dim, "xvector.dense.linear.weight")
    try:
        encoder = create_model(
            "campplus",
            feat_dim=feat_dim,
            embed_dim=embed_dim,
            head_channels=head_channels,
            head_blocks=head_blocks,
            tdnn_channels=tdnn_channels,
            growth_rate=growth_rate,
            bottleneck_scale=bottleneck // growth_rate,
            block_layers=block_layers,
            kernel_size=kernel_size,
            cam_reduction=bottleneck // squeeze,
        )
    except SpeakerprintError as e:
        raise BundleError(f"{path}: the checkpoint's sizes give no valid CAM++: {e}") from None
    renamed = map_prefixed(
        path, encoder, state, _prefixes(head_blocks, block_layers), _conv1d_as_linear
    )
    return encoder, renamed, PEER_MODEL


def _prefixes(head_blocks: list[int], block_layers: list[int]) -> list[tuple[str, str]]:
    """(3D-Speaker prefix, speakerprint prefix) for every layer."""
    prefixes = [("head.conv1.", "head.stem.conv."), ("head.bn1.", "head.stem.norm.")]
    for stage, num_blocks in enumerate(head_blocks):
        for block in range(num_blocks):
            peer, ours = f"head.layer{stage + 1}.{block}.", f"head.stages.{stage}.{block}."
            prefixes += [
                (peer + "conv1.", ours + "conv1.conv."),
                (peer + "bn1.", ours + "conv1.norm."),
                (peer + "conv2.", ours + "conv2.conv."),
                (peer + "bn2.", ours + "conv2.norm."),
                (peer + "shortcut.0.", ours + "shortcut.conv."),
                (peer + "shortcut.1.", ours + "shortcut.norm."),
            ]
    prefixes += [
        ("head.conv2.", "head.out.conv."),
        ("head.bn2.", "head.out.norm."),
        ("xvector.tdnn.linear.", "tdnn."),
        ("xvector.tdnn.nonlinear.batchnorm.", "tdnn_norm."),
    ]
    for block, num_layers in enumerate(block_layers):
        for layer in range(num_layers):
            peer = f"xvector.block{block + 1}.tdnnd{layer + 1}."
            ours = f"blocks.{block}.layers.{layer}."
            prefixes += [
                (peer + "nonlinear1.batchnorm.", ours + "norm_in."),
                (peer + "linear1.", ours + "bottleneck."),
                (peer + "nonlinear2.batchnorm.", ours + "norm_mid."),
                (peer + "cam_layer.linear_local.", ours + "cam.local."),
                (peer + "cam_layer.linear1.", ours + "cam.context_squeeze."),
                (peer + "cam_layer.linear2.", ours + "cam.context_excite."),
            ]
        prefixes += [
            (f"xvector.transit{block + 1}.nonlinear.batchnorm.", f"blocks.{block}.transit.norm."),
            (f"xvector.transit{block + 1}.linear.", f"blocks.{block}.transit.conv."),
        ]
    prefixes += [
        ("xvector.out_nonlinear.batchnorm.", "out_norm."),
        ("xvector.dense.linear.", "embedding."),
        ("xvector.dense.nonlinear.batchnorm.", "embedding_norm."),
    ]
    return prefixes


def _conv1d_as_linear(ours: str, tensor: torch.Tensor) -> torch.Tensor:
    """3D-Speaker's k=1 Conv1d on the pooled vector is our Linear: drop its kernel axis."""
    if ours == "embedding.weight" and tensor.dim() == 3 and tensor.shape[-1] == 1:
        return tensor[..., 0]
    return tensor


def _anchor(path: Path, state: dict[str, torch.Tensor], key: str, dims: int) -> torch.Size:
    if key not in state:
        raise BundleError(f"{path}: missing tensor {key!r}")
    shape = state[key].shape
    if len(shape) != dims:
        raise BundleError(f"{path}: tensor {key!r} has shape {tuple(shape)}, expected {dims} dims")
    return shape


def _count(state: dict[str, torch.Tensor], pattern: str, start: int = 0) -> int:
    """How many of ``pattern.format(start), pattern.format(start + 1), ...`` are in ``state``."""
    count = 0
    while pattern.format(start + count) in state:
        count += 1
    return count


def _check(path: Path, model_config: dict[str, Any], name: str, found: int, key: str) -> None:
    if name in model_config and model_config[name] != found:
        raise BundleError(
            f"{path}: model_config.{name} is {model_config[name]!r} but tensor {key!r} gives "
            f"{found}"
        )
