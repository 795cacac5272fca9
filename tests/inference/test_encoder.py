import json
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from speakerprint.audio import AudioLoadError, load_audio, resample, stream_audio
from speakerprint.errors import BundleError, ConfigError
from speakerprint.features import FbankConfig
from speakerprint.inference import SpeakerEncoder
from speakerprint.models import create_model
from speakerprint.models.bundle import Threshold, load_bundle, model_fingerprint, save_bundle


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


def _small_encoder(tmp_path, **kwargs):
    return SpeakerEncoder.from_pretrained(
        save_bundle(tmp_path / "b", _small_model(), FbankConfig(), **kwargs)
    )


def test_embed_batch_of_a_list_ignores_padding(tmp_path, wav_files):
    enc = _small_encoder(tmp_path)
    short = load_audio(wav_files[0])[:8000]  # 0.5 s, padded to the longest in the batch
    longer = [load_audio(f) for f in wav_files[1:]]
    batched = enc.embed_batch([short, *longer])
    assert batched.shape == (3, 24) and batched.dtype == np.float32
    assert np.abs(batched[0] - enc.embed(short)).max() < 1e-4
    np.testing.assert_allclose(batched[2], enc.embed(longer[1]), atol=1e-4)
    assert enc.embed_batch([]).shape == (0, 24)
    with pytest.raises(ValueError, match="lengths"):
        enc.embed_batch(torch.zeros(2, 100), torch.tensor([50, 101]))
    with pytest.raises(ValueError, match="lengths are implied"):
        enc.embed_batch([short], [len(short)])


def test_embed_file_windows_and_times(tmp_path, wav_files):
    enc = _small_encoder(tmp_path)
    wav = np.concatenate([load_audio(f) for f in wav_files])[: 7 * 16000]  # exactly 7.0 s
    segs = enc.embed_file(wav, window_s=3.0, hop_s=1.5)
    # Regular windows at 0, 1.5, 3.0 s; 4.5 s would overrun, so one more window ends at 7.0 s.
    np.testing.assert_allclose(segs.starts_s, [0.0, 1.5, 3.0, 4.0])
    np.testing.assert_allclose(segs.ends_s, [3.0, 4.5, 6.0, 7.0])
    assert len(segs) == 4 and segs.embeddings.shape == (4, 24)
    for emb, start, end in zip(segs.embeddings, segs.starts_s, segs.ends_s):
        alone = enc.embed(wav[round(start * 16000) : round(end * 16000)])
        np.testing.assert_allclose(emb, alone, atol=1e-4)
    # Windows differ: they are not all the same embedding.
    assert SpeakerEncoder.score(segs.embeddings[0], segs.embeddings[2]) < 0.9999

    # Shorter than one window: one window, the whole recording; a file path works the same.
    one = enc.embed_file(wav_files[0], window_s=60.0, hop_s=30.0)
    assert len(one) == 1 and one.starts_s[0] == 0.0
    assert one.ends_s[0] == pytest.approx(len(load_audio(wav_files[0])) / 16000)
    np.testing.assert_allclose(one.embeddings[0], enc.embed(wav_files[0]), atol=1e-4)

    # Another sample rate: times stay in seconds of the recording.
    at_8k = enc.embed_file(resample(wav, 16000, 8000), sample_rate=8000, window_s=3.0, hop_s=1.5)
    np.testing.assert_allclose(at_8k.ends_s, segs.ends_s)


def test_embed_file_rejects_bad_options(tmp_path, wav_files):
    enc = _small_encoder(tmp_path)
    for kwargs in ({"window_s": 0.0}, {"hop_s": -1.0}, {"window_s": float("nan")}):
        with pytest.raises(ConfigError, match="positive"):
            enc.embed_file(wav_files[0], **kwargs)
    with pytest.raises(ConfigError, match="webrtc"):
        enc.embed_file(wav_files[0], vad="webrtc")
    with pytest.raises(ConfigError, match="vad must be"):
        enc.embed_file(wav_files[0], vad=3)
    with pytest.raises(AudioLoadError, match="nope.wav"):
        enc.embed_file(tmp_path / "nope.wav")


