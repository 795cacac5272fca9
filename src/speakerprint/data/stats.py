"""What a manifest holds: speakers, utterances, hours, durations, sample rates, formats; and, by
reading the audio, which files are clipped or silent.

>>> utts = [Utterance(f"s{s}/u{u}.wav", f"/d/s{s}/u{u}.wav", f"s{s}", 2.0 + u, 16000)
...         for s in range(2) for u in range(3)]
>>> stats = manifest_stats(utts)
>>> stats.num_speakers, stats.num_utts, stats.speaker_duration_s
(2, 6, (9.0, 9.0, 9.0))
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from speakerprint.audio import AudioLoadError, load_audio
from speakerprint.data.manifest import Utterance
from speakerprint.utils.io import atomic_write_bytes

__all__ = [
    "AudioScan",
    "ManifestStats",
    "format_stats",
    "manifest_stats",
    "plot_stats",
    "scan_audio",
]


@dataclass(frozen=True)
class ManifestStats:
    """Counts and spreads of a manifest, from its lines alone (no audio is read).

    Triples are ``(min, median, max)``. ``formats`` counts file extensions in lower case;
    ``genders`` counts speakers (``"unknown"`` when the manifest says nothing).
    """

    num_utts: int
    num_speakers: int
    num_segments: int
    total_hours: float
    utt_duration_s: tuple[float, float, float]
    speaker_duration_s: tuple[float, float, float]
    utts_per_speaker: tuple[float, float, float]
    sample_rates: dict[int, int]
    formats: dict[str, int]
    genders: dict[str, int]


@dataclass(frozen=True)
class AudioScan:
    """Files found clipped, silent or unreadable by reading them: utt_ids, with
    ``clipped_fraction`` (share of samples at full scale) and ``level_db`` (RMS in dBFS)."""

    clipped: dict[str, float] = field(default_factory=dict)
    silent: dict[str, float] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    num_scanned: int = 0


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    if not len(values):
        return (0.0, 0.0, 0.0)
    array = np.asarray(values, dtype=np.float64)
    return (float(array.min()), float(np.median(array)), float(array.max()))


def _extension(path: str) -> str:
    name = os.path.basename(path)
    return name.rsplit(".", 1)[-1].lower() if "." in name else "(none)"


def manifest_stats(utts: Sequence[Utterance]) -> ManifestStats:
    """Counts of ``utts``; durations in seconds, total in hours."""
    per_speaker_s: dict[str, float] = {}
    per_speaker_n: Counter[str] = Counter()
    gender_of: dict[str, str] = {}
    for utt in utts:
        per_speaker_s[utt.speaker] = per_speaker_s.get(utt.speaker, 0.0) + utt.duration_s
        per_speaker_n[utt.speaker] += 1
        if utt.gender is not None:
            gender_of[utt.speaker] = utt.gender
    genders = Counter(gender_of.get(s, "unknown") for s in per_speaker_s)
    return ManifestStats(
        num_utts=len(utts),
        num_speakers=len(per_speaker_s),
        num_segments=sum(u.offset_s is not None for u in utts),
        total_hours=sum(u.duration_s for u in utts) / 3600,
        utt_duration_s=_spread([u.duration_s for u in utts]),
        speaker_duration_s=_spread(list(per_speaker_s.values())),
        utts_per_speaker=_spread(list(per_speaker_n.values())),
        sample_rates=dict(sorted(Counter(u.sample_rate for u in utts).items())),
        formats=dict(sorted(Counter(_extension(u.path) for u in utts).items())),
        genders=dict(sorted(genders.items())),
    )


def scan_audio(
    utts: Sequence[Utterance],
    *,
    clip_level: float = 0.999,
    max_clipped_fraction: float = 0.001,
    silence_db: float = -60.0,
) -> AudioScan:
    """Read every utterance (its span, for segments) at its own sample rate and report the clipped
    ones (more than ``max_clipped_fraction`` of samples at or over ``clip_level`` in magnitude)
    and the silent ones (RMS under ``silence_db`` dBFS). Unreadable files are listed, not raised.
    """
    clipped: dict[str, float] = {}
    silent: dict[str, float] = {}
    unreadable: dict[str, str] = {}
    for utt in utts:
        try:
            wav = load_audio(
                utt.path,
                utt.sample_rate,
                start_s=utt.offset_s or 0.0,
                duration_s=utt.duration_s if utt.offset_s is not None else None,
            )
        except AudioLoadError as err:
            unreadable[utt.utt_id] = getattr(err, "reason", None) or str(err)
            continue
        fraction = float(np.mean(np.abs(wav) >= clip_level))
        if fraction > max_clipped_fraction:
            clipped[utt.utt_id] = fraction
        level_db = float(10 * np.log10(max(float(np.mean(wav.astype(np.float64) ** 2)), 1e-20)))
        if level_db < silence_db:
            silent[utt.utt_id] = level_db
    return AudioScan(clipped, silent, unreadable, num_scanned=len(utts))


def _triple(values: tuple[float, float, float], unit: str = "s") -> str:
    return f"min {values[0]:.2f} {unit}, median {values[1]:.2f} {unit}, max {values[2]:.2f} {unit}"


def format_stats(
    stats: ManifestStats, scan: AudioScan | None = None, *, max_listed: int = 10
) -> str:
    """A few lines for people."""
    counts = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items()) or "none"  # noqa: E731
    lines = [
        f"speakers:       {stats.num_speakers}",
        f"utterances:     {stats.num_utts}"
        + (f" ({stats.num_segments} of them segments of files)" if stats.num_segments else ""),
        f"hours:          {stats.total_hours:.2f}",
        f"utterance:      {_triple(stats.utt_duration_s)}",
        f"per speaker:    {_triple(stats.speaker_duration_s)}",
        f"utts/speaker:   min {stats.utts_per_speaker[0]:.0f}, median "
        f"{stats.utts_per_speaker[1]:.1f}, max {stats.utts_per_speaker[2]:.0f}",
        f"sample rates:   {counts({f'{k} Hz': v for k, v in stats.sample_rates.items()})}",
        f"formats:        {counts(stats.formats)}",
        f"genders:        {counts(stats.genders)} (speakers)",
    ]
    if scan is not None:
        for what, found, unit in (
            ("clipped", scan.clipped, "of samples at full scale"),
            ("silent", scan.silent, "dBFS"),
        ):
            lines.append(f"{what + ':':15s} {len(found)} of {scan.num_scanned}")
            for utt_id, value in list(found.items())[:max_listed]:
                shown = f"{100 * value:.2f}%" if what == "clipped" else f"{value:.1f}"
                lines.append(f"  {utt_id}  {shown} {unit}")
            if len(found) > max_listed:
                lines.append(f"  ... and {len(found) - max_listed} more")
        if scan.unreadable:
            lines.append(f"unreadable:     {len(scan.unreadable)}")
            for utt_id, reason in list(scan.unreadable.items())[:max_listed]:
                lines.append(f"  {utt_id}: {reason}")
    return "\n".join(lines)


def plot_stats(utts: Sequence[Utterance], path: str | os.PathLike) -> None:
    """Write a PNG of two histograms: utterance durations and utterances per speaker.

    Needs matplotlib (``pip install 'speakerprint[viz]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'speakerprint[viz]'") from None
    per_speaker = Counter(u.speaker for u in utts)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        left.hist([u.duration_s for u in utts], bins=50, color="tab:blue")
        left.set_xlabel("utterance duration (s)")
        left.set_ylabel("utterances")
        left.set_title(f"{len(utts)} utterances")
        right.hist(list(per_speaker.values()), bins=50, color="tab:orange")
        right.set_xlabel("utterances per speaker")
        right.set_ylabel("speakers")
        right.set_title(f"{len(per_speaker)} speakers")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
