"""`speakerprint eval --scores/--report/--enrollment/--open-set`, `report`, `fuse`, `calibrate`
and `trials`, through typer's CliRunner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.data.manifest import Utterance, read_manifest, write_manifest
from speakerprint.data.trials import Trial, read_trials
from speakerprint.eval.metrics import compute_eer
from speakerprint.eval.scorefile import read_trial_scores, write_scores
from speakerprint.models.bundle import load_bundle, read_bundle_config

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(tiny_bundle, demo_prepared, tmp_path_factory):
    """One eval run with --scores, --report, --open-set and --out, shared by the tests."""
    out = tmp_path_factory.mktemp("eval")
    result = runner.invoke(
        app,
        [
            "eval",
            str(tiny_bundle),
            "--manifest",
            str(demo_prepared / "dev.jsonl"),
            "--trials",
            str(demo_prepared / "dev_trials.txt"),
            "--scores",
            str(out / "scores.txt"),
            "--report",
            str(out / "report"),
            "--out",
            str(out / "record.json"),
            "--open-set",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def _not_blank(path):
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return pixels.std() > 1.0


def test_eval_writes_scores_report_threshold_table_and_open_set(evaluated, demo_prepared):
    out, output = evaluated
    trials, scores = read_trial_scores(out / "scores.txt")
    assert trials == read_trials(demo_prepared / "dev_trials.txt")
    record = json.loads((out / "record.json").read_text())
    eer = compute_eer(scores, [t.label for t in trials]).eer
    assert record["eer"] == pytest.approx(eer, abs=1e-6)  # the file holds the scores measured
    assert record["scores_file"] == str(out / "scores.txt")
    assert [p["name"] for p in record["operating_points"]][0] == "EER"
    assert record["open_set_identification"]["num_speakers"] > 0
    assert "open-set identification" in output and "FA <= 1%" in output
    report = (out / "report" / "report.md").read_text()
    assert f"{100 * eer:.2f}" in report and "![DET curves](det.png)" in report
    assert "<table>" in (out / "report" / "report.html").read_text()
    for png in (out / "report").glob("*.png"):
        assert _not_blank(png), png


def test_report_compares_systems_and_refuses_other_trials(evaluated, tmp_path):
    out, _ = evaluated
    trials, scores = read_trial_scores(out / "scores.txt")
    noisy = scores + np.random.default_rng(0).normal(scale=0.3, size=len(scores))
    write_scores(tmp_path / "noisy.txt", trials, noisy)
    result = runner.invoke(
        app,
        [
            "report",
            str(out / "record.json"),
            str(tmp_path / "noisy.txt"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| record |" in md and "| noisy |" in md and "normalisation" not in md
    assert str(out / "scores.txt") not in md and "condition: kind=full" in md
    assert len(list((tmp_path / "r").glob("hist_*.png"))) == 2
    write_scores(tmp_path / "short.txt", trials[:-1], scores[:-1])
    bad = runner.invoke(
        app,
        [
            "report",
            str(tmp_path / "noisy.txt"),
            str(tmp_path / "short.txt"),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "same trial list" in bad.output


def test_fusion_of_two_noisy_copies_beats_each(tmp_path):
    rng = np.random.default_rng(1)
    trials = [Trial(int(i % 2 == 0), f"e{i}", f"t{i}") for i in range(4000)]
    labels = np.array([t.label for t in trials])
    files = {}
    for split in ("dev", "eval"):
        for system in ("a", "b"):
            scores = labels + rng.normal(size=len(labels))  # independent errors
            files[split, system] = tmp_path / f"{split}_{system}.txt"
            write_scores(files[split, system], trials, scores)
    fused = tmp_path / "fused.txt"
    args = ["fuse", "--dev", str(files["dev", "a"]), "--dev", str(files["dev", "b"])]
    args += [
        "--eval",
        str(files["eval", "a"]),
        "--eval",
        str(files["eval", "b"]),
        "--out",
        str(fused),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    systems = list(record["systems"].values())
    assert record["fused"]["eer"] < min(s["eer"] for s in systems)
    back_trials, back = read_trial_scores(fused)
    assert back_trials == trials
    assert compute_eer(back, labels).eer == pytest.approx(record["fused"]["eer"])
    assert json.loads((tmp_path / "fused.fusion.json").read_text())["fused"] == record["fused"]
    one = runner.invoke(app, ["fuse", "--dev", str(files["dev", "a"]), "--out", str(fused)])
    assert one.exit_code == 2 and "two systems" in one.output


def test_calibrate_stores_a_measured_threshold_that_verify_uses(
    tiny_bundle, demo_prepared, tmp_path
):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    before = read_bundle_config(bundle)
    args = ["calibrate", str(bundle), "--manifest", str(demo_prepared / "dev.jsonl")]
    args += [
        "--trials",
        str(demo_prepared / "dev_trials.txt"),
        "--at",
        "fa:0.05",
        "--description",
        "demo dev",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = read_bundle_config(bundle)
    assert config["model"] == before["model"]
    threshold = config["threshold"]
    assert threshold["method"] == "false accepts <= 0.05" and threshold["measured_on"].startswith(
        "demo dev"
    )
    _, scores = read_scores_of(bundle, demo_prepared, tmp_path)
    trials = read_trials(demo_prepared / "dev_trials.txt")
    nontarget = np.array([s for s, t in zip(scores, trials) if t.label == 0])
    assert (nontarget >= threshold["value"]).mean() <= 0.05
    assert config["calibration"]["scale"] > 0
    assert load_bundle(bundle).threshold.value == threshold["value"]
    # verify decides at the calibrated threshold and states the score as an LLR
    utts = [json.loads(line) for line in (demo_prepared / "dev.jsonl").read_text().splitlines()]
    pair = [utts[0]["path"], utts[-1]["path"]]
    shown = runner.invoke(app, ["verify", "--model", str(bundle), *pair, "--json"])
    assert shown.exit_code == 0, shown.output
    decision = json.loads(shown.output)
    calibration = config["calibration"]
    expected_llr = calibration["scale"] * decision["score"] + calibration["offset"]
    assert decision["llr"] == pytest.approx(expected_llr)
    assert decision["threshold"] == threshold["value"]
    text = runner.invoke(app, ["verify", "--model", str(bundle), *pair])
    assert f"log-likelihood ratio {expected_llr:+.2f}" in text.output
    uncalibrated = runner.invoke(app, ["verify", "--model", str(tiny_bundle), *pair, "--json"])
    assert json.loads(uncalibrated.output)["llr"] is None
    bad = runner.invoke(app, [*args[:-4], "--at", "fa:2"])
    assert bad.exit_code == 2 and "--at" in bad.output


def read_scores_of(bundle, demo_prepared, tmp_path):
    result = runner.invoke(
        app,
        [
            "eval",
            str(bundle),
            "--manifest",
            str(demo_prepared / "dev.jsonl"),
            "--trials",
            str(demo_prepared / "dev_trials.txt"),
            "--scores",
            str(tmp_path / "s.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    return read_trial_scores(tmp_path / "s.txt")


def _gendered_manifest(tmp_path):
    utts = [
        Utterance(f"s{s}/u{u}.wav", f"/x/s{s}/u{u}.wav", f"s{s}", 2.0, 16000, gender="fm"[s % 2])
        for s in range(6)
        for u in range(4)
    ]
    path = tmp_path / "m.jsonl"
    write_manifest(path, utts)
    return path


def test_trials_same_gender_and_all_pairs(tmp_path):
    manifest = _gendered_manifest(tmp_path)
    gender = {u.utt_id: u.gender for u in read_manifest(manifest)}
    result = runner.invoke(
        app,
        [
            "trials",
            str(manifest),
            "--out",
            str(tmp_path / "t.txt"),
            "--same-gender",
            "--num-target",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    trials = read_trials(tmp_path / "t.txt")
    assert sum(t.label for t in trials) == 30 and len(trials) == 60
    assert all(gender[t.enrol] == gender[t.test] for t in trials)
    everything = runner.invoke(
        app, ["trials", str(manifest), "--out", str(tmp_path / "a.txt"), "--all-pairs"]
    )
    assert everything.exit_code == 0, everything.output
    all_trials = read_trials(tmp_path / "a.txt")
    assert len(all_trials) == 24 * 23 // 2
    assert sum(t.label for t in all_trials) == 6 * 4 * 3 // 2
    same = runner.invoke(
        app,
        ["trials", str(manifest), "--out", str(tmp_path / "b.txt"), "--all-pairs", "--same-gender"],
    )
    assert same.exit_code == 0
    # per gender: 12 utterances, 66 pairs; 3 speakers x 6 target pairs each
    assert len(read_trials(tmp_path / "b.txt")) == 2 * 66
    too_many = runner.invoke(
        app,
        [
            "trials",
            str(manifest),
            "--out",
            str(tmp_path / "c.txt"),
            "--same-gender",
            "--num-target",
            "36",
        ],
    )
    assert too_many.exit_code == 0  # 36 target pairs exist, and 2 x (66 - 18) = 96 non-target
    none = runner.invoke(
        app,
        [
            "trials",
            str(manifest),
            "--out",
            str(tmp_path / "c.txt"),
            "--same-gender",
            "--num-target",
            "37",
        ],
    )
    assert none.exit_code == 2 and "num_target" in none.output


def test_same_gender_needs_genders(demo_prepared, tmp_path):
    result = runner.invoke(
        app,
        [
            "trials",
            str(demo_prepared / "dev.jsonl"),
            "--out",
            str(tmp_path / "t.txt"),
            "--same-gender",
        ],
    )
    assert result.exit_code == 2 and "gender" in result.output
