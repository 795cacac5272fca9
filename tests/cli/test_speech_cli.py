"""Too little speech on the command line (issue 25): `verify`, `enroll` and `identify` refuse a
recording with less than --min-speech-s of speech with one line and exit 2, and write nothing;
real recordings go through and report their speech."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speakerprint.audio import audio_info, load_audio
from speakerprint.cli.app import MIN_SPEECH_HELP
from speakerprint.cli.main import app
from speakerprint.features import FbankConfig
from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, require_speech
from speakerprint.inference.store import EnrollmentStore
from speakerprint.models import create_model
from speakerprint.models.bundle import Threshold, save_bundle

runner = CliRunner()
SR = 16000


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_root):
    """A small bundle, two demo speakers' shortest recordings, 3 s of digital silence and the
    first 0.1 s of a real recording (its lead-in: no speech)."""
    root = tmp_path_factory.mktemp("speech_cli")
    torch.manual_seed(0)
    model = create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24).eval()
    bundle = save_bundle(root / "b", model, FbankConfig(), threshold=Threshold(0.3, "eer", "x"))
    folders = sorted(p for p in demo_root.iterdir() if p.is_dir())[:2]
    speakers = {
        f.name: sorted(map(str, f.glob("*.opus")), key=lambda p: audio_info(p).duration_s)[:3]
        for f in folders
    }
    silence, clip = root / "silence.wav", root / "clip.wav"
    sf.write(silence, np.zeros(3 * SR, np.float32), SR)
    first = next(iter(speakers.values()))[0]
    sf.write(clip, load_audio(first, SR)[: SR // 10], SR, subtype="FLOAT")
    return str(bundle), speakers, str(silence), str(clip)


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _refused(result, path):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {path}: ") and " s of speech in " in lines[0]
    return lines[0]


def test_verify(setup):
    bundle, speakers, silence, clip = setup
    (a1, a2, _), (b1, _, _) = speakers.values()
    line = _refused(_run("verify", silence, silence, "--model", bundle), silence)
    assert "0.00 s of speech in 3.00 s of audio" in line
    _refused(_run("verify", a1, clip, "--model", bundle), clip)  # a 0.1 s clip of a1 itself
    # The check off: what it prevents, silence "verified" as one speaker.
    result = _run("verify", silence, silence, "--model", bundle, "--min-speech-s", "0", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["same_speaker"] is True
    for a, b in ((a1, a2), (a1, b1)):
        result = _run("verify", a, b, "--model", bundle, "--json")
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        want = [require_speech(load_audio(p, SR), SR, source=p) for p in (a, b)]
        assert body["speech_s"] == {"a": want[0], "b": want[1]}
        assert body["same_speaker"] == (body["score"] >= 0.3)
    result = _run("verify", a1, a2, "--model", bundle)
    assert result.exit_code == 0 and f"speech {want[0]:.1f} s" in result.output
    result = _run("verify", a1, a2, "--model", bundle, "--min-speech-s", "-1")
    assert result.exit_code == 2 and "min_speech_s" in result.output
    assert f"(default: {DEFAULT_MIN_SPEECH_S}," in MIN_SPEECH_HELP  # the help states the default


def test_enroll_and_identify(setup, tmp_path):
    bundle, speakers, silence, clip = setup
    (ann, ann_files), (bob, bob_files) = speakers.items()
    db = tmp_path / "speakers.db"
    # Silence among real recordings: refused, and no store is made.
    _refused(_run("enroll", db, ann, ann_files[0], silence, "--model", bundle), silence)
    assert not db.exists()
    result = _run("enroll", db, ann, *ann_files[:2], "--model", bundle)
    assert result.exit_code == 0, result.output
    speech = [require_speech(load_audio(f, SR), SR, source=f) for f in ann_files[:2]]
    assert f"(speech: {speech[0]:.1f}, {speech[1]:.1f} s)" in result.output
    _refused(_run("enroll", db, bob, clip, "--model", bundle), clip)
    with EnrollmentStore.open(db) as store:
        assert [(s.name, s.num_embeddings) for s in store.speakers()] == [(ann, 2)]

    # The reported failure, with the check off: silence enrolls, and silence then "is" it.
    off = ("--min-speech-s", "0")
    assert _run("enroll", db, "silence", silence, "--model", bundle, *off).exit_code == 0
    result = _run("identify", db, silence, "--model", bundle, "--json", *off)
    body = json.loads(result.stdout)
    assert body["speaker"] == "silence" and body["score"] > 0.99, result.output
    # With it on (the default), neither silent query is identified as anyone.
    for query in (silence, clip):
        _refused(_run("identify", db, query, "--model", bundle), query)
    result = _run("identify", db, ann_files[2], "--model", bundle, "--json", "--threshold", "-1")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["speech_s"] == require_speech(load_audio(ann_files[2], SR), SR, source="q")
    assert body["speaker"] in (ann, "silence") and body["known"]
