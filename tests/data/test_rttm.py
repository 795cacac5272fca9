"""RTTM turns written and read back, and bad lines named."""

from __future__ import annotations

import pytest

from speakerprint.data.rttm import Turn, format_rttm, read_rttm, write_rttm
from speakerprint.errors import ManifestError


def test_round_trip_groups_by_file_and_sorts_by_onset(tmp_path):
    turns = [
        Turn("b", 3.25, 1.0, "SPEAKER_01"),
        Turn("a", 2.0, 0.5, "alice"),
        Turn("a", 0.0, 1.75, "bob"),
    ]
    path = write_rttm(tmp_path / "x.rttm", turns)
    back = read_rttm(path)
    assert set(back) == {"a", "b"}
    assert back["a"] == [turns[2], turns[1]] and back["b"] == [turns[0]]
    assert back["a"][0].end_s == 1.75


def test_other_line_types_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "x.rttm"
    path.write_text(
        "SPKR-INFO f 1 <NA> <NA> <NA> unknown alice <NA> <NA>\n\n"
        "SPEAKER f 1 0.50 1.00 <NA> <NA> alice <NA> <NA>\n"
    )
    assert read_rttm(path) == {"f": [Turn("f", 0.5, 1.0, "alice")]}


def test_every_bad_line_is_named(tmp_path):
    path = tmp_path / "bad.rttm"
    path.write_text(
        "SPEAKER f 1 0.0 1.0 <NA> <NA> a <NA> <NA>\n"
        "SPEAKER f 1 x 1.0 <NA> <NA> a <NA> <NA>\n"
        "SPEAKER f 1 0.0\n"
        "SPEAKER f 1 -1 1.0 <NA> <NA> a <NA> <NA>\n"
    )
    with pytest.raises(ManifestError) as info:
        read_rttm(path)
    message = str(info.value)
    assert f"{path}:2" in message and f"{path}:3" in message and f"{path}:4" in message
    assert f"{path}:1" not in message


def test_names_with_spaces_cannot_be_written():
    with pytest.raises(ValueError, match="speaker"):
        format_rttm([Turn("f", 0.0, 1.0, "two words")])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ManifestError, match="nope.rttm"):
        read_rttm(tmp_path / "nope.rttm")
