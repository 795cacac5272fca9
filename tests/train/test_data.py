"""The training batches: every batch a function of (seed, step), so a resume replays them."""

import itertools
from collections import Counter
from contextlib import closing

import pytest
import torch

from speakerprint.data.manifest import read_manifest
from speakerprint.errors import ConfigError
from speakerprint.train.data import ManifestBatches, build_train_batches
from speakerprint.train.distributed import DistContext
from tests.conftest import tiny_config

ONE_PROCESS = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _config(data, **overrides):
    sets = {"data.batch_size": 64, "data.crop_s": 0.25, "data.dev_manifest": "null"}
    return tiny_config(data, **{"data.dev_trials": "null", **sets, **overrides})


def test_every_utterance_has_its_label_before_a_batch_is_drawn(demo_prepared):
    utts = read_manifest(demo_prepared / "train.jsonl")
    source = build_train_batches(_config(demo_prepared), ONE_PROCESS)
    assert isinstance(source, ManifestBatches)
    assert source.speakers == sorted({u.speaker for u in utts})
    assert [source.speakers[label] for label in source.labels] == [u.speaker for u in utts]
    assert (source.num_utterances, source.batches_per_epoch) == (len(utts), len(utts) // 64)


@pytest.mark.parametrize("sampler", ["random", "speaker_balanced"])
def test_batches_from_a_step_continue_the_stream_across_epochs(demo_prepared, sampler):
    cfg = _config(demo_prepared, **{"data.sampler": sampler, "data.utterances_per_speaker": 4})
    source = build_train_batches(cfg, ONE_PROCESS)
    assert source.batches_per_epoch == 3  # so step 4 is the second batch of the second epoch
    with closing(source.batches(0)) as stream:  # closing it shuts the loader down
        from_start = list(itertools.islice(stream, 5))
    with closing(source.batches(4)) as stream:
        wav, labels = next(stream)
    assert torch.equal(wav, from_start[4][0]) and torch.equal(labels, from_start[4][1])
    assert wav.shape == (64, int(0.25 * cfg.features.sample_rate)) and wav.dtype == torch.float32
    if sampler == "speaker_balanced":
        for _, batch_labels in from_start:
            assert set(Counter(batch_labels.tolist()).values()) == {4}  # 16 speakers x 4


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            {"data.sampler": "speaker_balanced", "data.utterances_per_speaker": 2},
            "32 speakers per batch; it must be between 2 and the 22 training speakers",
        ),
        ({"data.batch_size": 4096}, "fewer than one batch"),
    ],
)
def test_settings_the_data_cannot_meet_are_config_errors(demo_prepared, overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_train_batches(_config(demo_prepared, **overrides), ONE_PROCESS)
