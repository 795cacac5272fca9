"""`check_manifest` and `speakerprint check`: every problem at once, with its line; status 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.data.check import check_manifest

SR = 16000


def _tone(seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _line(utt_id, path, speaker="s1", duration_s=1.0, sample_rate=SR) -> str:
    return json.dumps(
        {
            "utt_id": utt_id,
            "path": path,
            "speaker": speaker,
            "duration_s": duration_s,
            "sample_rate": sample_rate,
        }
    )


@pytest.fixture
def good(tmp_path):
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", _tone(), SR)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(_line("a", "a.wav") + "\n" + _line("b", "b.wav", "s2") + "\n")
    trials = tmp_path / "t.txt"
    trials.write_text("0 a b\n")
    return manifest, trials


def test_a_good_manifest_passes(good):
    manifest, trials = good
    report = check_manifest(manifest, trials=[trials], scan=True)
    assert report.ok and report.problems == []
    assert (report.num_utterances, report.num_scanned, report.num_trials) == (2, 2, 1)
    assert report.summary().startswith("OK: 2 utterances")


def test_every_problem_is_listed_with_its_line(tmp_path):
    sf.write(tmp_path / "ok.wav", _tone(), SR)
    sf.write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    sf.write(tmp_path / "8k.wav", _tone()[: SR // 2], 8000)  # 1 s at 8 kHz
    (tmp_path / "text.wav").write_text("not audio at all")
    lines = [
        _line("ok", "ok.wav"),  # 1
        "{not json",  # 2
        json.dumps({"utt_id": "x", "path": "ok.wav"}),  # 3: missing fields
        _line("ok", "ok.wav"),  # 4: duplicate
        _line("gone", "gone.wav"),  # 5: missing file
        _line("silent", "silent.wav"),  # 6
        _line("8k", "8k.wav"),  # 7: 8 kHz, the manifest says 16 kHz
        _line("long", "ok.wav", duration_s=5.0),  # 8: wrong duration
        _line("text", "text.wav"),  # 9: not audio
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    trials = tmp_path / "t.txt"
    trials.write_text("1 ok silent\n0 ok nobody\n2 ok ok\nonly two\n")

    quick = check_manifest(manifest, trials=[trials])
    scanned = check_manifest(manifest, trials=[trials], scan=True)
    expected_quick = {
        2: "malformed JSON",
        3: "missing field(s) speaker, duration_s, sample_rate",
        4: "duplicate utt_id 'ok' (first on line 1)",
        5: "gone.wav does not exist",
    }
    expected_scan = {
        6: "silent",
        7: "sample rate is 8000 Hz, the manifest says 16000",
        8: "duration is 1.000 s, the manifest says 5.000 s",
        9: "not a readable audio file",
    }
    expected_trials = {
        2: "'nobody' not in the manifest",
        3: "label must be 0 or 1",
        4: "expected 3 fields",
    }

    def by_line(report, path):
        found = {}
        for p in report.problems:
            if p.startswith(f"{path}:"):
                number = int(p[len(str(path)) + 1 :].split(":")[0])
                found.setdefault(number, []).append(p)
        return found

    for report, expected in ((quick, expected_quick), (scanned, expected_quick | expected_scan)):
        found = by_line(report, manifest)
        assert sorted(found) == sorted(expected)
        for number, text in expected.items():
            assert any(text in p for p in found[number]), (number, found[number])
        found_trials = by_line(report, trials)
        assert sorted(found_trials) == sorted(expected_trials)
        for number, text in expected_trials.items():
            assert text in found_trials[number][0]
        assert not report.ok
    assert scanned.summary() == (
        f"FAILED: 6 utterances, 5 files scanned, 1 trials in 1 list(s), "
        f"{len(scanned.problems)} problem(s)"
    )


def test_cli_exit_status_and_output(good, tmp_path):
    manifest, trials = good
    runner = CliRunner()
    ok = runner.invoke(app, ["check", str(manifest), "--trials", str(trials), "--scan"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip().splitlines()[-1].startswith("OK: 2 utterances, 2 files scanned")

    bad_trials = tmp_path / "bad.txt"
    bad_trials.write_text("1 a zz\n")
    missing = tmp_path / "missing.txt"
    bad = runner.invoke(
        app, ["check", str(manifest), "--trials", str(bad_trials), "--trials", str(missing)]
    )
    assert bad.exit_code == 1
    out = bad.output.strip().splitlines()
    assert out[0] == f"{bad_trials}:1: 'zz' not in the manifest"
    assert "trial list not found" in out[1]
    assert out[-1].startswith("FAILED") and "2 problem(s)" in out[-1]


def test_cli_unreadable_manifest_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["check", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    assert "manifest not found" in result.output
