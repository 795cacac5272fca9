"""Additive noise from a MUSAN folder, mixed into a batch at per-utterance SNRs.

Three categories, as in the Kaldi and ECAPA-TDNN recipes: ``noise`` (``musan/noise/free-sound``
and ``sound-bible``), ``music`` (``musan/music/*``) and babble, the sum of several distinct
``speech`` files (``musan/speech/*``, different talkers) mixed as one noise, the SNR being that
of the sum. The SNR of each utterance is drawn from its category's range and holds over the
utterance's valid samples: padding counts neither in the speech power nor in the noise power,
and stays exactly zero.

The bank is decoded once and kept in memory: one random segment of ``noise_bank_s`` seconds per
file, as one float16 tensor on the training device. Re-reading files lazily would put disk reads
and decoding inside the training step, on the process that drives the GPU, and MUSAN's files
(minutes of music) would be decoded again and again for a 2 s crop. The whole of MUSAN (2,016
files) at 6 s each is 2016 x 96,000 x 2 bytes = 387 MB; ``noise_bank_max_files`` caps it. Float16
rounding is about 66 dB below the signal, far under any SNR used, and the SNR is computed after
the noise is cast back to the batch's dtype, so it is exact. Each use reads the segment from a
random offset, wrapping round, so one file gives many different crops.

>>> bank = NoiseBank.from_folder("data/musan", 16000)  # doctest: +SKIP
>>> noisy = add_noise(wav, lengths, noise, snr_db)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from speakerprint.audio import audio_info, load_audio
from speakerprint.augment import _random as rnd
from speakerprint.augment.config import AugmentConfig, AugmentDataError

__all__ = ["CATEGORIES", "AdditiveNoise", "NoiseBank", "add_noise", "find_musan", "gather_crops"]

CATEGORIES = ("noise", "music", "speech")
_AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".opus"})


def find_musan(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """The audio files of each MUSAN category under ``folder`` (or ``folder/musan``), sorted.

    Categories without files are left out; a folder with none of them is an error.
    """
    root = Path(folder)
    if not root.is_dir():
        raise AugmentDataError(f"noise folder {root}: no such folder")
    if (root / "musan").is_dir() and not any((root / c).is_dir() for c in CATEGORIES):
        root = root / "musan"
    found = {}
    for category in CATEGORIES:
        files = sorted(
            p
            for p in (root / category).rglob("*")
            if p.suffix.lower() in _AUDIO_SUFFIXES and p.is_file()
        )
        if files:
            found[category] = files
    if not found:
        raise AugmentDataError(
            f"noise folder {root}: no audio files in noise/, music/ or speech/ (MUSAN layout: "
            "musan/noise/free-sound/*.wav, musan/music/*/*.wav, musan/speech/*/*.wav)"
        )
    return found


@dataclass
class NoiseBank:
    """Decoded noise segments of each category, ready to crop from on the training device.

    Attributes:
        audio: category -> ``(F, L)`` float16, one zero-padded segment per file.
        lengths: category -> ``(F,)`` int64, valid samples of each segment (>= 1).
        files: category -> the file of each row, for messages and records.
        sample_rate: in Hz.
    """

    audio: dict[str, Tensor]
    lengths: dict[str, Tensor]
    files: dict[str, list[Path]]
    sample_rate: int

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        sample_rate: int,
        *,
        segment_s: float = 6.0,
        max_files: int = 0,
        seed: int = 0,
    ) -> NoiseBank:
        """Decode one random ``segment_s`` window of every file (at most ``max_files`` per
        category, a random subset; 0: all). Silent files are skipped: they cannot reach an SNR."""
        rng = np.random.default_rng(seed)
        audio, lengths, used = {}, {}, {}
        for category, files in find_musan(folder).items():
            if 0 < max_files < len(files):
                files = [files[i] for i in sorted(rng.choice(len(files), max_files, replace=False))]
            segments, kept = [], []
            for path in files:
                duration = audio_info(path).duration_s
                start = (
                    float(rng.uniform(0.0, duration - segment_s)) if duration > segment_s else 0.0
                )
                wav = load_audio(path, sample_rate, start_s=start, duration_s=segment_s)
                if float(np.abs(wav).max()) > 0:
                    segments.append(wav)
                    kept.append(path)
            if not segments:
                continue
            width = max(len(s) for s in segments)
            bank = np.zeros((len(segments), width), dtype=np.float32)
            for i, s in enumerate(segments):
                bank[i, : len(s)] = s
            audio[category] = torch.from_numpy(bank).to(torch.float16)
            lengths[category] = torch.tensor([len(s) for s in segments], dtype=torch.long)
            used[category] = kept
        if not audio:
            raise AugmentDataError(f"noise folder {folder}: every audio file is silent")
        return cls(audio, lengths, used, sample_rate)

    def to(self, device: torch.device | str) -> NoiseBank:
        return NoiseBank(
            {k: v.to(device) for k, v in self.audio.items()},
            {k: v.to(device) for k, v in self.lengths.items()},
            self.files,
            self.sample_rate,
        )


def gather_crops(
    bank: Tensor, bank_lengths: Tensor, file_index: Tensor, offsets: Tensor, num_samples: int
) -> Tensor:
    """``num_samples`` from row ``file_index[m]`` of ``bank`` starting at ``offsets[m]``, wrapping
    round the row's valid length; ``(M,)`` indices in, ``(M, num_samples)`` float16 out."""
    positions = torch.arange(num_samples, device=bank.device)
    # (M, num_samples): sample indices into each chosen segment, wrapped to its length
    index = (offsets[:, None] + positions[None, :]) % bank_lengths[file_index][:, None]
    return bank[file_index[:, None], index]


