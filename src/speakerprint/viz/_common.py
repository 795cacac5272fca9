"""What every figure shares: a lazy matplotlib import with an install hint, and saving a figure
as PNG or SVG (by the file's extension), atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speakerprint.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: The file types a figure can be written as, by extension.
FIGURE_FORMATS = ("png", "svg")
VIZ_HINT = "pip install 'speakerprint[viz]'"


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; a clear error if it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {VIZ_HINT}") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def bundle_label(path: str | os.PathLike) -> str:
    """A name for a bundle in titles: its folder, or the run's folder for ``RUN/bundle``."""
    path = Path(path).resolve()
    return path.parent.name if path.name == "bundle" else path.name


def new_figure(width_in: float, height_in: float, **kwargs: Any) -> Figure:
    """A figure that is not registered with pyplot (so nothing accumulates in long runs)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained", **kwargs)


def figure_format(path: str | os.PathLike) -> str:
    """``png`` or ``svg`` from the extension; anything else is a ConfigError naming the file."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise ConfigError(
            f"{path}: a figure is written as .png or .svg (chosen by the extension), "
            f"not {('.' + suffix) if suffix else 'a file without an extension'}"
        )
    return suffix


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG or SVG (by the extension), atomically; returns the path."""
    from speakerprint.utils.io import atomic_write_bytes

    fmt = figure_format(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def speaker_colours(num: int) -> list[tuple[float, float, float, float]]:
    """``num`` distinguishable colours (tab20, then hsv for more)."""
    require_matplotlib()
    from matplotlib import colormaps

    cmap = colormaps["tab20" if num <= 20 else "hsv"]
    if num <= 20:
        return [cmap(i) for i in range(num)]
    return [cmap(i / num) for i in range(num)]
