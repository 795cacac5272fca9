"""Training throughput, ours beside SpeechBrain's ECAPA-TDNN in the same process: crops per second,
the fraction of the GPU's bf16 peak that the counted FLOPs reach, and how long each step waits
for data.

Every cell runs the same training step skeleton as ``speakerprint train`` (``train/loop.py``):
take a batch of crops, move it to the device, augment the waveforms (ours, when asked), compute
the features on the device, forward and loss under autocast (bf16) or in fp32, backward, clip the
gradient norm (5.0), optimiser step (Adam), and read the loss back to the host, which, as in the
training loop, waits for the step to finish. Systems:

- ours: any registered model (``ecapa_tdnn_c512``, ``ecapa_tdnn_c1024``, ``titanet_s``,
  ``titanet_l``, ``resnet34`` ...) with our ``Fbank`` (80 bins) and AAM-softmax (m=0.2, s=30);
  with ``--augment on`` also noise, babble and reverberation from synthetic banks of the recipes'
  sizes, speed perturbation and SpecAugment, every one with probability 1 (an upper bound);
- ``sb_ecapa_c512`` / ``sb_ecapa_c1024``: SpeechBrain's ``ECAPA_TDNN`` (channels
  [C, C, C, C, 3C], attention 128, 192 out; 6.19M / 20.77M parameters) with its own ``Fbank``
  (80 mel) and ``InputNormalization`` (sentence, no std), its ``Classifier`` and
  ``LogSoftmaxWrapper(AdditiveAngularMargin(0.2, 30))``, as its VoxCeleb ECAPA recipe
  (``train_ecapa_tdnn.yaml``) trains them; its features run inside autocast, as SpeechBrain's
  ``compute_forward`` does. No augmentation (the same for our rows they are compared with).

Data: ``synthetic`` (batches made once on the device: the compute ceiling) or ``disk`` (our
``CropDataset`` over a manifest or a speaker-per-folder tree, ``--workers`` loader processes,
pinned memory: the end-to-end figure). Both systems read the same batches.

Per cell: ``--warmup`` untimed steps (torch.compile compiles in them; the compile time is
printed), then ``--steps`` timed steps. Reported: crops per second (batch x steps / time),
median and 10-90th percentile step time, the share of the step time spent waiting for the next
batch, FLOPs per step counted by ``torch.utils.flop_counter`` (forward and backward of the
features, model and loss, once per model, batch and crop) and what they reach per second, as a
fraction of the GPU's dense bf16 peak (``--peak-tflops`` or the datasheet value for the GPU),
peak GPU memory, and for our ECAPA rows the ratio to SpeechBrain's of the same width in the same
setting.

``--ddp on`` adds rows with the step wrapped in ``DistributedDataParallel`` (gradient bucketing,
the default 25 MB buckets): on one process it shows the per-GPU cost of DDP; under ``torchrun
--nproc_per_node N`` every rank runs the grid on its own GPU and rank 0 reports per-GPU figures.

    # on a GPU: the issue's comparison (ECAPA C=1024 bf16 vs SpeechBrain), loading from disk
    PYTHONPATH=src python bench/gpu_train.py --systems ecapa_tdnn_c1024 sb_ecapa_c1024 \\
        --batch 128 256 --crop 2 3 --precision bf16 --compile off on --data disk \\
        --folder data_gpu/speechocean762 --workers 12 --out bench/gpu_train.md
    # a quick check on a CPU
    PYTHONPATH=src python bench/gpu_train.py --device cpu --systems ecapa_tdnn_c512 \\
        sb_ecapa_c512 --batch 4 --crop 2 --precision fp32 --warmup 1 --steps 2 --workers 1
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import math
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speakerprint.augment import (
    AdditiveNoise,
    Augmentation,
    AugmentConfig,
    Reverb,
    SpecAugment,
    SpeedPerturb,
)
from speakerprint.data.dataset import (
    CropDataset,
    EpochBatchSampler,
    collate_crops,
    loader_worker_init,
)
from speakerprint.data.manifest import read_manifest
from speakerprint.features import Fbank, FbankConfig
from speakerprint.losses import build_loss
from speakerprint.models import count_parameters, create_model
from speakerprint.train.distributed import TrainStep
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

SAMPLE_RATE = 16000
NUM_CLASSES = 1000  # the head's size; a VoxCeleb2 run has 5,994 (the head is a small share)
GRAD_CLIP = 5.0

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the first name
# that occurs in torch.cuda.get_device_name() wins.
BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM5
    "H200": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "A10G": 70.0,
}


def bf16_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given with --peak-tflops"
    if device.type != "cuda":
        return None, "no GPU"
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value, f"{name}: {value:g} TFLOP/s dense bf16 (datasheet)"
    return None, f"{name}: no datasheet peak known (pass --peak-tflops)"


# -- systems -------------------------------------------------------------------------------------


@dataclass
class System:
    """What a training step needs: ``features(wav, labels) -> (feats, aux, labels)`` (no grad) and
    ``module(feats, aux, labels) -> loss`` (the part with gradients, DDP-wrappable)."""

    name: str
    params: int  # the encoder's
    module: torch.nn.Module
    features: Callable
    features_in_autocast: bool
    parameters: list[torch.nn.Parameter] = field(default_factory=list)


class _OurLoss(torch.nn.Module):
    def __init__(self, step: TrainStep) -> None:
        super().__init__()
        self.step = step

    def forward(self, feats, frame_lengths, labels):
        return self.step(feats, frame_lengths, labels)[0]


def our_system(name: str, device: torch.device, augment: bool) -> System:
    fbank = Fbank(FbankConfig(sample_rate=SAMPLE_RATE)).to(device).train()
    model = create_model(name).to(device).train()
    augmentation = synthetic_augmentation(device) if augment else Augmentation()
    classes = augmentation.num_classes if augment else NUM_CLASSES
    loss = build_loss("aam", embed_dim=model.embed_dim, num_classes=classes).to(device)
    generator = torch.Generator().manual_seed(0)

    def features(wav: torch.Tensor, labels: torch.Tensor):
        lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device)
        wav, lengths, labels = augmentation.waveform(wav, lengths, labels, generator)
        feats, frames = fbank(wav, lengths)
        return augmentation.features(feats, frames, generator), frames, labels

    module = _OurLoss(TrainStep(model, loss))
    return System(name, count_parameters(model), module, features, False)


def synthetic_augmentation(device: torch.device) -> Augmentation:
    """Noise, babble and reverberation from synthetic banks of the recipes' sizes (400 files per
    category, 6 s each; 2,000 one-second RIRs), speed perturbation and SpecAugment, each always
    applied: the cost depends on the shapes, not the sounds."""
    from augment import synthetic_noise_bank, synthetic_rir_bank  # bench/augment.py

    bank = synthetic_noise_bank(400, 6.0, SAMPLE_RATE).to(device)
    rirs = synthetic_rir_bank(2000, 1.0, SAMPLE_RATE).to(device)
    config = AugmentConfig(noise_dir="-", noise_prob=1.0, reverb_prob=1.0, rir_dir="-")
    return Augmentation(
        speed=SpeedPerturb(NUM_CLASSES),
        reverb=Reverb(rirs, 1.0),
        noise=AdditiveNoise(bank, config),
        specaugment=SpecAugment(1.0),
        num_speakers=NUM_CLASSES,
    )


class _SpeechBrainLoss(torch.nn.Module):
    def __init__(self, model, classifier, loss) -> None:
        super().__init__()
        self.model, self.classifier, self.loss = model, classifier, loss

    def forward(self, feats, rel_lengths, labels):
        outputs = self.classifier(self.model(feats, rel_lengths))
        return self.loss(outputs, labels.unsqueeze(1))


def speechbrain_system(name: str, device: torch.device) -> System:
    from _peers import import_speechbrain

    _, SBFbank, InputNormalization, ECAPA_TDNN = import_speechbrain()
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper

    width = {"sb_ecapa_c512": 512, "sb_ecapa_c1024": 1024}[name]
    model = ECAPA_TDNN(
        input_size=80,
        channels=[width] * 4 + [3 * width],
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=128,
        lin_neurons=192,
    )
    classifier = Classifier(input_size=192, out_neurons=NUM_CLASSES)
    loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
    fbank = SBFbank(n_mels=80).to(device).train()
    norm = InputNormalization(norm_type="sentence", std_norm=False).to(device).train()

    def features(wav: torch.Tensor, labels: torch.Tensor):
        rel = torch.ones(wav.shape[0], device=wav.device)
        return norm(fbank(wav), rel), rel, labels

    module = _SpeechBrainLoss(model, classifier, loss).to(device).train()
    return System(name, sum(p.numel() for p in model.parameters()), module, features, True)


def make_system(name: str, device: torch.device, augment: bool) -> System:
    if name.startswith("sb_"):
        return speechbrain_system(name, device)
    return our_system(name, device, augment)


# -- data ----------------------------------------------------------------------------------------


def synthetic_batches(batch: int, crop_s: float, device: torch.device) -> Iterator:
    """Four batches of enveloped noise made once on the device, served round and round."""
    g = torch.Generator().manual_seed(0)
    n = int(crop_s * SAMPLE_RATE)
    made = []
    for _ in range(4):
        envelope = torch.rand(batch, n // 400 + 1, generator=g).repeat_interleave(400, 1)[:, :n]
        wav = 0.3 * envelope * torch.randn(batch, n, generator=g)
        labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
        made.append((wav.to(device), labels.to(device)))
    return itertools.cycle(made)


def disk_batches(utts, batch: int, crop_s: float, workers: int, device, rank: int) -> Iterator:
    """Batches from our training loader: epochs of shuffled crops, ``workers`` processes."""
    speakers = sorted({u.speaker for u in utts})
    dataset = CropDataset(
        utts,
        speaker_to_label={s: i % NUM_CLASSES for i, s in enumerate(speakers)},
        crop_s=crop_s,
        sample_rate=SAMPLE_RATE,
    )

    def epochs():
        for epoch in itertools.count():
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=EpochBatchSampler(len(dataset), batch, seed=rank, epoch=epoch),
                collate_fn=collate_crops,
                num_workers=workers,
                worker_init_fn=loader_worker_init,
                pin_memory=device.type == "cuda",
                prefetch_factor=4 if workers else None,
                persistent_workers=False,
            )
            yield from loader

    return epochs()


def read_utterances(args) -> list:
    if args.manifest:
        return read_manifest(args.manifest)
    from speakerprint.data.prepare import prepare_folder

    out = Path(tempfile.mkdtemp(prefix="gpu_train_manifest_"))
    prepare_folder(args.folder, out)
    return read_manifest(out / "train.jsonl")


# -- one cell ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    system: str
    batch: int
    crop_s: float
    precision: str
    compiled: bool
    data: str
    augment: bool
    ddp: bool


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(system: System, batch: int, crop_s: float, device: torch.device) -> float:
    """FLOPs of features, forward and backward for one batch (fp32 eager; the count is the same
    in bf16)."""
    from torch.utils.flop_counter import FlopCounterMode

    wav, labels = next(synthetic_batches(batch, crop_s, device))
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            feats, aux, labels = system.features(wav, labels)
        system.module(feats, aux, labels).backward()
    system.module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run_cell(cell: Cell, args, device: torch.device, utts, flops_cache: dict) -> dict:
    torch.manual_seed(0)
    system = make_system(cell.system, device, cell.augment)
    key = (cell.system, cell.batch, cell.crop_s, cell.augment)
    if key not in flops_cache:
        flops_cache[key] = count_flops(system, cell.batch, cell.crop_s, device)
    step_module: torch.nn.Module = system.module
    if cell.ddp:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        step_module = DistributedDataParallel(step_module, device_ids=ids)
    forward = torch.compile(step_module) if cell.compiled else step_module
    params = [p for p in system.module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    amp = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cell.precision == "bf16"
        else contextlib.nullcontext()
    )
    rank = int(os.environ.get("RANK", 0))
    if cell.data == "disk":
        batches = disk_batches(utts, cell.batch, cell.crop_s, args.workers, device, rank)
    else:
        batches = synthetic_batches(cell.batch, cell.crop_s, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    waits, steps = [], []
    warmup_s = 0.0
    start_all = time.perf_counter()
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        wav, labels = next(batches)
        t1 = time.perf_counter()
        wav = wav.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.no_grad():
            if system.features_in_autocast:
                with amp:
                    feats, aux, labels = system.features(wav, labels)
            else:
                feats, aux, labels = system.features(wav, labels)
        with amp:
            loss = forward(feats, aux, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        loss_value = float(loss.detach())  # the host waits for the step, as in the train loop
        if not (math.isfinite(loss_value) and math.isfinite(float(grad_norm))):
            raise RuntimeError(f"{cell}: loss {loss_value}, gradient norm {float(grad_norm)}")
        t2 = time.perf_counter()
        if i == args.warmup - 1:
            warmup_s = t2 - start_all
        if i >= args.warmup:
            waits.append(t1 - t0)
            steps.append(t2 - t0)
    _sync(device)
    with contextlib.suppress(Exception):
        batches.close()  # shuts a loader's workers down now
    total = sum(steps)
    flops = flops_cache[key]
    result = {
        "params": system.params,
        "crops_per_s": cell.batch * len(steps) / total,
        "step_ms": 1000 * statistics.median(steps),
        "step_p10_ms": 1000 * float(np.percentile(steps, 10)),
        "step_p90_ms": 1000 * float(np.percentile(steps, 90)),
        "wait_share": sum(waits) / total,
        "flops_per_step": flops,
        "tflops": flops * len(steps) / total / 1e12,
        "warmup_s": warmup_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    del system, step_module, forward, optimizer, batches
    gc.collect()
    if cell.compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# -- the grid ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(device: torch.device) -> None:
    """torchrun's group when launched by it; else a group of one on localhost, for DDP rows."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1"
        )
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def cells(args) -> list[Cell]:
    grid = itertools.product(
        args.systems, args.batch, args.crop, args.precision, args.compile, args.data,
        args.augment, args.ddp,
    )  # fmt: skip
    out = []
    for system, batch, crop, precision, compiled, data, augment, ddp in grid:
        if system.startswith("sb_") and augment == "on":
            continue  # SpeechBrain rows run without augmentation
        out.append(
            Cell(
                system, batch, crop, precision, compiled == "on", data, augment == "on", ddp == "on"
            )  # fmt: skip
        )
    return out


