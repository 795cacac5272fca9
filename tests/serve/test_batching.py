"""Dynamic batching: the batcher's grouping and failure handling, and a live service whose
batched embeddings equal each request served alone."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from speakerprint.audio import load_audio, resample
from speakerprint.errors import ConfigError
from speakerprint.inference.result import cosine_score
from speakerprint.serve.batcher import DynamicBatcher, length_buckets

# -- the batcher alone, with a stand-in model ----------------------------------------------------


def test_length_buckets_keep_similar_lengths_together():
    lengths = [16000, 160000, 17000, 48000, 16500, 50000, 150000]
    groups = length_buckets(lengths, max_batch=2, ratio=1.25)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) <= 2
        assert max(lengths[i] for i in g) <= 1.25 * min(lengths[i] for i in g)
    # Sorted by length, so the 1 s, 3 s and 10 s recordings never share a batch.
    assert groups == [[0, 4], [2], [3, 5], [6, 1]]
    assert length_buckets([5, 6, 7], max_batch=8, ratio=10.0) == [[0, 1, 2]]


class _GatedModel:
    """embed_batch that records each batch; the first call waits for a gate so that the
    requests sent meanwhile pile up."""

    def __init__(self):
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches = []

    def __call__(self, wavs):
        if not self.batches:
            self.entered.set()
            self.gate.wait(10)
        self.batches.append([len(w) for w in wavs])
        return np.stack([np.full(3, len(w), dtype=np.float32) for w in wavs])


def test_concurrent_waveforms_share_a_forward_pass():
    model = _GatedModel()
    batcher = DynamicBatcher(model, max_batch=4, max_wait_ms=0, bucket_ratio=2.0)
    try:
        first = batcher.submit(np.zeros(100))
        assert model.entered.wait(10)  # the model thread is inside the first (gated) call
        lengths = [110, 120, 130, 140, 150, 1000]
        futures = [batcher.submit(np.zeros(n)) for n in lengths]
        model.gate.set()
        results = [f.result(10) for f in futures]
        assert first.result(10)[0] == 100
        assert [r[0] for r in results] == lengths  # each caller gets its own row
        # 6 waiting, at most 4 per pass, the 1000-sample one in a bucket of its own.
        assert model.batches == [[100], [110, 120, 130, 140], [150], [1000]]
        assert batcher.stats.batches == 4 and batcher.stats.waveforms == 7
    finally:
        model.gate.set()
        batcher.close()


def test_a_failed_batch_fails_its_callers_and_the_batcher_goes_on():
    calls = []

    def model(wavs):
        calls.append(len(wavs))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return np.ones((len(wavs), 2), dtype=np.float32)

    batcher = DynamicBatcher(model, max_batch=2, max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.embed(np.zeros(10))
        assert batcher.embed(np.zeros(10)).tolist() == [1.0, 1.0]
        assert batcher.stats.failures == 1 and batcher.stats.batches == 1
    finally:
        batcher.close()


def test_close_embeds_what_is_waiting_then_refuses():
    model = _GatedModel()
    batcher = DynamicBatcher(model, max_batch=8, max_wait_ms=1000)
    futures = [batcher.submit(np.zeros(10 + i)) for i in range(3)]
    model.gate.set()
    batcher.close()  # does not wait the full second for more
    assert [f.result(0)[0] for f in futures] == [10, 11, 12]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.zeros(4))


def test_a_lone_waveform_does_not_wait_when_nothing_else_is_coming():
    batches = []

    def model(wavs):
        batches.append(len(wavs))
        return np.zeros((len(wavs), 2), dtype=np.float32)

    coming = [0]
    batcher = DynamicBatcher(model, max_batch=2, max_wait_ms=60_000, expected=lambda: coming[0])
    try:
        # Nothing on its way: embedded at once, not after the 60 s window.
        assert batcher.submit(np.zeros(5)).result(timeout=10).shape == (2,)
        # One more on its way: the first waits for it and they share a pass.
        coming[0] = 1
        first = batcher.submit(np.zeros(5))
        second = batcher.submit(np.zeros(6))
        first.result(timeout=10), second.result(timeout=10)
        assert batches == [1, 2]
    finally:
        batcher.close()


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": 0}, {"max_wait_ms": -1}, {"bucket_ratio": 0.5}, {"max_batch": 2.5}]
)
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        DynamicBatcher(lambda w: w, **kwargs)


# -- a live service -----------------------------------------------------------------------------

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from tests.serve.live import live_server  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    from speakerprint.inference import SpeakerEncoder

    return SpeakerEncoder.from_pretrained(None)  # the real model: exactness on real weights


@pytest.fixture(scope="module")
def uploads(shared_data, tmp_path_factory):
    """Real recordings of several speakers cut to 0.4-7 s and written at 8, 16, 22.05 and
    44.1 kHz as WAV and FLAC."""
    root = shared_data / "speechocean762" / "train"
    sources = [sorted(d.glob("*.opus"))[0] for d in sorted(root.iterdir()) if d.is_dir()][:6]
    if len(sources) < 6:
        pytest.skip("too few speechocean762 speakers")
    out = tmp_path_factory.mktemp("batching")
    rates = [8000, 16000, 22050, 44100]
    cuts = [0.4, 1.0, 1.7, 2.5, 3.3, 7.0]
    files = []
    for i, (source, seconds) in enumerate(zip(sources, cuts, strict=True)):
        wav = np.tile(load_audio(source, 16000), 4)[: int(seconds * 16000)]
        for j, rate in enumerate(rates):
            path = out / f"{i}_{rate}.{'flac' if j % 2 else 'wav'}"
            sf.write(path, resample(wav, 16000, rate) if rate != 16000 else wav, rate)
            files.append(path)
    return files


def test_batched_embeddings_equal_each_request_alone(shipped, uploads):
    from speakerprint.serve import create_app

    app = create_app(model=shipped, batch_max_size=8, batch_wait_ms=50)
    with live_server(app) as (url, _):

        def embed(path):
            with open(path, "rb") as f:
                r = httpx.post(f"{url}/embed", files={"audio": (path.name, f.read())}, timeout=60)
            assert r.status_code == 200, r.text
            return np.asarray(r.json()["embedding"], dtype=np.float32)

        with ThreadPoolExecutor(12) as pool:
            served = list(pool.map(embed, uploads))
        stats = app.state.service.batcher.stats
    # Batches formed: fewer forward passes than waveforms.
    assert stats.waveforms == len(uploads) and stats.batches < len(uploads)
    for path, emb in zip(uploads, served, strict=True):
        alone = shipped.embed(load_audio(path, shipped.sample_rate))
        assert cosine_score(emb, alone) >= 0.99999, path.name
