"""``speakerprint plot <kind>``: one command per figure of :mod:`speakerprint.viz`.

Every command writes one figure to ``--out``, PNG or SVG by the extension, and prints what it
measured (the numbers in the figure's titles) so that a script can quote them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import MODEL_HELP, app, clean_errors

plot_app = typer.Typer(
    help="Figures that look inside models: scores, projections, attention, class weights...",
    no_args_is_help=True,
)
app.add_typer(plot_app, name="plot")

OutOption = Annotated[Path, typer.Option("--out", help="Figure file: .png or .svg")]
DpiOption = Annotated[int, typer.Option(help="Resolution of a PNG (dots per inch)")]


def _check_out(out: Path) -> None:
    """Fail on a bad extension before any work is done."""
    from speakerprint.viz import figure_format

    figure_format(out)


def _save(fig, out: Path, dpi: int) -> None:
    from speakerprint.viz import save_figure

    save_figure(fig, out, dpi=dpi)
    typer.echo(f"wrote {out}")


def _positive(name: str, value: int | None) -> None:
    from speakerprint.errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")


@plot_app.command("scores")
@clean_errors
def scores_cmd(
    scores: Annotated[
        list[Path],
        typer.Argument(
            help="Score files ('LABEL ENROL TEST SCORE', from eval --scores) or eval records "
            "(eval --scores F --out R.json); several are drawn on one DET plot"
        ),
    ],
    out: OutOption,
    dpi: DpiOption = 100,
) -> None:
    """Target and non-target score histograms (with the EER threshold) and the DET curve."""
    from speakerprint.eval.metrics import compute_eer
    from speakerprint.viz._common import new_figure
    from speakerprint.viz.scores import plot_det, plot_score_histograms, read_scores

    _check_out(out)
    loaded = {str(path): read_scores(path) for path in scores}
    fig = new_figure(5.0 * (len(loaded) + 1), 4.6)
    axes = fig.subplots(1, len(loaded) + 1)
    for ax, (name, (values, labels)) in zip(axes, loaded.items()):
        eer = compute_eer(values, labels)
        plot_score_histograms(values, labels, ax=ax, threshold=eer.threshold)
        ax.set_title(f"{Path(name).name}\nEER {100 * eer.eer:.2f}%", fontsize="medium")
        typer.echo(
            f"{name}: {int(labels.sum())} target, {int((labels == 0).sum())} non-target trials, "
            f"EER {100 * eer.eer:.2f}% at threshold {eer.threshold:.4f}"
        )
    plot_det({Path(k).name: v for k, v in loaded.items()}, ax=axes[-1])
    axes[-1].set_title("DET", fontsize="medium")
    _save(fig, out, dpi)


@plot_app.command("projection")
@clean_errors
def projection_cmd(
    bundles: Annotated[
        list[str], typer.Argument(help=f"{MODEL_HELP}; one panel each", metavar="MODEL...")
    ],
    manifest: Annotated[
        list[Path], typer.Option(help="Manifest(s) of the utterances to embed (repeatable)")
    ],
    out: OutOption,
    method: Annotated[str, typer.Option(help="umap, svd or tsne")] = "umap",
    seen_manifest: Annotated[
        Path | None,
        typer.Option(help="Training manifest: its speakers are marked as seen in training"),
    ] = None,
    max_speakers: Annotated[
        int, typer.Option(help="Speakers drawn at random from each manifest, at most")
    ] = 10,
    max_per_speaker: Annotated[
        int, typer.Option(help="Utterances of each speaker drawn at random, at most")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the draw and the projection")] = 0,
    cache: Annotated[
        Path | None, typer.Option(help="Embedding cache folder (shared with speakerprint eval)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Utterances per batch")] = 16,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    dpi: DpiOption = 100,
) -> None:
    """Utterance embeddings projected to 2-D, coloured by speaker, one panel per bundle."""
    import sys

    from speakerprint.data.manifest import read_manifest
    from speakerprint.viz.projection import plot_projections, project_bundles, select_from_manifests

    _check_out(out)
    _positive("--max-speakers", max_speakers)
    _positive("--max-per-speaker", max_per_speaker)
    _positive("--batch-size", batch_size)
    utts = select_from_manifests(
        manifest, max_speakers=max_speakers, max_per_speaker=max_per_speaker, seed=seed
    )
    seen = set() if seen_manifest is None else {u.speaker for u in read_manifest(seen_manifest)}
    from speakerprint.hub import resolve_model

    analysis = project_bundles(
        [resolve_model(b) for b in bundles],
        utts,
        method=method,
        seen_speakers=seen,
        seed=seed,
        cache_dir=cache,
        batch_size=batch_size,
        device=device,
        progress=sys.stderr.isatty(),
    )
    for bundle, panel in zip(bundles, analysis.panels):
        shown = "n/a" if panel.silhouette is None else f"{panel.silhouette:.3f}"
        typer.echo(f"{bundle}: speaker silhouette (cosine) {shown}")
    typer.echo(
        f"{len(utts)} utterances of {len(set(analysis.speakers))} speakers "
        f"({analysis.num_seen_speakers} seen in training)"
    )
    fig = plot_projections(analysis.panels, analysis.speakers, analysis.seen, method=method)
    _save(fig, out, dpi)


@plot_app.command("attention")
@clean_errors
def attention_cmd(
    bundle: Annotated[
        str, typer.Argument(help=f"{MODEL_HELP} (ECAPA-TDNN or TitaNet)", metavar="MODEL")
    ],
    audio: Annotated[Path, typer.Argument(help="A recording, any format")],
    out: OutOption,
    max_channels: Annotated[int, typer.Option(help="Channels drawn in the heat map")] = 256,
    vad: Annotated[
        str, typer.Option(help="Speech track: energy, or silero (the vad extra)")
    ] = "energy",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    dpi: DpiOption = 100,
) -> None:
    """Attentive-pooling weights over time under the waveform and a VAD track, and how alike
    the channels attend."""
    from speakerprint.viz.attention import attention_of_file, plot_attention

    _check_out(out)
    _positive("--max-channels", max_channels)
    from speakerprint.hub import resolve_model

    result = attention_of_file(resolve_model(bundle), audio, device=device, vad=vad)
    sim = result.similarity
    typer.echo(
        f"channel attention similarity: mean pairwise cosine {sim.mean_cosine:.4f}, "
        f"mean pairwise correlation {sim.mean_correlation:.4f}, median peak/uniform "
        f"{sim.median_peak_ratio:.3f} ({sim.num_channels} channels, {sim.num_frames} frames)"
    )
    _save(plot_attention(result, max_channels=max_channels), out, dpi)


@plot_app.command("class-weights")
@clean_errors
def class_weights_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder with checkpoints/step_N")],
    out: OutOption,
    max_checkpoints: Annotated[
        int, typer.Option(help="Checkpoints drawn at most (evenly spaced, first and last)")
    ] = 4,
    dpi: DpiOption = 100,
) -> None:
    """Cosine-similarity matrices of the AAM head's class weights at checkpoints of a run."""
    from speakerprint.viz.class_weights import (
        cosine_matrix,
        mean_off_diagonal,
        plot_class_weights,
        read_class_weights,
    )

    _check_out(out)
    _positive("--max-checkpoints", max_checkpoints)
    snapshots = read_class_weights(run_dir, max_checkpoints=max_checkpoints)
    for snap in snapshots:
        mean = mean_off_diagonal(cosine_matrix(snap.weights))
        typer.echo(
            f"step {snap.step}: {snap.weights.shape[0]} classes, mean off-diagonal cosine {mean:+.4f}"
        )
    _save(plot_class_weights(snapshots, title=run_dir.resolve().name), out, dpi)


