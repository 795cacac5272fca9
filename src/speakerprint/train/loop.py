"""The training loop: one readable loop for CPU, one GPU and many under torchrun.

Each step: a batch of random crops, features (with dither) on the training device, encoder and
loss under autocast (bf16 by default on CUDA), backward, gradient clipping, optimiser step. The
learning rate and the margin are functions of the step. Checkpoints hold everything a resumed run
needs to continue exactly: weights, optimiser moments, grad scaler, step and RNG state.

Long runs survive what long runs meet: a step whose loss or gradient norm is NaN/Inf is skipped
(no update) and logged, and only ``train.max_bad_steps_in_a_row`` of them in a row stop the run;
SIGTERM or SIGINT (a pre-emption, Ctrl-C) writes a checkpoint at the next step boundary and stops
with :class:`TrainingInterrupted`, from which ``--resume`` continues exactly. Under torchrun
(:mod:`speakerprint.train.distributed`) each rank trains on its slice of every global batch and
only rank 0 writes files and evaluates.

Reading order: :func:`train` -> ``_setup`` (config checks in :meth:`ExperimentConfig.validate`,
batches from :mod:`~speakerprint.train.data`, optimiser from :mod:`~speakerprint.train.optim`,
resume through :class:`~speakerprint.train.checkpoint.TrainState`) -> ``_run_steps`` (the control
flow: log, evaluate, checkpoint, skip, stop) around ``_step`` (one update) -> ``_finish`` (last
checkpoint, dev evaluation, bundle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from speakerprint.augment import Augmentation, build_augmentation
from speakerprint.data.manifest import Utterance, read_manifest
from speakerprint.data.trials import Trial, read_trials
from speakerprint.errors import ConfigError, SpeakerprintError
from speakerprint.eval.scoring import evaluate
from speakerprint.features import Fbank
from speakerprint.losses import build_loss
from speakerprint.models import count_parameters, create_model
from speakerprint.models.bundle import Bundle, Threshold, save_bundle
from speakerprint.models.layers.norm import convert_sync_batchnorm
from speakerprint.train import distributed
from speakerprint.train.checkpoint import (
    TrainState,
    init_weights,
    load_latest_checkpoint,
    remove_interrupted_writes,
)
from speakerprint.train.config import ExperimentConfig, Phase, config_to_dict, save_config
from speakerprint.train.data import TrainBatches, build_train_batches
from speakerprint.train.device import describe_device, resolve_precision
from speakerprint.train.distributed import DistContext
from speakerprint.train.optim import apply_learning_rate, build_grad_scaler, build_optimizer
from speakerprint.train.schedule import margin
from speakerprint.train.tracking import RunLog

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "init_weights",
    "train",
    "train_recipe",
]

log = logging.getLogger(__name__)


class TrainingInterrupted(SpeakerprintError):
    """SIGTERM or SIGINT stopped training; a checkpoint of the last finished step was written."""


class TrainingDiverged(SpeakerprintError):
    """Too many steps in a row had a NaN/Inf loss or gradient norm."""


class _StopSignals:
    """Turn SIGTERM and SIGINT into a request to stop at the next step boundary.

    A second SIGINT stops at once (KeyboardInterrupt), for an impatient Ctrl-C. Handlers are
    installed only in the main thread (Python allows no other) and restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class TrainResult:
    run_dir: Path
    bundle_path: Path
    start_step: int
    end_step: int
    losses: list[float] = field(
        default_factory=list
    )  # one per step run by this call (NaN: skipped)
    bad_steps: list[int] = field(
        default_factory=list
    )  # steps skipped for a NaN/Inf loss or gradient
    dev_initial: dict | None = None
    dev_final: dict | None = None
    wall_s: float = 0.0


