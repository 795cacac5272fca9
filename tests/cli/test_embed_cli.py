"""`speakerprint embed`: every input kind, every output format, batching by length, bad files."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speakerprint.audio import load_audio, resample
from speakerprint.cli.main import app
from speakerprint.features import FbankConfig
from speakerprint.inference import SpeakerEncoder
from speakerprint.inference.extract import length_batches
from speakerprint.models import create_model
from speakerprint.models.bundle import save_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24).eval()
    return save_bundle(tmp_path_factory.mktemp("bundle") / "b", model, FbankConfig())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, demo_root):
    """A folder of 2 files (one an 8 kHz WAV), a manifest, a wav.scp and a lone file."""
    root = tmp_path_factory.mktemp("inputs")
    files = sorted(demo_root.glob("*/*.opus"))
    folder = root / "folder" / "sub"
    folder.mkdir(parents=True)
    (folder / "a.opus").write_bytes(files[0].read_bytes())
    sf.write(folder / "b.wav", resample(load_audio(files[1]), 16000, 8000), 8000)
    (root / "folder" / "notes.txt").write_text("not audio, not picked up")
    manifest = root / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "utt_id": f"utt{i}",
                    "path": str(f),
                    "speaker": "s",
                    "duration_s": 1.0,
                    "sample_rate": 16000,
                }
            )
            + "\n"
            for i, f in enumerate(files[2:4])
        )
    )
    scp = root / "wav.scp"
    scp.write_text(f"k1 {files[4]}\n\nk2 {files[5]}\n")
    return {
        "folder": root / "folder",
        "manifest": manifest,
        "scp": scp,
        "file": files[6],
        "expected": {
            str(root / "folder" / "sub" / "a.opus"): folder / "a.opus",
            str(root / "folder" / "sub" / "b.wav"): folder / "b.wav",
            "utt0": files[2],
            "utt1": files[3],
            "k1": files[4],
            "k2": files[5],
            str(files[6]): files[6],
        },
    }


def _args(inputs):
    return [str(inputs[k]) for k in ("folder", "manifest", "scp", "file")]


def _read_ark(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Kaldi binary float-vector archive, parsed from its documented layout."""
    vectors, offsets, pos = {}, {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        key = data[pos:space].decode()
        pos = space + 1
        offsets[key] = pos
        assert data[pos : pos + 2] == b"\0B" and data[pos + 2 : pos + 5] == b"FV "
        assert data[pos + 5] == 4  # size of the int32 that follows
        (dim,) = struct.unpack("<i", data[pos + 6 : pos + 10])
        vectors[key] = np.frombuffer(data[pos + 10 : pos + 10 + 4 * dim], dtype="<f4")
        pos += 10 + 4 * dim
    return vectors, offsets


def test_every_input_kind_batched_by_length_equals_one_by_one(tmp_path, small_bundle, inputs):
    out = tmp_path / "emb.npz"
    result = runner.invoke(
        app,
        ["embed", *_args(inputs), "--model", str(small_bundle), "--out", str(out)]
        + ["--batch-seconds", "6", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 7 embeddings of dimension 24" in result.output
    assert "s of audio per second" in result.output
    enc = SpeakerEncoder.from_pretrained(small_bundle)
    with np.load(out) as npz:
        assert sorted(npz.files) == sorted(inputs["expected"])
        for key, path in inputs["expected"].items():
            np.testing.assert_allclose(npz[key], enc.embed(path), atol=1e-4, err_msg=key)


def test_output_formats_agree(tmp_path, small_bundle, inputs):
    base = [*_args(inputs), "--model", str(small_bundle), "--no-progress"]
    for name in ("e.npz", "e.npy", "e.ark", "e.jsonl"):
        result = runner.invoke(app, ["embed", *base, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["embed", *base, "--out", str(tmp_path / "x.bin"), "--format", "ark"]
    )
    assert result.exit_code == 0, result.output

    with np.load(tmp_path / "e.npz") as npz:
        reference = {k: npz[k] for k in npz.files}
    keys = (tmp_path / "e.keys.txt").read_text().splitlines()
    matrix = np.load(tmp_path / "e.npy")
    assert matrix.shape == (7, 24) and matrix.dtype == np.float32
    assert keys == [k for k in keys if k in reference] and sorted(keys) == sorted(reference)
    for key, row in zip(keys, matrix):
        np.testing.assert_array_equal(row, reference[key])

    for ark in ("e.ark", "x.bin"):
        data = (tmp_path / ark).read_bytes()
        vectors, offsets = _read_ark(data)
        assert vectors.keys() == reference.keys()
        for key, vector in vectors.items():
            np.testing.assert_array_equal(vector, reference[key])
    scp = (tmp_path / "e.scp").read_text().splitlines()
    assert len(scp) == 7
    _, offsets = _read_ark((tmp_path / "e.ark").read_bytes())
    for line in scp:
        key, location = line.split(" ", 1)
        path, offset = location.rsplit(":", 1)
        assert path == str((tmp_path / "e.ark").resolve()) and int(offset) == offsets[key]
    assert (tmp_path / "x.scp").is_file()

    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == keys
    for r in records:
        np.testing.assert_allclose(r["embedding"], reference[r["key"]], rtol=1e-6)


def test_bad_files_fail_or_are_skipped(tmp_path, small_bundle, inputs):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wav file at all")
    missing = tmp_path / "missing.flac"
    args = ["embed", str(inputs["file"]), str(corrupt), str(missing)]
    args += ["--model", str(small_bundle), "--no-progress", "--out", str(tmp_path / "e.npz")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "corrupt.wav" in result.output and "missing.flac" in result.output
    assert "--skip-bad" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "e.npz").exists()

    result = runner.invoke(app, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable file(s)" in result.output
    skipped = (tmp_path / "e.skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == sorted([str(corrupt), str(missing)])
    with np.load(tmp_path / "e.npz") as npz:
        assert npz.files == [str(inputs["file"])]


def test_input_and_option_errors(tmp_path, small_bundle, inputs):
    def run(*args):
        out = ["--out", str(tmp_path / "e.npz")] if "--out" not in args else []
        return runner.invoke(
            app, ["embed", *args, *out, "--model", str(small_bundle), "--no-progress"]
        )

    result = run(str(inputs["file"]), "--out", str(tmp_path / "e.mat"))
    assert result.exit_code == 2 and "npz, npy, ark, jsonl" in result.output
    result = run(str(inputs["file"]), str(inputs["file"]))
    assert result.exit_code == 2 and "more than once" in result.output
    spaced = tmp_path / "with space.opus"
    spaced.write_bytes(inputs["file"].read_bytes())
    result = run(str(spaced), "--out", str(tmp_path / "e.ark"))
    assert result.exit_code == 2 and "whitespace" in result.output
    piped = tmp_path / "piped.scp"
    piped.write_text("k1 sox a.wav -t wav - |\nbroken\n")
    result = run(str(piped))
    assert result.exit_code == 2
    assert "piped.scp:1" in result.output and "piped.scp:2" in result.output
    (tmp_path / "empty").mkdir()
    result = run(str(tmp_path / "empty"))
    assert result.exit_code == 2 and "no audio files" in result.output
    result = run(str(inputs["file"]), "--batch-seconds", "0")
    assert result.exit_code == 2 and "--batch-seconds" in result.output


def test_length_batches_pack_sorted_within_the_budget():
    durations = [3.0, 10.0, 1.0, 2.5, 2.0, 30.0, 1.5]
    batches = length_batches(durations, batch_seconds=8.0)
    assert sorted(i for b in batches for i in b) == list(range(len(durations)))
    flat = [durations[i] for b in batches for i in b]
    assert flat == sorted(durations, reverse=True)
    for batch in batches:
        padded = len(batch) * max(durations[i] for i in batch)
        assert padded <= 8.0 or len(batch) == 1
    # Greedy: a batch ends only when one more item would overrun the budget.
    for batch, following in zip(batches, batches[1:]):
        assert (len(batch) + 1) * durations[batch[0]] > 8.0
        assert following
    assert [len(b) for b in batches] == [1, 1, 2, 3]


def test_long_recordings_are_streamed_never_loaded_whole(
    tmp_path, small_bundle, inputs, monkeypatch
):
    """embed and verify take a recording over LONG_RECORDING_S through embed_file's streaming
    reader: loading it whole fails here, and the embedding is the mean of its unit windows."""
    import speakerprint.inference.encoder as encoder_module
    import speakerprint.inference.extract as extract_module
    from speakerprint.inference.extract import LONG_RECORDING_S, LONG_WINDOW_S

    speech = np.concatenate([load_audio(p) for p in inputs["expected"].values()])
    long_wav = np.tile(speech, int(LONG_RECORDING_S * 16000 / len(speech)) + 2)
    long_path = tmp_path / "long.flac"
    sf.write(long_path, long_wav, 16000)
    short = inputs["file"]
    enc = SpeakerEncoder.from_pretrained(small_bundle)
    windows = enc.embed_file(long_path, window_s=LONG_WINDOW_S, hop_s=LONG_WINDOW_S).embeddings
    assert len(windows) > 6
    unit = windows / np.linalg.norm(windows, axis=1, keepdims=True)
    expected_long = unit.mean(axis=0)
    expected_short = enc.embed(short)

    streamed = []

    def no_whole_long_file(original):
        def load(path, *args, **kwargs):
            assert Path(path).name != "long.flac", "a long recording was decoded whole"
            return original(path, *args, **kwargs)

        return load

    def counted(path, *args, **kwargs):
        streamed.append(str(path))
        return original_stream(path, *args, **kwargs)

    original_stream = encoder_module.stream_audio
    monkeypatch.setattr(encoder_module, "stream_audio", counted)
    monkeypatch.setattr(encoder_module, "load_audio", no_whole_long_file(encoder_module.load_audio))
    monkeypatch.setattr(extract_module, "load_audio", no_whole_long_file(extract_module.load_audio))

    out = tmp_path / "e.npz"
    args = ["embed", str(long_path), str(short), "--model", str(small_bundle), "--out", str(out)]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert streamed == [str(long_path)]
    with np.load(out) as npz:
        np.testing.assert_allclose(npz[str(long_path)], expected_long, atol=1e-5)
        np.testing.assert_allclose(npz[str(short)], expected_short, atol=1e-4)

    result = runner.invoke(
        app,
        ["verify", "--model", str(small_bundle), str(long_path), str(short)]
        + ["--threshold", "0.5", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert streamed == [str(long_path)] * 2
    cosine = expected_long @ expected_short / np.linalg.norm(expected_long)
    cosine /= np.linalg.norm(expected_short)
    assert json.loads(result.stdout)["score"] == pytest.approx(cosine, abs=1e-4)
