"""Tests of speakerprint.data.prepare on generated audio trees and on real speechocean762 files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerprint.data import (
    check_trials_against,
    prepare_folder,
    read_manifest,
    read_trials,
)
from speakerprint.errors import ManifestError

SPEECHOCEAN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "speechocean762"


def _write_audio(path: Path, num_samples: int, sample_rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = 0.1 * np.sin(np.arange(num_samples) * 0.05).astype(np.float32)
    sf.write(path, wav, sample_rate)


@pytest.fixture(scope="module")
def audio_tree(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int]]]:
    """6 speakers, nested folders, wav and flac at two rates, plus files that must be skipped.

    Returns the root and ``{utt_id: (num_samples, sample_rate)}`` of the good files.
    """
    root = tmp_path_factory.mktemp("tree") / "root"
    expected = {}
    for s in range(6):
        for u in range(4):
            # Nesting differs per speaker: flat, one level, two levels.
            sub = ["", f"sess{u % 2}/", f"video{u % 2}/clip{u}/"][s % 3]
            extension = ["wav", "flac", "WAV"][u % 3]
            sample_rate = 8000 if (s + u) % 2 else 16000
            num_samples = 800 + 160 * (4 * s + u)
            utt_id = f"spk{s}/{sub}utt{u}.{extension}"
            _write_audio(root / utt_id, num_samples, sample_rate)
            expected[utt_id] = (num_samples, sample_rate)
    (root / "spk1" / "sess0" / "corrupt.wav").write_text("this is not audio")
    _write_audio(root / "loose.wav", 1600, 16000)  # no speaker folder
    (root / "spk1" / "notes.txt").write_text("not an audio extension: ignored silently")
    return root, expected


def _skipped(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path\treason"
    return dict(line.split("\t") for line in lines[1:])


def test_manifest_of_a_tree_with_bad_files(audio_tree, tmp_path, caplog):
    root, expected = audio_tree
    with caplog.at_level(logging.WARNING, logger="speakerprint.data.prepare"):
        prepared = prepare_folder(root, tmp_path / "out")
    utts = read_manifest(prepared.train_manifest)
    assert [u.utt_id for u in utts] == sorted(expected)
    for utt in utts:
        num_samples, sample_rate = expected[utt.utt_id]
        assert utt.speaker == utt.utt_id.split("/")[0]
        assert Path(utt.path).is_absolute() and Path(utt.path) == root / utt.utt_id
        assert utt.sample_rate == sample_rate
        assert utt.duration_s == pytest.approx(num_samples / sample_rate)
    assert prepared.dev_manifest is None and prepared.dev_trials is None
    assert (prepared.num_train_utts, prepared.num_train_speakers) == (24, 6)
    assert prepared.num_dev_trials == 0 and prepared.num_skipped == 2
    assert not (tmp_path / "out" / "dev.jsonl").exists()

    skipped = _skipped(prepared.skipped)
    assert set(skipped) == {str(root / "spk1/sess0/corrupt.wav"), str(root / "loose.wav")}
    assert "speaker folder" in skipped[str(root / "loose.wav")]
    assert skipped[str(root / "spk1/sess0/corrupt.wav")]  # the loader's reason, not empty
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "corrupt.wav" in warned and "loose.wav" in warned


def test_dev_split_is_speaker_disjoint_and_deterministic(audio_tree, tmp_path):
    root, expected = audio_tree
    first = prepare_folder(root, tmp_path / "a", dev_speakers=2, seed=7)
    train = read_manifest(first.train_manifest)
    dev = read_manifest(first.dev_manifest)
    train_speakers = {u.speaker for u in train}
    dev_speakers = {u.speaker for u in dev}
    assert len(dev_speakers) == 2 and not train_speakers & dev_speakers
    assert train_speakers | dev_speakers == {f"spk{s}" for s in range(6)}
    assert len(train) + len(dev) == len(expected)
    assert (first.num_dev_speakers, first.num_train_speakers) == (2, 4)

    trials = read_trials(first.dev_trials)
    check_trials_against(trials, {u.utt_id for u in dev}, first.dev_trials)
    # 2 speakers x C(4, 2) = 12 target pairs, fewer than the default, so all of them.
    assert sum(t.label for t in trials) == 12 and len(trials) == first.num_dev_trials == 24

    prepare_folder(root, tmp_path / "b", dev_speakers=2, seed=7)
    for name in ("train.jsonl", "dev.jsonl", "dev_trials.txt", "skipped.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    chosen = {
        frozenset(
            u.speaker
            for u in read_manifest(
                prepare_folder(root, tmp_path / f"s{seed}", dev_speakers=2, seed=seed).dev_manifest
            )
        )
        for seed in range(4)
    }
    assert len(chosen) > 1  # the seed changes the choice


def test_num_dev_trials_and_extensions(audio_tree, tmp_path):
    root, expected = audio_tree
    prepared = prepare_folder(root, tmp_path, dev_speakers=3, num_dev_trials=10)
    trials = read_trials(prepared.dev_trials)
    assert len(trials) == 10 and sum(t.label for t in trials) == 5

    only_flac = prepare_folder(root, tmp_path / "flac", extensions=[".FLAC"])
    utts = read_manifest(only_flac.train_manifest)
    assert {u.utt_id for u in utts} == {k for k in expected if k.endswith(".flac")}
    assert only_flac.num_skipped == 0  # corrupt.wav and loose.wav are not even looked at


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dev_speakers": 6}, "dev_speakers=6 leaves no training speakers.*6 speaker"),
        ({"dev_speakers": 1}, "dev_speakers must be 0 or at least 2"),
        ({"dev_speakers": -1}, "dev_speakers must be 0 or at least 2"),
        ({"dev_speakers": 2, "num_dev_trials": 7}, "num_dev_trials must be even"),
    ],
)
def test_bad_arguments(audio_tree, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_folder(audio_tree[0], tmp_path, **kwargs)
    assert not (tmp_path / "train.jsonl").exists()


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "root" / "spk0").mkdir(parents=True)
    (tmp_path / "root" / "spk0" / "bad.wav").write_text("not audio")
    with pytest.raises(ManifestError, match="no readable audio file"):
        prepare_folder(tmp_path / "root", tmp_path / "out")
    with pytest.raises(ManifestError, match="not a folder"):
        prepare_folder(tmp_path / "missing", tmp_path / "out")


@pytest.mark.skipif(not SPEECHOCEAN.exists(), reason="shared speechocean762 data not present")
def test_real_speechocean762_subset(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    chosen = sorted(p for p in (SPEECHOCEAN / "train").iterdir() if p.is_dir())[:5]
    for folder in chosen:
        (root / folder.name).symlink_to(folder.resolve(), target_is_directory=True)

    prepared = prepare_folder(root, tmp_path / "out", dev_speakers=2, seed=0)
    utts = read_manifest(prepared.train_manifest) + read_manifest(prepared.dev_manifest)
    files = sorted(f for folder in chosen for f in folder.glob("*.opus"))
    assert len(utts) == len(files) and prepared.num_skipped == 0
    assert {u.speaker for u in utts} == {f.name for f in chosen}
    for utt in utts:
        info = sf.info(utt.path)
        assert utt.sample_rate == info.samplerate == 16000
        assert utt.duration_s == pytest.approx(info.frames / info.samplerate, abs=1e-3)
        assert 1.0 < utt.duration_s < 25.0
        assert Path(utt.path) == root / utt.utt_id  # the link path, not its target
    trials = read_trials(prepared.dev_trials)
    check_trials_against(trials, {u.utt_id for u in utts}, prepared.dev_trials)
