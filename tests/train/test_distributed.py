"""Two gloo processes train the same model as one process with the same global batch.

Twice: a BatchNorm-free encoder (the sharded sampler, DDP's gradient averaging of encoder and
loss head, the schedules and the optimiser, and that only rank 0 writes), and a small ECAPA-TDNN
whose BatchNorms take their statistics over both ranks (``train.sync_batchnorm``, the default);
with per-rank statistics the ECAPA-TDNN runs differ, which shows the test can tell. Dither is
off: each rank would draw noise for its own slice.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from speakerprint.errors import ConfigError
from speakerprint.features import Fbank
from speakerprint.models.base import EncoderModule
from speakerprint.train import distributed, loop
from speakerprint.train.checkpoint import load_checkpoint
from speakerprint.train.distributed import ShardedBatchSampler, per_rank_batch_size
from tests.conftest import tiny_config

STEPS = 3


class _MeanLinear(EncoderModule):
    """Masked mean of the frames, then a linear map and a tanh: no BatchNorm, no dropout."""

    family = "test_mean_linear"

    def __init__(self, *, feat_dim: int = 80, embed_dim: int = 16) -> None:
        super().__init__()
        self.feat_dim, self.embed_dim, self.min_frames = feat_dim, embed_dim, 1
        self._hparams = {"feat_dim": feat_dim, "embed_dim": embed_dim}
        self.proj = nn.Linear(feat_dim, embed_dim)

    def forward(self, feats, lengths=None):
        mask = self.input_mask(feats, lengths).transpose(1, 2).float()  # (B, T, 1)
        pooled = (feats * mask).sum(1) / mask.sum(1)  # (B, F)
        return torch.tanh(self.proj(pooled))  # (B, D)


def _create_model(name, **kwargs):
    return _MeanLinear(**kwargs)


def _config(data, model="test_mean_linear", sync_batchnorm=True):
    # Else tiny_config's small ECAPA-TDNN, with SGD: Adam's first steps are lr * sign(gradient),
    # which turns rounding-level differences of near-zero gradients into whole steps.
    model_sets = (
        {"model.name": "test_mean_linear", "model.args": "{}"}
        if model == "test_mean_linear"
        else {"optim.name": "sgd"}
    )
    return tiny_config(
        data,
        **model_sets,
        **{
            "train.sync_batchnorm": str(sync_batchnorm).lower(),
            "data.dev_manifest": "null",
            "data.dev_trials": "null",
            "data.batch_size": 8,
            "features.dither": 0.0,
            "train.max_steps": STEPS,
            "train.checkpoint_every": 100,
            "train.num_threads": 1,
            "optim.lr": 0.05,
        },
    )


class _Fbank64(Fbank):
    """The same features, handed to the model in float64."""

    def forward(self, wav, lengths):
        feats, frames = super().forward(wav, lengths)
        return feats.double(), frames


_REAL = {"Fbank": loop.Fbank, "create_model": loop.create_model, "build_loss": loop.build_loss}


def _use_dtype(dtype: torch.dtype) -> None:
    """Run this process's training in ``dtype``: the same initial weights (drawn in float32, then
    cast), the same features, then every step in ``dtype``."""
    if dtype == torch.float32:
        vars(loop).update(_REAL)
        return
    vars(loop).update(
        Fbank=_Fbank64,
        create_model=lambda *a, **k: _REAL["create_model"](*a, **k).double(),
        build_loss=lambda *a, **k: _REAL["build_loss"](*a, **k).double(),
    )


def _rank_main(rank: int, world_size: int, port: int, data, out, model, sync, dtype) -> None:
    if dtype != torch.float32:
        _use_dtype(dtype)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    if model == "test_mean_linear":
        loop.create_model = _create_model  # this process imported the real one
    try:
        result = loop.train(_config(data, model, sync), out, progress=False)
        assert len(result.losses) == STEPS
    finally:
        distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_one_and_two(tmp_path, data, monkeypatch, model, sync=True, dtype=torch.float32):
    if model == "test_mean_linear":
        monkeypatch.setattr(loop, "create_model", _create_model)
    threads = torch.get_num_threads()
    try:
        if dtype != torch.float32:
            _use_dtype(dtype)
        loop.train(_config(data, model, sync), tmp_path / "one", progress=False)
    finally:
        if dtype != torch.float32:
            _use_dtype(torch.float32)
        torch.set_num_threads(threads)
    mp.spawn(
        _rank_main,
        args=(2, _free_port(), data, tmp_path / "two", model, sync, dtype),
        nprocs=2,
        join=True,
    )
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / f"step_{STEPS:08d}")
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / f"step_{STEPS:08d}")
    return one, two


def _assert_same(one, two):
    for part in ("model", "loss"):
        assert one[part].keys() == two[part].keys()
        for key, value in one[part].items():
            torch.testing.assert_close(two[part][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_two_gloo_processes_train_the_model_of_one(tmp_path, demo_prepared, monkeypatch):
    one, two = _train_one_and_two(tmp_path, demo_prepared, monkeypatch, "test_mean_linear")
    _assert_same(one, two)
    # The weights moved, so equality is not that of two untouched models.
    start = _MeanLinear().state_dict()
    assert not torch.allclose(one["model"]["proj.weight"], start["proj.weight"])
    # Only rank 0 wrote: one metrics file with one record per step, one bundle.
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert sum('"loss"' in line for line in lines) == STEPS
    assert (tmp_path / "two" / "bundle" / "model.safetensors").is_file()


def _max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two checkpoints' floating-point weights and buffers."""
    return max(
        float((a[part][key].double() - b[part][key].double()).abs().max())
        for part in ("model", "loss")
        for key in a[part]
        if a[part][key].is_floating_point()
    )


