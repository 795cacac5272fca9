"""CLI: ``prepare voxceleb1|voxceleb2|librispeech|vctk|cnceleb|kaldi`` and ``stats``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import app, clean_errors, prepare_app


class Vad(str, Enum):
    silero = "silero"
    energy = "energy"


class Mic(str, Enum):
    mic1 = "mic1"
    mic2 = "mic2"
    both = "both"


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


_OUT = typer.Option("--out", help="Folder for the manifests, trial lists and skipped.tsv")
_VAD = typer.Option(help="Split training manifests into speech segments with this VAD")
_WORKERS = typer.Option(help="Threads reading file headers")
_DROP = typer.Option(
    help="Leave out trials naming missing files instead of failing (no longer the official list)"
)


def _report(result) -> None:
    typer.echo(result.summary())


@prepare_app.command("voxceleb1")
@clean_errors
def prepare_voxceleb1_cmd(
    root: Annotated[Path, typer.Argument(help="VoxCeleb1: wav/ or vox1_dev_wav/ + vox1_test_wav/")],
    out: Annotated[Path, _OUT],
    trials_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder with veri_test.txt, list_test_all.txt, list_test_hard.txt (and *2)"
        ),
    ] = None,
    drop_missing_trials: Annotated[bool, _DROP] = False,
    vad: Annotated[Vad | None, _VAD] = None,
    num_workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """VoxCeleb1: train (dev speakers), test (VoxCeleb1-O speakers), all; vox1_O/E/H trials."""
    from speakerprint.data.corpora import prepare_voxceleb1

    _report(
        prepare_voxceleb1(
            root,
            out,
            trials_dir=trials_dir,
            drop_missing_trials=drop_missing_trials,
            vad=_value(vad),
            num_workers=num_workers,
        )
    )


@prepare_app.command("voxceleb2")
@clean_errors
def prepare_voxceleb2_cmd(
    root: Annotated[Path, typer.Argument(help="VoxCeleb2: dev/aac/ and/or test/aac/")],
    out: Annotated[Path, _OUT],
    vad: Annotated[Vad | None, _VAD] = None,
    num_workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """VoxCeleb2: train (dev/aac) and test (test/aac), M4A read directly."""
    from speakerprint.data.corpora import prepare_voxceleb2

    _report(prepare_voxceleb2(root, out, vad=_value(vad), num_workers=num_workers))


@prepare_app.command("librispeech")
@clean_errors
def prepare_librispeech_cmd(
    root: Annotated[Path, typer.Argument(help="Folder holding LibriSpeech/ (or LibriSpeech/)")],
    out: Annotated[Path, _OUT],
    subsets: Annotated[
        str | None,
        typer.Option(help="Comma-separated subsets, e.g. train-clean-100,test-clean; default all"),
    ] = None,
    vad: Annotated[Vad | None, _VAD] = None,
    num_workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """LibriSpeech: one manifest per subset, with gender from SPEAKERS.TXT."""
    from speakerprint.data.corpora import prepare_librispeech

    chosen = None if subsets is None else [s.strip() for s in subsets.split(",") if s.strip()]
    _report(
        prepare_librispeech(root, out, subsets=chosen, vad=_value(vad), num_workers=num_workers)
    )


@prepare_app.command("vctk")
@clean_errors
def prepare_vctk_cmd(
    root: Annotated[
        Path, typer.Argument(help="VCTK 0.80 (wav48/) or 0.92 (wav48_silence_trimmed/)")
    ],
    out: Annotated[Path, _OUT],
    mic: Annotated[Mic | None, typer.Option(help="0.92 only: mic1 (default), mic2 or both")] = None,
    vad: Annotated[Vad | None, _VAD] = None,
    num_workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """VCTK: all.jsonl of every speaker, with gender."""
    from speakerprint.data.corpora import prepare_vctk

    _report(prepare_vctk(root, out, mic=_value(mic), vad=_value(vad), num_workers=num_workers))


@prepare_app.command("cnceleb")
@clean_errors
def prepare_cnceleb_cmd(
    root: Annotated[
        Path, typer.Argument(help="Folder holding CN-Celeb_flac/ and/or CN-Celeb2_flac/")
    ],
    out: Annotated[Path, _OUT],
    drop_missing_trials: Annotated[bool, _DROP] = False,
    vad: Annotated[Vad | None, _VAD] = None,
    num_workers: Annotated[int, _WORKERS] = 1,
) -> None:
    """CN-Celeb1/2: train, eval and the cnceleb1_eval trial list."""
    from speakerprint.data.corpora import prepare_cnceleb

    _report(
        prepare_cnceleb(
            root,
            out,
            drop_missing_trials=drop_missing_trials,
            vad=_value(vad),
            num_workers=num_workers,
        )
    )


@prepare_app.command("kaldi")
@clean_errors
def prepare_kaldi_cmd(
    data_dir: Annotated[
        Path, typer.Argument(help="Kaldi data folder: wav.scp, utt2spk, [segments]")
    ],
    out: Annotated[Path, _OUT],
    path_root: Annotated[
        Path | None, typer.Option(help="What relative wav.scp paths are relative to (default: .)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Manifest name (default: the folder's)")] = None,
    vad: Annotated[Vad | None, _VAD] = None,
) -> None:
    """A Kaldi data folder: one manifest (segments become offsets), trials.txt from trials."""
    from speakerprint.data.corpora import prepare_kaldi

    _report(prepare_kaldi(data_dir, out, path_root=path_root, name=name, vad=_value(vad)))


@app.command()
@clean_errors
def stats(
    manifest: Annotated[Path, typer.Argument(help="Manifest (JSONL)")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write histograms (durations, utterances per speaker) as PNG"),
    ] = None,
    scan: Annotated[
        bool, typer.Option("--scan", help="Read the audio: list clipped and silent files")
    ] = False,
) -> None:
    """Speakers, utterances, hours, durations, sample rates and formats of a manifest."""
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.stats import format_stats, manifest_stats, plot_stats, scan_audio

    utts = read_manifest(manifest)
    found = scan_audio(utts) if scan else None
    typer.echo(format_stats(manifest_stats(utts), found))
    if out is not None:
        plot_stats(utts, out)
        typer.echo(f"histograms -> {out}")


@app.command()
@clean_errors
def shard(
    manifest: Annotated[Path, typer.Argument(help="Manifest (JSONL) of the training set")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the shards and shards.json")],
    utterances_per_shard: Annotated[
        int, typer.Option(help="Utterances per tar shard (aim for a few hundred MB a shard)")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the order utterances are dealt in")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Pack a manifest's audio into tar shards that training reads sequentially (data.train_shards)."""
    from tqdm import tqdm

    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.shards import write_shards

    utts = read_manifest(manifest)
    with tqdm(total=len(utts), unit="utt", disable=not progress, desc="sharding") as bar:
        index = write_shards(
            utts, out, utterances_per_shard=utterances_per_shard, seed=seed, progress=bar.update
        )
    size = sum(f.stat().st_size for f in index.files)
    typer.echo(
        f"{index.num_utterances} utterances of {len(index.speakers)} speakers "
        f"({index.hours:.2f} h) in {len(index.files)} shard(s), {size / 1e6:.1f} MB -> {out}"
    )