@plot_app.command("aam-scale")
@clean_errors
def aam_scale_cmd(
    out: OutOption,
    num_classes: Annotated[
        list[int] | None, typer.Option(help="Numbers of classes, one curve each (repeatable)")
    ] = None,
    margin: Annotated[float, typer.Option(help="Angular margin m in radians")] = 0.2,
    run: Annotated[
        list[Path] | None,
        typer.Option(
            help="AAM training run folders (repeatable): their final loss and dev EER against "
            "their scale (see scripts/aam_scale_speechocean762.sh)"
        ),
    ] = None,
    dpi: DpiOption = 100,
) -> None:
    """The lowest possible AAM-softmax loss against the scale s, for several numbers of classes,
    and optionally what training runs at several scales reached."""
    import math

    from speakerprint.errors import ConfigError
    from speakerprint.viz.aam_scale import aam_loss_lower_bound, plot_aam_scale, read_scale_run

    _check_out(out)
    counts = num_classes or [2, 10, 100, 1000, 5994]
    if any(c < 2 for c in counts):
        raise ConfigError(f"--num-classes must be at least 2, got {counts}")
    if not 0.0 <= margin <= math.pi / 2:
        raise ConfigError(f"--margin must lie in [0, pi/2] radians, got {margin}")
    for count in counts:
        bounds = ", ".join(
            f"s={s:g}: {float(aam_loss_lower_bound(s, count, margin=margin)):.3g}"
            for s in (1, 16, 30)
        )
        typer.echo(f"C={count}: lowest loss {bounds}")
    runs = [read_scale_run(path) for path in run or []]
    for r in runs:
        bound = float(aam_loss_lower_bound(r.scale, r.num_classes, margin=r.margin))
        eer = "n/a" if r.dev_eer is None else f"{100 * r.dev_eer:.2f}%"
        typer.echo(
            f"{r.run_dir}: s={r.scale:g}, {r.num_classes} classes, final training loss "
            f"{r.final_loss:.4f} (lowest possible {bound:.3g}), dev EER {eer}"
        )
    _save(plot_aam_scale(counts, margin=margin, runs=runs), out, dpi)


