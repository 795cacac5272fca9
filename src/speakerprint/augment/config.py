"""Settings of the training-time augmentation; the ``augment:`` section of an experiment config.

Every augmentation is off by default (probability 0, speed perturbation false), so a config
without an ``augment:`` section trains exactly as before. SNRs are in dB, durations in seconds.

>>> cfg = AugmentConfig(noise_dir="data/musan", noise_prob=0.6)
>>> cfg.noise_snr_db_max
15.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

from speakerprint.errors import ConfigError, SpeakerprintError

__all__ = ["CHANNELS", "AugmentConfig", "AugmentDataError"]

Channel = Literal["opus", "aac", "mp3", "gsm", "amrnb", "telephone", "mulaw", "alaw"]
# the channels augment.codecs may name (speakerprint.augment.codec implements them)
CHANNELS: tuple[str, ...] = get_args(Channel)


class AugmentDataError(SpeakerprintError, ValueError):
    """A noise or RIR folder is missing, has the wrong layout, or holds no usable audio."""


@dataclass
class AugmentConfig:
    """What to augment, how often and how strongly. Probabilities are per utterance.

    Attributes:
        noise_dir: a MUSAN folder (``noise/``, ``music/``, ``speech/`` inside it, or inside its
            ``musan/`` sub-folder).
        noise_prob: chance that an utterance gets additive noise of one category, drawn with the
            relative weights ``noise_weight``, ``music_weight``, ``babble_weight`` among the
            categories the folder has.
        noise_snr_db_min, noise_snr_db_max: SNR range of MUSAN ``noise`` (Kaldi/ECAPA: 0-15 dB).
        music_snr_db_min, music_snr_db_max: SNR range of ``music`` (5-15 dB).
        babble_snr_db_min, babble_snr_db_max: SNR range of babble (13-20 dB), the sum of
            ``babble_speakers_min`` to ``babble_speakers_max`` ``speech`` files, taken as one noise.
        noise_bank_s: seconds decoded and kept in memory per noise file (a random segment of it).
        noise_bank_max_files: at most this many files per category (a random subset); 0: all.
        rir_dir: a RIRS_NOISES folder (``simulated_rirs/``, ``real_rirs_isotropic_noises/``, or a
            ``RIRS_NOISES/`` sub-folder holding them).
        reverb_prob: chance that an utterance is convolved with a room impulse response.
        rir_max_s: RIRs are cut to this length after their direct-path peak.
        rir_bank_max_files: at most this many RIRs are loaded (a random subset); 0: all.
        simulate_rooms: without ``rir_dir``, simulate this many rooms with pyroomacoustics, once,
            cached on disk.
        rt60_s_min, rt60_s_max: reverberation time range of the simulated rooms.
        rir_cache_dir: where simulated RIRs are cached; ``None``: ``~/.cache/speakerprint/rirs``.
        speed_perturb: resample each utterance at speed 0.9, 1.0 or 1.1 (equally likely); the
            perturbed copies count as new speakers, so the classifier has 3x the classes.
        specaugment_prob: chance that an utterance's features get SpecAugment masks.
        time_masks, time_mask_max_frames: number of time masks, each 0 to this many frames wide
            (ECAPA-TDNN: one of 0-5 frames).
        freq_masks, freq_mask_max_bins: number of frequency masks, each 0 to this many bins wide
            (ECAPA-TDNN: one of 0-10 bins).
        codec_prob: chance that an utterance is re-encoded through a lossy codec in the data
            loader worker (CPU, PyAV).
        codec: ``opus``, ``aac`` or ``any`` (either, equally likely); used when ``codecs`` is
            empty.
        codecs: the channels to draw from, equally likely, e.g. ``[opus, telephone, mulaw]``:
            ``opus``, ``aac``, ``mp3`` (re-encoded at the utterance's rate), ``telephone``
            (300-3,400 Hz at 8 kHz), ``mulaw``, ``alaw`` (G.711 at 8 kHz), ``gsm``, ``amrnb``
            (at 8 kHz; need FFmpeg's libgsm / libopencore_amrnb encoders, checked when the
            training data is built). Empty: as ``codec`` says.
        codec_bitrate_kbps_min, codec_bitrate_kbps_max: bitrate range of the re-encoding by
            ``opus``, ``aac`` and ``mp3``; ``amrnb`` takes the mode nearest the drawn bitrate,
            the other channels have a fixed rate.
        seed: which segments and RIRs go into the banks and which rooms are simulated.
    """

    noise_dir: str | None = None
    noise_prob: float = 0.0
    noise_weight: float = 1.0
    music_weight: float = 1.0
    babble_weight: float = 1.0
    noise_snr_db_min: float = 0.0
    noise_snr_db_max: float = 15.0
    music_snr_db_min: float = 5.0
    music_snr_db_max: float = 15.0
    babble_snr_db_min: float = 13.0
    babble_snr_db_max: float = 20.0
    babble_speakers_min: int = 3
    babble_speakers_max: int = 7
    noise_bank_s: float = 6.0
    noise_bank_max_files: int = 0
    rir_dir: str | None = None
    reverb_prob: float = 0.0
    rir_max_s: float = 1.0
    rir_bank_max_files: int = 2000
    simulate_rooms: int = 0
    rt60_s_min: float = 0.2
    rt60_s_max: float = 0.8
    rir_cache_dir: str | None = None
    speed_perturb: bool = False
    specaugment_prob: float = 0.0
    time_masks: int = 1
    time_mask_max_frames: int = 5
    freq_masks: int = 1
    freq_mask_max_bins: int = 10
    codec_prob: float = 0.0
    codec: Literal["opus", "aac", "any"] = "any"
    codecs: list[Channel] = field(default_factory=list)
    codec_bitrate_kbps_min: int = 8
    codec_bitrate_kbps_max: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("noise_prob", "reverb_prob", "specaugment_prob", "codec_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {value}")
        for name in ("noise_weight", "music_weight", "babble_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                problems.append(f"{name} must be >= 0, got {value}")
        for kind in ("noise", "music", "babble"):
            low, high = getattr(self, f"{kind}_snr_db_min"), getattr(self, f"{kind}_snr_db_max")
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                problems.append(
                    f"{kind}_snr_db_min <= {kind}_snr_db_max is needed, got {low}, {high}"
                )
        if not 1 <= self.babble_speakers_min <= self.babble_speakers_max:
            problems.append(
                "1 <= babble_speakers_min <= babble_speakers_max is needed, got "
                f"{self.babble_speakers_min}, {self.babble_speakers_max}"
            )
        if self.noise_prob > 0:
            if not self.noise_dir:
                problems.append("noise_prob > 0 needs noise_dir (a MUSAN folder)")
            if self.noise_weight + self.music_weight + self.babble_weight <= 0:
                problems.append("noise_prob > 0 needs a positive noise, music or babble weight")
        if self.reverb_prob > 0 and not self.rir_dir and self.simulate_rooms <= 0:
            problems.append("reverb_prob > 0 needs rir_dir or simulate_rooms > 0")
        for name in ("noise_bank_s", "rir_max_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("noise_bank_max_files", "rir_bank_max_files", "simulate_rooms"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.rt60_s_min <= self.rt60_s_max:
            problems.append(
                f"0 < rt60_s_min <= rt60_s_max is needed, got {self.rt60_s_min}, {self.rt60_s_max}"
            )
        for name in ("time_masks", "time_mask_max_frames", "freq_masks", "freq_mask_max_bins"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.codecs and self.codec != "any":
            problems.append("set codecs or codec, not both (codecs lists every channel)")
        for name in dict.fromkeys(self.codecs):
            if name not in CHANNELS:
                problems.append(f"codecs: unknown channel {name!r} (known: {', '.join(CHANNELS)})")
            if list(self.codecs).count(name) > 1:
                problems.append(f"codecs lists {name} more than once")
        if not 1 <= self.codec_bitrate_kbps_min <= self.codec_bitrate_kbps_max:
            problems.append(
                "1 <= codec_bitrate_kbps_min <= codec_bitrate_kbps_max is needed, got "
                f"{self.codec_bitrate_kbps_min}, {self.codec_bitrate_kbps_max}"
            )
        if problems:
            raise ConfigError("invalid augment config: augment." + "; augment.".join(problems))
