import gc

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from speakerprint.audio import fit_to_length
from speakerprint.data.dataset import (
    CropDataset,
    EpochBatchSampler,
    UtteranceDataset,
    UtteranceTable,
    collate_crops,
    collate_padded,
    fork_workers,
    length_sorted_batches,
)
from speakerprint.data.manifest import Utterance


def test_fit_to_length_repeats_short_and_cuts_long():
    wav = np.arange(3, dtype=np.float32)
    assert fit_to_length(wav, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert fit_to_length(np.arange(10, dtype=np.float32), 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        fit_to_length(np.zeros(0, dtype=np.float32), 4)


def _utts(tmp_path, durations):
    rng = np.random.default_rng(0)
    utts = []
    for i, d in enumerate(durations):
        path = tmp_path / f"u{i}.wav"
        sf.write(
            path, rng.uniform(-0.5, 0.5, int(d * 16000)).astype(np.float32), 16000, subtype="FLOAT"
        )
        utts.append(Utterance(f"s{i % 3}/u{i}.wav", str(path), f"s{i % 3}", d, 16000))
    return utts


def test_sampler_is_a_deterministic_permutation_and_resumes_mid_epoch():
    full = list(EpochBatchSampler(10, 3, seed=1, epoch=2))
    assert len(full) == 3  # the incomplete last batch is dropped
    indices = [i for batch in full for i, _ in batch]
    assert len(set(indices)) == 9
    assert full == list(EpochBatchSampler(10, 3, seed=1, epoch=2))
    assert full != list(EpochBatchSampler(10, 3, seed=1, epoch=3))
    assert list(EpochBatchSampler(10, 3, seed=1, epoch=2, start_batch=2)) == full[2:]


def test_crops_do_not_depend_on_the_number_of_workers(tmp_path):
    utts = _utts(tmp_path, [3.0, 0.7, 2.5, 4.0, 1.0, 2.0])
    ds = CropDataset(utts, speaker_to_label={"s0": 0, "s1": 1, "s2": 2}, crop_s=1.5)

    def run(workers):
        sampler = EpochBatchSampler(len(ds), 2, seed=0, epoch=0)
        loader = DataLoader(
            ds, batch_sampler=sampler, collate_fn=collate_crops, num_workers=workers
        )
        return list(loader)

    one, two = run(0), run(2)
    assert len(one) == 3
    for (w1, l1), (w2, l2) in zip(one, two):
        assert w1.shape == (2, 24000)
        assert torch.equal(w1, w2) and torch.equal(l1, l2)


def test_crop_is_a_window_of_the_file(tmp_path):
    utts = _utts(tmp_path, [3.0])
    full, _ = sf.read(utts[0].path, dtype="float32")
    ds = CropDataset(utts, speaker_to_label={"s0": 0}, crop_s=1.0)
    wav, label = ds[(0, 123)]
    assert label == 0 and wav.shape == (16000,)
    starts = [i for i in range(len(full) - 16000) if np.array_equal(full[i : i + 16000], wav)]
    assert len(starts) == 1


def test_padded_collate_and_length_sorted_batches(tmp_path):
    utts = _utts(tmp_path, [1.0, 3.0, 2.0])
    ds = UtteranceDataset(utts)
    batches = length_sorted_batches([u.duration_s for u in utts], 2)
    assert batches == [[1, 2], [0]]
    wav, lengths, idx = collate_padded([ds[i] for i in batches[0]])
    assert wav.shape == (2, 48000) and lengths.tolist() == [48000, 32000] and idx == [1, 2]
    assert torch.all(wav[1, 32000:] == 0)


def test_a_bad_file_in_a_worker_raises_audio_load_error_naming_it(tmp_path):
    from speakerprint.audio import AudioLoadError

    utts = _utts(tmp_path, [2.0, 2.0])
    (tmp_path / "u1.wav").write_text("not audio")
    ds = CropDataset(utts, speaker_to_label={"s0": 0, "s1": 1}, crop_s=1.0)
    sampler = EpochBatchSampler(len(ds), 2, seed=0, epoch=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_crops, num_workers=1)
    with pytest.raises(AudioLoadError, match="u1.wav"):
        list(loader)


def test_utterance_table_gives_back_paths_and_tells_a_whole_file_from_a_segment_at_zero():
    paths = ["/d/ç é/a.wav", "/d/b.flac", "/d/\udcff-not-utf8.wav", "/d/c.opus"]
    offsets = [None, 0.0, 1.5, None]
    utts = [
        Utterance(f"u{i}", p, "s", 2.0 + i, 16000, o)
        for i, (p, o) in enumerate(zip(paths, offsets))
    ]
    table = UtteranceTable(utts)
    assert len(table) == 4
    assert [table.path(i) for i in range(4)] == paths
    assert [table.offset(i) for i in range(4)] == offsets
    assert table.durations.tolist() == [2.0, 3.0, 4.0, 5.0]


def test_a_segment_window_reads_inside_the_segment(tmp_path):
    (utt,) = _utts(tmp_path, [3.0])
    full, _ = sf.read(utt.path, dtype="float32")
    segment = Utterance("seg", utt.path, "s0", 1.0, 16000, offset_s=1.5)
    ds = UtteranceDataset([segment, utt], windows=[(0, 0.25, None), (1, 0.5, 0.5)])
    rest_of_segment, index = ds[0]
    assert index == 0 and np.array_equal(rest_of_segment, full[28000:40000])
    window, _ = ds[1]
    assert np.array_equal(window, full[8000:16000])


class _FreezeCount(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return gc.get_freeze_count()


def test_workers_start_with_the_parents_objects_frozen_and_the_parent_unfreezes():
    # A frozen object is one a worker's garbage collector never writes to (see fork_workers).
    in_workers = list(fork_workers(DataLoader(_FreezeCount(), batch_size=None, num_workers=2)))
    assert len(in_workers) == 4 and all(count > 0 for count in in_workers)
    assert gc.get_freeze_count() == 0
    in_process = list(fork_workers(DataLoader(_FreezeCount(), batch_size=None, num_workers=0)))
    assert in_process == [0, 0, 0, 0]
