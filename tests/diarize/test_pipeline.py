"""diarize() end to end with the shipped model, on conversations of real speech of dev speakers
the model never saw (tests/diarize/conversation.py), and on bad input."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speakerprint.audio import AudioLoadError
from speakerprint.data.rttm import read_rttm
from speakerprint.diarize import diarize
from speakerprint.inference.store import StoreError, open_store
from tests.diarize.conversation import SAMPLE_RATE, WELL_SEPARATED, frame_error


@pytest.mark.parametrize("method", ["ahc", "spectral"])
def test_three_well_separated_speakers_are_found_as_three(three_speakers, encoder, method):
    path, reference = three_speakers
    result = diarize(path, encoder=encoder, method=method)
    assert result.labels() == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    error, confusion = frame_error(reference, result.turns)
    assert confusion < 0.05
    assert error < 0.12  # missed speech: pauses inside utterances are speech in the reference
    starts = [start for start, _, _ in result]
    assert starts == sorted(starts) and result.turns[0].speaker == "SPEAKER_00"


def test_digital_silence_between_turns_does_not_merge_the_speakers(speech_root, encoder, tmp_path):
    """Exact zeros between turns (muted or zero-padded audio) sit at the features' log floor; the
    pipeline's one-step dither keeps windows that touch them apart by speaker."""
    from tests.diarize.conversation import build_conversation

    path = tmp_path / "zeros.wav"
    reference = build_conversation(speech_root, WELL_SEPARATED, path, noise_floor=False)
    result = diarize(path, encoder=encoder)
    assert len(result.labels()) == 3
    assert frame_error(reference, result.turns)[1] < 0.05


def test_num_speakers_forces_the_count(three_speakers, encoder):
    path, _ = three_speakers
    assert len(diarize(path, encoder=encoder, num_speakers=2).labels()) == 2
    assert len(diarize(path, encoder=encoder, max_speakers=2, method="spectral").labels()) == 2


def test_enrolled_speakers_name_their_clusters(three_speakers, encoder, speech_root, tmp_path):
    path, reference = three_speakers
    db = tmp_path / "speakers.db"
    with open_store(
        db, model_fingerprint=encoder.fingerprint, embed_dim=encoder.embed_dim, create=True
    ) as store:
        for name, speaker in (("adam", WELL_SEPARATED[0]), ("eve", WELL_SEPARATED[1])):
            files = sorted((speech_root / speaker).glob("*.opus"))[5:8]  # not in the conversation
            store.enroll(
                name, [encoder.embed(f) for f in files], model_fingerprint=encoder.fingerprint
            )
    result = diarize(path, encoder=encoder, store=db)
    assert result.labels() == ["adam", "eve", "SPEAKER_00"]
    assert all(c.enrolled_score is not None for c in result.clusters[:2])
    renamed = {"adam": WELL_SEPARATED[0], "eve": WELL_SEPARATED[1], "SPEAKER_00": WELL_SEPARATED[2]}
    truth = [t.speaker for t in reference]
    said = [renamed[t.speaker] for t in result.turns if t.duration_s > 1.0]
    assert set(said) <= set(truth) and said[:3] == truth[:3]


def test_a_store_of_another_model_is_refused(three_speakers, encoder, tmp_path):
    db = tmp_path / "other.db"
    open_store(db, model_fingerprint="0" * 64, embed_dim=encoder.embed_dim, create=True).close()
    with pytest.raises(StoreError, match="another model"):
        diarize(three_speakers[0], encoder=encoder, store=db)


def test_silence_gives_no_turns_and_a_note(encoder, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(5 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    result = diarize(path, encoder=encoder)
    assert result.turns == [] and result.labels() == [] and "no speech" in result.notes[0]
    assert result.to_rttm() == "" and json.loads(result.to_json())["turns"] == []


def test_one_speaker_gives_one_label(encoder, speech_root, tmp_path):
    from speakerprint.audio import load_audio

    files = sorted((speech_root / WELL_SEPARATED[1]).glob("*.opus"))[:3]
    wav = np.concatenate([load_audio(f, SAMPLE_RATE) for f in files])
    sf.write(tmp_path / "one.wav", wav, SAMPLE_RATE)
    for method in ("ahc", "spectral"):
        assert diarize(tmp_path / "one.wav", encoder=encoder, method=method).labels() == [
            "SPEAKER_00"
        ]


def test_a_file_shorter_than_a_window(encoder, speech_root, tmp_path):
    from speakerprint.audio import load_audio

    wav = load_audio(sorted((speech_root / WELL_SEPARATED[0]).glob("*.opus"))[0], SAMPLE_RATE)
    sf.write(tmp_path / "short.wav", wav[:SAMPLE_RATE], SAMPLE_RATE)
    result = diarize(tmp_path / "short.wav", encoder=encoder, window_s=1.5)
    assert len(result.labels()) <= 1 and result.duration_s == pytest.approx(1.0)
    assert all(0 <= t.start_s < t.end_s <= 1.0 for t in result.turns)


def test_a_corrupt_file_is_the_loaders_error(encoder, tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioLoadError, match="broken.wav"):
        diarize(path, encoder=encoder)


def test_the_pyannote_sample_runs_end_to_end(encoder, tmp_path):
    # The installed wheel's files (requirements-peers.txt), found without importing pyannote.audio
    # and whatever other tests left in sys.modules.
    sample = Path(
        importlib.metadata.distribution("pyannote.audio").locate_file("pyannote/audio/sample")
    )
    assert (sample / "sample.wav").is_file(), f"pyannote.audio's sample is not at {sample}"
    result = diarize(sample / "sample.wav", encoder=encoder)
    result.write_rttm(tmp_path / "sample.rttm")
    # The shipped model (100 speakers of read L2 English) hears the sample's two speakers as
    # one at its own threshold; forced to two it finds two. Reported in the branch's notes.
    assert 1 <= len(result.labels()) <= 2
    read_back = read_rttm(tmp_path / "sample.rttm")["sample"]
    assert [t.speaker for t in read_back] == [t.speaker for t in result.turns]
    assert np.allclose([t.start_s for t in read_back], [t.start_s for t in result.turns], atol=1e-3)
    assert len(diarize(sample / "sample.wav", encoder=encoder, num_speakers=2).labels()) == 2
