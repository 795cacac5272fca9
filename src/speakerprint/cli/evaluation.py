"""Commands around evaluation: reports of several systems, score fusion, calibrating a bundle's
decision threshold, and trial lists made from a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import app, clean_errors


@app.command()
@clean_errors
def report(
    systems: Annotated[
        list[Path],
        typer.Argument(
            help="Score files ('LABEL ENROL TEST SCORE') or eval records (eval --scores F --out "
            "R.json), all of the same trial list"
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html and figures")],
    name: Annotated[
        list[str] | None, typer.Option(help="A name per system (default: the file names)")
    ] = None,
    title: Annotated[str, typer.Option(help="The report's title")] = "Evaluation report",
) -> None:
    """Compare systems on one trial list: EER, minDCF, minCllr, DET curves, score histograms
    and threshold tables, as Markdown and HTML."""
    from speakerprint.errors import ConfigError
    from speakerprint.viz.report import ReportSystem, write_report

    if name and len(name) != len(systems):
        raise ConfigError(f"{len(systems)} systems but {len(name)} --name options")
    loaded = [
        ReportSystem.from_file(path, name[i] if name else None) for i, path in enumerate(systems)
    ]
    paths = write_report(out, loaded, title=title)
    typer.echo(f"wrote {paths['markdown']} and {paths['html']} ({len(loaded)} systems)")


@app.command()
@clean_errors
def fuse(
    dev: Annotated[
        list[Path],
        typer.Option(help="Development score file of a system; give one per system, in order"),
    ],
    out: Annotated[Path, typer.Option(help="Fused scores (LLRs) of the eval trials")],
    eval_: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval",
            help="Evaluation score file of each system, in the order of --dev (default: fuse "
            "the dev trials themselves, whose figures are then optimistic)",
        ),
    ] = None,
    p_target: Annotated[
        float, typer.Option(help="Prior the logistic regression is weighted for")
    ] = 0.01,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Fuse several systems' scores linearly, with weights fitted by logistic regression on
    development trials; write the fused eval scores and a fusion.json beside them."""
    from speakerprint.errors import ConfigError
    from speakerprint.eval.fusion import fit_fusion
    from speakerprint.eval.metrics import compute_eer, compute_min_dcf
    from speakerprint.eval.scorefile import check_same_trials, read_trial_scores, write_scores
    from speakerprint.utils.io import atomic_write_text

    if len(dev) < 2:
        raise ConfigError(f"fusion needs two systems or more, got {len(dev)} --dev file(s)")
    if eval_ and len(eval_) != len(dev):
        raise ConfigError(f"{len(dev)} --dev files but {len(eval_)} --eval files")
    if not 0.0 < p_target < 1.0:
        raise ConfigError(f"--p-target must be strictly between 0 and 1, got {p_target}")
    dev_sets = [read_trial_scores(p) for p in dev]
    check_same_trials([(str(p), t) for p, (t, _) in zip(dev, dev_sets)])
    dev_labels = [t.label for t in dev_sets[0][0]]
    fusion = fit_fusion(
        [s for _, s in dev_sets], dev_labels, p_target=p_target, names=[str(p) for p in dev]
    )
    eval_sets = [read_trial_scores(p) for p in eval_] if eval_ else dev_sets
    eval_names = [str(p) for p in (eval_ or dev)]
    check_same_trials(list(zip(eval_names, (t for t, _ in eval_sets))))
    trials = eval_sets[0][0]
    fused = fusion.llr([s for _, s in eval_sets])
    write_scores(out, trials, fused)
    fusion_file = out.with_name(out.stem + ".fusion.json")
    labels = [t.label for t in trials]

    def figures(scores) -> dict[str, float]:
        return {
            "eer": compute_eer(scores, labels).eer,
            **{
                f"min_dcf_{p}": compute_min_dcf(scores, labels, p_target=p).min_dcf
                for p in (0.01, 0.05)
            },
        }

    record = {
        "fusion": fusion.to_dict(),
        "fitted_on": [str(p) for p in dev],
        "applied_to": eval_names,
        "scores_file": str(out),
        "systems": {n: figures(s) for n, (_, s) in zip(eval_names, eval_sets)},
        "fused": figures(fused),
    }
    atomic_write_text(fusion_file, json.dumps(record, indent=2) + "\n")
    if json_:
        typer.echo(json.dumps(record, indent=2))
        return
    lines = [f"fusion weights fitted on {len(dev_labels)} dev trials (p_target {p_target}):"]
    for n, w in zip(fusion.names, fusion.weights):
        lines.append(f"  {w:+.4f} x {n}")
    lines.append(f"  {fusion.offset:+.4f}")
    where = "the dev trials (optimistic)" if not eval_ else f"{len(trials)} eval trials"
    lines.append(f"on {where}:")
    for n, f in [*record["systems"].items(), ("fused", record["fused"])]:
        lines.append(
            f"  {n}: EER {100 * f['eer']:.2f}%, minDCF {f['min_dcf_0.01']:.4f} (p_target=0.01), "
            f"{f['min_dcf_0.05']:.4f} (p_target=0.05)"
        )
    lines.append(f"wrote {out} and {fusion_file}")
    typer.echo("\n".join(lines))


