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
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from speakerprint.augment import build_augmentation
from speakerprint.augment.codec import build_codec
from speakerprint.data.dataset import (
    CropDataset,
    EpochBatchSampler,
    SpeakerBalancedBatchSampler,
    collate_crops,
    fork_workers,
    loader_worker_init,
)
from speakerprint.data.manifest import read_manifest
from speakerprint.data.shards import ShardCropStream, read_shard_index
from speakerprint.data.trials import read_trials
from speakerprint.errors import ConfigError, SpeakerprintError
from speakerprint.eval.scoring import evaluate
from speakerprint.features import Fbank
from speakerprint.losses import ClassificationLoss, TripletLoss, build_loss
from speakerprint.models import count_parameters, create_model
from speakerprint.models.bundle import Bundle, Threshold, load_bundle, save_bundle
from speakerprint.models.layers.norm import convert_sync_batchnorm
from speakerprint.train import distributed
from speakerprint.train.checkpoint import (
    list_checkpoints,
    load_latest_checkpoint,
    prune_checkpoints,
    remove_interrupted_writes,
    save_checkpoint,
)
from speakerprint.train.config import ExperimentConfig, Phase, config_to_dict, save_config
from speakerprint.train.schedule import learning_rate, margin
from speakerprint.train.tracking import RunLog

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def describe_device(device: torch.device) -> str:
    """The hardware in words, for the records that figures are quoted from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. CPU trains in fp32 unless told otherwise."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def speaker_digest(speakers: list[str]) -> str:
    """A fingerprint of the label order: a classifier head is only reusable under the same one."""
    return hashlib.sha256("\n".join(speakers).encode("utf-8")).hexdigest()


def set_margin(loss_fn: torch.nn.Module, value: float) -> None:
    """Apply the scheduled margin to whichever loss is training."""
    if isinstance(loss_fn, ClassificationLoss):
        if loss_fn.margin is not None:
            loss_fn.margin.set_margin(value)
    elif isinstance(loss_fn, TripletLoss):
        loss_fn.margin = value


def init_weights(
    source: str | Path, model: torch.nn.Module, loss_fn: torch.nn.Module, speakers: list[str]
) -> str:
    """Load ``model.init_from`` into a fresh model: a run folder's newest checkpoint (encoder,
    and the loss head when it was trained with the same loss shapes on the same speakers) or a
    bundle (encoder only). Returns what was loaded, in words."""
    path = Path(source)
    loss_state = None
    if (path / "checkpoints").is_dir() and list_checkpoints(path / "checkpoints"):
        where, state = load_latest_checkpoint(path / "checkpoints")
        model_state = state["model"]
        if state.get("speaker_digest") == speaker_digest(speakers):
            loss_state = state["loss"]
    else:
        bundle_dir = path / "bundle" if (path / "bundle" / "config.json").is_file() else path
        if not (bundle_dir / "config.json").is_file():
            raise ConfigError(
                f"model.init_from={source}: not a run folder with checkpoints nor a model bundle"
            )
        where, model_state = bundle_dir, load_bundle(bundle_dir).encoder.state_dict()
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        reason = str(e).splitlines()[0]
        raise ConfigError(
            f"model.init_from={source}: its weights do not fit this model ({reason})"
        ) from None
    own = loss_fn.state_dict()
    if (
        loss_state is not None
        and own
        and own.keys() == loss_state.keys()
        and all(own[k].shape == loss_state[k].shape for k in own)
    ):
        loss_fn.load_state_dict(loss_state, strict=True)
        return f"encoder and loss head from {where}"
    return f"encoder from {where} (loss head starts fresh)"


def train(
    config: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train an encoder as ``config`` says, writing checkpoints and a bundle into ``run_dir``.

    With ``resume=True`` the newest complete checkpoint in ``run_dir/checkpoints`` is loaded and
    training continues from its step as if it had never stopped.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this; ``data.batch_size`` is the global
    batch, shared out equally among the ranks, and only rank 0 writes into ``run_dir``.

    Raises:
        TrainingInterrupted: SIGTERM/SIGINT arrived; a checkpoint was written to resume from.
        TrainingDiverged: ``train.max_bad_steps_in_a_row`` steps in a row had NaN/Inf losses or
            gradient norms.
    """
    logs: list[RunLog] = []
    try:
        return _train(config, run_dir, resume=resume, progress=progress, logs=logs)
    finally:
        # After the last dev evaluation, or on the way out of a failed or interrupted run.
        for run_log in logs:
            run_log.close(curves=config.train.curves_png)


