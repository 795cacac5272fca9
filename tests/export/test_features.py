"""ExportFbank, the exportable filterbank, against Fbank: the one feature implementation."""

from __future__ import annotations

import pytest
import torch

from speakerprint.export import ExportFbank, dft_basis
from speakerprint.features import Fbank, FbankConfig

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

# float32 DFT as a 400-term matmul rounds differently from the FFT: on log-mel bins the two differ
# by ~1e-4 typically and up to ~2e-3 on the low-energy lowest bins (pre-emphasis removes most of
# their energy), against log-mel values of order 10.
LOG_MEL_ATOL = 5e-3


def test_dft_basis_is_the_zero_padded_rfft():
    frames = torch.randn(5, 400, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spectrum = frames @ dft_basis(400, 512)
    reference = torch.fft.rfft(frames, n=512)
    torch.testing.assert_close(spectrum[:, :257], reference.real, rtol=0, atol=1e-9)
    torch.testing.assert_close(spectrum[:, 257:], reference.imag, rtol=0, atol=1e-9)


def test_dft_basis_rejects_a_window_longer_than_the_fft():
    with pytest.raises(ValueError, match="window_size <= fft_size"):
        dft_basis(600, 512)


@pytest.mark.parametrize(
    "config",
    [
        FbankConfig(),
        FbankConfig(num_mel_bins=40, window="hamming", mean_norm=False, remove_dc_offset=False),
        FbankConfig(sample_rate=8000, num_mel_bins=24, preemphasis=0.0, frame_shift_ms=12.5),
    ],
    ids=["default", "hamming_no_norm", "8k"],
)
def test_export_fbank_equals_fbank_on_a_padded_batch(config):
    fbank = Fbank(config).eval()
    rate = config.sample_rate
    wav = 0.1 * torch.randn(3, rate, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([rate, rate // 2 + 7, config.window_size])
    expected, expected_frames = fbank(wav, lengths)
    for module in (ExportFbank(fbank), torch.jit.script(ExportFbank(fbank))):
        feats, frames = module(wav, lengths)
        assert torch.equal(frames, expected_frames)
        assert feats.shape == expected.shape
        torch.testing.assert_close(feats, expected, rtol=0, atol=LOG_MEL_ATOL)
        # Padded frames are exactly zero, as Fbank leaves them.
        assert feats[2, int(frames[2]) :].eq(0).all()


def test_export_fbank_is_not_fooled_by_padding_content():
    fbank = ExportFbank(Fbank().eval())
    wav = 0.1 * torch.randn(1, 8000, generator=torch.Generator().manual_seed(2))
    padded = torch.cat([wav, torch.randn(1, 3000)], dim=1)  # noise, not zeros, in the padding
    alone, frames = fbank(wav, torch.tensor([8000]))
    in_batch, _ = fbank(padded, torch.tensor([8000]))
    torch.testing.assert_close(in_batch[:, : int(frames[0])], alone, rtol=0, atol=1e-5)
