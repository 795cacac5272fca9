import os
import stat

import pytest

from speakerprint.utils.io import atomic_dir, atomic_open, atomic_write_text


def test_atomic_open_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "one"
    assert os.listdir(target.parent) == ["f.txt"]  # no temporary file left behind
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & stat.S_IRGRP  # a normal file, not mkstemp's 0600 (under the usual umask)


def test_atomic_dir_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "bundle"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("new")
            raise RuntimeError("crash")
    assert (target / "a").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(os.listdir(target)) == ["b"]
    assert os.listdir(tmp_path) == ["bundle"]
