"""The typer application every command registers on, and the CLI's error contract.

A module of its own so that the command modules (``cli/embed.py``, ...) and ``cli/main.py``, which
imports them to register them, do not import each other.
"""

from __future__ import annotations

import functools

import typer

from speakerprint.errors import SpeakerprintError

__all__ = ["app", "clean_errors", "min_speech_s", "prepare_app"]

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


#: Help of every ``--model`` option: the one way to name a model.
MODEL_HELP = (
    "Model: a name from `speakerprint models` (an alias such as wespeaker-resnet34, or a hub id "
    "such as pyannote/wespeaker-voxceleb-resnet34-LM), a checkpoint file or folder in its "
    "toolkit's own layout, or a bundle folder"
)


#: Help of every ``--min-speech-s`` option; None stands for the library's default.
MIN_SPEECH_HELP = (
    "Seconds of speech (energy VAD) each recording must hold; one with less is refused (exit 2) "
    "rather than scored, since silence or a fragment says nothing about the speaker. 0 turns "
    "the check off (default: 1.0, speakerprint.inference.speech.DEFAULT_MIN_SPEECH_S)"
)


def min_speech_s(option: float | None) -> float:
    """The ``--min-speech-s`` given, or the library's default (imported only now: the CLI starts
    without numpy)."""
    from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, check_min_speech_s

    return DEFAULT_MIN_SPEECH_S if option is None else check_min_speech_s(option)


def choose_model(positional: str | None, option: str | None) -> str:
    """The model named either as the MODEL argument or with --model (one of them, not both)."""
    from speakerprint.errors import ConfigError

    if positional is not None and option is not None and positional != option:
        raise ConfigError(f"give the model once: MODEL is {positional!r} and --model {option!r}")
    model = positional if positional is not None else option
    if model is None:
        raise ConfigError("name a model: MODEL or --model (`speakerprint models` lists the names)")
    return model


def clean_errors(fn):
    """Turn input errors into one line on stderr and exit status 2, not a traceback.

    Input errors are :class:`SpeakerprintError` and the ImportError of a missing optional
    extra, whose message names what to install (``pip install 'speakerprint[viz]'``).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpeakerprintError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except ImportError as e:
            if "pip install" not in str(e):
                raise  # a broken installation, not a missing extra: the traceback helps
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper
