import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from speakerprint.audio import load_audio, resample
from speakerprint.errors import BundleError
from speakerprint.features import FbankConfig
from speakerprint.inference import SpeakerEncoder
from speakerprint.models import create_model
from speakerprint.models.bundle import Threshold, load_bundle, save_bundle


@pytest.fixture(scope="module")
def wav_files(demo_root):
    return sorted(demo_root.glob("*/*.opus"))[:3]


def _small_model():
    torch.manual_seed(0)
    return create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24).eval()


def test_bundle_round_trip_is_exact(tmp_path, wav_files):
    model = _small_model()
    path = save_bundle(tmp_path / "b", model, FbankConfig(), threshold=Threshold(0.3, "eer", "x"))
    enc = SpeakerEncoder.from_pretrained(path)
    wav = torch.from_numpy(load_audio(wav_files[0]))[None]
    with torch.no_grad():
        feats, lengths = enc.bundle.fbank(wav)
        expected = model(feats, lengths)[0].numpy()
    np.testing.assert_array_equal(enc.embed(wav_files[0]), expected)
    assert enc.bundle.threshold == Threshold(0.3, "eer", "x")
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["family"] == "ecapa_tdnn" and config["sample_rate"] == 16000


def test_fp16_bundle_is_close(tmp_path, wav_files):
    model = _small_model()
    full = SpeakerEncoder.from_pretrained(save_bundle(tmp_path / "f32", model, FbankConfig()))
    half = SpeakerEncoder.from_pretrained(
        save_bundle(tmp_path / "f16", model, FbankConfig(), dtype=torch.float16)
    )
    a, b = full.embed(wav_files[0]), half.embed(wav_files[0])
    assert SpeakerEncoder.score(a, b) > 0.999


def test_loading_is_strict(tmp_path):
    path = save_bundle(tmp_path / "b", _small_model(), FbankConfig())
    state = load_file(str(path / "model.safetensors"))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(BundleError, match="unexpected.*extra.weight"):
        load_bundle(path)

    path = save_bundle(tmp_path / "c", _small_model(), FbankConfig())
    config = json.loads((path / "config.json").read_text())
    config["model"]["args"]["channels"] = 64
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="shape"):
        load_bundle(path)

    config["format_version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="newer"):
        load_bundle(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(path)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")


def test_embed_accepts_paths_arrays_and_other_rates(tmp_path, wav_files):
    enc = SpeakerEncoder.from_pretrained(save_bundle(tmp_path / "b", _small_model(), FbankConfig()))
    wav = load_audio(wav_files[1])
    from_path = enc.embed(wav_files[1])
    np.testing.assert_allclose(enc.embed(wav), from_path, atol=1e-5)
    np.testing.assert_allclose(enc.embed(torch.from_numpy(wav)), from_path, atol=1e-5)
    at_8k = resample(wav, 16000, 8000)
    assert SpeakerEncoder.score(enc.embed(at_8k, sample_rate=8000), from_path) > 0.9
    with pytest.raises(ValueError, match="mono"):
        enc.embed(np.zeros((2, 16000), dtype=np.float32))


def test_padding_never_changes_an_embedding(tmp_path, wav_files):
    enc = SpeakerEncoder.from_pretrained(save_bundle(tmp_path / "b", _small_model(), FbankConfig()))
    wavs = [torch.from_numpy(load_audio(f)) for f in wav_files]
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()) + 8000)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    batched = enc.embed_batch(batch, lengths)
    for i, w in enumerate(wavs):
        np.testing.assert_allclose(batched[i], enc.embed(w.numpy()), atol=1e-4, rtol=1e-4)


def test_short_input_is_repeated_up_to_the_minimum(tmp_path, wav_files):
    enc = SpeakerEncoder.from_pretrained(save_bundle(tmp_path / "b", _small_model(), FbankConfig()))
    tiny = load_audio(wav_files[0])[:200]  # shorter than one 25 ms frame
    emb = enc.embed(tiny)
    assert emb.shape == (24,) and np.isfinite(emb).all()
    repeated = np.tile(tiny, -(-enc.bundle.min_samples // 200))[: enc.bundle.min_samples]
    np.testing.assert_allclose(emb, enc.embed(repeated), atol=1e-5)


def test_verify_uses_the_measured_threshold(tmp_path, wav_files):
    enc = SpeakerEncoder.from_pretrained(
        save_bundle(
            tmp_path / "b", _small_model(), FbankConfig(), threshold=Threshold(0.25, "eer", "dev")
        )
    )
    result = enc.verify(wav_files[0], wav_files[1])
    assert result.threshold == 0.25 and "dev" in result.threshold_source
    assert result.same_speaker == (result.score >= 0.25)
    assert enc.verify(wav_files[0], wav_files[0]).score == pytest.approx(1.0, abs=1e-5)
    assert enc.verify(wav_files[0], wav_files[1], threshold=-1.0).same_speaker
