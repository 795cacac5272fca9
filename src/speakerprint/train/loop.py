"""The training loop: one readable loop for CPU and one GPU.

Each step: a batch of random crops, features (with dither) on the training device, encoder and
loss under autocast (bf16 by default on CUDA), backward, gradient clipping, optimiser step. The
learning rate and the margin are functions of the step. Checkpoints hold everything a resumed run
needs to continue exactly: weights, optimiser moments, grad scaler, step and RNG state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from speakerprint.data.dataset import (
    CropDataset,
    EpochBatchSampler,
    SpeakerBalancedBatchSampler,
    collate_crops,
)
from speakerprint.data.manifest import read_manifest
from speakerprint.data.trials import read_trials
from speakerprint.errors import ConfigError
from speakerprint.eval.scoring import evaluate
from speakerprint.features import Fbank
from speakerprint.losses import ClassificationLoss, TripletLoss, build_loss
from speakerprint.models import count_parameters, create_model
from speakerprint.models.bundle import Bundle, Threshold, load_bundle, save_bundle
from speakerprint.train.checkpoint import (
    list_checkpoints,
    load_latest_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from speakerprint.train.config import ExperimentConfig, Phase, config_to_dict, save_config
from speakerprint.train.schedule import learning_rate, margin

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    bundle_path: Path
    start_step: int
    end_step: int
    losses: list[float] = field(default_factory=list)  # one per step run by this call
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


def _worker_init(_: int) -> None:
    # Decoding is single-threaded work; torch threads in every worker would oversubscribe the CPU.
    torch.set_num_threads(1)


class _MetricsLog:
    """Append-only JSONL of training records; on resume, records past the resumed step are cut."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is not None and path.exists():
            kept = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def train(
    config: ExperimentConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train an encoder as ``config`` says, writing checkpoints and a bundle into ``run_dir``.

    With ``resume=True`` the newest complete checkpoint in ``run_dir/checkpoints`` is loaded and
    training continues from its step as if it had never stopped.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    cfg = config
    if bool(cfg.data.dev_manifest) != bool(cfg.data.dev_trials):
        raise ConfigError("data.dev_manifest and data.dev_trials go together: set both or neither")
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)

    found = load_latest_checkpoint(checkpoint_dir) if resume else None
    if not resume and any(checkpoint_dir.glob("step_*")):
        raise ConfigError(
            f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
            "or choose another --out"
        )
    if resume and found is None:
        log.warning("no checkpoint in %s: starting from step 0", checkpoint_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    device = resolve_device(cfg.train.device)
    amp_dtype = resolve_precision(cfg.train.precision, device)
    torch.manual_seed(cfg.train.seed)

    # Data.
    if not cfg.data.train_manifest:
        raise ConfigError("data.train_manifest is required")
    train_utts = read_manifest(cfg.data.train_manifest)
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
    dataset = CropDataset(
        train_utts,
        speaker_to_label=speaker_to_label,
        crop_s=cfg.data.crop_s,
        sample_rate=sample_rate,
    )
    batches_per_epoch = EpochBatchSampler.batches_per_epoch(len(dataset), cfg.data.batch_size)
    if batches_per_epoch == 0:
        raise ConfigError(
            f"{cfg.data.train_manifest} has {len(dataset)} utterances, fewer than one batch "
            f"(data.batch_size={cfg.data.batch_size})"
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
    loss_fn = build_loss(
        cfg.loss.name,
        embed_dim=model.embed_dim,
        num_classes=len(speakers),
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
        log.info("resumed from %s at step %d", path, start_step)
    elif cfg.model.init_from:
        loaded = init_weights(cfg.model.init_from, model, loss_fn, speakers)
        log.info("initialised: %s", loaded)

    metrics_log = _MetricsLog(run_dir / "metrics.jsonl", start_step if found is not None else None)
    bundle_view = Bundle(encoder=model, fbank=fbank)

    def dev_eval(step: int) -> dict | None:
        if dev_utts is None:
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

    def checkpoint(step: int) -> None:
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
        }
        save_checkpoint(checkpoint_dir, step, state)
        prune_checkpoints(checkpoint_dir, cfg.train.keep_checkpoints)

    log.info(
        "training %s (%.2fM parameters) on %d utterances of %d speakers, device %s, %s",
        cfg.model.name,
        count_parameters(model) / 1e6,
        len(train_utts),
        len(speakers),
        device,
        "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
    )
    result = TrainResult(
        run_dir=run_dir, bundle_path=run_dir / "bundle", start_step=start_step, end_step=start_step
    )
    if start_step == 0 and cfg.train.eval_at_start:
        result.dev_initial = dev_eval(0)

    def batches(step: int):
        epoch, start_batch = divmod(step, batches_per_epoch)
        while True:
            if cfg.data.sampler == "speaker_balanced":
                sampler = SpeakerBalancedBatchSampler(
                    utterance_labels,
                    cfg.data.batch_size // per_speaker,
                    per_speaker,
                    seed=cfg.train.seed,
                    epoch=epoch,
                    start_batch=start_batch,
                )
            else:
                sampler = EpochBatchSampler(
                    len(dataset),
                    cfg.data.batch_size,
                    seed=cfg.train.seed,
                    epoch=epoch,
                    start_batch=start_batch,
                )
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=collate_crops,
                num_workers=cfg.data.num_workers,
                worker_init_fn=_worker_init,
                pin_memory=device.type == "cuda",
            )
            yield from loader
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
    step = start_step
    data_iter = batches(step)
    t_loop = time.perf_counter()
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
            feats, frame_lengths = fbank(wav)
        with autocast:
            emb = model(feats, frame_lengths)
            out = loss_fn(emb, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.unscale_(optimizer)
        else:
            out.loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

        loss_value = float(out.loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}")
        result.losses.append(loss_value)
        step += 1
        accuracy = float(out.accuracy)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{accuracy:.2f}", lr=f"{lr:.2e}")
        if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
            metrics_log.write(
                {"step": step, "loss": loss_value, "accuracy": accuracy, "lr": lr, "margin": m}
            )
        if (
            cfg.train.eval_every > 0
            and step % cfg.train.eval_every == 0
            and step < cfg.train.max_steps
        ):
            dev_eval(step)
        if step % cfg.train.checkpoint_every == 0 and step < cfg.train.max_steps:
            checkpoint(step)
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
        "num_utterances": len(train_utts),
        "steps": step,
        "model_name": cfg.model.name,
        "loss": asdict(cfg.loss),
        "init_from": cfg.model.init_from,
        "freeze_encoder": cfg.train.freeze_encoder,
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
    run_dir = Path(run_dir)
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