def train(
    config: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train an encoder as ``config`` says, writing checkpoints and a bundle into ``run_dir``.

    With ``resume=True`` the newest complete checkpoint in ``run_dir/checkpoints`` is loaded and
    training continues from its step as if it had never stopped.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this; ``data.batch_size`` is the global
    batch, shared out equally among the ranks, and only rank 0 writes into ``run_dir``.

    Raises:
        ConfigError: the config does not hold together (:meth:`ExperimentConfig.validate`) or
            does not fit its data.
        TrainingInterrupted: SIGTERM/SIGINT arrived; a checkpoint was written to resume from.
        TrainingDiverged: ``train.max_bad_steps_in_a_row`` steps in a row had NaN/Inf losses or
            gradient norms.
    """
    logs: list[RunLog] = []
    try:
        return _train(config, Path(run_dir), resume=resume, progress=progress, logs=logs)
    finally:
        # After the last dev evaluation, or on the way out of a failed or interrupted run.
        for run_log in logs:
            run_log.close(curves=config.train.curves_png)


@dataclass
class _Run:
    """The parts of one training run, built once by :func:`_setup`."""

    cfg: ExperimentConfig
    ctx: DistContext
    run_dir: Path
    progress: bool
    data: TrainBatches
    dev: tuple[list[Utterance], list[Trial]] | None  # dev utterances and trials
    fbank: Fbank
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    augment: Augmentation
    train_step: torch.nn.Module  # encoder + loss, under DDP when distributed
    params: list[torch.nn.Parameter]  # those trained
    state: TrainState  # what a checkpoint saves; its step is the loop's
    amp_dtype: torch.dtype | None
    metrics_log: RunLog

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def checkpoint(self) -> Path | None:
        """Save the state at the current step (rank 0 only)."""
        if not self.ctx.is_main:
            return None
        return self.state.save(self.checkpoint_dir, keep=self.cfg.train.keep_checkpoints)

    def dev_eval(self, step: int) -> dict | None:
        """The dev EER and minDCF of the encoder now, recorded (rank 0 only; None without dev)."""
        if self.dev is None or not self.ctx.is_main:
            return None
        dev_utts, dev_trials = self.dev
        result = evaluate(
            Bundle(encoder=self.model, fbank=self.fbank),
            dev_utts,
            dev_trials,
            trials_path=str(self.cfg.data.dev_trials),
            batch_size=self.cfg.data.eval_batch_size,
            num_workers=self.cfg.data.num_workers,
        )
        record = {"step": step, "event": "dev", **result.metrics.to_dict(), **result.score_means()}
        self.metrics_log.write(record)
        if self.progress:
            metrics = result.metrics
            tqdm.write(
                f"step {step}: dev EER {100 * metrics.eer:.2f}%  "
                f"minDCF(p=0.01) {metrics.min_dcf:.3f}"
            )
        return record


def _train(
    config: ExperimentConfig, run_dir: Path, *, resume: bool, progress: bool, logs: list[RunLog]
) -> TrainResult:
    t0 = time.perf_counter()
    run = _setup(config, run_dir, resume=resume, progress=progress, logs=logs)
    start_step = run.state.step
    result = TrainResult(
        run_dir=run_dir, bundle_path=run_dir / "bundle", start_step=start_step, end_step=start_step
    )
    if start_step == 0 and config.train.eval_at_start:
        result.dev_initial = run.dev_eval(0)
    train_wall_s = _run_steps(run, result)
    _finish(run, result, train_wall_s)
    result.wall_s = time.perf_counter() - t0
    return result


def _open_run_dir(cfg: ExperimentConfig, ctx: DistContext, run_dir: Path, resume: bool):
    """The checkpoint to resume from (None: start afresh); refuses to overwrite a run; saves the
    config (rank 0)."""
    checkpoint_dir = run_dir / "checkpoints"
    if resume and ctx.is_main:
        remove_interrupted_writes(checkpoint_dir)
    found = load_latest_checkpoint(checkpoint_dir) if resume else None
    if not resume and any(checkpoint_dir.glob("step_*")):
        raise ConfigError(
            f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
            "or choose another --out"
        )
    if resume and found is None:
        log.warning("no checkpoint in %s: starting from step 0", checkpoint_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    return found


def _build_model(
    cfg: ExperimentConfig, ctx: DistContext, num_speakers: int
) -> tuple[Fbank, torch.nn.Module, Augmentation, torch.nn.Module]:
    """Features, encoder, batch augmentation and loss on the training device."""
    device = ctx.device
    fbank = Fbank(cfg.features).to(device)
    model = create_model(cfg.model.name, **cfg.model.args)
    if model.feat_dim != fbank.feat_dim:
        raise ConfigError(
            f"model {cfg.model.name} expects {model.feat_dim}-dim features but the features give "
            f"{fbank.feat_dim}: set features.num_mel_bins or the model's feat_dim"
        )
    model.to(device)
    if ctx.is_distributed and cfg.train.sync_batchnorm:
        convert_sync_batchnorm(model)
    # Noise, reverb, speed and SpecAugment on the batch, on the device (all off by default).
    # Speed perturbation makes each perturbed copy a new speaker: the head grows to 3x.
    augment = build_augmentation(
        cfg.augment, cfg.features.sample_rate, device, num_speakers=num_speakers
    )
    loss_fn = build_loss(
        cfg.loss.name,
        embed_dim=model.embed_dim,
        num_classes=augment.num_classes,
        margin=cfg.loss.margin,
        scale=cfg.loss.scale,
        mining=cfg.loss.mining,
    ).to(device)
    if cfg.train.freeze_encoder:
        if not list(loss_fn.parameters()):
            raise ConfigError(
                f"train.freeze_encoder trains only the loss head, and loss.name={cfg.loss.name} "
                "has none"
            )
        model.requires_grad_(False)
    return fbank, model, augment, loss_fn


def _setup(
    cfg: ExperimentConfig, run_dir: Path, *, resume: bool, progress: bool, logs: list[RunLog]
) -> _Run:
    """Check the config, open the run folder, build data, model and optimiser, and restore the
    checkpoint to resume from (or ``model.init_from``)."""
    cfg.validate()
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    ctx = distributed.setup(cfg.train.device)
    found = _open_run_dir(cfg, ctx, run_dir, resume)
    amp_dtype = resolve_precision(cfg.train.precision, ctx.device)
    torch.manual_seed(cfg.train.seed)

    data = build_train_batches(cfg, ctx)
    dev = None
    if cfg.data.dev_manifest and cfg.data.dev_trials:
        dev = read_manifest(cfg.data.dev_manifest), read_trials(cfg.data.dev_trials)
    fbank, model, augment, loss_fn = _build_model(cfg, ctx, len(data.speakers))
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    state = TrainState(
        model=model,
        loss_fn=loss_fn,
        optimizer=build_optimizer(params, cfg.optim),
        scaler=build_grad_scaler(amp_dtype, ctx.device),
        speakers=data.speakers,
        config=config_to_dict(cfg),
        device=ctx.device,
    )
    if found is not None:
        path, saved = found
        state.load_state_dict(saved, source=path)
        log.info("resumed from %s at step %d", path, state.step)
    elif cfg.model.init_from:
        loaded = init_weights(cfg.model.init_from, model, loss_fn, data.speakers)
        log.info("initialised: %s", loaded)

    from speakerprint.viz.curves import draw_run_curves  # viz sits above train: not at the top

    metrics_log = RunLog(
        run_dir,
        state.step if found is not None else None,
        enabled=ctx.is_main,
        tensorboard=cfg.train.tensorboard,
        wandb=cfg.train.wandb,
        wandb_project=cfg.train.wandb_project,
        config=config_to_dict(cfg),
        draw_curves=draw_run_curves,
    )
    logs.append(metrics_log)
    log.info(
        "training %s (%.2fM parameters) on %d utterances of %d speakers, device %s, %s%s",
        cfg.model.name,
        count_parameters(model) / 1e6,
        data.num_utterances,
        len(data.speakers),
        ctx.device,
        "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        f", rank {ctx.rank} of {ctx.world_size}" if ctx.is_distributed else "",
    )
    return _Run(
        cfg=cfg,
        ctx=ctx,
        run_dir=run_dir,
        progress=progress,
        data=data,
        dev=dev,
        fbank=fbank,
        model=model,
        loss_fn=loss_fn,
        augment=augment,
        train_step=distributed.wrap_ddp(distributed.TrainStep(model, loss_fn), ctx),
        params=params,
        state=state,
        amp_dtype=amp_dtype,
        metrics_log=metrics_log,
    )


@dataclass
class _StepOutcome:
    loss: float
    accuracy: float
    lr: float
    margin: float
    skip: bool  # no update: a loss or gradient somewhere was not finite
    stop: bool  # a signal asked this rank or another to stop
    reason: str | None  # this rank's non-finite value, in words


def _step(
    run: _Run, wav: torch.Tensor, labels: torch.Tensor, step: int, stop_requested: bool
) -> _StepOutcome:
    """One optimiser step on one batch, or none when a loss or gradient is not finite."""
    cfg, device = run.cfg, run.device
    optimizer, scaler = run.state.optimizer, run.state.scaler
    wav = wav.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    lr = apply_learning_rate(
        optimizer, step, optim=cfg.optim, schedule=cfg.schedule, max_steps=cfg.train.max_steps
    )
    m = margin(step, loss=cfg.loss)
    run.loss_fn.set_margin(m)

    buffers = [*run.model.buffers(), *run.loss_fn.buffers()]
    with torch.no_grad():
        # A CPU generator seeded by the step: a resumed run augments step s exactly as
        # an uninterrupted one did, with nothing more in the checkpoint.
        generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
        lengths = torch.full((wav.shape[0],), wav.shape[1], device=device)
        wav, lengths, labels = run.augment.waveform(wav, lengths, labels, generator)
        feats, frame_lengths = run.fbank(wav, lengths)  # (B, T, F), (B,)
        feats = run.augment.features(feats, frame_lengths, generator)
        # BatchNorm running statistics change in the forward pass; a skipped step must
        # not keep them (a NaN batch would poison them for good). They are small.
        saved_buffers = [b.clone() for b in buffers]
    autocast = (
        torch.autocast(device_type=device.type, dtype=run.amp_dtype)
        if run.amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        loss, accuracy = run.train_step(feats, frame_lengths, labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    # The norm is measured even without clipping: a NaN/Inf gradient must not reach the
    # weights. Under DDP the gradients are already averaged, so every rank sees the same.
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, clip))
    loss_value = float(loss.detach())
    reason = (
        f"loss is {loss_value}"
        if not math.isfinite(loss_value)
        else f"gradient norm is {grad_norm}"
        if not math.isfinite(grad_norm)
        else None
    )
    # One collective for both decisions, so that every rank skips and stops together.
    skip, stop = run.ctx.any(reason is not None, stop_requested)
    if skip:
        with torch.no_grad():
            for b, saved_b in zip(buffers, saved_buffers):
                b.copy_(saved_b)
    elif scaler is not None:
        scaler.step(optimizer)
    else:
        optimizer.step()
    if scaler is not None:
        scaler.update()  # after a skipped step too: an overflow lowers the scale
    return _StepOutcome(
        loss=loss_value,
        accuracy=float(accuracy),
        lr=lr,
        margin=m,
        skip=skip,
        stop=stop,
        reason=reason,
    )


def _run_steps(run: _Run, result: TrainResult) -> float:
    """Train from the state's step to ``train.max_steps``: log, evaluate, checkpoint, skip bad
    steps and stop on a signal. Returns the seconds spent."""
    cfg, state = run.cfg, run.state
    run.model.train(not cfg.train.freeze_encoder)  # a frozen encoder keeps its BN statistics
    run.fbank.train()
    run.loss_fn.train()
    bar = tqdm(
        total=cfg.train.max_steps,
        initial=state.step,
        desc="training",
        unit="step",
        disable=not run.progress,
        dynamic_ncols=True,
    )
    data_iter = run.data.batches(state.step)
    t_loop = time.perf_counter()
    # Closing the batch generator on the way out shuts the loader's workers down there and then,
    # not at interpreter exit, where multiprocessing would terminate and join them blindly.
    with _StopSignals() as signals, contextlib.closing(data_iter):
        while state.step < cfg.train.max_steps:
            wav, labels = next(data_iter)
            out = _step(run, wav, labels, state.step, signals.received is not None)
            result.losses.append(out.loss)
            state.step += 1
            step = state.step
            bar.update(1)
            if out.skip:
                _skipped_step(run, result, out)
            else:
                state.bad_steps_in_a_row = 0
                bar.set_postfix(
                    loss=f"{out.loss:.3f}", acc=f"{out.accuracy:.2f}", lr=f"{out.lr:.2e}"
                )
                if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                    run.metrics_log.write(
                        {
                            "step": step,
                            "loss": out.loss,
                            "accuracy": out.accuracy,
                            "lr": out.lr,
                            "margin": out.margin,
                        }
                    )
            before_end = step < cfg.train.max_steps
            if cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0 and before_end:
                run.dev_eval(step)
            saved = step % cfg.train.checkpoint_every == 0 and before_end
            if saved:
                run.checkpoint()
            if out.stop:
                if not saved:
                    run.checkpoint()
                bar.close()
                what = signals.received or "a signal on another rank"
                run.metrics_log.write({"step": step, "event": "interrupted", "signal": what})
                raise TrainingInterrupted(
                    f"stopped by {what} after step {step}; checkpoint written to "
                    f"{run.checkpoint_dir / f'step_{step:08d}'}; continue with the same command "
                    f"and --resume (out: {run.run_dir})"
                )
    bar.close()
    return time.perf_counter() - t_loop


def _skipped_step(run: _Run, result: TrainResult, out: _StepOutcome) -> None:
    """Log a skipped step; too many in a row raise :class:`TrainingDiverged`."""
    state, limit = run.state, run.cfg.train.max_bad_steps_in_a_row
    step = state.step
    state.bad_steps_in_a_row += 1
    bad = state.bad_steps_in_a_row
    result.bad_steps.append(step)
    reason = out.reason or "another rank's loss or gradient is not finite"
    log.warning("step %d skipped: %s (%d in a row)", step, reason, bad)
    run.metrics_log.write(
        {
            "step": step,
            "event": "skipped_step",
            "reason": reason,
            "bad_steps_in_a_row": bad,
            "lr": out.lr,
        }
    )
    if bad >= limit:
        raise TrainingDiverged(
            f"{bad} steps in a row (steps {step - bad + 1}..{step}) had a NaN/Inf loss or "
            f"gradient ({reason}); stopped as train.max_bad_steps_in_a_row={limit} says. "
            f"See {run.run_dir / 'metrics.jsonl'}; the checkpoints in {run.checkpoint_dir} "
            "hold the weights before; a lower optim.lr or a look at the data may help"
        )


def _finish(run: _Run, result: TrainResult, train_wall_s: float) -> None:
    """Record the end, write the last checkpoint and (rank 0) evaluate and write the bundle."""
    cfg, step = run.cfg, run.state.step
    run.metrics_log.write(
        {
            "step": step,
            "event": "end",
            "steps_run": step - result.start_step,
            "train_wall_s": round(train_wall_s, 2),
            "device": describe_device(run.device),
        }
    )
    run.checkpoint()
    result.end_step = step
    if not run.ctx.is_main:  # rank 0 evaluates and writes the bundle
        return
    result.dev_final = run.dev_eval(step)
    threshold = None
    if result.dev_final is not None:
        dev_utts, dev_trials = run.dev
        threshold = Threshold(
            value=result.dev_final["eer_threshold"],
            method="eer",
            measured_on=f"{cfg.data.dev_trials} ({len(dev_trials)} trials, "
            f"{len(dev_utts)} utterances)",
        )
    info = {
        "description": cfg.data.description,
        "train_manifest": cfg.data.train_manifest,
        "num_speakers": len(run.data.speakers),
        "num_utterances": run.data.num_utterances,
        "steps": step,
        "model_name": cfg.model.name,
        "loss": asdict(cfg.loss),
        "init_from": cfg.model.init_from,
        "freeze_encoder": cfg.train.freeze_encoder,
        "augment": asdict(cfg.augment),
        "dev": result.dev_final,
        "dev_initial": result.dev_initial,
        "device": describe_device(run.device),
    }
    dtype = torch.float16 if cfg.train.bundle_dtype == "float16" else torch.float32
    save_bundle(
        result.bundle_path, run.model, run.fbank.config, threshold=threshold, info=info, dtype=dtype
    )


def train_recipe(
    phases: list[Phase], run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> list[TrainResult]:
    """Train the phases of a recipe in order, each into ``run_dir/<phase name>``.

    A phase after the first starts from the previous phase's run unless its config sets
    ``model.init_from``. With ``resume=True`` finished phases (those with a bundle) are skipped
    and the first unfinished one continues from its newest checkpoint. A recipe without phases
    trains straight into ``run_dir``.
    """
    try:
        return _train_phases(phases, Path(run_dir), resume=resume, progress=progress)
    finally:
        distributed.teardown()  # under torchrun: leave the process group after the last phase


def _train_phases(
    phases: list[Phase], run_dir: Path, *, resume: bool, progress: bool
) -> list[TrainResult]:
    if len(phases) == 1 and phases[0].name == "":
        return [train(phases[0].config, run_dir, resume=resume, progress=progress)]
    results = []
    previous: Path | None = None
    for phase in phases:
        phase_dir = run_dir / phase.name
        cfg = phase.config
        if previous is not None and not cfg.model.init_from:
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, init_from=str(previous))
            )
        if resume and (phase_dir / "bundle" / "config.json").is_file():
            log.info("phase %s: finished already (%s), skipped", phase.name, phase_dir)
        else:
            if progress:
                tqdm.write(f"== phase {phase.name}")
            results.append(train(cfg, phase_dir, resume=resume, progress=progress))
        previous = phase_dir
    return results
