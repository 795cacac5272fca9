"""Every ``speakerprint plot`` command on the tiny trained bundle or tiny synthetic data writes
a real image of the expected size."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from speakerprint.cli.main import app
from tests.viz.conftest import assert_real_image

runner = CliRunner()
DPI = 40


def _plot(*args: str):
    result = runner.invoke(app, ["plot", *map(str, args), "--dpi", str(DPI)])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def score_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("scores") / "scores.txt"
    lines = [f"1 a{i} b{i} {rng.normal(0.6, 0.2):.4f}" for i in range(100)]
    lines += [f"0 c{i} d{i} {rng.normal(0.1, 0.2):.4f}" for i in range(100)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_scores_png(tmp_path, score_file):
    out = tmp_path / "scores.png"
    result = _plot("scores", score_file, "--out", out)
    assert "EER" in result.output and "100 target" in result.output
    assert_real_image(out, 10.0, 4.6, DPI)


def test_scores_svg_and_two_systems(tmp_path, score_file):
    other = tmp_path / "other.txt"
    other.write_text("1 a b 0.9\n0 a c 0.1\n1 d e 0.6\n0 d f 0.4\n")
    out = tmp_path / "scores.svg"
    _plot("scores", score_file, other, "--out", out)
    text = out.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_bad_extension_and_bad_input_are_one_line_errors(tmp_path, score_file):
    result = runner.invoke(
        app, ["plot", "scores", str(score_file), "--out", str(tmp_path / "x.jpg")]
    )
    assert result.exit_code == 2 and ".png or .svg" in result.output
    bad = tmp_path / "bad.txt"
    bad.write_text("maybe a b 0.5\n")
    result = runner.invoke(app, ["plot", "scores", str(bad), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and f"{bad}:1" in result.output
    assert not (tmp_path / "x.png").exists()


def test_projection_two_panels_seen_and_unseen(tmp_path, tiny_bundle, demo_prepared):
    out = tmp_path / "projection.png"
    result = _plot(
        "projection",
        tiny_bundle,
        tiny_bundle,
        "--manifest",
        demo_prepared / "dev.jsonl",
        "--manifest",
        demo_prepared / "train.jsonl",
        "--seen-manifest",
        demo_prepared / "train.jsonl",
        "--method",
        "svd",
        "--max-speakers",
        "3",
        "--max-per-speaker",
        "4",
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
    )
    assert "24 utterances of 6 speakers (3 seen in training)" in result.output
    assert "silhouette" in result.output
    assert_real_image(out, 4.6 * 2 + 0.4, 4.8, DPI)
    assert list((tmp_path / "cache").glob("*.npz"))  # shared with `speakerprint eval --cache`


def test_attention_ecapa(tmp_path, tiny_bundle, demo_root):
    audio = sorted(demo_root.rglob("*.opus"))[0]
    out = tmp_path / "attention.png"
    result = _plot("attention", tiny_bundle, audio, "--out", out)
    assert "mean pairwise cosine" in result.output
    assert_real_image(out, 10.0, 7.5, DPI)


def test_attention_speech_track_from_the_vad(tiny_bundle, demo_root):
    from speakerprint.errors import ConfigError
    from speakerprint.viz.attention import attention_of_file

    audio = sorted(demo_root.rglob("*.opus"))[0]
    result = attention_of_file(tiny_bundle, audio)
    duration_s = len(result.wav) / result.sample_rate
    assert result.vad == "energy" and result.speech
    assert all(0 <= start < end <= duration_s + 1e-6 for start, end in result.speech)
    assert result.alpha.shape[1] == pytest.approx(duration_s * 100, abs=3)
    # RUN/bundle is named by its run, not by the word "bundle".
    assert result.name.startswith(f"{tiny_bundle.parent.name} (") and audio.name in result.name
    with pytest.raises(ConfigError, match="unknown VAD"):
        attention_of_file(tiny_bundle, audio, vad="nope")


def test_attention_titanet_and_a_model_without_attention(tmp_path, demo_root):
    import torch

    from speakerprint.features.fbank import FbankConfig
    from speakerprint.models import create_model
    from speakerprint.models.bundle import load_bundle, save_bundle
    from speakerprint.viz.attention import attention_of_waveform

    torch.manual_seed(0)
    titanet = create_model("titanet", channels=32, epilog_channels=64, embed_dim=16).eval()
    bundle_dir = save_bundle(tmp_path / "titanet", titanet, FbankConfig())
    audio = sorted(demo_root.rglob("*.opus"))[0]
    out = tmp_path / "attention.png"
    _plot("attention", bundle_dir, audio, "--out", out)
    assert_real_image(out, 10.0, 7.5, DPI)
    result = attention_of_waveform(
        load_bundle(bundle_dir), np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    )
    assert result.alpha.shape[0] == 64
    np.testing.assert_allclose(result.alpha.sum(axis=1), 1.0, rtol=1e-4)

    xvector = save_bundle(
        tmp_path / "xvector", create_model("xvector", embed_dim=16), FbankConfig()
    )
    failed = runner.invoke(
        app, ["plot", "attention", str(xvector), str(audio), "--out", str(tmp_path / "x.png")]
    )
    assert failed.exit_code == 2 and "no attentive pooling" in failed.output


def test_class_weights(tmp_path, tiny_bundle):
    out = tmp_path / "class_weights.png"
    result = _plot("class-weights", tiny_bundle.parent, "--out", out)
    assert "mean off-diagonal cosine" in result.output
    num = result.output.count("step ")
    assert num >= 1
    assert_real_image(out, 3.6 * num + 0.8, 4.0, DPI)


def test_class_weights_without_checkpoints_is_an_error(tmp_path):
    result = runner.invoke(
        app, ["plot", "class-weights", str(tmp_path), "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 2 and "no checkpoints" in result.output


def test_aam_scale(tmp_path):
    out = tmp_path / "aam.png"
    result = _plot("aam-scale", "--num-classes", "10", "--num-classes", "100", "--out", out)
    assert "C=100: lowest loss s=1: 3.63" in result.output
    assert_real_image(out, 7.5, 4.8, DPI)


def test_aam_scale_with_a_training_run(tmp_path, tiny_bundle):
    out = tmp_path / "aam_runs.png"
    result = _plot("aam-scale", "--run", tiny_bundle.parent, "--out", out)
    assert "s=30, 22 classes, final training loss" in result.output
    assert_real_image(out, 13.5, 4.8, DPI)


def test_enrollment_bias_random_and_real(tmp_path, tiny_bundle, demo_prepared):
    out = tmp_path / "bias.png"
    result = _plot("enrollment-bias", "--dim", "32", "--num-speakers", "40", "--out", out)
    assert "gap +" in result.output
    assert_real_image(out, 9.6, 4.2, DPI)
    out = tmp_path / "bias_real.png"
    result = _plot(
        "enrollment-bias",
        tiny_bundle,
        "--manifest",
        demo_prepared / "dev.jsonl",
        "--max-speakers",
        "4",
        "--max-per-speaker",
        "3",
        "--out",
        out,
    )
    assert "4 speakers x 3.0 utterances" in result.output
    assert_real_image(out, 14.4, 4.2, DPI)


def test_dimension(tmp_path):
    out = tmp_path / "dimension.png"
    result = _plot("dimension", "--dim", "2", "--dim", "192", "--num-pairs", "2000", "--out", out)
    assert "D=192" in result.output
    assert_real_image(out, 7.2, 3.6, DPI)


def test_curves(tmp_path, tiny_bundle):
    out = tmp_path / "curves.png"
    result = _plot("curves", tiny_bundle.parent, "--out", out)
    assert "training records" in result.output and "dev EER" in result.output
    assert_real_image(out, 12.0, 6.5, DPI)
    empty = tmp_path / "run"
    empty.mkdir()
    failed = runner.invoke(app, ["plot", "curves", str(empty), "--out", str(out)])
    assert failed.exit_code == 2 and "no metrics.jsonl" in failed.output
