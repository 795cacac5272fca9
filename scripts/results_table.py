"""Summarise finished training runs as a Markdown table: one row per run folder.

Every number is read from what the runs wrote (config.yaml, metrics.jsonl); nothing is typed in.

    python scripts/results_table.py runs/zoo_so762 --out docs/results/zoo_speechocean762.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from speakerprint.models import count_parameters, create_model
from speakerprint.train.config import load_config
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name


def summarise(run_dir: Path) -> dict | None:
    records_path = run_dir / "metrics.jsonl"
    if not (run_dir / "config.yaml").exists() or not records_path.exists():
        return None
    cfg = load_config(run_dir / "config.yaml")
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r and "event" not in r]
    dev = [r for r in records if r.get("event") == "dev"]
    end = [r for r in records if r.get("event") == "end"]
    if not dev or not end:
        return None  # unfinished
    with torch.device("meta"):
        params = count_parameters(create_model(cfg.model.name, **cfg.model.args))
    final = dev[-1]
    return {
        "run": run_dir.name,
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "params_m": params / 1e6,
        "steps": end[-1]["step"],
        "batch": f"{cfg.data.batch_size} x {cfg.data.crop_s:g} s",
        # Mean of the last five logged batches: one batch of 32 is a noisy estimate.
        "train_acc": sum(r["accuracy"] for r in train[-5:]) / len(train[-5:])
        if train
        else float("nan"),
        "eer": 100 * final["eer"],
        "min_dcf": final["min_dcf"],
        "sap": final.get("mean_target_score"),
        "san": final.get("mean_nontarget_score"),
        "trials": final["num_target"] + final["num_nontarget"],
        "wall_min": sum(r["train_wall_s"] for r in end) / 60,
        "device": end[-1]["device"],
        "augment": describe_augment(cfg.augment),
    }


def describe_augment(aug) -> str:
    """What a run's ``augment:`` section switched on, with each probability."""
    parts = []
    if aug.noise_prob > 0:
        parts.append(f"noise {aug.noise_prob:g}")
    if aug.reverb_prob > 0:
        parts.append(f"reverb {aug.reverb_prob:g}")
    if aug.speed_perturb:
        parts.append("speed 0.9/1.0/1.1")
    if aug.specaugment_prob > 0:
        parts.append(f"SpecAugment {aug.specaugment_prob:g}")
    if aug.codec_prob > 0:
        parts.append(f"codec {aug.codec_prob:g}")
    return ", ".join(parts) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="folder of run folders")
    parser.add_argument("--title", default="Training runs")
    parser.add_argument("--command", default="", help="the command that made the runs")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: stdout)")
    parser.add_argument("--expect", nargs="*", default=[], help="run names the table should hold")
    parser.add_argument("--note", action="append", default=[], help="a line to add under the table")
    parser.add_argument(
        "--keep-missing",
        action="store_true",
        help="keep the --out file's rows of expected runs whose folders are not here (say so)",
    )
    parser.add_argument(
        "--augment-column", action="store_true", help="add a column saying what each run augmented"
    )
    args = parser.parse_args(argv)

    rows = [row for d in sorted(args.runs.iterdir()) if d.is_dir() and (row := summarise(d))]
    if not rows:
        print(f"no finished runs under {args.runs}", file=sys.stderr)
        return 1
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    extra = " augment |" if args.augment_column else ""
    lines = [
        f"# {args.title}",
        "",
        "| run | model | loss |" + extra + " params (M) | steps | batch | train acc | dev EER % "
        "| minDCF(0.01) | mean cos same | mean cos diff | train min | device |",
        "|---|---|---|"
        + ("---|" if extra else "")
        + "---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    table = {
        r["run"]: f"| {r['run']} | {r['model']} | {r['loss']} |"
        + (f" {r['augment']} |" if extra else "")
        + f" {r['params_m']:.2f} | {r['steps']} "
        f"| {r['batch']} | {r['train_acc']:.2f} | {r['eer']:.2f} | {r['min_dcf']:.3f} "
        f"| {fmt(r['sap'])} | {fmt(r['san'])} | {r['wall_min']:.1f} | {r['device']} |"
        for r in rows
    }
    kept = {}
    if args.keep_missing and args.out and args.out.exists():
        previous = args.out.read_text().splitlines()
        for name in args.expect:
            found = [line for line in previous if line.startswith(f"| {name} |")]
            if name not in table and found:
                kept[name] = found[0]
    lines += [row for _, row in sorted({**table, **kept}.items())]
    lines += [
        "",
        f"Dev: {rows[0]['trials']} trials between utterances of speakers never seen in training. "
        "params counts the encoder only (no classification head). train acc is the mean of the last five logged "
        "batch accuracies (for triplet loss: the fraction of same-speaker pairs in a batch more "
        "similar than the anchor's every other-speaker pair). mean cos same / diff: mean cosine "
        "similarity of the target / non-target dev trials.",
        "",
        f"Machine: {cpu_name()}, {platform.system()} {platform.machine()}, "
        f"torch {torch.__version__}, Python {platform.python_version()}.",
    ]
    if kept:
        lines += [
            "",
            f"Rows kept from the previous table, their run folders not being on the machine that "
            f"made this one (the same command retrains them): {', '.join(sorted(kept))}.",
        ]
    missing = [name for name in args.expect if name not in table and name not in kept]
    if missing:
        lines += ["", f"Not finished, so not in the table: {', '.join(missing)}."]
    for note in args.note:
        lines += ["", note]
    if args.command:
        lines += ["", f"Re-run: `{args.command}`"]
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
