"""Reading a peer front end's config back from a bundle's ``features`` dict."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from speakerprint.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any], kind: str) -> T:
    """``cls(**data)`` for a dataclass config whose dict carries ``kind``; another ``kind`` or an
    unknown key is a ConfigError naming the valid keys."""
    data = dict(data)
    found = data.pop("kind", kind)
    if found != kind:
        raise ConfigError(f"features kind {found!r} is not {kind!r}")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} keys: {', '.join(map(repr, unknown))} "
            f"(valid keys: {', '.join(sorted(known))})"
        )
    return cls(**data)
