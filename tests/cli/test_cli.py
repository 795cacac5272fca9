"""The CLI through typer's CliRunner: each command on real files, and clean errors on bad ones."""

import json

import numpy as np
from typer.testing import CliRunner

from speakerprint.cli.main import app

runner = CliRunner()


def _dev_pair(prepared):
    utts = [json.loads(line) for line in (prepared / "dev.jsonl").read_text().splitlines()]
    a = utts[0]
    same = next(u for u in utts[1:] if u["speaker"] == a["speaker"])
    diff = next(u for u in utts if u["speaker"] != a["speaker"])
    return a["path"], same["path"], diff["path"]


def test_prepare_folder(tmp_path, demo_root):
    result = runner.invoke(
        app, ["prepare", "folder", str(demo_root), "--out", str(tmp_path), "--dev-speakers", "5"]
    )
    assert result.exit_code == 0, result.output
    train = (tmp_path / "train.jsonl").read_text().splitlines()
    dev = (tmp_path / "dev.jsonl").read_text().splitlines()
    assert len(train) + len(dev) == 320
    assert len({json.loads(line)["speaker"] for line in dev}) == 5
    assert (tmp_path / "dev_trials.txt").stat().st_size > 0


def test_train_eval_embed_verify(tmp_path, demo_prepared):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"data: {{train_manifest: {demo_prepared / 'train.jsonl'}, batch_size: 8, crop_s: 1.0, num_workers: 0}}\n"
        "model: {name: ecapa_tdnn, args: {channels: 32, mfa_channels: 96, embed_dim: 32}}\n"
        "train: {max_steps: 2, checkpoint_every: 100}\n"
    )
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(cfg), "--out", str(run), "--set", "train.seed=3", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (run / "bundle" / "config.json").is_file()
    assert "seed: 3" in (run / "config.yaml").read_text()

    result = runner.invoke(
        app,
        [
            "eval",
            str(run / "bundle"),
            "--manifest",
            str(demo_prepared / "dev.jsonl"),
            "--trials",
            str(demo_prepared / "dev_trials.txt"),
            "--json",
            "--out",
            str(tmp_path / "e.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert 0.0 <= printed["eer"] <= 1.0 and printed["p_target"] == 0.01
    assert json.loads((tmp_path / "e.json").read_text())["eer"] == printed["eer"]

    a, same, diff = _dev_pair(demo_prepared)
    out = tmp_path / "emb.npz"
    result = runner.invoke(
        app, ["embed", "--model", str(run / "bundle"), a, diff, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with np.load(out) as npz:
        assert sorted(npz.files) == sorted([a, diff])
        assert npz[a].shape == (32,)

    # The tiny bundle has no dev set, hence no measured threshold: verify needs one given.
    result = runner.invoke(app, ["verify", "--model", str(run / "bundle"), a, same, "--json"])
    assert result.exit_code == 2 and "threshold" in result.output
    result = runner.invoke(
        app, ["verify", "--model", str(run / "bundle"), a, same, "--json", "--threshold", "0.5"]
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["threshold"] == 0.5 and verdict["same_speaker"] == (verdict["score"] >= 0.5)


def test_verify_with_measured_threshold(tiny_bundle, demo_prepared):
    a, same, _ = _dev_pair(demo_prepared)
    result = runner.invoke(app, ["verify", "--model", str(tiny_bundle), a, same])
    assert result.exit_code == 0, result.output
    assert "eer on" in result.output and "score" in result.output


def test_errors_are_one_line_with_the_file(tmp_path, tiny_bundle):
    missing = tmp_path / "nope.wav"
    result = runner.invoke(app, ["verify", "--model", str(tiny_bundle), str(missing), str(missing)])
    assert result.exit_code == 2
    assert "nope.wav" in result.output and "Traceback" not in result.output

    result = runner.invoke(
        app, ["eval", str(tmp_path / "no_bundle"), "--manifest", "m", "--trials", "t"]
    )
    assert result.exit_code == 2 and "no_bundle" in result.output

    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("optim: {lrr: 1}\n")
    result = runner.invoke(app, ["train", str(bad_cfg), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "optim.lrr" in result.output


def test_models_architectures_lists_parameter_counts():
    result = runner.invoke(app, ["models", "--architectures"])
    assert result.exit_code == 0
    assert "ecapa_tdnn_c512" in result.output and "6.19M" in result.output
