"""The command line: a thin typer layer over the Python API.

Errors caused by input (bad files, configs, manifests) print one line and exit with status 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.errors import SpeakerprintError

app = typer.Typer(
    name="speakerprint",
    help="Speaker recognition: prepare data, train, evaluate, embed and verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
prepare_app = typer.Typer(
    help="Write manifests (JSONL) and trial lists for a dataset.", no_args_is_help=True
)
app.add_typer(prepare_app, name="prepare")


def _clean_errors(fn):
    """Turn input errors into one line on stderr and exit status 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpeakerprintError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@prepare_app.command("folder")
@_clean_errors
def prepare_folder_cmd(
    root: Annotated[Path, typer.Argument(help="ROOT/<speaker>/**/<audio file>")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for train.jsonl, dev.jsonl, dev_trials.txt")
    ],
    dev_speakers: Annotated[
        int, typer.Option(help="Speakers held out as a speaker-disjoint dev split")
    ] = 0,
    num_dev_trials: Annotated[
        int | None, typer.Option(help="Target trials in the dev list (as many non-target)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the dev split and the trial list")] = 0,
) -> None:
    """Prepare a folder of speakers: one sub-folder per speaker, audio files anywhere below it."""
    from speakerprint.data.prepare import prepare_folder

    r = prepare_folder(
        root, out, dev_speakers=dev_speakers, seed=seed, num_dev_trials=num_dev_trials
    )
    lines = [
        f"train: {r.num_train_utts} utterances of {r.num_train_speakers} speakers -> {r.train_manifest}"
    ]
    if r.dev_manifest is not None:
        lines.append(
            f"dev:   {r.num_dev_utts} utterances of {r.num_dev_speakers} speakers -> {r.dev_manifest}"
        )
        lines.append(f"dev trials: {r.num_dev_trials} (half target) -> {r.dev_trials}")
    if r.num_skipped:
        lines.append(f"skipped {r.num_skipped} unreadable files, listed in {r.skipped}")
    typer.echo("\n".join(lines))


@app.command()
@_clean_errors
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (see recipes/)")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, metrics, bundle")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set optim.lr=0.002")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest checkpoint in --out")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Train a speaker encoder; writes OUT/bundle at the end.

    A recipe with phases (e.g. pre-training then large-margin fine-tuning) trains each phase into
    OUT/<phase>, each starting from the one before.
    """
    from speakerprint.train.config import load_recipe
    from speakerprint.train.loop import train_recipe

    phases = load_recipe(config, set_ or [])
    lines = []
    for result in train_recipe(phases, out, resume=resume, progress=progress):
        lines.append(
            f"{result.run_dir}: trained steps {result.start_step}..{result.end_step} "
            f"in {result.wall_s:.0f} s"
        )
        if result.dev_initial:
            lines.append(f"  dev EER before training: {100 * result.dev_initial['eer']:.2f}%")
        if result.dev_final:
            lines.append(
                f"  dev EER after training:  {100 * result.dev_final['eer']:.2f}%  "
                f"minDCF(p_target=0.01): {result.dev_final['min_dcf']:.3f}"
            )
        lines.append(f"  bundle: {result.bundle_path}")
    typer.echo("\n".join(lines) if lines else "every phase had finished already")


@app.command("eval")
@_clean_errors
def eval_cmd(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder")],
    manifest: Annotated[
        Path, typer.Option(help="Manifest (JSONL) of the utterances the trials name")
    ],
    trials: Annotated[Path, typer.Option(help="Trial list: 'LABEL ENROL TEST' per line")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here")] = None,
    batch_size: Annotated[int, typer.Option(help="Utterances per batch")] = 16,
    p_target: Annotated[float, typer.Option(help="Prior of a target trial for minDCF")] = 0.01,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Equal error rate and minDCF of a bundle on a trial list (full-length embeddings, cosine)."""
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.trials import read_trials
    from speakerprint.eval.scoring import evaluate
    from speakerprint.models.bundle import load_bundle
    from speakerprint.utils.io import atomic_write_text

    b = load_bundle(bundle, device=device)
    result = evaluate(
        b,
        read_manifest(manifest),
        read_trials(trials),
        trials_path=str(trials),
        batch_size=batch_size,
        p_target=p_target,
        progress=sys.stderr.isatty(),
    )
    record = {
        "bundle": str(bundle),
        "manifest": str(manifest),
        "trials": str(trials),
        **result.metrics.to_dict(),
    }
    if out is not None:
        atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    if json_:
        typer.echo(json.dumps(record, indent=2))
    else:
        m = result.metrics
        typer.echo(
            f"trials: {m.num_target} target, {m.num_nontarget} non-target\n"
            f"EER: {100 * m.eer:.2f}% (threshold {m.eer_threshold:.4f})\n"
            f"minDCF (p_target={m.p_target}, C_miss={m.c_miss}, C_fa={m.c_fa}): {m.min_dcf:.4f}"
        )


def _encoder(model: Path | None):
    from speakerprint.inference import SpeakerEncoder

    return SpeakerEncoder.from_pretrained(model)


@app.command()
@_clean_errors
def embed(
    files: Annotated[list[Path], typer.Argument(help="Audio files")],
    out: Annotated[Path, typer.Option(help="Output .npz; its keys are the paths as given")],
    model: Annotated[
        Path | None, typer.Option(help="Model bundle (default: the shipped model)")
    ] = None,
) -> None:
    """Embed audio files into an .npz archive."""
    import io

    import numpy as np

    from speakerprint.utils.io import atomic_write_bytes

    enc = _encoder(model)
    embeddings = {str(f): enc.embed(f) for f in files}
    buffer = io.BytesIO()
    np.savez(buffer, **embeddings)
    atomic_write_bytes(out, buffer.getvalue())
    typer.echo(f"wrote {len(embeddings)} embeddings of dimension {enc.embed_dim} to {out}")


@app.command()
@_clean_errors
def verify(
    a: Annotated[Path, typer.Argument(help="First recording")],
    b: Annotated[Path, typer.Argument(help="Second recording")],
    model: Annotated[
        Path | None, typer.Option(help="Model bundle (default: the shipped model)")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Decision threshold (default: the bundle's)")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Decide whether two recordings share a speaker."""
    result = _encoder(model).verify(a, b, threshold=threshold)
    if json_:
        typer.echo(json.dumps({"a": str(a), "b": str(b), **result.to_dict()}, indent=2))
    else:
        verdict = "same speaker" if result.same_speaker else "different speakers"
        typer.echo(
            f"{verdict}: score {result.score:.4f}, threshold {result.threshold:.4f} "
            f"({result.threshold_source})"
        )


@app.command()
def models() -> None:
    """List the registered model architectures with their parameter counts."""
    import torch

    from speakerprint.models import count_parameters, create_model, list_models

    for name in list_models():
        with torch.device("meta"):  # shapes only: no memory, no initialisation time
            n = count_parameters(create_model(name))
        typer.echo(f"{name:32s} {n / 1e6:8.2f}M parameters (encoder only)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
