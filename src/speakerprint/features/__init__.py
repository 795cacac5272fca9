"""Features: the Kaldi-compatible log-mel filterbank, as a batched ``nn.Module``, and the front
ends of peer toolkits whose converted checkpoints need their own (``frontend_from_dict``).

>>> import torch
>>> from speakerprint.features import Fbank, FbankConfig
>>> feats, frames = Fbank(FbankConfig(num_mel_bins=80))(torch.zeros(1, 16000))
>>> feats.shape
torch.Size([1, 98, 80])
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from speakerprint.errors import ConfigError
from speakerprint.features.fbank import Fbank, FbankConfig, mean_normalize

__all__ = [
    "FRONTEND_KINDS",
    "Fbank",
    "FbankConfig",
    "frontend_from_dict",
    "mean_normalize",
    "min_samples",
]

# kind -> module defining ``from_dict(data) -> nn.Module``. Every front end takes
# ``(wav (B, N) float32 in [-1, 1], lengths (B,) samples)`` and returns ``(feats (B, T, F), frames
# (B,))``, has ``feat_dim`` and ``num_frames(samples)``, and a ``config`` with ``sample_rate``,
# ``frame_length_ms``, ``frame_shift_ms``, ``window_size``, ``window_shift`` and ``to_dict()``
# (which records ``kind``; the Kaldi fbank's dict has no ``kind`` key, as in every older bundle).
FRONTEND_KINDS = {
    "speechbrain": "speakerprint.features.speechbrain",
    "nemo": "speakerprint.features.nemo",
    "resemblyzer": "speakerprint.features.resemblyzer",
}


def frontend_from_dict(data: dict[str, Any]) -> nn.Module:
    """The feature extractor a bundle's ``features`` dict describes."""
    kind = data.get("kind", "kaldi")
    if kind == "kaldi":
        return Fbank(FbankConfig.from_dict({k: v for k, v in data.items() if k != "kind"}))
    if kind not in FRONTEND_KINDS:
        raise ConfigError(
            f"unknown features kind {kind!r}; known: {['kaldi', *sorted(FRONTEND_KINDS)]}"
        )
    return importlib.import_module(FRONTEND_KINDS[kind]).from_dict(data)


def min_samples(config: Any, min_frames: int) -> int:
    """The shortest waveform, in samples, that gives an encoder its ``min_frames`` frames.

    ``config`` is any front end's config (each has ``window_size`` and ``window_shift`` in
    samples): one window, then a shift per further frame. Bundles and exports both use this, and
    shorter audio is repeated up to it.

    >>> min_samples(FbankConfig(), 1), min_samples(FbankConfig(), 2)
    (400, 560)
    """
    return config.window_size + config.window_shift * (max(min_frames, 1) - 1)
