"""The conversation simulator on real speech: five dev speakers of speechocean762."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speakerprint.data.conversations import (
    SimulationConfig,
    overlap_fraction,
    simulate_conversations,
    write_conversations,
)
from speakerprint.data.manifest import read_manifest
from speakerprint.data.prepare import prepare_folder
from speakerprint.data.rttm import Turn, read_rttm
from speakerprint.errors import ConfigError

SPEECH = Path("/work/shared/data/speechocean762/train")


@pytest.fixture(scope="module")
def dev_manifest(tmp_path_factory) -> Path:
    if not SPEECH.is_dir():
        pytest.skip(f"no shared speech at {SPEECH}")
    out = tmp_path_factory.mktemp("prepared")
    return prepare_folder(SPEECH, out, dev_speakers=5, seed=0).dev_manifest


def small(**overrides) -> SimulationConfig:
    settings = dict(num_conversations=4, max_speakers=3, turns_per_speaker=(1, 2), seed=3)
    return SimulationConfig(**(settings | overrides))


def test_same_seed_same_files_other_seed_other_files(dev_manifest, tmp_path):
    a = write_conversations(dev_manifest, tmp_path / "a", small(overlap=0.1))
    b = write_conversations(dev_manifest, tmp_path / "b", small(overlap=0.1))
    c = write_conversations(dev_manifest, tmp_path / "c", small(overlap=0.1, seed=4))
    for name in ("reference.rttm", "conversations.jsonl", "audio/conv_0003.wav"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    assert (a.out_dir / "reference.rttm").read_bytes() != (
        c.out_dir / "reference.rttm"
    ).read_bytes()


def test_overlap_near_the_target(dev_manifest):
    utts = read_manifest(dev_manifest)
    config = small(num_conversations=8, turns_per_speaker=(2, 3), overlap=0.15)
    # all conversations' turns on one timeline, each shifted past the one before
    timeline: list[Turn] = []
    for conv in simulate_conversations(utts, config):
        shift = timeline[-1].end_s + 100.0 if timeline else 0.0
        timeline += [Turn("all", t.start_s + shift, t.duration_s, t.speaker) for t in conv.turns]
    assert overlap_fraction(timeline) == pytest.approx(0.15, abs=0.04)


def test_no_overlap_asked_none_made(dev_manifest):
    for conv in simulate_conversations(read_manifest(dev_manifest), small()):
        assert overlap_fraction(conv.turns) == 0.0
        for before, after in zip(conv.turns, conv.turns[1:]):
            assert after.start_s >= before.end_s + 0.2 - 1e-9  # at least the shortest pause


def test_rttm_is_exact_for_the_audio(dev_manifest, tmp_path):
    config = small(overlap=0.2, min_speakers=2, max_speakers=3)
    summary = write_conversations(dev_manifest, tmp_path, config)
    reference = read_rttm(summary.reference_rttm)
    index = [json.loads(line) for line in summary.index.read_text().splitlines()]
    assert [r["file_id"] for r in index] == sorted(reference)
    for record in index:
        wav, sr = sf.read(tmp_path / record["audio"], dtype="float32")
        assert sr == 16000 and len(wav) / sr == pytest.approx(record["duration_s"], abs=1e-3)
        turns = reference[record["file_id"]]
        assert read_rttm(tmp_path / record["rttm"])[record["file_id"]] == turns
        assert 2 <= record["num_speakers"] <= 3
        assert {t.speaker for t in turns} == set(record["speakers"])
        inside = np.zeros(len(wav), bool)
        for t in turns:
            start, end = round(t.start_s * sr), round(t.end_s * sr)
            assert np.sqrt(np.mean(wav[start:end] ** 2)) > 1e-3  # speech in every turn
            inside[max(start - 16, 0) : end + 16] = True  # RTTM times are to the ms
        assert not np.any(wav[~inside])  # silence wherever the reference has no speaker
        # at most two speakers at once, and never one speaker over itself
        for i, t in enumerate(turns[2:], start=2):
            assert t.start_s >= turns[i - 2].end_s - 1e-3
        for before, after in zip(turns, turns[1:]):
            assert before.speaker != after.speaker


def test_more_speakers_than_the_manifest_has_is_a_config_error(dev_manifest, tmp_path):
    with pytest.raises(ConfigError, match="5"):
        write_conversations(dev_manifest, tmp_path, small(max_speakers=6))
    assert not (tmp_path / "conversations.jsonl").exists()


@pytest.mark.parametrize(
    "bad", [dict(min_speakers=3, max_speakers=2), dict(overlap=0.6), dict(pause_s=(1.0, 0.5))]
)
def test_bad_settings_are_named(bad):
    with pytest.raises(ConfigError):
        SimulationConfig(**bad).check()


def test_cli_writes_and_reports(dev_manifest, tmp_path):
    from speakerprint.cli.main import app

    args = ["simulate-conversations", str(dev_manifest), "--out", str(tmp_path), "--num", "2"]
    args += ["--max-speakers", "3", "--overlap", "0.1", "--pause-s", "0.1", "0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 conversations" in result.output
    assert len(read_rttm(tmp_path / "reference.rttm")) == 2

    result = CliRunner().invoke(app, [*args[:4], "--max-speakers", "9"])
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert len(result.output.strip().splitlines()) == 1