def format_table(rows: list[tuple[Cell, dict | str]], peak: float | None) -> str:
    head = (
        "| system | params (M) | batch | crop s | precision | mode | data | augment | DDP "
        "| crops/s | vs SpeechBrain | step ms (p10-p90) | waiting for data | GFLOP/step "
        "| TFLOP/s | of bf16 peak | peak GiB | warm-up s |\n"
        "|---|---:|---:|---:|---|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n"
    )
    done = {c: r for c, r in rows if isinstance(r, dict)}
    lines = []
    for cell, r in rows:
        setting = (
            f"| {cell.batch} | {cell.crop_s:g} | {cell.precision} | "
            f"{'compile' if cell.compiled else 'eager'} | {cell.data} | "
            f"{'on' if cell.augment else 'off'} | {'on' if cell.ddp else 'off'} "
        )
        if isinstance(r, str):
            lines.append(f"| {cell.system} | | {setting}| failed: {r} |" + " |" * 8)
            continue
        ratio = ""
        if cell.system.startswith("ecapa_tdnn_c") and not cell.augment:
            peer = Cell(f"sb_ecapa_{cell.system.removeprefix('ecapa_tdnn_')}", cell.batch, cell.crop_s,
                        cell.precision, cell.compiled, cell.data, False, cell.ddp)  # fmt: skip
            if isinstance(done.get(peer), dict):
                ratio = f"{r['crops_per_s'] / done[peer]['crops_per_s']:.2f}x"
        share = f"{100 * r['tflops'] / peak:.1f}%" if peak else "-"
        memory = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(
            f"| {cell.system} | {r['params'] / 1e6:.2f} {setting}| {r['crops_per_s']:.0f} | "
            f"{ratio} | {r['step_ms']:.1f} ({r['step_p10_ms']:.1f}-{r['step_p90_ms']:.1f}) | "
            f"{100 * r['wait_share']:.1f}% | {r['flops_per_step'] / 1e9:.0f} | "
            f"{r['tflops']:.1f} | {share} | {memory} | {r['warmup_s']:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--systems", nargs="+", default=["ecapa_tdnn_c1024", "sb_ecapa_c1024"])
    parser.add_argument("--batch", type=int, nargs="+", default=[128])
    parser.add_argument("--crop", type=float, nargs="+", default=[2.0])
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["bf16"])
    parser.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--data", nargs="+", choices=["synthetic", "disk"], default=["synthetic"])
    parser.add_argument("--augment", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--ddp", nargs="+", choices=["off", "on"], default=["off"])
    parser.add_argument("--manifest", type=Path, help="training manifest for --data disk")
    parser.add_argument("--folder", type=Path, help="or a speaker-per-folder tree to scan")
    parser.add_argument("--workers", type=int, default=8, help="loader processes (--data disk)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: CUDA is not available")
        local = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", device.index if device.index is not None else local)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    utts = None
    if "disk" in args.data:
        if not (args.manifest or args.folder):
            sys.exit("--data disk needs --manifest or --folder")
        utts = read_utterances(args)
    if "on" in args.ddp or "WORLD_SIZE" in os.environ:
        init_process_group(device)
    rank = int(os.environ.get("RANK", 0))
    peak, peak_note = bf16_peak(device, args.peak_tflops)

    rows: list[tuple[Cell, dict | str]] = []
    flops_cache: dict = {}
    for cell in cells(args):
        try:
            result = run_cell(cell, args, device, utts, flops_cache)
        except Exception as e:  # a cell that cannot run (out of memory, compile) is reported
            result = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append((cell, result))
        if rank == 0:
            shown = result if isinstance(result, str) else f"{result['crops_per_s']:.0f} crops/s"
            print(f"{cell}: {shown}", file=sys.stderr, flush=True)

    if rank != 0:
        return
    world = int(os.environ.get("WORLD_SIZE", 1))
    where = (
        f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, host {cpu_name()}"
        if device.type == "cuda"
        else f"{cpu_name()} ({torch.get_num_threads()} threads)"
    )
    try:
        from _peers import import_speechbrain

        sb = (
            f", speechbrain {import_speechbrain()[0]}"
            if any(s.startswith("sb_") for s in args.systems)
            else ""
        )
    except SystemExit:
        sb = ""
    text = (
        "# Training throughput\n\n"
        + format_table(rows, peak)
        + f"\nPer-GPU figures; {world} process(es). {args.warmup} warm-up and {args.steps} timed "
        "steps per cell. crops/s = batch x steps / time. *waiting for data*: share of the step "
        "time spent getting the next batch from the loader (the GPU has nothing queued then: "
        "each step ends by reading the loss). GFLOP/step: forward and backward of features, "
        "model and loss, counted by torch.utils.flop_counter. bf16 peak: "
        f"{peak_note}. *vs SpeechBrain*: our crops/s over SpeechBrain's ECAPA of the same width "
        "in the same setting.\n\n"
        f"Machine: {where} ({platform.machine()}), torch {torch.__version__}{sb}, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}.\n\n"
        "Re-run: `python bench/gpu_train.py " + " ".join(sys.argv[1:]) + "`\n"
    )
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