def test_embed_file_vad_without_the_vad_module_is_a_clear_error(tmp_path, wav_files, monkeypatch):
    enc = _small_encoder(tmp_path)
    monkeypatch.setitem(sys.modules, "speakerprint.audio.vad", None)  # import now fails
    with pytest.raises(ConfigError, match=r"speakerprint\.audio\.vad"):
        enc.embed_file(wav_files[0], vad="energy")


def test_embed_file_with_vad_windows_only_speech(tmp_path, wav_files):
    pytest.importorskip("speakerprint.audio.vad")
    enc = _small_encoder(tmp_path)
    speech = [load_audio(f) for f in wav_files[:2]]
    silence = [np.zeros(n, dtype=np.float32) for n in (24000, 32000, 16000)]  # 1.5, 2, 1 s
    wav = np.concatenate([silence[0], speech[0], silence[1], speech[1], silence[2]])
    first = (24000, 24000 + len(speech[0]))
    second = (first[1] + 32000, first[1] + 32000 + len(speech[1]))
    segs = enc.embed_file(wav, window_s=1.0, hop_s=0.5, vad="energy")
    assert len(segs) >= 4
    # Every window lies inside one of the two speech stretches (give or take the VAD's padding
    # and frame resolution), and both stretches get windows.
    slack_s = 0.2
    inside = [
        any(a / 16000 - slack_s <= s and e <= b / 16000 + slack_s for a, b in (first, second))
        for s, e in zip(segs.starts_s, segs.ends_s)
    ]
    assert all(inside), list(zip(segs.starts_s, segs.ends_s))
    # (The recordings have quiet lead-ins of their own, so speech starts after the 1.5 s.)
    assert (segs.ends_s <= second[0] / 16000).any() and (segs.starts_s >= first[1] / 16000).any()
    nothing = enc.embed_file(np.zeros(48000, dtype=np.float32), vad="energy")
    assert len(nothing) == 0 and nothing.embeddings.shape == (0, 24)


def test_fingerprint_is_the_model_fingerprint(tmp_path):
    enc = _small_encoder(tmp_path)
    assert enc.fingerprint == model_fingerprint(tmp_path / "b")
    other = save_bundle(
        tmp_path / "c",
        create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24),
        FbankConfig(),
    )
    assert SpeakerEncoder.from_pretrained(other).fingerprint != enc.fingerprint
    with pytest.raises(BundleError, match="from_pretrained"):
        SpeakerEncoder(load_bundle(other)).fingerprint  # noqa: B018


@pytest.mark.parametrize(
    ("seconds", "window_s", "hop_s", "batch_size"),
    [
        (7.0, 3.0, 1.5, 2),
        (9.3, 2.0, 0.7, 5),
        (2.5, 3.0, 1.5, 4),
        (6.0, 3.0, 3.0, 1),
        (8.0, 1.0, 2.5, 3),
    ],
)
def test_embed_file_of_a_path_streams_and_equals_the_array_path(
    tmp_path, wav_files, monkeypatch, seconds, window_s, hop_s, batch_size
):
    import soundfile as sf

    import speakerprint.inference.encoder as encoder_module

    enc = _small_encoder(tmp_path)
    wav = np.concatenate([load_audio(f) for f in wav_files])[: round(seconds * 16000)]
    path = tmp_path / "long.flac"
    sf.write(path, resample(wav, 16000, 44100), 44100)  # resampled on the way in, as a stream
    decoded = load_audio(path, 16000)
    blocks = []

    def recording_stream(*args, **kwargs):
        for block in stream_audio(*args, **kwargs):
            blocks.append(len(block))
            yield block

    monkeypatch.setattr(encoder_module, "STREAM_BLOCK_S", 0.7)  # many blocks per window
    monkeypatch.setattr(encoder_module, "stream_audio", recording_stream)
    kwargs = {"window_s": window_s, "hop_s": hop_s, "batch_size": batch_size}
    streamed = enc.embed_file(path, **kwargs)
    whole = enc.embed_file(decoded, **kwargs)
    assert len(blocks) > 3 and max(blocks) == round(0.7 * 16000)
    np.testing.assert_array_equal(streamed.starts_s, whole.starts_s)
    np.testing.assert_array_equal(streamed.ends_s, whole.ends_s)
    np.testing.assert_allclose(streamed.embeddings, whole.embeddings, rtol=0, atol=1e-5)


