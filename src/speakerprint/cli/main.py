"""The command line: a thin typer layer over the Python API.

Errors caused by input (bad files, configs, manifests) print one line and exit with status 2.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import (
    MIN_SPEECH_HELP,
    MODEL_HELP,
    app,
    choose_model,
    clean_errors,
    min_speech_s,
    prepare_app,
)
from speakerprint.errors import SpeakerprintError


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@prepare_app.command("folder")
@clean_errors
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
    from speakerprint.errors import ConfigError

    try:
        r = prepare_folder(
            root, out, dev_speakers=dev_speakers, seed=seed, num_dev_trials=num_dev_trials
        )
    except SpeakerprintError:
        raise
    except ValueError as e:  # a --dev-speakers or --num-dev-trials the folder cannot give
        raise ConfigError(f"{root}: {e}") from None
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
@clean_errors
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
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 writes the bundle and reports
    typer.echo("\n".join(lines) if lines else "every phase had finished already")


def _test_condition(kind: str, crop_s: float | None, num_crops: int | None):
    """``eval``'s --condition, --crop-s and --num-crops as a Condition."""
    from speakerprint.errors import ConfigError
    from speakerprint.eval.conditions import (
        CONDITION_KINDS,
        DEFAULT_CROP_S,
        DEFAULT_NUM_CROPS,
        Condition,
    )

    if kind not in CONDITION_KINDS:
        raise ConfigError(f"--condition must be one of {', '.join(CONDITION_KINDS)}, got {kind!r}")
    if crop_s is not None and kind == "full":
        raise ConfigError("--crop-s applies to --condition crop or multi_crop, not full")
    if num_crops is not None and kind != "multi_crop":
        raise ConfigError(f"--num-crops applies to --condition multi_crop, not {kind}")
    if crop_s is not None and not crop_s > 0:
        raise ConfigError(f"--crop-s must be a positive number of seconds, got {crop_s}")
    if num_crops is not None and num_crops < 1:
        raise ConfigError(f"--num-crops must be at least 1, got {num_crops}")
    return Condition(
        kind,
        crop_s=DEFAULT_CROP_S if crop_s is None else crop_s,
        num_crops=(num_crops or DEFAULT_NUM_CROPS) if kind == "multi_crop" else 1,
    )


def _cohort(norm: str, cohort: Path | None, top_k: int | None):
    """``eval``'s --norm, --cohort and --top-k checked; the cohort's utterances (or None)."""
    from speakerprint.data.manifest import read_manifest
    from speakerprint.errors import ConfigError
    from speakerprint.eval.normalization import NORMALIZATION_METHODS

    if norm not in NORMALIZATION_METHODS:
        raise ConfigError(f"--norm must be one of {', '.join(NORMALIZATION_METHODS)}, got {norm!r}")
    if norm != "none" and cohort is None:
        raise ConfigError(
            f"--norm {norm} needs --cohort MANIFEST: utterances of speakers disjoint from the "
            "trials' (e.g. the training manifest), averaged into one embedding per speaker"
        )
    if norm == "none" and cohort is not None:
        raise ConfigError(f"--cohort {cohort} is used only with --norm znorm/tnorm/snorm/asnorm")
    if top_k is not None and norm != "asnorm":
        raise ConfigError(f"--top-k applies to --norm asnorm, not --norm {norm}")
    cohort_utts = read_manifest(cohort) if cohort is not None else None
    if top_k is not None:
        num_cohort = len({u.speaker for u in cohort_utts or ()})
        if not 2 <= top_k <= num_cohort:
            raise ConfigError(
                f"--top-k must be between 2 and the number of cohort speakers in {cohort} "
                f"({num_cohort}), got {top_k}"
            )
    return cohort_utts


# eval's options, each named once here so that its signature reads as a list of settings.
_ManifestOption = Annotated[
    Path, typer.Option(help="Manifest (JSONL) of the utterances the trials name")
]
_TrialsOption = Annotated[Path, typer.Option(help="Trial list: 'LABEL ENROL TEST' per line")]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]
_OutJsonOption = Annotated[Path | None, typer.Option(help="Also write the results as JSON here")]
_PTargetOption = Annotated[
    float, typer.Option(help="Prior of a target trial for the headline minDCF")
]
_ConditionOption = Annotated[
    str,
    typer.Option(
        help="Test condition: full (whole utterances), crop (one crop from the start), "
        "multi_crop (mean of evenly spaced crops)"
    ),
]
_CropOption = Annotated[
    float | None, typer.Option(help="Crop length in seconds (crop, multi_crop); default 3.0")
]
_NumCropsOption = Annotated[
    int | None, typer.Option(help="Crops per utterance (multi_crop); default 5")
]
_CacheOption = Annotated[
    Path | None,
    typer.Option(help="Folder of cached embeddings, one file per bundle and condition"),
]
_NormOption = Annotated[
    str, typer.Option(help="Score normalisation: none, znorm, tnorm, snorm, asnorm")
]
_CohortOption = Annotated[
    Path | None,
    typer.Option(
        help="Manifest of cohort speakers, disjoint from the trials' (e.g. the training "
        "manifest); needed by --norm"
    ),
]
_TopKOption = Annotated[
    int | None,
    typer.Option(
        help="AS-norm: closest cohort speakers used; default 300, or the cohort size if smaller"
    ),
]
_IdentificationOption = Annotated[
    bool,
    typer.Option(
        "--identification",
        help="Add closed-set top-1/top-5 identification over the manifest's utterances",
    ),
]
_OpenSetOption = Annotated[
    bool,
    typer.Option(
        "--open-set",
        help="Add open-set identification: half the manifest's speakers held out as "
        "impostors, decided at the raw-cosine EER threshold",
    ),
]
_EnrollmentOption = Annotated[
    Path | None,
    typer.Option(
        help="Enrollment map, 'MODEL UTT [UTT ...]' per line: trials may name a model on "
        "their enrolment side (the mean of its utterances)"
    ),
]
_ScoresOption = Annotated[
    Path | None,
    typer.Option(help="Also write the scores, 'LABEL ENROL TEST SCORE' per trial, here"),
]
_ReportOption = Annotated[
    Path | None,
    typer.Option(
        help="Also write a report folder: report.md, report.html, DET curve, score "
        "histograms, threshold table"
    ),
]


