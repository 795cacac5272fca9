"""`speakerprint diarize`: RTTM per file that read_rttm reads back, JSON and a plot on request,
one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.data.rttm import read_rttm

runner = CliRunner()


def test_diarize_writes_rttm_json_and_plot(three_speakers, tmp_path):
    path, _ = three_speakers
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["diarize", str(path), "--out", str(out), "--json", "--plot", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "3 speaker(s)" in result.output
    turns = read_rttm(out / "three.rttm")["three"]
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01", "SPEAKER_02"}
    payload = json.loads((out / "three.json").read_text())
    assert len(payload["turns"]) == len(turns)
    assert (out / "three.png").read_bytes()[:4] == b"\x89PNG"


def test_diarize_bad_options_are_one_line(three_speakers, tmp_path):
    path, _ = three_speakers
    for args, fragment in (
        (["--method", "kmeans"], "--method"),
        (["--min-speakers", "3", "--max-speakers", "2"], "min_speakers"),
        (["--vad", "loud"], "vad"),
    ):
        result = runner.invoke(app, ["diarize", str(path), "--out", str(tmp_path / "o"), *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and fragment in lines[0], result.output
