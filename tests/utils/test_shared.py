"""The small helpers every layer shares: strict dataclass parsing, row normalisation, sha256."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from speakerprint.errors import ConfigError
from speakerprint.utils.config import dataclass_from_dict
from speakerprint.utils.hashing import sha256_file
from speakerprint.utils.linalg import l2_normalize_rows


@dataclasses.dataclass
class _Point:
    x: int = 0
    y: int = 1


def test_dataclass_from_dict_fills_defaults_and_names_unknown_keys():
    assert dataclass_from_dict(_Point, {"x": 3}) == _Point(3, 1)
    with pytest.raises(ConfigError, match=r"unknown _Point keys: 'w', 'z' \(valid keys: x, y\)"):
        dataclass_from_dict(_Point, {"z": 1, "w": 2, "x": 0})
    with pytest.raises(ConfigError, match=r"unknown config keys: 'optim.z' \(valid keys in optim"):
        dataclass_from_dict(_Point, {"z": 1}, label="config", where="optim")


def test_dataclass_from_dict_can_require_every_key_and_convert_values():
    with pytest.raises(ConfigError, match="missing _Point keys: 'y'"):
        dataclass_from_dict(_Point, {"x": 1}, require_all=True)
    seen = []

    def convert(name, value, key):
        seen.append(key)
        return value * 10

    assert dataclass_from_dict(_Point, {"x": 1, "y": 2}, where="p", convert=convert) == _Point(
        10, 20
    )
    assert seen == ["p.x", "p.y"]


def test_l2_normalize_rows_gives_unit_rows_and_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1e-3, 0.0]], dtype=np.float32)
    out = l2_normalize_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(l2_normalize_rows(np.array([0.0, 2.0])), [0.0, 1.0])


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 17)  # three chunks, the last partial
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
