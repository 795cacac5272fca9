"""Features: the one Kaldi-compatible log-mel filterbank, as a batched ``nn.Module``.

>>> import torch
>>> from speakerprint.features import Fbank, FbankConfig
>>> feats, frames = Fbank(FbankConfig(num_mel_bins=80))(torch.zeros(1, 16000))
>>> feats.shape
torch.Size([1, 98, 80])
"""

from __future__ import annotations

from speakerprint.features.fbank import Fbank, FbankConfig, mean_normalize

__all__ = ["Fbank", "FbankConfig", "mean_normalize"]
