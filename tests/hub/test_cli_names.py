"""Every command that takes a model takes it by any name: export and eval as MODEL or --model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from speakerprint.cli.main import app

WESPEAKER = Path(__file__).resolve().parents[1] / "fixtures" / "peers" / "wespeaker" / "resnet34"
runner = CliRunner()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEAKERPRINT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("how", ["argument", "option"])
def test_export_takes_a_checkpoint_folder_as_model_or_with_model(tmp_path, how):
    out = tmp_path / "m.pt"
    where = [str(WESPEAKER)] if how == "argument" else ["--model", str(WESPEAKER)]
    result = runner.invoke(app, ["export", *where, "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "cache" / "local").is_dir()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "name a model"),
        (["default", "--model", str(WESPEAKER)], "give the model once"),
        (["no-such-model"], "not a model name"),
    ],
)
def test_export_and_eval_say_what_is_wrong_with_the_model_in_one_line(tmp_path, args, message):
    for command in (
        ["export", *args, "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
        ["eval", *args, "--manifest", str(tmp_path / "x.jsonl"), "--trials", str(tmp_path / "t")],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.output.startswith("error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