@app.command("eval")
@clean_errors
def eval_cmd(
    bundle: Annotated[str | None, typer.Argument(help=MODEL_HELP, metavar="MODEL")] = None,
    *,
    model: Annotated[str | None, typer.Option(help="The model, as MODEL")] = None,
    manifest: _ManifestOption,
    trials: _TrialsOption,
    json_: _JsonOption = False,
    out: _OutJsonOption = None,
    batch_size: Annotated[int, typer.Option(help="Utterances per batch")] = 16,
    p_target: _PTargetOption = 0.01,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    condition: _ConditionOption = "full",
    crop_s: _CropOption = None,
    num_crops: _NumCropsOption = None,
    cache: _CacheOption = None,
    norm: _NormOption = "none",
    cohort: _CohortOption = None,
    top_k: _TopKOption = None,
    identification: _IdentificationOption = False,
    open_set: _OpenSetOption = False,
    enrollment: _EnrollmentOption = None,
    scores: _ScoresOption = None,
    report: _ReportOption = None,
) -> None:
    """EER and minDCF of a bundle on a trial list: cosine scores under a test condition,
    optionally normalised against a cohort, optionally with identification accuracy."""
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.trials import read_enrollment, read_trials
    from speakerprint.errors import ConfigError
    from speakerprint.eval.cache import EmbeddingCache, bundle_fingerprint
    from speakerprint.eval.scorefile import write_scores
    from speakerprint.eval.scoring import evaluate
    from speakerprint.hub import resolve_model
    from speakerprint.models.bundle import load_bundle
    from speakerprint.utils.io import atomic_write_text

    if not 0.0 < p_target < 1.0:
        raise ConfigError(f"--p-target must be strictly between 0 and 1, got {p_target}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if cache is not None and cache.exists() and not cache.is_dir():
        raise ConfigError(f"--cache {cache} is a file, not a folder")
    test_condition = _test_condition(condition, crop_s, num_crops)
    cohort_utts = _cohort(norm, cohort, top_k)
    enrollment_models = read_enrollment(enrollment) if enrollment is not None else None
    bundle = choose_model(bundle, model)
    bundle_folder = resolve_model(bundle)
    b = load_bundle(bundle_folder, device=device)
    embedding_cache = (
        None if cache is None else EmbeddingCache(cache, bundle_fingerprint(bundle_folder))
    )
    result = evaluate(
        b,
        read_manifest(manifest),
        read_trials(trials),
        trials_path=str(trials),
        batch_size=batch_size,
        p_target=p_target,
        progress=sys.stderr.isatty(),
        condition=test_condition,
        cache=embedding_cache,
        norm=norm,
        cohort=cohort_utts,
        cohort_name=str(cohort) if cohort is not None else "cohort",
        top_k=top_k,
        identification=identification,
        open_set=open_set,
        enrollment=enrollment_models,
        enrollment_path=str(enrollment),
    )
    if scores is not None:
        write_scores(scores, result.trials, result.scores)
    if report is not None:
        from speakerprint.viz.report import ReportSystem, write_report

        system = ReportSystem(Path(bundle).name, result.trials, result.scores)
        note = f"Condition: {test_condition.describe()}; normalisation: {norm}."
        write_report(report, [system], title=f"{bundle} on {trials}", note=note)
    record = result.to_json(
        bundle=bundle,
        manifest=manifest,
        trials=trials,
        cohort=cohort,
        cache=cache,
        enrollment=enrollment,
        scores_file=scores,
    )
    if out is not None:
        atomic_write_text(out, record + "\n")
    if json_:
        typer.echo(record)
        return
    lines = [result.to_text(enrollment=enrollment)]
    if scores is not None:
        lines.append(f"scores: {scores}")
    if report is not None:
        lines.append(f"report: {report / 'report.md'}, {report / 'report.html'}")
    if cache is not None:
        lines.append(
            f"embeddings: {result.num_embedded} embedded, {result.num_cached} from the cache {cache}"
        )
    typer.echo("\n".join(lines))


def _encoder(model: str | None):
    from speakerprint.inference import SpeakerEncoder

    return SpeakerEncoder.from_pretrained(model)


@app.command()
@clean_errors
def verify(
    a: Annotated[Path, typer.Argument(help="First recording")],
    b: Annotated[Path, typer.Argument(help="Second recording")],
    model: Annotated[
        str | None, typer.Option(help=f"{MODEL_HELP} (default: the shipped model)")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Decision threshold (default: the bundle's)")
    ] = None,
    min_speech: Annotated[
        float | None, typer.Option("--min-speech-s", help=MIN_SPEECH_HELP, show_default=False)
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Decide whether two recordings share a speaker (recordings over a minute are embedded
    from streamed windows, so their length does not decide the memory)."""
    from speakerprint.inference.extract import verify_recordings

    needed = min_speech_s(min_speech)
    result = verify_recordings(_encoder(model), a, b, threshold=threshold, min_speech_s=needed)
    if json_:
        typer.echo(json.dumps({"a": str(a), "b": str(b), **result.to_dict()}, indent=2))
    else:
        verdict = "same speaker" if result.same_speaker else "different speakers"
        speech_a, speech_b = result.speech_s
        typer.echo(
            f"{verdict}: score {result.score:.4f}, threshold {result.threshold:.4f} "
            f"({result.threshold_source}); speech {speech_a:.1f} s and {speech_b:.1f} s"
        )
        if result.llr is not None:
            typer.echo(
                f"log-likelihood ratio {result.llr:+.2f} (natural log; the model's calibration): "
                f"the score is {math.exp(min(result.llr, 700.0)):.3g} times as likely if it is "
                "the same speaker"
            )


@app.command()
def models(
    architectures: Annotated[
        bool,
        typer.Option(
            "--architectures", help="List the registered architectures (for training) instead"
        ),
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the pretrained models speakerprint loads by name (use any name with --model), with
    what each is, its published result and licence, and whether it is in the cache."""
    import json

    if architectures:
        import torch

        from speakerprint.models import count_parameters, create_model, list_models

        for name in list_models():
            with torch.device("meta"):  # shapes only: no memory, no initialisation time
                n = count_parameters(create_model(name))
            typer.echo(f"{name:32s} {n / 1e6:8.2f}M parameters (encoder only)")
        return
    from speakerprint.hub.catalog import DEFAULT_ALIAS
    from speakerprint.hub.resolve import catalog_rows, shipped_model_path

    rows = [
        {
            "name": DEFAULT_ALIAS,
            "hub_id": "",
            "architecture": "ECAPA-TDNN C=512 (speakerprint)",
            "parameters": 6_194_432,
            "embed_dim": 192,
            "sample_rate": 16000,
            "features": "80 log-mel (Kaldi, povey)",
            "training_data": "speechocean762 train, 100 speakers",
            "published": "see docs/results.md",
            "licence": "Apache-2.0",
            "cached": shipped_model_path().is_dir(),
        }
    ]
    for entry, cached in catalog_rows():
        rows.append(
            {
                "name": entry.alias,
                "hub_id": entry.hub_id or f"pip: {entry.package[0] if entry.package else ''}",
                "architecture": entry.architecture,
                "parameters": entry.parameters,
                "embed_dim": entry.embed_dim,
                "sample_rate": entry.sample_rate,
                "features": entry.features,
                "training_data": entry.training_data,
                "published": f"{entry.published} ({entry.published_source})",
                "licence": entry.licence,
                "cached": cached,
            }
        )
    if json_:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        params = f"{row['parameters'] / 1e6:.1f}M" if row["parameters"] else "-"
        typer.echo(
            f"{row['name']:24s} {'cached' if row['cached'] else 'not cached':10s} "
            f"{row['hub_id']}\n    {row['architecture']}, {params} parameters, "
            f"{row['embed_dim']}-d, {row['sample_rate'] // 1000} kHz, {row['features']}\n"
            f"    trained on {row['training_data']}; {row['published']}; licence {row['licence']}"
        )


# Sub-command modules register their commands on `app` when imported (one line each).
# fmt: off
# isort: off
from speakerprint.cli import check  # noqa: E402,F401
from speakerprint.cli import evaluation  # noqa: E402,F401
from speakerprint.cli import export  # noqa: E402,F401
from speakerprint.cli import embed  # noqa: E402,F401
from speakerprint.cli import plot  # noqa: E402,F401
from speakerprint.cli import store  # noqa: E402,F401
from speakerprint.cli import corpora  # noqa: E402,F401
from speakerprint.cli import diarization_eval  # noqa: E402,F401
from speakerprint.cli import simulate  # noqa: E402,F401
from speakerprint.cli import convert  # noqa: E402,F401
from speakerprint.cli import serve  # noqa: E402,F401
from speakerprint.cli import diarize  # noqa: E402,F401
# isort: on
# fmt: on


def main() -> None:
    app()


if __name__ == "__main__":
    main()