@app.command()
@clean_errors
def calibrate(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder, updated in place")],
    manifest: Annotated[Path, typer.Option(help="Manifest of the development utterances")],
    trials: Annotated[Path, typer.Option(help="Development trial list")],
    at: Annotated[
        str,
        typer.Option(
            help="Where the threshold goes: eer, fa:RATE (lowest threshold with at most RATE "
            "false accepts, e.g. fa:0.01) or bayes:P_TARGET (calibrated LLR >= Bayes threshold)"
        ),
    ] = "eer",
    description: Annotated[
        str | None,
        typer.Option(help="The trials in words, stored with the threshold (default: the paths)"),
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Embedding cache folder")] = None,
    batch_size: Annotated[int, typer.Option(help="Utterances per batch")] = 16,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
) -> None:
    """Measure a decision threshold (and a score-to-LLR calibration) on development trials and
    store both in the bundle, so that `verify` decides with a threshold measured on known data.
    Scores are raw cosines of full-length embeddings, as `verify` computes them."""
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.trials import read_trials
    from speakerprint.errors import ConfigError
    from speakerprint.eval.cache import EmbeddingCache, bundle_fingerprint
    from speakerprint.eval.calibration import (
        fit_calibration,
        threshold_at_eer,
        threshold_at_fa_rate,
        threshold_for_bayes,
    )
    from speakerprint.eval.metrics import compute_act_dcf
    from speakerprint.eval.scoring import evaluate
    from speakerprint.models.bundle import Threshold, load_bundle, set_bundle_decision

    kind, _, value = at.partition(":")
    try:
        number = float(value) if value else None
    except ValueError:
        number = None
    if not (
        (kind == "eer" and not value)
        or (kind == "fa" and number is not None and 0.0 <= number <= 1.0)
        or (kind == "bayes" and number is not None and 0.0 < number < 1.0)
    ):
        raise ConfigError(f"--at must be eer, fa:RATE in [0, 1] or bayes:P in (0, 1), got {at!r}")
    utts = read_manifest(manifest)
    trial_list = read_trials(trials)
    b = load_bundle(bundle, device=device)
    embedding_cache = None if cache is None else EmbeddingCache(cache, bundle_fingerprint(bundle))
    result = evaluate(
        b, utts, trial_list, trials_path=str(trials), batch_size=batch_size, cache=embedding_cache
    )
    scores, labels = result.scores, result.labels
    calibration = fit_calibration(scores, labels, p_target=number if kind == "bayes" else 0.5)
    if kind == "eer":
        value_, method = threshold_at_eer(scores, labels), "eer"
    elif kind == "fa":
        value_, method = (
            threshold_at_fa_rate(scores, labels, number),
            f"false accepts <= {number:g}",
        )
    else:
        value_, method = threshold_for_bayes(calibration, number), f"bayes p_target={number:g}"
    measured_on = description or f"{trials} over {manifest}"
    measured_on += f" ({len(trial_list)} trials)"
    set_bundle_decision(bundle, Threshold(value_, method, measured_on), calibration.to_dict())
    rates = compute_act_dcf(scores, labels, value_)
    typer.echo(
        f"threshold {value_:.4f} ({method}) on {measured_on}: false accepts "
        f"{100 * rates.false_accept_rate:.2f}%, misses {100 * rates.miss_rate:.2f}%; "
        f"calibration llr = {calibration.scale:.3f} x score {calibration.offset:+.3f}; "
        f"written to {bundle}"
    )


@app.command("trials")
@clean_errors
def trials_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest of the utterances to pair")],
    out: Annotated[Path, typer.Option(help="Trial list to write")],
    num_target: Annotated[
        int | None,
        typer.Option(help="Target trials (as many non-target); default about 20 per utterance"),
    ] = None,
    all_pairs: Annotated[
        bool, typer.Option("--all-pairs", help="Every pair of utterances, not a balanced sample")
    ] = False,
    same_gender: Annotated[
        bool,
        typer.Option(
            "--same-gender", help="Non-target pairs only within a gender (manifest 'gender')"
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampled list")] = 0,
) -> None:
    """Make a verification trial list from a manifest: balanced and sampled (default) or every
    pair, optionally with non-target trials only between speakers of the same gender."""
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.trials import all_pair_trials, make_trials, write_trials
    from speakerprint.errors import ConfigError

    utts = read_manifest(manifest)
    if all_pairs and num_target is not None:
        raise ConfigError("--num-target samples a balanced list; --all-pairs takes every pair")
    try:
        if all_pairs:
            made = all_pair_trials(utts, same_gender=same_gender)
        else:
            made = make_trials(utts, num_target=num_target, seed=seed, same_gender=same_gender)
    except ValueError as e:
        raise ConfigError(f"{manifest}: {e}") from None
    write_trials(out, made)
    num_target_made = sum(t.label for t in made)
    typer.echo(
        f"wrote {len(made)} trials ({num_target_made} target, {len(made) - num_target_made} "
        f"non-target) of {len(utts)} utterances to {out}"
    )