@pytest.mark.parametrize("sync", [True, False])
def test_batchnorm_statistics_over_both_ranks_give_the_model_of_one(
    tmp_path, demo_prepared, monkeypatch, sync
):
    """In float64 the two ranks reproduce one process to rounding: the statistics are reduced
    across ranks exactly as one process computes them. In float32 the runs agree only as well as
    float32 follows the exact run: this small ECAPA-TDNN at lr 0.05 amplifies rounding (which
    depends on the CPU's SIMD kernels: AVX2 and AVX-512 round differently) to ~1e-3 in three
    steps, so the float32 bound is twice the float32 run's own distance from the float64 run,
    measured here, not a fixed tolerance."""
    one, two = _train_one_and_two(
        tmp_path / "64", demo_prepared, monkeypatch, "ecapa", sync, torch.float64
    )
    bn_means = [k for k in one["model"] if k.endswith("running_mean")]
    assert len(bn_means) > 10  # the encoder has BatchNorms, and they were trained
    assert one["model"][bn_means[0]].dtype == torch.float64
    if not sync:
        # Per-rank statistics: a real difference, far above float64 rounding.
        assert _max_difference(one, two) > 1e-4, "per-rank statistics gave the model of one"
        return
    for part in ("model", "loss"):
        for key, value in one[part].items():
            torch.testing.assert_close(two[part][key], value, rtol=1e-9, atol=1e-12, msg=key)
    one32, two32 = _train_one_and_two(tmp_path / "32", demo_prepared, monkeypatch, "ecapa", sync)
    rounding = _max_difference(one32, one)  # float32 against the exact run, same start
    assert _max_difference(one32, two32) <= 2 * rounding, (_max_difference(one32, two32), rounding)


def test_the_ranks_slices_make_up_the_global_batch():
    batches = [list(range(i, i + 8)) for i in range(0, 32, 8)]
    for world_size in (1, 2, 4):
        shards = [
            list(ShardedBatchSampler(batches, rank=r, world_size=world_size))
            for r in range(world_size)
        ]
        for b, batch in enumerate(batches):
            assert sum((s[b] for s in shards), []) == batch
            assert {len(s[b]) for s in shards} == {8 // world_size}


def test_a_global_batch_that_does_not_divide_is_a_config_error():
    assert per_rank_batch_size(64, 4) == 16
    with pytest.raises(ConfigError, match="divide evenly among the 3 processes"):
        per_rank_batch_size(64, 3)


def test_one_process_without_torchrun_is_not_distributed(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert ctx.any(True, False) == [True, False]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        distributed.setup("cpu")


def test_torchrun_cli_trains_and_only_rank_zero_reports(tmp_path, demo_prepared):
    """The README's command form: `torchrun --standalone --nproc_per_node=N -m speakerprint train`."""
    import subprocess
    import sys
    from pathlib import Path

    from speakerprint.train.config import save_config

    config = tmp_path / "tiny.yaml"
    save_config(tiny_config(demo_prepared, **{"train.max_steps": "2"}), config)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "speakerprint", "train", str(config),
               "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("bundle:") == 1, done.stdout
    assert "trained steps 0..2" in done.stdout
    assert (tmp_path / "run" / "bundle" / "config.json").is_file()
