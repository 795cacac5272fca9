"""Tests of speakerprint.data.stats and `speakerprint stats`: counts from the manifest, clipped and
silent files found by reading them, and the histogram PNG."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speakerprint.audio import load_audio
from speakerprint.cli.main import app
from speakerprint.data.manifest import Utterance, write_manifest
from speakerprint.data.stats import format_stats, manifest_stats, plot_stats, scan_audio

SR = 16000


def test_counts_and_spreads_from_the_manifest_alone():
    utts = [
        Utterance("a/1.wav", "/d/a/1.wav", "a", 2.0, 16000, gender="f"),
        Utterance("a/2.flac", "/d/a/2.FLAC", "a", 4.0, 16000, gender="f"),
        Utterance("a/3.wav@1.00-2.00", "/d/a/3.wav", "a", 1.0, 16000, offset_s=1.0),
        Utterance("b/1.opus", "/d/b/1.opus", "b", 3.0, 8000),
        Utterance("c/1.m4a", "/d/c/1.m4a", "c", 7200.0, 44100, gender="m"),
    ]
    stats = manifest_stats(utts)
    assert (stats.num_utts, stats.num_speakers, stats.num_segments) == (5, 3, 1)
    assert stats.total_hours == pytest.approx((2 + 4 + 1 + 3 + 7200) / 3600)
    assert stats.utt_duration_s == (1.0, 3.0, 7200.0)
    assert stats.speaker_duration_s == (3.0, 7.0, 7200.0)  # b 3 s, a 7 s, c 2 h
    assert stats.utts_per_speaker == (1, 1, 3)
    assert stats.sample_rates == {8000: 1, 16000: 3, 44100: 1}
    assert stats.formats == {"flac": 1, "m4a": 1, "opus": 1, "wav": 2}
    assert stats.genders == {"f": 1, "m": 1, "unknown": 1}
    text = format_stats(stats)
    assert "speakers:       3" in text and "(1 of them segments of files)" in text
    assert "16000 Hz: 3" in text
    empty = manifest_stats([])
    assert empty.num_utts == 0 and empty.utt_duration_s == (0.0, 0.0, 0.0)


@pytest.fixture
def scanned_manifest(tmp_path, shared_data):
    """A real utterance, a clipped copy of it, a silent file and a segment of the real one."""
    speech = load_audio(shared_data / "speechocean762/train/SPEAKER0001/000010011.opus", SR)
    files = {
        "real.wav": speech,
        "clipped.wav": np.clip(speech * 40, -1, 1),
        "silent.wav": np.zeros(SR, np.float32),
        "hiss.wav": (np.random.default_rng(0).standard_normal(SR) * 1e-4).astype(np.float32),
    }
    utts = []
    for name, wav in files.items():
        sf.write(tmp_path / name, wav, SR, subtype="PCM_16")
        utts.append(Utterance(name, name, "s", len(wav) / SR, SR))
    # A silent stretch of an otherwise loud file: scanning reads only the segment.
    loud_then_quiet = np.concatenate([speech * 40, np.zeros(SR, np.float32)]).clip(-1, 1)
    sf.write(tmp_path / "mixed.wav", loud_then_quiet, SR, subtype="PCM_16")
    utts.append(Utterance("mixed.wav@tail", "mixed.wav", "t", 0.8, SR, offset_s=len(speech) / SR))
    path = tmp_path / "m.jsonl"
    write_manifest(path, utts)
    return path


def test_scan_finds_clipped_and_silent_files(scanned_manifest):
    from speakerprint.data.manifest import read_manifest

    utts = read_manifest(scanned_manifest)
    scan = scan_audio(utts)
    assert set(scan.clipped) == {"clipped.wav"} and scan.clipped["clipped.wav"] > 0.01
    assert set(scan.silent) == {"silent.wav", "hiss.wav", "mixed.wav@tail"}
    assert scan.silent["hiss.wav"] == pytest.approx(-80, abs=1)
    assert scan.num_scanned == 5 and scan.unreadable == {}
    missing = [Utterance("gone", str(scanned_manifest.parent / "gone.wav"), "s", 1.0, SR)]
    assert scan_audio(missing).unreadable == {"gone": "no such file"}


def test_cli_stats_with_scan_and_histograms(scanned_manifest, tmp_path):
    png = tmp_path / "plots" / "stats.png"
    result = CliRunner().invoke(app, ["stats", str(scanned_manifest), "--scan", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert "utterances:     5 (1 of them segments of files)" in result.output
    assert "clipped:        1 of 5" in result.output and "silent:         3 of 5" in result.output
    assert "  clipped.wav  " in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "manifest not found" in result.output


def test_plot_needs_matplotlib(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"speakerprint\[viz\]"):
        plot_stats([Utterance("a", "a", "s", 1.0, SR)], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
