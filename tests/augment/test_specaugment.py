"""SpecAugment: masks inside valid frames only, widths within bounds, deterministic."""

from __future__ import annotations

import torch

from speakerprint.augment import AugmentConfig, SpecAugment, build_augmentation


def features_with_padding(lengths: list[int], num_frames: int = 120, num_bins: int = 40):
    """Features far from 0 on valid frames and 7.0 in the padding, so a 0 can only be a mask."""
    feats = torch.rand(len(lengths), num_frames, num_bins) + 1.0
    for b, n in enumerate(lengths):
        feats[b, n:] = 7.0
    return feats, torch.tensor(lengths)


def test_masks_lie_inside_valid_frames_and_respect_the_widths():
    lengths = [120, 80, 30, 3, 1]
    feats, frame_lengths = features_with_padding(lengths)
    augment = SpecAugment(
        1.0, time_masks=2, time_mask_max_frames=8, freq_masks=2, freq_mask_max_bins=6
    )
    for seed in range(20):
        out = augment(feats, frame_lengths, torch.Generator().manual_seed(seed))
        masked = out == 0
        assert torch.equal(out[~masked], feats[~masked])  # the rest is untouched
        for b, n in enumerate(lengths):
            assert torch.all(out[b, n:] == 7.0)  # padding never masked
            rows = masked[b, :n]
            whole_frames = rows.all(dim=1)  # time masks cover every bin of a frame
            whole_bins = rows.all(dim=0) if n > 0 else torch.zeros(40, dtype=torch.bool)
            assert int(whole_frames.sum()) <= 2 * 8
            assert int(whole_bins.sum()) <= 2 * 6 or bool(whole_frames.all())
            # every masked entry belongs to a masked frame or a masked bin
            assert torch.equal(rows, whole_frames[:, None] | whole_bins[None, :])


def test_masks_are_drawn_and_deterministic():
    feats, frame_lengths = features_with_padding([120] * 8)
    augment = SpecAugment(1.0, time_mask_max_frames=10, freq_mask_max_bins=10)
    a = augment(feats, frame_lengths, torch.Generator().manual_seed(1))
    b = augment(feats, frame_lengths, torch.Generator().manual_seed(1))
    c = augment(feats, frame_lengths, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int((a == 0).any(dim=2).any(dim=1).sum()) >= 6  # most rows got a mask


def test_probability_is_per_utterance():
    feats, frame_lengths = features_with_padding([120] * 64)
    augment = SpecAugment(0.5, time_mask_max_frames=20, freq_mask_max_bins=20)
    out = augment(feats, frame_lengths, torch.Generator().manual_seed(0))
    touched = int((out == 0).flatten(1).any(dim=1).sum())
    assert 16 < touched < 48


def test_pipeline_features_is_a_no_op_when_off():
    feats, frame_lengths = features_with_padding([120, 50])
    assert build_augmentation(AugmentConfig(), 16000).features(feats, frame_lengths) is feats
    aug = build_augmentation(AugmentConfig(specaugment_prob=1.0), 16000)
    out = aug.features(feats, frame_lengths, torch.Generator())
    assert out.dtype == torch.float32 and out.shape == feats.shape
