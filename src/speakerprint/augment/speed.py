"""Speed perturbation: each utterance played at 0.9, 1.0 or 1.1 times its speed, as a new speaker.

Speed ``s`` resamples the waveform from ``sample_rate`` to ``sample_rate / s`` and plays it at
``sample_rate``: duration scales by ``1 / s`` and every frequency (pitch and formants) by ``s``,
as sox's ``speed`` does in the Kaldi recipe. Because the voice changes, a perturbed copy is
labelled as a different speaker, ``label + k * num_speakers`` with ``k`` the index of its speed in
:data:`SPEEDS` (WeSpeaker and 3D-Speaker do the same), so the classifier needs
``len(SPEEDS) * num_speakers`` classes.

Method: a polyphase windowed-sinc resampler, batched on the training device. For the reduced
ratio ``orig / new`` (11/10 for speed 1.1, 9/10 for 0.9), each of the ``new`` output phases is one
FIR filter, a sinc low-pass at 0.99 of the lower Nyquist frequency with 16 zero crossings a side
under a Hann window, and ``conv1d`` with stride ``orig`` computes all phases of all rows at once.

>>> wav = torch.zeros(2, 16000)
>>> out, lengths = resample_speed(wav, torch.tensor([16000, 8000]), 1.1)
>>> out.shape[1], lengths.tolist()
(14546, [14546, 7273])
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

from speakerprint.augment import _random as rnd

__all__ = ["SPEEDS", "SpeedPerturb", "resample_speed"]

SPEEDS = (1.0, 0.9, 1.1)
_ZERO_CROSSINGS = 16
_ROLLOFF = 0.99


def _ratio(speed: float) -> tuple[int, int]:
    """``(orig, new)`` with ``orig / new == speed``, in lowest terms."""
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number, got {speed}")
    fraction = Fraction(speed).limit_denominator(1000)
    return fraction.numerator, fraction.denominator


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int) -> tuple[Tensor, int]:
    """``(new, 1, K)`` float64 filters, one per output phase, and the left padding ``width``.

    Time is counted so that ``orig`` input samples and ``new`` output samples both span 1: output
    phase ``p`` sits at ``p / new``, input tap ``m`` at ``m / orig`` (``m`` from ``-width`` to
    ``orig + width``), and the tap weight is the low-pass impulse response at the difference.
    """
    cutoff = _ROLLOFF * min(orig, new) / 2  # in cycles per unit of time
    half_span = _ZERO_CROSSINGS / (2 * cutoff)
    width = math.ceil(half_span * orig)
    taps = torch.arange(-width, orig + width + 1, dtype=torch.float64) / orig
    phases = torch.arange(new, dtype=torch.float64)[:, None] / new
    t = phases - taps[None, :]  # (new, K)
    window = torch.where(
        t.abs() <= half_span, torch.cos(math.pi * t / (2 * half_span)).square(), 0.0
    )
    kernel = (2 * cutoff / orig) * torch.sinc(2 * cutoff * t) * window
    return kernel[:, None, :], width


def resample_speed(
    wav: Tensor, lengths: Tensor, speed: float, max_samples: int | None = None
) -> tuple[Tensor, Tensor]:
    """Play each row of ``wav`` at ``speed`` times its speed.

    Args:
        wav: ``(B, N)`` float waveforms; what lies beyond ``lengths`` is ignored.
        lengths: ``(B,)`` valid samples per row.
        speed: e.g. 1.1 (shorter, higher) or 0.9 (longer, lower).
        max_samples: cut the output to this many samples; ``None`` keeps all of it.

    Returns:
        ``(B, M)`` waveforms, ``M = ceil(N / speed)`` or ``max_samples``, zero beyond the new
        lengths, and ``(B,)`` new lengths ``ceil(lengths / speed)`` (capped at ``M``).
    """
    orig, new = _ratio(speed)
    batch, num_samples = wav.shape
    out_samples = -(-num_samples * new // orig)
    new_lengths = -(-lengths * new // orig)
    if orig == new:
        out, out_samples = wav * rnd.valid_mask(lengths, num_samples), num_samples
    else:
        kernel, width = _sinc_kernel(orig, new)
        kernel = kernel.to(device=wav.device, dtype=wav.dtype)
        blocks = -(-out_samples // new)
        right = max(0, (blocks - 1) * orig + kernel.shape[-1] - width - num_samples)
        x = (wav * rnd.valid_mask(lengths, num_samples))[:, None, :]
        x = F.pad(x, (width, right))
        # (B, new, blocks) -> (B, blocks * new): phase p of block q is output sample q * new + p
        out = F.conv1d(x, kernel, stride=orig)[:, :, :blocks]
        out = out.transpose(1, 2).reshape(batch, blocks * new)[:, :out_samples]
    if max_samples is not None:
        if out_samples < max_samples:
            out = F.pad(out, (0, max_samples - out_samples))
        out, out_samples = out[:, :max_samples], max_samples
    new_lengths = new_lengths.clamp(max=out_samples)
    return out * rnd.valid_mask(new_lengths, out_samples), new_lengths


class SpeedPerturb:
    """Each utterance at a speed drawn uniformly from :data:`SPEEDS`, labelled as a new speaker.

    The batch keeps its width ``N``: slowed rows are cut at ``N`` samples (like a random crop of
    a longer one), sped-up rows end early, zero-padded, with their lengths saying so.
    """

    def __init__(self, num_speakers: int) -> None:
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        self.num_speakers = num_speakers

    @property
    def num_classes(self) -> int:
        return len(SPEEDS) * self.num_speakers

    def __call__(
        self, wav: Tensor, lengths: Tensor, labels: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, num_samples = wav.shape
        which = rnd.randint_below(torch.full((batch,), len(SPEEDS)), generator)
        if not bool((which != 0).any()):
            return wav, lengths, labels
        out, out_lengths = wav.clone(), lengths.clone()
        for k, speed in enumerate(SPEEDS):
            if speed == 1.0:
                continue
            rows = torch.nonzero(which == k).flatten().to(wav.device)
            if len(rows):
                out[rows], out_lengths[rows] = resample_speed(
                    wav[rows], lengths[rows], speed, max_samples=num_samples
                )
        labels = labels + which.to(labels.device, labels.dtype) * self.num_speakers
        return out, out_lengths, labels
