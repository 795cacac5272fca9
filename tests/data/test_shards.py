"""Tar shards: what goes in comes out once per epoch, deterministically, and training reads them."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speakerprint.audio import load_audio
from speakerprint.cli.main import app
from speakerprint.data.manifest import read_manifest
from speakerprint.data.shards import (
    ShardCropStream,
    _read_pairs,
    read_shard_index,
    write_shards,
)
from speakerprint.errors import ConfigError, ManifestError
from speakerprint.train.checkpoint import list_checkpoints
from speakerprint.train.loop import train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def train_utts(demo_prepared):
    return read_manifest(demo_prepared / "train.jsonl")


@pytest.fixture(scope="module")
def sharded(train_utts, tmp_path_factory):
    return write_shards(train_utts, tmp_path_factory.mktemp("shards"), utterances_per_shard=40)


def stream(index, **kwargs):
    labels = {s: i for i, s in enumerate(index.speakers)}
    return ShardCropStream(index, speaker_to_label=labels, crop_s=0.5, buffer_size=16, **kwargs)


def test_every_utterance_is_stored_once_with_its_own_bytes(train_utts, sharded):
    assert sharded.num_utterances == len(train_utts) == sum(sharded.counts)
    assert len(sharded.files) == -(-len(train_utts) // 40)
    assert sharded.speakers == sorted({u.speaker for u in train_utts})
    by_id = {u.utt_id: u for u in train_utts}
    seen = []
    for path in sharded.files:
        for meta, data, name in _read_pairs(path):
            utt = by_id[meta["utt_id"]]
            assert meta["speaker"] == utt.speaker and name.endswith(Path(utt.path).suffix)
            assert data == Path(utt.path).read_bytes()
            seen.append(meta["utt_id"])
    assert sorted(seen) == sorted(by_id)
    speakers_in_first = {m["speaker"] for m, _, _ in _read_pairs(sharded.files[0])}
    assert len(speakers_in_first) > 5  # dealt in a shuffled order, not speaker by speaker


def test_a_segment_is_stored_as_flac_of_its_span(train_utts, tmp_path):
    utt = dataclasses.replace(train_utts[0], utt_id="seg", offset_s=0.5, duration_s=1.0)
    index = write_shards([utt], tmp_path / "s")
    ((meta, data, name),) = list(_read_pairs(index.files[0]))
    assert name.endswith(".flac") and meta["duration_s"] == 1.0
    (tmp_path / "seg.flac").write_bytes(data)
    expected = load_audio(utt.path, 16000, start_s=0.5, duration_s=1.0)
    got = load_audio(tmp_path / "seg.flac", 16000)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0 / 32768 + 1e-6  # 16-bit FLAC of the same span


def test_ranks_together_see_every_utterance_once_per_epoch(sharded):
    labels = Counter()
    for rank in (0, 1):
        got = list(stream(sharded, rank=rank, world_size=2))
        assert all(w.shape == (8000,) and w.dtype == np.float32 for w, _ in got)
        labels.update(label for _, label in got)
    by_shard = Counter()
    for path in sharded.files:
        by_shard.update(sharded.speakers.index(m["speaker"]) for m, _, _ in _read_pairs(path))
    assert labels == by_shard


def test_the_stream_is_a_function_of_seed_and_epoch(sharded):
    def labels(**kw):
        return [label for _, label in stream(sharded, **kw)]

    first = list(stream(sharded, epoch=0))
    again = list(stream(sharded, epoch=0))
    assert [lab for _, lab in first] == [lab for _, lab in again]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert labels(epoch=0) != labels(epoch=1)
    assert labels(epoch=0) != labels(epoch=0, seed=1)
    assert sorted(labels(epoch=0)) == sorted(labels(epoch=1))


def test_workers_split_the_shards_without_overlap(sharded):
    s = stream(sharded, rank=1, world_size=2, num_workers=2)
    slots = [
        stream(sharded, rank=r, world_size=2, num_workers=2).slot_shards(w)
        for r in (0, 1)
        for w in (0, 1)
    ]
    assert sorted(i for slot in slots for i in slot) == list(range(len(sharded.files)))
    assert s.items_per_worker() == [
        sum(sharded.counts[i] for i in s.slot_shards(w)) for w in (0, 1)
    ]
    assert s.batches_per_epoch(10) == sum(n // 10 for n in s.items_per_worker())


def test_bad_shard_folders_are_named(sharded, tmp_path):
    with pytest.raises(ManifestError, match="no shard index"):
        read_shard_index(tmp_path)
    with pytest.raises(ConfigError, match="write at least 12 shards"):
        stream(sharded, world_size=3, num_workers=4)
    broken = tmp_path / "broken"
    shutil.copytree(sharded.root, broken)
    first = broken / sharded.files[0].name
    first.write_bytes(first.read_bytes()[:5000])
    with pytest.raises(ManifestError, match=f"{first.name}: corrupt shard"):
        list(stream(read_shard_index(broken)))
    first.unlink()
    with pytest.raises(ManifestError, match="missing"):
        read_shard_index(broken)


def test_shard_command(demo_prepared, tmp_path):
    out = tmp_path / "shards"
    args = ["shard", str(demo_prepared / "train.jsonl"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--utterances-per-shard", "100", "--no-progress"])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "shards.json").read_text())
    assert [s["utterances"] for s in index["shards"]][:-1] == [100] * (len(index["shards"]) - 1)
    assert f"in {len(index['shards'])} shard(s)" in result.output


def test_training_from_shards_resumes_exactly(sharded, demo_prepared, tmp_path):
    # 3 batches of 64 an epoch from one stream: 6 steps cross an epoch; resume from step 4.
    cfg = tiny_config(
        demo_prepared,
        **{
            "data.train_manifest": "",
            "data.train_shards": str(sharded.root),
            "data.shuffle_buffer": 32,
            "data.batch_size": 64,
            "train.max_steps": 6,
            "train.checkpoint_every": 2,
            "train.keep_checkpoints": 5,
            "data.dev_manifest": "null",
            "data.dev_trials": "null",
        },
    )
    full = train(cfg, tmp_path / "full", progress=False)
    assert len(full.losses) == 6
    info = json.loads((tmp_path / "full" / "bundle" / "config.json").read_text())["info"]
    assert info["num_utterances"] == sharded.num_utterances
    assert info["num_speakers"] == len(sharded.speakers)

    interrupted = tmp_path / "interrupted"
    train(cfg, interrupted, progress=False)
    for path in list_checkpoints(interrupted / "checkpoints"):
        if path.name != "step_00000004":
            shutil.rmtree(path)
    shutil.rmtree(interrupted / "bundle")
    resumed = train(cfg, interrupted, resume=True, progress=False)
    assert resumed.start_step == 4 and resumed.losses == full.losses[4:]
    with pytest.raises(ConfigError, match="speaker_balanced"):
        train(
            dataclasses.replace(
                cfg, data=dataclasses.replace(cfg.data, sampler="speaker_balanced")
            ),
            tmp_path / "balanced",
            progress=False,
        )