def test_embed_file_of_a_long_file_holds_a_bounded_part_of_it(tmp_path, monkeypatch):
    import tracemalloc

    import speakerprint.inference.encoder as encoder_module

    enc = _small_encoder(tmp_path)
    block = 30 * 16000
    minutes = 30  # 115 MB of float32 at 16 kHz if it were held whole

    def endless_speechlike(path, sample_rate, block_s):
        rng = np.random.default_rng(0)
        for _ in range(minutes * 2):
            yield (0.1 * rng.standard_normal(block)).astype(np.float32)

    monkeypatch.setattr(encoder_module, "stream_audio", endless_speechlike)
    tracemalloc.start()
    try:
        segs = enc.embed_file(tmp_path / "unused.wav", window_s=2.0, hop_s=15.0, batch_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Regular windows every 15 s, then one aligned to the end.
    assert len(segs) == minutes * 4 + 1 and segs.ends_s[-1] == minutes * 60
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"  # a few blocks, not the recording


def test_embed_file_returns_freed_heap_after_every_batch(tmp_path, monkeypatch):
    """The streamed path trims glibc's heap once per batch, so the resident size of a long file
    does not creep up with fragmentation (bench/long_file.py measures the effect)."""
    import speakerprint.inference.encoder as encoder_module

    enc = _small_encoder(tmp_path)
    calls = []
    monkeypatch.setattr(encoder_module, "release_free_heap", lambda: calls.append(1) or True)

    def stream(path, sample_rate, block_s):
        rng = np.random.default_rng(0)
        for _ in range(6):
            yield (0.1 * rng.standard_normal(10 * 16000)).astype(np.float32)

    monkeypatch.setattr(encoder_module, "stream_audio", stream)
    segs = enc.embed_file(tmp_path / "unused.wav", window_s=2.0, hop_s=2.0, batch_size=4)
    assert len(segs) == 30
    assert len(calls) == 30 // 4 + 1  # seven full batches and the last two windows


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_encoder_embeds_as_eager_at_any_length(tmp_path, wav_files):
    path = save_bundle(tmp_path / "b", _small_model(), FbankConfig())
    eager = SpeakerEncoder.from_pretrained(path)
    compiled = SpeakerEncoder.from_pretrained(path, compile=True)
    assert compiled.bundle.compiled is not None and eager.bundle.compiled is None
    wavs = [load_audio(f) for f in wav_files]
    # Two lengths make torch.compile go dynamic; the third length and the padded batch reuse it.
    for wav in (wavs[0], wavs[1][:20000], wavs[2][:13000]):
        np.testing.assert_allclose(compiled.embed(wav), eager.embed(wav), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        compiled.embed_batch(wavs), eager.embed_batch(wavs), rtol=0, atol=1e-5
    )


def test_decision_threshold_is_given_else_measured_and_always_finite(tmp_path):
    measured = save_bundle(
        tmp_path / "m", _small_model(), FbankConfig(), threshold=Threshold(0.25, "eer", "dev")
    )
    bundle = load_bundle(measured)
    assert bundle.decision_threshold(None) == (0.25, "eer on dev")
    assert bundle.decision_threshold(0.5) == (0.5, "given")
    assert bundle.decision_threshold(np.float32(-1.0)) == (-1.0, "given")
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match="finite"):
            bundle.decision_threshold(bad)
        with pytest.raises(ConfigError, match="finite"):  # before any audio is read
            SpeakerEncoder(bundle).verify("missing.wav", "missing.wav", threshold=bad)
    unmeasured = load_bundle(save_bundle(tmp_path / "u", _small_model(), FbankConfig()))
    with pytest.raises(BundleError, match="no measured threshold"):
        unmeasured.decision_threshold(None)
    assert unmeasured.decision_threshold(0.1) == (0.1, "given")
