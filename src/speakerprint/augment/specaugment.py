"""SpecAugment (Park et al. 2019) without time warping: time and frequency masks on features.

Masks lie inside each utterance's valid frames: a time mask never starts or ends in the
padding, and a frequency mask covers only the valid frames, so padded frames keep the exact
values the feature module gave them. Masked entries are set to 0, which after the utterance
mean normalisation of :class:`~speakerprint.features.Fbank` is the utterance's mean.

>>> feats = torch.randn(4, 200, 80)
>>> masked = SpecAugment(prob=1.0)(feats, torch.tensor([200, 150, 100, 50]), None)
>>> masked.shape
torch.Size([4, 200, 80])
"""

from __future__ import annotations

import torch
from torch import Tensor

from speakerprint.augment import _random as rnd

__all__ = ["SpecAugment", "spec_masks"]


def spec_masks(
    frame_lengths: Tensor,
    num_frames: int,
    num_bins: int,
    *,
    time_masks: int,
    time_mask_max_frames: int,
    freq_masks: int,
    freq_mask_max_bins: int,
    generator: torch.Generator | None,
) -> Tensor:
    """``(B, T, F)`` bool on ``frame_lengths``' device, true where a mask covers.

    Each of the ``time_masks`` masks of row ``b`` is ``w ~ U{0..time_mask_max_frames}`` frames
    (at most ``frame_lengths[b]``) starting uniformly in ``[0, frame_lengths[b] - w]``; each
    frequency mask is ``w ~ U{0..freq_mask_max_bins}`` bins (at most ``F``) starting uniformly in
    ``[0, F - w]``, over the valid frames only. The uniforms are drawn on the CPU and turned into
    positions on the device, so the frame lengths never travel back to the host.
    """
    batch = frame_lengths.shape[0]
    device = frame_lengths.device
    lengths = frame_lengths.long()

    def bands(count: int, max_width: int, extent: Tensor, size: int) -> Tensor:
        # (B, count) widths and starts -> (B, size) union of the bands
        if count == 0:
            return torch.zeros(batch, size, dtype=torch.bool, device=device)
        u_width = rnd.uniform((batch, count), generator).to(device)
        u_start = rnd.uniform((batch, count), generator).to(device)
        extent = extent[:, None].expand(batch, count)
        width = torch.minimum((u_width * (max_width + 1)).long().clamp(max=max_width), extent)
        start = torch.minimum((u_start * (extent - width + 1)).long(), extent - width)
        positions = torch.arange(size, device=device)[None, None, :]
        inside = (positions >= start[..., None]) & (positions < (start + width)[..., None])
        return inside.any(dim=1)

    time = bands(time_masks, time_mask_max_frames, lengths, num_frames)  # (B, T)
    all_bins = torch.full((batch,), num_bins, device=device)
    freq = bands(freq_masks, freq_mask_max_bins, all_bins, num_bins)  # (B, F)
    valid = rnd.valid_mask(lengths, num_frames)  # (B, T)
    return time[:, :, None] | (valid[:, :, None] & freq[:, None, :])


class SpecAugment:
    """Masks the features of a random subset of a batch (``prob`` per utterance).

    ECAPA-TDNN's setting is the default: one time mask of 0-5 frames, one frequency mask of
    0-10 bins.
    """

    def __init__(
        self,
        prob: float,
        *,
        time_masks: int = 1,
        time_mask_max_frames: int = 5,
        freq_masks: int = 1,
        freq_mask_max_bins: int = 10,
    ) -> None:
        self.prob = prob
        self.time_masks = time_masks
        self.time_mask_max_frames = time_mask_max_frames
        self.freq_masks = freq_masks
        self.freq_mask_max_bins = freq_mask_max_bins

    def __call__(
        self, feats: Tensor, frame_lengths: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """``(B, T, F)`` features and ``(B,)`` valid frames in, masked ``(B, T, F)`` out."""
        batch, num_frames, num_bins = feats.shape
        frame_lengths = frame_lengths.to(feats.device)
        chosen = rnd.bernoulli(batch, self.prob, generator)
        if not bool(chosen.any()):
            return feats
        masks = spec_masks(
            frame_lengths,
            num_frames,
            num_bins,
            time_masks=self.time_masks,
            time_mask_max_frames=self.time_mask_max_frames,
            freq_masks=self.freq_masks,
            freq_mask_max_bins=self.freq_mask_max_bins,
            generator=generator,
        )
        masks &= chosen.to(feats.device)[:, None, None]
        return feats.masked_fill(masks, 0.0)