def _train(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    resume: bool,
    progress: bool,
    logs: list[RunLog],
) -> TrainResult:
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    cfg = config
    if bool(cfg.data.dev_manifest) != bool(cfg.data.dev_trials):
        raise ConfigError("data.dev_manifest and data.dev_trials go together: set both or neither")
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.max_bad_steps_in_a_row < 1:
        raise ConfigError(
            f"train.max_bad_steps_in_a_row must be at least 1, got {cfg.train.max_bad_steps_in_a_row}"
        )
    resolve_device(cfg.train.device)  # the same checks and messages with one process or many
    ctx = distributed.setup(cfg.train.device)
    device = ctx.device
    per_rank_batch = distributed.per_rank_batch_size(cfg.data.batch_size, ctx.world_size)
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

    amp_dtype = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(cfg.train.seed)

    # Data.
    shards = None
    if cfg.data.train_shards:
        shards = read_shard_index(cfg.data.train_shards)
        if cfg.data.sampler != "random":
            raise ConfigError(
                f"data.sampler={cfg.data.sampler} picks utterances by speaker, which a stream of "
                "shards cannot: use data.train_manifest for it"
            )
        train_utts = []
        num_train_utts = shards.num_utterances
        speakers = list(shards.speakers)
    elif not cfg.data.train_manifest:
        raise ConfigError("data.train_manifest (or data.train_shards) is required")
    else:
        train_utts = read_manifest(cfg.data.train_manifest)
        num_train_utts = len(train_utts)
        speakers = sorted({u.speaker for u in train_utts})
    speaker_to_label = {s: i for i, s in enumerate(speakers)}
    dev_utts = dev_trials = None
    if cfg.data.dev_manifest and cfg.data.dev_trials:
        dev_utts = read_manifest(cfg.data.dev_manifest)
        dev_trials = read_trials(cfg.data.dev_trials)
    sample_rate = cfg.features.sample_rate
    if cfg.loss.name == "triplet" and cfg.data.sampler != "speaker_balanced":
        raise ConfigError(
            "loss.name=triplet mines triplets inside each batch: set data.sampler=speaker_balanced"
        )
    per_speaker = cfg.data.utterances_per_speaker
    if cfg.data.sampler == "speaker_balanced" and (
        per_speaker < 2 or cfg.data.batch_size % per_speaker
    ):
        raise ConfigError(
            f"data.sampler=speaker_balanced needs data.utterances_per_speaker >= 2 dividing "
            f"data.batch_size, got {per_speaker} and {cfg.data.batch_size}"
        )
    if cfg.data.sampler == "speaker_balanced" and not (
        2 <= cfg.data.batch_size // per_speaker <= len(speakers)
    ):
        raise ConfigError(
            f"data.sampler=speaker_balanced takes data.batch_size / data.utterances_per_speaker = "
            f"{cfg.data.batch_size // per_speaker} speakers per batch; it must be between 2 and "
            f"the {len(speakers)} training speakers"
        )
    if cfg.data.sampler == "speaker_balanced" and per_rank_batch % cfg.data.utterances_per_speaker:
        raise ConfigError(
            f"data.sampler=speaker_balanced under {ctx.world_size} processes: each rank's "
            f"{per_rank_batch} items must hold whole groups of data.utterances_per_speaker="
            f"{cfg.data.utterances_per_speaker}"
        )

    transform = build_codec(cfg.augment, sample_rate)  # None unless augment.codec_prob > 0
    dataset = CropDataset(
        train_utts,
        speaker_to_label=speaker_to_label,
        crop_s=cfg.data.crop_s,
        sample_rate=sample_rate,
        transform=transform,
    )

    def shard_stream(epoch: int, rank: int) -> ShardCropStream:
        return ShardCropStream(
            shards,
            speaker_to_label=speaker_to_label,
            crop_s=cfg.data.crop_s,
            sample_rate=sample_rate,
            buffer_size=cfg.data.shuffle_buffer,
            seed=cfg.train.seed,
            epoch=epoch,
            rank=rank,
            world_size=ctx.world_size,
            num_workers=cfg.data.num_workers,
            transform=transform,
        )

    if shards is not None:
        # Each loader worker batches its own crops; every rank stops at the fewest full batches
        # any rank has, so that all ranks take the same number of steps.
        batches_per_epoch = min(
            shard_stream(0, r).batches_per_epoch(per_rank_batch) for r in range(ctx.world_size)
        )
        source = f"{cfg.data.train_shards} ({len(shards.files)} shards)"
    else:
        batches_per_epoch = EpochBatchSampler.batches_per_epoch(num_train_utts, cfg.data.batch_size)
        source = cfg.data.train_manifest
    if batches_per_epoch == 0:
        raise ConfigError(
            f"{source} has {num_train_utts} utterances, fewer than one batch per loader worker "
            f"(data.batch_size={cfg.data.batch_size}, data.num_workers={cfg.data.num_workers})"
        )

    # Model, features, loss, optimiser.
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
    augment = build_augmentation(cfg.augment, sample_rate, device, num_speakers=len(speakers))
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
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    o = cfg.optim
    if o.name == "adam":
        optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    elif o.name == "adamw":
        optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True
        )
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    start_step = 0
    bad_in_a_row = 0  # consecutive skipped steps (NaN/Inf), carried across a resume
    if found is not None:
        path, state = found
        if state["num_speakers"] != len(speakers):
            raise ConfigError(
                f"checkpoint {path} was trained on {state['num_speakers']} speakers, the manifest "
                f"has {len(speakers)}: resume with the same training data"
            )
        model.load_state_dict(state["model"], strict=True)
        loss_fn.load_state_dict(state["loss"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        start_step = int(state["step"])
        bad_in_a_row = int(state.get("bad_steps_in_a_row", 0))
        log.info("resumed from %s at step %d", path, start_step)
    elif cfg.model.init_from:
        loaded = init_weights(cfg.model.init_from, model, loss_fn, speakers)
        log.info("initialised: %s", loaded)

    from speakerprint.viz.curves import draw_run_curves  # viz sits above train: not at the top

    metrics_log = RunLog(
        run_dir,
        start_step if found is not None else None,
        enabled=ctx.is_main,
        tensorboard=cfg.train.tensorboard,
        wandb=cfg.train.wandb,
        wandb_project=cfg.train.wandb_project,
        config=config_to_dict(cfg),
        draw_curves=draw_run_curves,
    )
    logs.append(metrics_log)
    train_step = distributed.wrap_ddp(distributed.TrainStep(model, loss_fn), ctx)
    bundle_view = Bundle(encoder=model, fbank=fbank)

    def dev_eval(step: int) -> dict | None:
        if dev_utts is None or not ctx.is_main:
            return None
        result = evaluate(
            bundle_view,
            dev_utts,
            dev_trials,
            trials_path=str(cfg.data.dev_trials),
            batch_size=cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers,
        )
        record = {
            "step": step,
            "event": "dev",
            **result.metrics.to_dict(),
            **result.score_means(),
        }
        metrics_log.write(record)
        if progress:
            tqdm.write(
                f"step {step}: dev EER {100 * result.metrics.eer:.2f}%  minDCF(p=0.01) {result.metrics.min_dcf:.3f}"
            )
        return record

    def checkpoint(step: int) -> Path | None:
        if not ctx.is_main:
            return None
        state = {
            "model": model.state_dict(),
            "loss": loss_fn.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "num_speakers": len(speakers),
            "speaker_digest": speaker_digest(speakers),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            },
            "config": config_to_dict(cfg),
            "bad_steps_in_a_row": bad_in_a_row,
        }
        path = save_checkpoint(checkpoint_dir, step, state)
        prune_checkpoints(checkpoint_dir, cfg.train.keep_checkpoints)
        return path

    log.info(
        "training %s (%.2fM parameters) on %d utterances of %d speakers, device %s, %s%s",
        cfg.model.name,
        count_parameters(model) / 1e6,
        num_train_utts,
        len(speakers),
        device,
        "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        f", rank {ctx.rank} of {ctx.world_size}" if ctx.is_distributed else "",
    )
    result = TrainResult(
        run_dir=run_dir, bundle_path=run_dir / "bundle", start_step=start_step, end_step=start_step
    )
    if start_step == 0 and cfg.train.eval_at_start:
        result.dev_initial = dev_eval(0)

    def shard_batches(step: int):
        # An epoch's stream is a function of (seed, epoch, rank, worker): a run resumed in the
        # middle of one replays it and drops the batches already trained on (they are decoded
        # again, not trained on again).
        epoch, start_batch = divmod(step, batches_per_epoch)
        while True:
            loader = DataLoader(
                shard_stream(epoch, ctx.rank),
                batch_size=per_rank_batch,
                drop_last=True,
                collate_fn=collate_crops,
                num_workers=cfg.data.num_workers,
                worker_init_fn=loader_worker_init,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(cfg.train.seed),
            )
            yield from itertools.islice(fork_workers(loader), start_batch, batches_per_epoch)
            epoch, start_batch = epoch + 1, 0

    def batches(step: int):
        if shards is not None:
            yield from shard_batches(step)
            return
        epoch, start_batch = divmod(step, batches_per_epoch)
        while True:
            if cfg.data.sampler == "speaker_balanced":
                global_batches = SpeakerBalancedBatchSampler(
                    utterance_labels,
                    cfg.data.batch_size // per_speaker,
                    per_speaker,
                    seed=cfg.train.seed,
                    epoch=epoch,
                    start_batch=start_batch,
                )
            else:
                global_batches = EpochBatchSampler(
                    len(dataset),
                    cfg.data.batch_size,
                    seed=cfg.train.seed,
                    epoch=epoch,
                    start_batch=start_batch,
                )
            # Every rank draws the same global batches and keeps its own slice of each.
            sampler = (
                distributed.ShardedBatchSampler(
                    global_batches, rank=ctx.rank, world_size=ctx.world_size
                )
                if ctx.is_distributed
                else global_batches
            )
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=collate_crops,
                num_workers=cfg.data.num_workers,
                worker_init_fn=loader_worker_init,
                pin_memory=device.type == "cuda",
                # A loader draws its workers' base seed when iterated; from the global RNG that
                # would shift the dither noise of a run resumed mid-epoch. Its own generator keeps
                # the global stream identical with or without a resume.
                generator=torch.Generator().manual_seed(cfg.train.seed),
            )
            yield from fork_workers(loader)
            epoch, start_batch = epoch + 1, 0

    utterance_labels = [speaker_to_label[u.speaker] for u in train_utts]
    model.train(not cfg.train.freeze_encoder)  # a frozen encoder keeps its BN statistics
    fbank.train()
    loss_fn.train()
    bar = tqdm(
        total=cfg.train.max_steps,
        initial=start_step,
        desc="training",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    buffers = [*model.buffers(), *loss_fn.buffers()]
    step = start_step
    data_iter = batches(step)
    t_loop = time.perf_counter()
    # Closing the batch generator on the way out shuts the loader's workers down there and then,
    # not at interpreter exit, where multiprocessing would terminate and join them blindly.
    with _StopSignals() as signals, contextlib.closing(data_iter):
        while step < cfg.train.max_steps:
            wav, labels = next(data_iter)
            wav = wav.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            lr = learning_rate(
                step, optim=cfg.optim, schedule=cfg.schedule, max_steps=cfg.train.max_steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            m = margin(step, loss=cfg.loss)
            set_margin(loss_fn, m)

            with torch.no_grad():
                # A CPU generator seeded by the step: a resumed run augments step s exactly as
                # an uninterrupted one did, with nothing more in the checkpoint.
                generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
                lengths = torch.full((wav.shape[0],), wav.shape[1], device=device)
                wav, lengths, labels = augment.waveform(wav, lengths, labels, generator)
                feats, frame_lengths = fbank(wav, lengths)
                feats = augment.features(feats, frame_lengths, generator)
                # BatchNorm running statistics change in the forward pass; a skipped step must
                # not keep them (a NaN batch would poison them for good). They are small.
                saved_buffers = [b.clone() for b in buffers]
            with autocast:
                loss, accuracy_t = train_step(feats, frame_lengths, labels)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            # The norm is measured even without clipping: a NaN/Inf gradient must not reach the
            # weights. Under DDP the gradients are already averaged, so every rank sees the same.
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else math.inf)
            )
            loss_value = float(loss.detach())
            reason = (
                f"loss is {loss_value}"
                if not math.isfinite(loss_value)
                else f"gradient norm is {grad_norm}"
                if not math.isfinite(grad_norm)
                else None
            )
            # One collective for both decisions, so that every rank skips and stops together.
            skip, stop = ctx.any(reason is not None, signals.received is not None)
            if skip:
                with torch.no_grad():
                    for b, saved_b in zip(buffers, saved_buffers):
                        b.copy_(saved_b)
            else:
                if scaler is not None:
                    scaler.step(optimizer)
                else:
                    optimizer.step()
            if scaler is not None:
                scaler.update()  # after a skipped step too: an overflow lowers the scale

            result.losses.append(loss_value)
            step += 1
            accuracy = float(accuracy_t)
            bar.update(1)
            if skip:
                bad_in_a_row += 1
                result.bad_steps.append(step)
                reason = reason or "another rank's loss or gradient is not finite"
                log.warning("step %d skipped: %s (%d in a row)", step, reason, bad_in_a_row)
                metrics_log.write(
                    {
                        "step": step,
                        "event": "skipped_step",
                        "reason": reason,
                        "bad_steps_in_a_row": bad_in_a_row,
                        "lr": lr,
                    }
                )
                if bad_in_a_row >= cfg.train.max_bad_steps_in_a_row:
                    raise TrainingDiverged(
                        f"{bad_in_a_row} steps in a row (steps {step - bad_in_a_row + 1}..{step}) "
                        f"had a NaN/Inf loss or gradient ({reason}); stopped as "
                        f"train.max_bad_steps_in_a_row={cfg.train.max_bad_steps_in_a_row} says. "
                        f"See {run_dir / 'metrics.jsonl'}; the checkpoints in {checkpoint_dir} "
                        "hold the weights before; a lower optim.lr or a look at the data may help"
                    )
            else:
                bad_in_a_row = 0
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{accuracy:.2f}", lr=f"{lr:.2e}")
                if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                    metrics_log.write(
                        {
                            "step": step,
                            "loss": loss_value,
                            "accuracy": accuracy,
                            "lr": lr,
                            "margin": m,
                        }
                    )
            if (
                cfg.train.eval_every > 0
                and step % cfg.train.eval_every == 0
                and step < cfg.train.max_steps
            ):
                dev_eval(step)
            saved = step % cfg.train.checkpoint_every == 0 and step < cfg.train.max_steps
            if saved:
                checkpoint(step)
            if stop:
                if not saved:
                    checkpoint(step)
                bar.close()
                what = signals.received or "a signal on another rank"
                metrics_log.write({"step": step, "event": "interrupted", "signal": what})
                raise TrainingInterrupted(
                    f"stopped by {what} after step {step}; checkpoint written to "
                    f"{checkpoint_dir / f'step_{step:08d}'}; continue with the same command "
                    f"and --resume (out: {run_dir})"
                )
    bar.close()
    train_wall_s = time.perf_counter() - t_loop
    metrics_log.write(
        {
            "step": step,
            "event": "end",
            "steps_run": step - start_step,
            "train_wall_s": round(train_wall_s, 2),
            "device": describe_device(device),
        }
    )
    checkpoint(step)
    result.end_step = step
    if not ctx.is_main:  # rank 0 evaluates and writes the bundle
        result.wall_s = time.perf_counter() - t0
        return result

    result.dev_final = dev_eval(step)
    threshold = None
    if result.dev_final is not None:
        threshold = Threshold(
            value=result.dev_final["eer_threshold"],
            method="eer",
            measured_on=f"{cfg.data.dev_trials} ({len(dev_trials)} trials, {len(dev_utts)} utterances)",
        )
    info = {
        "description": cfg.data.description,
        "train_manifest": cfg.data.train_manifest,
        "num_speakers": len(speakers),
        "num_utterances": num_train_utts,
        "steps": step,
        "model_name": cfg.model.name,
        "loss": asdict(cfg.loss),
        "init_from": cfg.model.init_from,
        "freeze_encoder": cfg.train.freeze_encoder,
        "augment": asdict(cfg.augment),
        "dev": result.dev_final,
        "dev_initial": result.dev_initial,
        "device": describe_device(device),
    }
    dtype = torch.float16 if cfg.train.bundle_dtype == "float16" else torch.float32
    save_bundle(
        result.bundle_path, model, fbank.config, threshold=threshold, info=info, dtype=dtype
    )
    result.wall_s = time.perf_counter() - t0
    return result


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
