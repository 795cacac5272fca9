"""The CLI's error contract, for every command: bad input prints one line and exits with 2.

The commands are walked from typer's registry, so a new command is covered without touching this
file: each one gets a missing file (or a bad value) for every required parameter, and the command
must answer with one line naming the problem, never a traceback. Commands whose option values or
missing extras failed this way before have cases of their own below.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf
from typer.main import get_command
from typer.testing import CliRunner

from speakerprint.cli.main import app

runner = CliRunner()

# Commands that take no input at all, so there is nothing bad to give them.
NO_INPUT = {"models"}


def _leaves(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from _leaves(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(_leaves(get_command(app)))


def assert_one_line_error(result, *fragments: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


def _bad_arguments(command, tmp_path) -> list[str]:
    """A missing file for every required parameter, a figure/output file no format takes, and
    for a command without required parameters a missing model or bundle."""
    args: list[str] = []
    missing = tmp_path / "missing"
    for param in command.params:
        if not param.required:
            continue
        if param.name == "out":
            value = str(tmp_path / "out" / "result.nope")
        elif param.name == "format_":
            value = "nope"
        else:
            value = str(missing / param.name)
        args += [param.opts[0], value] if param.opts[0].startswith("-") else [value]
    if not args:
        option = next(p for p in command.params if p.name in ("model", "bundle"))
        args = [option.opts[0], str(missing / option.name)]
    return args


def test_the_walk_finds_every_kind_of_command():
    assert {"embed", "eval", "verify", "prepare folder", "plot attention", "serve"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - NO_INPUT))
def test_every_command_answers_bad_input_with_one_line(name, tmp_path):
    args = _bad_arguments(COMMANDS[name], tmp_path)
    result = runner.invoke(app, [*name.split(), *args])
    assert_one_line_error(result)


def test_prepare_folder_with_every_speaker_held_out(tmp_path, demo_root):
    root = tmp_path / "six"
    root.mkdir()
    for speaker in sorted(p for p in demo_root.iterdir() if p.is_dir())[:6]:
        (root / speaker.name).symlink_to(speaker)
    result = runner.invoke(
        app, ["prepare", "folder", str(root), "--out", str(tmp_path / "o"), "--dev-speakers", "6"]
    )
    assert_one_line_error(result, "dev_speakers=6", str(root))


def test_verify_with_a_threshold_that_is_not_a_number(tmp_path, tiny_bundle, demo_root):
    a, b = sorted(demo_root.glob("*/*.opus"))[:2]
    result = runner.invoke(
        app, ["verify", "--model", str(tiny_bundle), str(a), str(b), "--threshold", "nan"]
    )
    assert_one_line_error(result, "threshold")


@pytest.fixture
def without(monkeypatch):
    """Make ``import <module>`` fail as it does where the package is not installed."""

    def block(*modules: str) -> None:
        for module in modules:
            for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, module, None)

    return block


def test_plot_attention_with_silero_without_the_vad_extra(
    tmp_path, tiny_bundle, demo_root, without
):
    without("silero_vad")
    audio = sorted(demo_root.glob("*/*.opus"))[0]
    result = runner.invoke(
        app,
        ["plot", "attention", str(tiny_bundle), str(audio), "--out", str(tmp_path / "a.png")]
        + ["--vad", "silero"],
    )
    assert_one_line_error(result, "pip install 'speakerprint[vad]'")


def test_plot_without_the_viz_extra(tmp_path, without):
    pytest.importorskip("matplotlib")
    scores = tmp_path / "s.txt"
    rng = np.random.default_rng(0)
    scores.write_text("".join(f"{i % 2} e{i} t{i} {rng.normal():.4f}\n" for i in range(20)))
    without("matplotlib")
    result = runner.invoke(app, ["plot", "scores", str(scores), "--out", str(tmp_path / "s.png")])
    assert_one_line_error(result, "pip install 'speakerprint[viz]'")


def test_silero_vad_without_the_extra_names_it(without):
    from speakerprint.audio.vad import SileroVad

    without("silero_vad")
    wav = np.zeros(16000, np.float32)
    with pytest.raises(ImportError, match=r"pip install 'speakerprint\[vad\]'"):
        SileroVad()(wav, 16000)


def test_embed_file_with_silero_without_the_extra_is_a_config_error(tmp_path, tiny_bundle, without):
    from speakerprint.errors import ConfigError
    from speakerprint.inference import SpeakerEncoder

    path = tmp_path / "tone.wav"
    sf.write(path, 0.1 * np.sin(np.arange(32000) * 0.05).astype(np.float32), 16000)
    enc = SpeakerEncoder.from_pretrained(tiny_bundle)
    without("silero_vad")
    with pytest.raises(ConfigError, match=r"pip install 'speakerprint\[vad\]'"):
        enc.embed_file(path, vad="silero")