@plot_app.command("enrollment-bias")
@clean_errors
def enrollment_bias_cmd(
    out: OutOption,
    bundle: Annotated[
        str | None,
        typer.Argument(
            help=f"{MODEL_HELP}, for real embeddings (needs --manifest)", metavar="MODEL"
        ),
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="Utterances to embed")] = None,
    dim: Annotated[int, typer.Option(help="Dimension of the random vectors")] = 192,
    per_speaker: Annotated[int, typer.Option(help="Random vectors per speaker")] = 5,
    num_speakers: Annotated[int, typer.Option(help="Random speakers")] = 200,
    max_speakers: Annotated[int | None, typer.Option(help="Real speakers, at most")] = None,
    max_per_speaker: Annotated[
        int | None, typer.Option(help="Real utterances per speaker, at most")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="Embedding cache folder")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random vectors and the draw")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    dpi: DpiOption = 100,
) -> None:
    """Cosine of an utterance with its speaker's mean, with it in the mean and left out."""
    import numpy as np

    from speakerprint.data.manifest import read_manifest
    from speakerprint.errors import ConfigError
    from speakerprint.inference.extract import embed_manifest
    from speakerprint.viz._common import bundle_label
    from speakerprint.viz.enrollment_bias import (
        enrollment_bias,
        plot_enrollment_bias,
        random_speaker_embeddings,
    )
    from speakerprint.viz.projection import select_utterances

    _check_out(out)
    if (bundle is None) != (manifest is None):
        raise ConfigError("real embeddings need both a BUNDLE and --manifest (or neither)")
    if per_speaker < 2:
        raise ConfigError(f"--per-speaker must be at least 2, got {per_speaker}")
    for name, value in [
        ("--dim", dim),
        ("--num-speakers", num_speakers),
        ("--max-speakers", max_speakers),
        ("--max-per-speaker", max_per_speaker),
    ]:
        _positive(name, value)
    random_result = enrollment_bias(
        *random_speaker_embeddings(num_speakers, per_speaker, dim, seed=seed)
    )
    counts = sorted({2, 3, 5, 10, 20, 50, per_speaker})
    gap_speakers = max(num_speakers // 4, 20)  # fewer speakers per point: the gap is an average
    gaps = [
        (n, enrollment_bias(*random_speaker_embeddings(gap_speakers, n, dim, seed=seed + n)).gap)
        for n in counts
    ]
    typer.echo(f"random vectors (D={dim}, {per_speaker} per speaker): gap {random_result.gap:+.4f}")
    real_result, real_name = None, ""
    if bundle is not None and manifest is not None:
        utts = select_utterances(
            read_manifest(manifest),
            max_speakers=max_speakers,
            max_per_speaker=max_per_speaker,
            seed=seed,
        )
        from speakerprint.hub import resolve_model

        bundle_folder = resolve_model(bundle)
        emb_by_id = embed_manifest(bundle_folder, utts, cache_dir=cache, device=device)
        emb = np.stack([emb_by_id[u.utt_id] for u in utts])
        real_result = enrollment_bias(emb, [u.speaker for u in utts])
        real_name = f"{bundle_label(bundle_folder)} on {manifest.name}"
        typer.echo(
            f"{real_name}: {real_result.num_speakers} speakers x "
            f"{real_result.utterances_per_speaker:.1f} utterances, inclusive "
            f"{real_result.inclusive.mean():.4f}, leave-one-out "
            f"{real_result.leave_one_out.mean():.4f}, gap {real_result.gap:+.4f}"
        )
    fig = plot_enrollment_bias(
        random_result, gaps, dim=dim, real_result=real_result, real_name=real_name
    )
    _save(fig, out, dpi)


@plot_app.command("dimension")
@clean_errors
def dimension_cmd(
    out: OutOption,
    dims: Annotated[
        list[int] | None, typer.Option("--dim", help="Dimensions, one panel each (repeatable)")
    ] = None,
    num_pairs: Annotated[int, typer.Option(help="Random pairs per dimension")] = 20000,
    seed: Annotated[int, typer.Option(help="Seed of the random vectors")] = 0,
    dpi: DpiOption = 100,
) -> None:
    """The distribution of the cosine of random vectors as the dimension grows."""
    from speakerprint.errors import ConfigError
    from speakerprint.viz.dimension import DEFAULT_DIMENSIONS, plot_dimension, random_cosines

    _check_out(out)
    dims = dims or list(DEFAULT_DIMENSIONS)
    if any(d < 2 for d in dims):
        raise ConfigError(f"--dim must be at least 2, got {dims}")
    if num_pairs < 2:
        raise ConfigError(f"--num-pairs must be at least 2, got {num_pairs}")
    samples = random_cosines(dims, num_pairs, seed=seed)
    for dim, values in sorted(samples.items()):
        typer.echo(f"D={dim}: std {values.std():.4f}, 1/sqrt(D) {dim**-0.5:.4f}")
    _save(plot_dimension(samples), out, dpi)


@plot_app.command("curves")
@clean_errors
def curves_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (or its metrics.jsonl)")],
    out: OutOption,
    dpi: DpiOption = 100,
) -> None:
    """Loss, accuracy, learning rate, margin and dev EER / minDCF of a training run."""
    from speakerprint.viz.curves import plot_curves, read_metrics

    _check_out(out)
    curves = read_metrics(run_dir)
    steps, losses = curves.train["loss"] if "loss" in curves.train else ((), ())
    if len(steps):
        typer.echo(f"{len(steps)} training records, steps {steps[0]}..{steps[-1]}")
    if "eer" in curves.dev:
        dev_steps, eers = curves.dev["eer"]
        typer.echo(f"dev EER at step {dev_steps[-1]}: {100 * eers[-1]:.2f}%")
    name = run_dir.parent.name if run_dir.is_file() else run_dir.resolve().name
    _save(plot_curves(curves, title=name), out, dpi)
