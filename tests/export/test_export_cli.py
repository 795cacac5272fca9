"""``speakerprint export``: writes the model and its sidecar; bad option combinations exit 2."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.eval.cache import bundle_fingerprint
from speakerprint.onnx_runtime import OnnxSpeakerEncoder

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

runner = CliRunner()


def test_export_onnx_int8_with_features(small_bundle, tmp_path):
    out = tmp_path / "m.int8.onnx"
    args = ["export", str(small_bundle), "--format", "onnx", "--out", str(out)]
    result = runner.invoke(app, [*args, "--with-features", "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and "input: waveform" in result.output
    meta = json.loads((tmp_path / "m.int8.onnx.json").read_text())
    assert meta["quantization"] == "int8-dynamic" and meta["input_kind"] == "waveform"
    assert meta["source_bundle_fingerprint"] == bundle_fingerprint(small_bundle)
    assert meta["threshold"]["value"] == 0.25 and meta["embed_dim"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.int8.onnx.json"]
    enc = OnnxSpeakerEncoder.from_file(out, num_threads=1)
    assert enc.embed(torch.randn(4000).numpy() * 0.1).shape == (16,)


def test_export_onnx_static_int8_calibrated_on_a_folder(small_bundle, tmp_path):
    import numpy as np
    import onnx
    import soundfile as sf

    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):  # 8 kHz files: resampled to the model's rate on the way in
        sf.write(folder / f"u{i}.wav", (0.1 * rng.standard_normal(8000)).astype("float32"), 8000)
    out = tmp_path / "out" / "m.s8.onnx"
    args = ["export", str(small_bundle), "--format", "onnx", "--out", str(out), "--with-features"]
    result = runner.invoke(
        app, [*args, "--quantize", "int8", "--calibration", str(folder), "--calibration-utts", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "int8 static" in result.output and "calibrating on 3 of 5 utterances" in result.output
    assert re.search(
        r"int8 check: cosine to the float model min 0\.99\d+, mean 0\.99", result.output
    )
    meta = json.loads((tmp_path / "out" / "m.s8.onnx.json").read_text())
    assert meta["int8"]["scheme"] == "u8s7" and meta["int8"]["check"]["utterances"] == 3
    assert meta["quantization"] == "int8-static" and meta["calibration_utterances"] == 3
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(str(out)).graph.node)
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.s8.onnx", "m.s8.onnx.json"]
    enc = OnnxSpeakerEncoder.from_file(out, num_threads=1)
    assert np.isfinite(enc.embed(rng.standard_normal(4000).astype("float32") * 0.1)).all()
    # The self-check refuses a model under the floor, in one line, and writes nothing.
    refused = tmp_path / "refused" / "m.onnx"
    result = runner.invoke(
        app,
        [
            *args[:-3],
            "--out",
            str(refused),
            "--with-features",
            "--quantize",
            "int8",
            "--calibration",
            str(folder),
            "--calibration-utts",
            "3",
            "--min-cosine",
            "1.0",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "under the floor of 1.0; nothing was written" in result.output
    assert "Traceback" not in result.output
    assert not refused.exists() and not list(refused.parent.iterdir())


def test_export_torchscript_without_features(small_bundle, tmp_path):
    out = tmp_path / "m.pt"
    result = runner.invoke(
        app, ["export", str(small_bundle), "--format", "torchscript", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    scripted = torch.jit.load(str(out))
    with torch.no_grad():
        assert scripted(torch.randn(2, 30, 80), torch.tensor([30, 9])).shape == (2, 16)
    assert json.loads((tmp_path / "m.pt.json").read_text())["input_kind"] == "features"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "tflite"], "--format must be onnx or torchscript"),
        (["--format", "torchscript", "--quantize", "int8"], "onnx only"),
        (["--format", "onnx", "--quantize", "int4"], "--quantize must be int8"),
        (["--format", "onnx", "--calibration", "."], "--calibration applies to --quantize int8"),
        (["--format", "onnx", "--quantize", "int8", "--calibration-utts", "0"], "must be positive"),
        (["--format", "onnx", "--quantize", "int8", "--min-cosine", "0.9"], "apply to static int8"),
        (["--format", "onnx", "--quantize", "int8", "--int8-scheme", "u8u8"], "apply to static"),
    ],
)
def test_bad_options_exit_2_with_one_line(small_bundle, tmp_path, extra, message):
    result = runner.invoke(app, ["export", str(small_bundle), "--out", str(tmp_path / "x"), *extra])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x").exists()


def test_missing_bundle_exits_2(tmp_path):
    result = runner.invoke(
        app, ["export", str(tmp_path / "nope"), "--format", "onnx", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "no such file or folder" in result.output