def add_noise(wav: Tensor, lengths: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """Mix ``noise`` into ``wav`` so that each row has SNR ``snr_db`` over its valid samples.

    Args:
        wav: ``(B, N)`` speech, zero beyond ``lengths``.
        lengths: ``(B,)`` valid samples per row.
        noise: ``(B, N)`` noise; what lies beyond ``lengths`` is ignored.
        snr_db: ``(B,)`` wanted ``10 log10(P_speech / P_noise)``.

    Returns:
        ``(B, N)`` in ``wav``'s dtype, equal to ``wav`` beyond ``lengths`` (zero padding stays
        zero). A row whose speech or noise is silent over its valid samples is left unchanged.
    """
    mask = rnd.valid_mask(lengths, wav.shape[1])
    noise = noise.to(wav.dtype) * mask
    speech_power = (wav * mask).square().sum(dim=1)
    noise_power = noise.square().sum(dim=1)
    target = speech_power / torch.pow(10.0, snr_db.to(wav.dtype) / 10.0)
    usable = (noise_power > 0) & (speech_power > 0)
    scale = torch.where(usable, torch.sqrt(target / noise_power.clamp(min=1e-30)), 0.0)
    return wav + scale[:, None] * noise


class AdditiveNoise:
    """Adds MUSAN noise, music or babble to a random subset of a batch.

    Args:
        bank: the decoded noise, on the batch's device.
        config: probabilities, weights and SNR ranges (``noise_*``, ``music_*``, ``babble_*``).
    """

    def __init__(self, bank: NoiseBank, config: AugmentConfig) -> None:
        self.bank = bank
        self.prob = config.noise_prob
        # (category, bank key, weight, snr range); babble crops from the speech files
        options = [
            (
                "noise",
                "noise",
                config.noise_weight,
                config.noise_snr_db_min,
                config.noise_snr_db_max,
            ),
            (
                "music",
                "music",
                config.music_weight,
                config.music_snr_db_min,
                config.music_snr_db_max,
            ),
            (
                "babble",
                "speech",
                config.babble_weight,
                config.babble_snr_db_min,
                config.babble_snr_db_max,
            ),
        ]
        self.options = [o for o in options if o[1] in bank.audio and o[2] > 0]
        if not self.options:
            raise AugmentDataError(
                f"noise: none of the categories with a positive weight has files "
                f"(found {sorted(bank.audio)})"
            )
        weights = torch.tensor([o[2] for o in self.options], dtype=torch.float64)
        self.cumulative = torch.cumsum(weights / weights.sum(), 0)
        # per-file lengths on the CPU, where the offsets are drawn (no device sync per batch)
        self.lengths_cpu = {k: v.cpu() for k, v in bank.lengths.items()}
        self.babble_min = config.babble_speakers_min
        self.babble_max = config.babble_speakers_max

    def __call__(self, wav: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        """``(B, N)`` in, ``(B, N)`` out; rows not drawn are returned unchanged."""
        batch, num_samples = wav.shape
        chosen = rnd.bernoulli(batch, self.prob, generator)
        which = torch.searchsorted(self.cumulative, rnd.uniform((batch,), generator), right=True)
        which = which.clamp(max=len(self.options) - 1)
        if not bool(chosen.any()):
            return wav
        wav = wav.clone()
        for k, (name, key, _, low, high) in enumerate(self.options):
            rows = torch.nonzero(chosen & (which == k)).flatten()
            if len(rows) == 0:
                continue
            m = len(rows)
            audio, bank_lengths = self.bank.audio[key], self.bank.lengths[key]
            num_files = torch.full((m,), audio.shape[0], dtype=torch.long)
            speakers = 1
            if name == "babble":
                count = self.babble_min + rnd.randint_below(
                    torch.full((m,), self.babble_max - self.babble_min + 1), generator
                )
                speakers = self.babble_max
                # distinct talkers: a random order of the files per row (repeats only when the
                # bank has fewer files than talkers)
                talkers = torch.argsort(rnd.uniform((m, audio.shape[0]), generator), dim=1)
            noise = torch.zeros(m, num_samples, device=wav.device, dtype=wav.dtype)
            for j in range(speakers):
                if name == "babble":
                    files = talkers[:, j % audio.shape[0]]
                else:
                    files = rnd.randint_below(num_files, generator)
                offsets = rnd.randint_below(self.lengths_cpu[key][files], generator)
                crop = gather_crops(
                    audio, bank_lengths, files.to(wav.device), offsets.to(wav.device), num_samples
                ).to(wav.dtype)
                if name == "babble":
                    crop = crop * (j < count).to(wav.device, wav.dtype)[:, None]
                noise += crop
            snr = rnd.uniform_between((m,), low, high, generator)
            rows_device = rows.to(wav.device)
            wav[rows_device] = add_noise(
                wav[rows_device], lengths[rows_device], noise, snr.to(wav.device)
            )
        return wav
