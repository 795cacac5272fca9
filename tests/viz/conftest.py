"""Helpers for the figure tests: read a written PNG back and check it is a real picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")


def read_png(path: Path) -> np.ndarray:
    """(H, W, channels) floats in [0, 1]."""
    from matplotlib.image import imread

    return imread(path)


def assert_real_image(path: Path, width_in: float, height_in: float, dpi: int) -> np.ndarray:
    """The PNG has the size of a width_in x height_in figure at dpi and is not blank."""
    image = read_png(path)
    assert image.shape[:2] == (round(height_in * dpi), round(width_in * dpi))
    assert image.var() > 0
    colours = np.unique(image.reshape(-1, image.shape[-1]), axis=0)
    assert len(colours) > 10  # axes, text and data, not a flat fill
    return image
