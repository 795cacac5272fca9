"""Tests of speakerprint.data.manifest: JSONL round trips, path resolution, error reports."""

from __future__ import annotations

import json
import math
import re

import pytest

from speakerprint.data import Utterance, read_manifest, speakers, write_manifest
from speakerprint.errors import ManifestError, SpeakerprintError


def _utts(folder) -> list[Utterance]:
    return [
        Utterance("spk1/a.wav", str(folder / "spk1" / "a.wav"), "spk1", 2.5, 16000),
        Utterance("spk1/sub/b.flac", str(folder / "spk1" / "sub" / "b.flac"), "spk1", 0.0, 8000),
        Utterance("spk2/ç é.opus", str(folder / "spk2" / "ç é.opus"), "spk2", 13.25, 48000),
    ]


def _line(**overrides) -> str:
    record = {
        "utt_id": "s/a.wav",
        "path": "/x/s/a.wav",
        "speaker": "s",
        "duration_s": 1.0,
        "sample_rate": 16000,
    }
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()


def test_round_trip(tmp_path):
    utts = _utts(tmp_path)
    path = tmp_path / "m.jsonl"
    write_manifest(path, utts)
    assert read_manifest(path) == utts
    # One JSON object per line with exactly the five fields.
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"utt_id", "path", "speaker", "duration_s", "sample_rate"}


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path, monkeypatch):
    folder = tmp_path / "lists"
    folder.mkdir()
    path = folder / "m.jsonl"
    path.write_text(
        _line(utt_id="a", path="audio/a.wav")
        + "\n"
        + _line(utt_id="b", path="../b.wav")
        + "\n"
        + _line(utt_id="c", path="/abs/c.wav")
        + "\n"
    )
    monkeypatch.chdir(tmp_path)  # reading through a relative name must give the same answer
    utts = read_manifest("lists/m.jsonl")
    assert utts[0].path == str(folder / "audio" / "a.wav")
    assert utts[1].path == str(folder / ".." / "b.wav")
    assert utts[2].path == "/abs/c.wav"


def test_empty_lines_are_ignored_and_integer_durations_accepted(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n" + _line(duration_s=3) + "\n   \n\n")
    (utt,) = read_manifest(path)
    assert utt.duration_s == 3.0 and isinstance(utt.duration_s, float)


def test_every_problem_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        _line(utt_id="ok"),  # 1: fine
        '{"utt_id": "x", ',  # 2: malformed JSON
        _line(utt_id="m", speaker=_DROP),  # 3: missing field
        _line(utt_id="e", extra=1),  # 4: unknown field
        _line(utt_id="t", sample_rate="16000"),  # 5: wrong type
        _line(utt_id="ok"),  # 6: duplicate of line 1
        _line(utt_id="n", duration_s=-0.5),  # 7: negative duration
        "[1, 2, 3]",  # 8: not an object
        "",  # 9: empty, ignored
        _line(utt_id="b", sample_rate=True),  # 10: bool is not a sample rate
        _line(utt_id="", path=None),  # 11: empty id and a null path
    ]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    expected = {
        2: "malformed JSON",
        3: "missing field(s) speaker",
        4: "unknown field(s) extra",
        5: 'sample_rate must be int, got "16000"',
        6: "duplicate utt_id 'ok' (first on line 1)",
        7: "duration_s must be finite and >= 0, got -0.5",
        8: "expected a JSON object, got list",
        10: "sample_rate must be int, got true",
        11: "utt_id is empty",
    }
    for line_number, text in expected.items():
        assert f"{path}:{line_number}: {text}" in message
    assert f"{path}:11: path must be str, got null" in message
    assert f"{path}:1:" not in message and f"{path}:9:" not in message
    assert message.startswith(f"{path}: 10 problem(s) in manifest:")
    assert isinstance(info.value, SpeakerprintError) and isinstance(info.value, ValueError)


def test_long_error_listings_are_capped(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join("not json" for _ in range(30)) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert len(re.findall(r"malformed JSON", message)) == 20
    assert f"{path}:20:" in message and f"{path}:21:" not in message
    assert message.endswith("... and 10 more")


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match=re.escape(str(tmp_path / "nope.jsonl"))):
        read_manifest(tmp_path / "nope.jsonl")


def test_a_line_that_is_not_utf8_is_named_with_its_file(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = [_line(utt_id=f"u{i}") for i in range(3)]
    path.write_bytes(
        ("\n".join(good) + "\n").encode()
        + _line(speaker="@").replace("@", "J\xfcrgen").encode("latin-1")
    )
    with pytest.raises(ManifestError, match=re.escape(f"{path}: line 4 is not UTF-8")):
        read_manifest(path)


def test_crlf_lines_read_like_lf_lines(tmp_path):
    path = tmp_path / "windows.jsonl"
    path.write_bytes(f"{_line(utt_id='a')}\r\n\r\n{_line(utt_id='b')}\r\n".encode())
    assert [u.utt_id for u in read_manifest(path)] == ["a", "b"]


def test_a_speaker_is_one_string_however_many_lines_name_it(tmp_path):
    # A million utterances of a thousand speakers hold a thousand speaker strings, not a million
    # (bench/manifest_load.py measures the whole reader's memory).
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(_line(utt_id=f"u{i}", speaker="id10001") for i in range(3)))
    first, *rest = read_manifest(path)
    assert all(u.speaker is first.speaker for u in rest)
    assert not hasattr(first, "__dict__")  # slots: no per-utterance dict either


@pytest.mark.parametrize(
    "bad",
    [
        Utterance("spk1/a.wav", "/x", "spk1", 1.0, 16000),  # duplicate of the first
        Utterance("c", "/x", "spk1", math.nan, 16000),
        Utterance("c", "/x", "spk1", -1.0, 16000),
        Utterance("c", "/x", "spk1", 1.0, 16000.0),
    ],
)
def test_write_refuses_what_read_would_reject_and_leaves_the_old_file(tmp_path, bad):
    path = tmp_path / "m.jsonl"
    write_manifest(path, _utts(tmp_path))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="cannot write utterance"):
        write_manifest(path, [*_utts(tmp_path), bad])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temporary file left behind


def test_speakers_are_sorted_and_unique(tmp_path):
    assert speakers(_utts(tmp_path)[::-1]) == ["spk1", "spk2"]
    assert speakers([]) == []
