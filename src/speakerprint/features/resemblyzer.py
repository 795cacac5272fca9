"""Resemblyzer's front end: its waveform preprocessing and librosa's mel power spectrogram.

A GE2E encoder converted from Resemblyzer (:mod:`speakerprint.convert.resemblyzer`) gives
Resemblyzer's embeddings only on what ``preprocess_wav`` and ``wav_to_mel_spectrogram`` make of a
waveform, so its bundles carry this front end (``kind: "resemblyzer"``). Per row of a batch, from
a 16 kHz waveform in [-1, 1]:

1. volume normalisation (``normalize_volume``, ``increase_only``): the row is scaled to an RMS of
   ``volume_target_dbfs`` dB full scale (int16 full scale) when it is quieter than that; louder
   rows are kept. In float32 with NumPy, as Resemblyzer, so the gain is the same to the bit
   (an all-zero row, where Resemblyzer divides by zero, is kept as it is);
2. silence trimming (``trim_long_silences``): the row is cut to whole ``vad_window_ms`` windows,
   webrtcvad (mode ``vad_mode``) labels each window of its int16 samples, the labels are smoothed by
   a moving average over ``vad_average_windows`` windows and rounded (halves to even, as NumPy),
   speech is dilated by ``vad_max_silence_windows`` windows either side, and only the windows
   labelled speech are kept (needs webrtcvad: ``pip install 'speakerprint[resemblyzer]'``);
3. ``librosa.feature.melspectrogram`` with its defaults: a centred STFT (``n_fft // 2`` zeros at
   both ends, librosa 0.11's ``pad_mode="constant"``), a periodic Hann window of ``n_fft``, the
   power spectrum, and Slaney mel filters with Slaney area normalisation from 0 Hz to Nyquist
   (:func:`speakerprint.features.nemo.slaney_mel_filters`, the filters of librosa). No log.

Steps 1 and 2 run on the CPU, row by row (they are what Resemblyzer does to a whole recording
before embedding it; both can be turned off for data that is already prepared). Step 3 runs
batched on the waveform's device.

Frames. An ``n``-sample row (after trimming) has librosa's ``n // hop + 1`` centred frames, and
this front end returns ``tail_frames`` (``ceil(n_fft / 2 / hop)``, 2) more: the frames after them
whose windows still reach the row's last samples. Resemblyzer zero-pads the waveform up to the end
of its last 1.6 s window and reads those frames there, so the encoder needs them; from the frame
count it also recovers ``n // hop``, which decides its windows (:mod:`speakerprint.models.ge2e`).
Frames beyond a row's count are 0, the energies of the zeros that pad it.

>>> import torch
>>> mel = ResemblyzerMel(ResemblyzerMelConfig(trim_silences=False))
>>> feats, frames = mel(torch.zeros(2, 16000).uniform_(-0.1, 0.1), torch.tensor([16000, 8000]))
>>> feats.shape, frames.tolist()
(torch.Size([2, 103, 40]), [103, 53])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.features._config import check_field_types, config_from_dict
from speakerprint.features.nemo import slaney_mel_filters

__all__ = [
    "KIND",
    "ResemblyzerMel",
    "ResemblyzerMelConfig",
    "from_dict",
    "normalize_volume",
    "trim_long_silences",
]

KIND = "resemblyzer"
_INT16_MAX = 2**15 - 1  # Resemblyzer's full scale (32767, not 32768)
_VAD_RATES = (8000, 16000, 32000, 48000)  # the rates webrtcvad accepts


@dataclass(frozen=True)
class ResemblyzerMelConfig:
    """Settings of :class:`ResemblyzerMel`, Resemblyzer's ``hparams.py`` in its units.

    Attributes:
        sample_rate: expected waveform rate in Hz (``sampling_rate``).
        n_fft: FFT and window length in samples (``mel_window_length`` 25 ms).
        hop_length: samples between frames (``mel_window_step`` 10 ms).
        num_mel_bins: mel filters (``mel_n_channels``).
        normalize_volume: raise quiet rows to ``volume_target_dbfs`` (``preprocess_wav``).
        volume_target_dbfs: the RMS level, in dB of int16 full scale (``audio_norm_target_dBFS``).
        trim_silences: cut long silences with webrtcvad (``trim_long_silences``).
        vad_window_ms: webrtcvad's window, 10, 20 or 30 (``vad_window_length``).
        vad_mode: webrtcvad's aggressiveness, 0 to 3.
        vad_average_windows: width of the moving average (``vad_moving_average_width``).
        vad_max_silence_windows: silence kept next to speech, in windows, either side
            (``vad_max_silence_length``).

    >>> ResemblyzerMelConfig().to_dict()["kind"]
    'resemblyzer'
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    num_mel_bins: int = 40
    normalize_volume: bool = True
    volume_target_dbfs: float = -30.0
    trim_silences: bool = True
    vad_window_ms: int = 30
    vad_mode: int = 3
    vad_average_windows: int = 8
    vad_max_silence_windows: int = 6

    def __post_init__(self) -> None:
        check_field_types(self)
        problems = []
        for name in ("sample_rate", "n_fft", "hop_length", "num_mel_bins", "vad_average_windows"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.vad_max_silence_windows < 0:
            problems.append(
                f"vad_max_silence_windows must be >= 0, got {self.vad_max_silence_windows}"
            )
        if self.vad_window_ms not in (10, 20, 30):
            problems.append(f"vad_window_ms must be 10, 20 or 30, got {self.vad_window_ms}")
        if self.vad_mode not in (0, 1, 2, 3):
            problems.append(f"vad_mode must be 0, 1, 2 or 3, got {self.vad_mode}")
        if self.trim_silences and self.sample_rate not in _VAD_RATES:
            problems.append(
                f"trim_silences needs a sample_rate in {_VAD_RATES}, got {self.sample_rate}"
            )
        if not math.isfinite(self.volume_target_dbfs):
            problems.append(f"volume_target_dbfs must be finite, got {self.volume_target_dbfs}")
        if problems:
            raise ConfigError("invalid ResemblyzerMelConfig: " + "; ".join(problems))

    # The front-end contract of speakerprint.features (bundles and exports read these).
    @property
    def window_size(self) -> int:
        """Samples per analysis window."""
        return self.n_fft

    @property
    def window_shift(self) -> int:
        """Samples between frames."""
        return self.hop_length

    @property
    def frame_length_ms(self) -> float:
        return 1000.0 * self.n_fft / self.sample_rate

    @property
    def frame_shift_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    @property
    def tail_frames(self) -> int:
        """Frames after the ``n // hop + 1`` centred ones whose windows still reach the signal."""
        return -(-(self.n_fft // 2) // self.hop_length)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field, with ``kind: "resemblyzer"``."""
        return {"kind": KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResemblyzerMelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        return config_from_dict(cls, data, KIND)


def normalize_volume(wav: np.ndarray, target_dbfs: float) -> np.ndarray:
    """``wav`` (float32) scaled to an RMS of ``target_dbfs`` if it is quieter, else as it is.

    Float32 throughout (NumPy's pairwise mean), as Resemblyzer's ``normalize_volume`` with
    ``increase_only=True``, so the two give the same samples.

    >>> wav = np.full(4, 0.001, dtype=np.float32)
    >>> bool(np.isclose(20 * np.log10(np.sqrt(np.mean(normalize_volume(wav, -30.0) ** 2))), -30))
    True
    """
    rms = np.sqrt(np.mean((wav * _INT16_MAX) ** 2))
    if not rms > 0:  # silence (or no samples): no level to raise
        return wav
    change_db = target_dbfs - 20 * np.log10(rms / _INT16_MAX)
    if change_db < 0:
        return wav
    return wav * (10 ** (change_db / 20))


def trim_long_silences(wav: np.ndarray, config: ResemblyzerMelConfig) -> np.ndarray:
    """``wav`` (float32, ``config.sample_rate``) without its long silences (module step 2).

    Raises:
        ImportError: webrtcvad is not installed (the message names the extra).
    """
    try:
        import webrtcvad
    except ImportError:
        raise ImportError(
            "Resemblyzer's silence trimming needs webrtcvad: pip install "
            "'speakerprint[resemblyzer]' (or set trim_silences=False in the features)"
        ) from None
    from scipy.ndimage import binary_dilation

    window = config.vad_window_ms * config.sample_rate // 1000
    wav = wav[: len(wav) - len(wav) % window]
    # As Resemblyzer: round to int16 after scaling by 32767 (values beyond it wrap as NumPy casts).
    pcm = np.round(wav * _INT16_MAX).astype(np.int16)
    vad = webrtcvad.Vad(config.vad_mode)
    flags = np.array(
        [
            vad.is_speech(pcm[start : start + window].tobytes(), config.sample_rate)
            for start in range(0, len(pcm), window)
        ],
        dtype=np.int64,
    )
    # Moving average over [i - (w - 1) // 2, i + w // 2], zeros outside, rounded half to even.
    width = config.vad_average_windows
    padded = np.concatenate(
        [np.zeros((width - 1) // 2, np.int64), flags, np.zeros(width // 2, np.int64)]
    )
    sums = np.concatenate([[0], np.cumsum(padded)])
    counts = sums[width:] - sums[:-width]  # (windows,)
    speech = np.round(counts / width).astype(bool)
    speech = binary_dilation(speech, np.ones(config.vad_max_silence_windows + 1))
    return wav[np.repeat(speech, window)]


class ResemblyzerMel(nn.Module):
    """Resemblyzer's features: waveform ``(B, N)`` in [-1, 1] -> ``(B, T, F)`` mel power, frames.

    See the module docstring for the steps and the frame count. Float32 with autocast off.
    """

    mel_filters: Tensor
    window: Tensor

    def __init__(self, config: ResemblyzerMelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ResemblyzerMelConfig()
        cfg = self.config
        filters = slaney_mel_filters(
            cfg.sample_rate, cfg.n_fft, cfg.num_mel_bins, 0.0, cfg.sample_rate / 2
        )
        self.register_buffer("mel_filters", filters, persistent=False)  # (F, n_fft // 2 + 1)
        self.register_buffer(
            "window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False
        )

    @property
    def feat_dim(self) -> int:
        return self.config.num_mel_bins

    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Frames of rows of ``num_samples`` samples after trimming: ``n // hop + 1 + tail``.

        >>> ResemblyzerMel().num_frames(torch.tensor([0, 159, 160, 16000])).tolist()
        [3, 3, 4, 103]
        """
        num_samples = torch.as_tensor(num_samples).long()
        hop = self.config.hop_length
        return torch.div(num_samples, hop, rounding_mode="floor") + 1 + self.config.tail_frames

    def extra_repr(self) -> str:
        return repr(self.config)

    def preprocess(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 1 and 2 on each row: (B, N), (B,) -> (B, N') zero-padded, (B,) new lengths."""
        cfg = self.config
        rows = []
        for row, length in zip(wav.detach().float().cpu().numpy(), lengths.tolist()):
            samples = row[:length]
            if cfg.normalize_volume:
                samples = normalize_volume(samples, cfg.volume_target_dbfs)
            if cfg.trim_silences:
                samples = trim_long_silences(samples, cfg)
            rows.append(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))
        new_lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        batch = nn.utils.rnn.pad_sequence(rows, batch_first=True) if rows else wav[:, :0]
        return batch.to(wav.device), new_lengths.to(wav.device)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav: (B, N) float in [-1, 1]; lengths: (B,) samples, None for all N.

        Returns ``feats`` (B, T, F) float32, 0 beyond each row's frames, and ``frame_lengths``
        (B,) int64 (:meth:`num_frames` of each row's length after trimming).
        """
        if wav.dim() != 2:
            hint = " (use wav.unsqueeze(0) for one utterance)" if wav.dim() == 1 else ""
            raise ValueError(f"ResemblyzerMel expects wav (B, N), got {tuple(wav.shape)}{hint}")
        if not wav.is_floating_point():
            raise ValueError(f"ResemblyzerMel expects a float waveform in [-1, 1], got {wav.dtype}")
        batch, num_samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=wav.device)
        else:
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            lengths = lengths.to(device=wav.device, dtype=torch.long)
            if bool((lengths < 0).any()) or bool((lengths > num_samples).any()):
                raise ValueError(f"lengths must be in [0, {num_samples}], got {lengths.tolist()}")
        cfg = self.config
        with torch.autocast(device_type=wav.device.type, enabled=False):
            wav = wav.float()
            if cfg.normalize_volume or cfg.trim_silences:
                wav, lengths = self.preprocess(wav, lengths)
            positions = torch.arange(wav.shape[1], device=wav.device)
            x = wav.masked_fill(positions[None, :] >= lengths[:, None], 0.0)
            # Zeros for the tail frames, which librosa's centred STFT of the row alone ends with.
            x = nn.functional.pad(x, (0, cfg.tail_frames * cfg.hop_length))
            spectrum = torch.stft(
                x,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                window=self.window.float(),
                center=True,
                pad_mode="constant",
                return_complex=True,
            )  # (B, n_fft // 2 + 1, T)
            power = torch.view_as_real(spectrum).square().sum(-1)
            feats = torch.matmul(self.mel_filters.float(), power)  # (B, F, T)
            frame_lengths = self.num_frames(lengths).to(wav.device)
            valid = (
                torch.arange(feats.shape[-1], device=wav.device)[None, :] < frame_lengths[:, None]
            )
            feats = feats.masked_fill(~valid[:, None, :], 0.0)
        return feats.transpose(1, 2), frame_lengths  # (B, T, F)


def from_dict(data: dict[str, Any]) -> ResemblyzerMel:
    """The front end a bundle's ``features`` dict (``kind: "resemblyzer"``) describes."""
    return ResemblyzerMel(ResemblyzerMelConfig.from_dict(data))
