"""Reverberation: a batch convolved with room impulse responses by FFT on the training device.

RIRs come from a folder in the RIRS_NOISES layout (``simulated_rirs/{small,medium,large}room/
Room*/Room*-*.wav`` and the RIRs, not the noises, of ``real_rirs_isotropic_noises/``), or are
simulated once with pyroomacoustics (shoebox rooms, image source method) and cached on disk as an
``.npz`` named by a hash of the settings, so a second run, or a resumed one, reads the same
rooms back instantly.

Every RIR is cut to start at its direct-path peak (its largest absolute sample) and scaled to
unit energy. Starting at the peak keeps the reverberant speech aligned with the dry speech (no
propagation delay: frame labels and crops stay where they were); unit energy keeps its level
roughly that of the input. The output keeps the input's length: the tail that would ring past
an utterance's last valid sample is dropped, and padding stays exactly zero.

>>> bank = RirBank.from_folder("data/RIRS_NOISES", 16000)  # doctest: +SKIP
>>> wet = reverberate(wav, lengths, bank.rirs[idx])  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from speakerprint.audio import load_audio, resample
from speakerprint.augment import _random as rnd
from speakerprint.augment.config import AugmentConfig, AugmentDataError
from speakerprint.utils.io import atomic_open

__all__ = [
    "Reverb",
    "RirBank",
    "find_rirs",
    "prepare_rir",
    "reverberate",
    "simulate_rirs",
]

_AUDIO_SUFFIXES = frozenset({".wav", ".flac"})
# Changing how rooms are simulated changes this, so old caches are not reused.
_SIMULATION_VERSION = 1
# Image-source order cap: the cost grows with its cube, and past ~50 reflections the tail of a
# 0.8 s room is already ~35 dB down.
_MAX_ORDER = 50


def find_rirs(folder: str | os.PathLike) -> list[Path]:
    """The RIR files under ``folder`` (or ``folder/RIRS_NOISES``), sorted.

    In the RIRS_NOISES layout: every ``simulated_rirs/**/*.wav`` and the files of
    ``real_rirs_isotropic_noises/`` with ``rir`` in their name (the others there are noises).
    A folder without that layout is taken as a flat collection of RIR files.
    """
    root = Path(folder)
    if not root.is_dir():
        raise AugmentDataError(f"RIR folder {root}: no such folder")
    layout = ("simulated_rirs", "real_rirs_isotropic_noises")
    if (root / "RIRS_NOISES").is_dir() and not any((root / d).is_dir() for d in layout):
        root = root / "RIRS_NOISES"

    def audio_files(path: Path) -> list[Path]:
        return [p for p in path.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES and p.is_file()]

    if any((root / d).is_dir() for d in layout):
        files = audio_files(root / "simulated_rirs") if (root / "simulated_rirs").is_dir() else []
        real = root / "real_rirs_isotropic_noises"
        if real.is_dir():
            files += [p for p in audio_files(real) if "rir" in p.name.lower()]
    else:
        files = audio_files(root)
    if not files:
        raise AugmentDataError(
            f"RIR folder {root}: no RIR files (RIRS_NOISES layout: simulated_rirs/smallroom/"
            "Room001/Room001-00001.wav, real_rirs_isotropic_noises/*rir*.wav)"
        )
    return sorted(files)


def prepare_rir(rir: np.ndarray, max_samples: int) -> np.ndarray | None:
    """Cut ``rir`` to start at its direct-path peak, keep ``max_samples``, scale to unit energy.

    Returns float32 ``(L,)``, or ``None`` for an all-zero RIR.
    """
    rir = np.asarray(rir, dtype=np.float64)
    if rir.size == 0 or not np.any(rir):
        return None
    peak = int(np.argmax(np.abs(rir)))
    rir = rir[peak : peak + max_samples]
    return (rir / np.sqrt(np.sum(rir**2))).astype(np.float32)


def _read_first_channel(path: Path, sample_rate: int) -> np.ndarray:
    """Channel 0 of a (possibly multichannel) RIR: averaging the microphones of an array would
    blur its direct path."""
    try:
        wav, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except RuntimeError:  # not for libsndfile: load_audio's FFmpeg path (mixes to mono)
        return load_audio(path, sample_rate)
    return resample(wav[:, 0], file_rate, sample_rate)


@dataclass
class RirBank:
    """Prepared RIRs: ``rirs`` ``(R, L)`` float32, each starting at its peak, unit energy,
    zero-padded to the longest; ``sources`` says where they came from."""

    rirs: Tensor
    sources: list[str]
    sample_rate: int

    @classmethod
    def from_arrays(cls, rirs: list[np.ndarray], sources: list[str], sample_rate: int) -> RirBank:
        width = max(len(r) for r in rirs)
        bank = np.zeros((len(rirs), width), dtype=np.float32)
        for i, r in enumerate(rirs):
            bank[i, : len(r)] = r
        return cls(torch.from_numpy(bank), sources, sample_rate)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        sample_rate: int,
        *,
        max_s: float = 1.0,
        max_files: int = 0,
        seed: int = 0,
    ) -> RirBank:
        """Load the RIRs of a folder (at most ``max_files``, a random subset; 0: all)."""
        files = find_rirs(folder)
        if 0 < max_files < len(files):
            rng = np.random.default_rng(seed)
            files = [files[i] for i in sorted(rng.choice(len(files), max_files, replace=False))]
        max_samples = max(1, round(max_s * sample_rate))
        rirs, sources = [], []
        for path in files:
            rir = prepare_rir(_read_first_channel(path, sample_rate), max_samples)
            if rir is not None:
                rirs.append(rir)
                sources.append(str(path))
        if not rirs:
            raise AugmentDataError(f"RIR folder {folder}: every RIR file is silent")
        return cls.from_arrays(rirs, sources, sample_rate)

    @classmethod
    def simulated(
        cls,
        num_rooms: int,
        sample_rate: int,
        *,
        rt60_s: tuple[float, float] = (0.2, 0.8),
        max_s: float = 1.0,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ) -> RirBank:
        rirs = simulate_rirs(
            num_rooms, sample_rate, rt60_s=rt60_s, max_s=max_s, seed=seed, cache_dir=cache_dir
        )
        return cls.from_arrays(rirs, [f"simulated room {i}" for i in range(len(rirs))], sample_rate)

    def to(self, device: torch.device | str) -> RirBank:
        return RirBank(self.rirs.to(device), self.sources, self.sample_rate)


def _cache_path(cache_dir: str | os.PathLike | None, settings: dict) -> Path:
    folder = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "speakerprint" / "rirs"
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return folder / f"rooms_{key}.npz"


def _import_pyroomacoustics():
    try:
        import pyroomacoustics
    except ImportError:
        raise ImportError(
            "simulating rooms needs pyroomacoustics: pip install 'speakerprint[sim]' "
            "(or give augment.rir_dir, a RIRS_NOISES folder)"
        ) from None
    return pyroomacoustics


def _simulate_rooms(
    num_rooms: int, sample_rate: int, rt60_s: tuple[float, float], seed: int
) -> list[np.ndarray]:
    """One RIR per random shoebox room: 3-10 m x 3-10 m x 2.5-4 m, RT60 uniform in ``rt60_s``
    (wall absorption from Sabine's formula), source and microphone at random places at least
    0.5 m from every wall."""
    pra = _import_pyroomacoustics()
    rng = np.random.default_rng(seed)
    rirs: list[np.ndarray] = []
    while len(rirs) < num_rooms:
        dims = np.array([rng.uniform(3, 10), rng.uniform(3, 10), rng.uniform(2.5, 4)])
        rt60 = float(rng.uniform(*rt60_s))
        source, mic = (rng.uniform(0.5, dims - 0.5) for _ in range(2))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # this RT60 is out of reach for this room: draw another room
            continue
        room = pra.ShoeBox(
            dims,
            fs=sample_rate,
            materials=pra.Material(absorption),
            max_order=min(max_order, _MAX_ORDER),
        )
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        rirs.append(np.asarray(room.rir[0][0], dtype=np.float64))
    return rirs


def simulate_rirs(
    num_rooms: int,
    sample_rate: int,
    *,
    rt60_s: tuple[float, float] = (0.2, 0.8),
    max_s: float = 1.0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> list[np.ndarray]:
    """``num_rooms`` prepared RIRs (see :func:`prepare_rir`) of simulated rooms, from the cache
    when these settings were simulated before; otherwise simulated and written to the cache
    atomically. Needs pyroomacoustics for the simulation only."""
    settings = {
        "num_rooms": num_rooms,
        "sample_rate": sample_rate,
        "rt60_s": [float(rt60_s[0]), float(rt60_s[1])],
        "max_s": float(max_s),
        "seed": seed,
        "version": _SIMULATION_VERSION,
    }
    path = _cache_path(cache_dir, settings)
    if path.is_file():
        try:
            with np.load(path) as data:
                bank, lengths = data["rirs"], data["lengths"]
            return [bank[i, :n].astype(np.float32) for i, n in enumerate(lengths)]
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache is simulated again and overwritten
    max_samples = max(1, round(max_s * sample_rate))
    rirs = []
    for raw in _simulate_rooms(num_rooms, sample_rate, (rt60_s[0], rt60_s[1]), seed):
        rir = prepare_rir(raw, max_samples)
        rirs.append(rir if rir is not None else np.ones(1, np.float32))
    width = max(len(r) for r in rirs)
    bank = np.zeros((len(rirs), width), dtype=np.float32)
    for i, r in enumerate(rirs):
        bank[i, : len(r)] = r
    with atomic_open(path, "wb") as f:
        np.savez(
            f, rirs=bank, lengths=np.array([len(r) for r in rirs]), settings=json.dumps(settings)
        )
    return rirs


def reverberate(wav: Tensor, lengths: Tensor, rirs: Tensor) -> Tensor:
    """Convolve each row of ``wav`` with its RIR (FFT), keeping the first ``lengths[b]`` samples.

    Args:
        wav: ``(B, N)`` float waveforms; what lies beyond ``lengths`` is ignored.
        lengths: ``(B,)`` valid samples per row.
        rirs: ``(B, L)`` one RIR per row, sample 0 the direct path (see :func:`prepare_rir`).

    Returns:
        ``(B, N)``: ``y[n] = sum_k rir[k] x[n - k]`` for ``n < lengths[b]``, zero beyond.
    """
    num_samples = wav.shape[1]
    mask = rnd.valid_mask(lengths, num_samples)
    # n_fft >= N + L - 1, so the circular convolution has no wrap-round in the first N samples
    n_fft = 1 << (num_samples + rirs.shape[1] - 2).bit_length()
    spectrum = torch.fft.rfft(wav * mask, n=n_fft) * torch.fft.rfft(rirs.to(wav.dtype), n=n_fft)
    return torch.fft.irfft(spectrum, n=n_fft)[:, :num_samples] * mask


class Reverb:
    """Convolves a random subset of a batch (``prob`` per utterance) with random RIRs."""

    def __init__(self, bank: RirBank, prob: float) -> None:
        self.bank = bank
        self.prob = prob

    @classmethod
    def from_config(cls, config: AugmentConfig, sample_rate: int) -> Reverb:
        if config.rir_dir:
            bank = RirBank.from_folder(
                config.rir_dir,
                sample_rate,
                max_s=config.rir_max_s,
                max_files=config.rir_bank_max_files,
                seed=config.seed,
            )
        else:
            bank = RirBank.simulated(
                config.simulate_rooms,
                sample_rate,
                rt60_s=(config.rt60_s_min, config.rt60_s_max),
                max_s=config.rir_max_s,
                seed=config.seed,
                cache_dir=config.rir_cache_dir,
            )
        return cls(bank, config.reverb_prob)

    def __call__(self, wav: Tensor, lengths: Tensor, generator: torch.Generator | None) -> Tensor:
        """``(B, N)`` in, ``(B, N)`` out; rows not drawn are returned unchanged."""
        batch = wav.shape[0]
        chosen = rnd.bernoulli(batch, self.prob, generator)
        index = rnd.randint_below(torch.full((batch,), self.bank.rirs.shape[0]), generator)
        rows = torch.nonzero(chosen).flatten()
        if len(rows) == 0:
            return wav
        rows_device = rows.to(wav.device)
        rirs = self.bank.rirs[index[rows].to(self.bank.rirs.device)]
        wav = wav.clone()
        wav[rows_device] = reverberate(wav[rows_device], lengths[rows_device], rirs.to(wav.device))
        return wav
