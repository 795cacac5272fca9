"""Reading a dataclass back from a plain dict (JSON, YAML), strictly: one rule for every config.

An unknown key is an error naming it and the valid keys (a bundle or config from another version
must not be half-read); a missing key takes its default unless every key is required.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from speakerprint.errors import ConfigError

__all__ = ["dataclass_from_dict"]

T = TypeVar("T")


def dataclass_from_dict(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    label: str | None = None,
    where: str = "",
    require_all: bool = False,
    convert: Callable[[str, Any, str], Any] | None = None,
) -> T:
    """``cls(**data)`` for a dataclass ``cls``, refusing keys it does not have.

    Args:
        label: how the message names the config (default: the class name).
        where: the dotted path of ``data`` in a nested config (``"optim"``); keys are named with it.
        require_all: a missing key is an error too (default: it takes its default).
        convert: ``convert(name, value, dotted_key) -> value`` checks or converts each value
            first (a nested config reads its sub-dataclasses through it).

    Raises:
        ConfigError: (a ``ValueError``) naming the unknown or missing keys and the valid ones.

    >>> @dataclasses.dataclass
    ... class Point:
    ...     x: int = 0
    ...     y: int = 0
    >>> dataclass_from_dict(Point, {"x": 1})
    Point(x=1, y=0)
    >>> dataclass_from_dict(Point, {"z": 1})
    Traceback (most recent call last):
    ...
    speakerprint.errors.ConfigError: unknown Point keys: 'z' (valid keys: x, y)
    """
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]
    label = label or cls.__name__
    inside = f" in {where}" if where else ""

    def dotted(key: str) -> str:
        return f"{where}.{key}" if where else key

    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(
            f"unknown {label} keys: {', '.join(repr(dotted(str(k))) for k in unknown)} "
            f"(valid keys{inside}: {', '.join(sorted(names))})"
        )
    missing = [name for name in names if name not in data] if require_all else []
    if missing:
        raise ConfigError(
            f"missing {label} keys: {', '.join(repr(dotted(k)) for k in missing)} "
            f"(it needs exactly the keys{inside}: {', '.join(sorted(names))})"
        )
    if convert is None:
        return cls(**data)
    return cls(**{name: convert(name, value, dotted(name)) for name, value in data.items()})
