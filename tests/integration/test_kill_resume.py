"""`speakerprint train` killed for real (SIGTERM, SIGKILL in a step, SIGKILL in a checkpoint write)
and resumed gives exactly the losses of an uninterrupted run from the last complete checkpoint on.

One run is stopped three ways in turn, each time resumed with --resume, then run to the end; each
part is a subprocess on the demo data with a tiny model (fixed seeds, one thread, no dev set), so
the file costs five start-ups rather than seven.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from speakerprint.train.checkpoint import list_checkpoints, load_checkpoint
from speakerprint.train.config import load_config, save_config
from speakerprint.train.loop import train
from tests.conftest import REPO, tiny_config

pytestmark = pytest.mark.slow  # five CLI start-ups: about 25 s of CPU

MAX_STEPS = 16
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def config_path(tmp_path_factory, demo_prepared) -> Path:
    cfg = tiny_config(
        demo_prepared,
        **{
            "data.dev_manifest": "null",
            "data.dev_trials": "null",
            "train.max_steps": MAX_STEPS,
            "train.checkpoint_every": 1,
            "train.keep_checkpoints": 3,
            "train.num_threads": 1,
        },
    )
    path = tmp_path_factory.mktemp("kill_resume") / "tiny.yaml"
    save_config(cfg, path)
    return path


def _start(config: Path, out: Path, *extra: str, own_group: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "speakerprint", "train", str(config), "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--no-progress", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_group,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, err


def _losses(run: Path) -> dict[int, float]:
    """Loss by step from metrics.jsonl (a line being written when the run died is skipped)."""
    losses = {}
    path = run / "metrics.jsonl"
    if not path.exists():
        return losses
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in record:
            losses[record["step"]] = record["loss"]
    return losses


def _wait_for(proc: subprocess.Popen, condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


@pytest.fixture(scope="module")
def reference(config_path, tmp_path_factory) -> dict[int, float]:
    """The uninterrupted run's losses. In-process to save a start-up; the config fixes one thread,
    as the subprocesses have, so that the arithmetic is the same."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("reference")
    try:
        result = train(load_config(config_path), out, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(result.losses) == MAX_STEPS
    losses = _losses(out)
    assert losses == dict(enumerate(result.losses, start=1))
    return losses


def _check_killed_run(run: Path, reference: dict[int, float]) -> tuple[int, int]:
    """After a kill: every checkpoint that looks complete loads (nothing half-written passes for
    one), and the losses so far are the reference's. Returns (last step run, newest checkpoint)."""
    usable = list_checkpoints(run / "checkpoints")
    for path in usable:
        load_checkpoint(path)
    losses = _losses(run)
    assert losses == {step: reference[step] for step in losses}
    newest = int(usable[-1].name.removeprefix("step_")) if usable else 0
    return max(losses), newest


def _writing_a_checkpoint(run: Path) -> bool:
    # atomic_dir builds ".step_XXXXXXXX.<random>" and renames it into place once complete.
    folder = run / "checkpoints"
    try:
        return any(p.name.startswith(".step_") for p in folder.iterdir())
    except FileNotFoundError:
        return False


def test_killed_three_ways_and_resumed_gives_the_uninterrupted_losses(
    config_path, tmp_path, reference
):
    run = tmp_path / "run"

    # 1. SIGTERM: a checkpoint of the last finished step, a message naming it and --resume.
    proc = _start(config_path, run)
    _wait_for(proc, lambda: len(_losses(run)) >= 3, "step 3")
    proc.send_signal(signal.SIGTERM)
    status, err = _finish(proc)
    assert status != 0
    assert "stopped by SIGTERM after step" in err and "--resume" in err
    stopped_at = int(err.split("after step ")[1].split(";")[0])
    assert f"step_{stopped_at:08d}" in err
    assert _check_killed_run(run, reference) == (stopped_at, stopped_at)  # nothing lost

    # 2. SIGKILL during a step: at most the step in progress is lost (a checkpoint every step).
    proc = _start(config_path, run, "--resume")
    _wait_for(proc, lambda: len(_losses(run)) >= stopped_at + 3, "3 more steps")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT_S)
    last_step, newest = _check_killed_run(run, reference)
    assert stopped_at < newest <= last_step < MAX_STEPS
    assert last_step - newest <= 1

    # 3. SIGKILL while a checkpoint is being written: its temporary folder is left behind and
    # ignored; the previous checkpoint is the one resumed from.
    proc = _start(config_path, run, "--resume")
    _wait_for(
        proc,
        lambda: len(_losses(run)) > last_step and _writing_a_checkpoint(run),
        "a checkpoint write",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT_S)
    last_step, newest = _check_killed_run(run, reference)
    assert last_step < MAX_STEPS

    # 4. Resume to the end: every loss equals the uninterrupted run's, exactly.
    status, err = _finish(_start(config_path, run, "--resume"))
    assert status == 0, err
    assert _losses(run) == reference
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # interrupted writes are cleaned up on resume
    assert (run / "bundle" / "model.safetensors").is_file()


def test_sigterm_to_the_whole_process_group_with_loader_workers_checkpoints(config_path, tmp_path):
    # A scheduler (SLURM, kill -- -PGID) signals every process of the job, the DataLoader's
    # workers too: they must leave the stop to the main process, which checkpoints and exits.
    run = tmp_path / "run"
    proc = _start(config_path, run, "--set", "data.num_workers=2", own_group=True)
    _wait_for(proc, lambda: len(_losses(run)) >= 2, "step 2")
    os.killpg(proc.pid, signal.SIGTERM)
    status, err = _finish(proc)
    assert status != 0
    assert "stopped by SIGTERM after step" in err, err[-3000:]
    stopped_at = int(err.split("after step ")[1].split(";")[0])
    assert (run / "checkpoints" / f"step_{stopped_at:08d}").is_dir()
