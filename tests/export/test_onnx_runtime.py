"""OnnxSpeakerEncoder: embeddings and verification from ONNX, with no torch in the process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from speakerprint.errors import BundleError
from speakerprint.export import export_onnx
from speakerprint.inference import SpeakerEncoder
from speakerprint.inference.encoder import default_model_path
from speakerprint.inference.speech import TooLittleSpeechError
from speakerprint.models.bundle import load_bundle
from speakerprint.onnx_runtime import OnnxSpeakerEncoder

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def small_onnx(small_bundle, tmp_path_factory):
    return export_onnx(
        small_bundle, tmp_path_factory.mktemp("onnx") / "small.onnx", with_features=True
    )


def test_embed_equals_the_torch_encoder_for_any_length(small_bundle, small_onnx):
    onnx_enc = OnnxSpeakerEncoder.from_file(small_onnx, num_threads=1)
    torch_enc = SpeakerEncoder(load_bundle(small_bundle))
    rng = np.random.default_rng(0)
    # 0.1 s is under min_samples of nothing here, 150 samples is: both are repeated the same way.
    for num_samples in (150, 1600, 23456):
        wav = (0.1 * rng.standard_normal(num_samples)).astype(np.float32)
        expected = torch_enc.embed(wav)
        np.testing.assert_allclose(
            onnx_enc.embed(wav), expected, rtol=0, atol=1e-3 * np.abs(expected).max()
        )


def test_embed_batch_padding_and_resampling(small_onnx):
    enc = OnnxSpeakerEncoder.from_file(small_onnx, num_threads=1)
    rng = np.random.default_rng(1)
    short = (0.1 * rng.standard_normal(5000)).astype(np.float32)
    batch = (0.1 * rng.standard_normal((2, 12000))).astype(np.float32)
    batch[0, :5000] = short  # noise beyond row 0's length
    emb = enc.embed_batch(batch, np.array([5000, 12000]))
    np.testing.assert_allclose(emb[0], enc.embed(short), rtol=0, atol=1e-5)
    assert emb.shape == (2, enc.embed_dim) and emb.dtype == np.float32
    # An 8 kHz waveform is resampled to the model's rate first.
    assert enc.embed(short[::2], sample_rate=8000).shape == (enc.embed_dim,)
    with pytest.raises(ValueError, match="lengths must be in"):
        enc.embed_batch(batch, np.array([0, 12000]))


def test_verify_uses_the_sidecar_threshold(small_onnx):
    enc = OnnxSpeakerEncoder.from_file(small_onnx, num_threads=1)
    # 1.5 s of steady noise: all "speech" to the energy VAD, over the 1 s the check needs.
    wav = (0.1 * np.random.default_rng(2).standard_normal(24000)).astype(np.float32)
    result = enc.verify(wav, wav)
    assert result.threshold == 0.25 and "nothing (a test bundle)" in result.threshold_source
    assert result.score == pytest.approx(1.0, abs=1e-6) and result.same_speaker
    given = enc.verify(wav, wav, threshold=1.5)  # above any cosine
    assert given.threshold_source == "given" and not given.same_speaker
    # Silence is refused as the torch encoder refuses it, not scored (it scores 1 against itself).
    assert result.speech_s == pytest.approx((1.5, 1.5), abs=0.05)
    silence = np.zeros(24000, dtype=np.float32)
    with pytest.raises(TooLittleSpeechError, match=r"^b: 0.00 s of speech"):
        enc.verify(wav, silence)
    assert enc.verify(silence, silence, min_speech_s=0).speech_s == (0.0, 0.0)


def test_refuses_models_it_cannot_run(small_bundle, tmp_path):
    features_only = export_onnx(small_bundle, tmp_path / "f.onnx", with_features=False)
    with pytest.raises(BundleError, match="--with-features"):
        OnnxSpeakerEncoder.from_file(features_only)
    (tmp_path / "bare.onnx").write_bytes(features_only.read_bytes())
    with pytest.raises(BundleError, match="sidecar .* is missing"):
        OnnxSpeakerEncoder.from_file(tmp_path / "bare.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    (tmp_path / "bad.onnx.json").write_text((tmp_path / "f.onnx.json").read_text().replace(
        '"features",', '"waveform",', 1))  # fmt: skip
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        OnnxSpeakerEncoder.from_file(tmp_path / "bad.onnx")


def test_no_torch_embedding_of_real_speech_equals_the_eager_encoder(shared_data, tmp_path):
    """The shipped model, exported with its features, embeds real recordings (16 kHz Opus and
    8 kHz WAV) in a process where importing torch fails, and matches SpeakerEncoder."""
    files = [
        shared_data / "speechocean762" / "train" / "SPEAKER0001" / "000010011.opus",
        shared_data / "fsdd" / "recordings" / "0_george_0.wav",
    ]
    model = export_onnx(default_model_path(), tmp_path / "shipped.onnx", with_features=True)
    eager = SpeakerEncoder.from_pretrained()
    expected = np.stack([eager.embed(f) for f in files])
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from speakerprint.onnx_runtime import OnnxSpeakerEncoder
        enc = OnnxSpeakerEncoder.from_file({str(model)!r}, num_threads=1)
        emb = np.stack([enc.embed(f) for f in {[str(f) for f in files]!r}])
        verdict = enc.verify({str(files[0])!r}, {str(files[1])!r}, min_speech_s=0)
        np.save({str(tmp_path / "emb.npy")!r}, emb)
        print(json.dumps({{"torch_loaded": "torch" in sys.modules and sys.modules["torch"] is not None,
                          "verify": verdict.to_dict()}}))
        """
    )
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch_loaded"] is False
    emb = np.load(tmp_path / "emb.npy")
    # 16 kHz speech: within 1e-5 of eager (measured 7e-6, components up to 2.5). The 8 kHz file,
    # upsampled, has no energy above 4 kHz; on those near-empty mel bins the float32 DFT matmul
    # and the FFT differ more in log terms (measured 1.3e-3, components up to 3.0).
    np.testing.assert_allclose(emb[0], expected[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(emb[1], expected[1], rtol=0, atol=5e-3)
    cosine = (
        (emb * expected).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert (cosine > 0.99999).all(), cosine
    # A parity check of scores: the 0.3 s digit is too little speech for a decision (refused
    # by default), so the speech check is off in both.
    torch_score = eager.verify(files[0], files[1], min_speech_s=0).score
    assert report["verify"]["score"] == pytest.approx(torch_score, abs=1e-3)
    assert report["verify"]["threshold"] == pytest.approx(eager.bundle.threshold.value)


def test_torch_is_not_needed_to_import_the_runtime():
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
         "import speakerprint, speakerprint.onnx_runtime, speakerprint.audio.io; "
         "print(speakerprint.__version__)"],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert torch.__version__  # this process has torch; the child did not need it
