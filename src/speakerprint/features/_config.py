"""Reading a peer front end's config back from a bundle's ``features`` dict."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from speakerprint.errors import ConfigError
from speakerprint.utils.config import dataclass_from_dict

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any], kind: str) -> T:
    """``cls(**data)`` for a dataclass config whose dict carries ``kind``; another ``kind`` or an
    unknown key is a ConfigError naming the valid keys."""
    data = dict(data)
    found = data.pop("kind", kind)
    if found != kind:
        raise ConfigError(f"features kind {found!r} is not {kind!r}")
    return dataclass_from_dict(cls, data)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
    "bool": bool,
}


def check_field_types(config: object) -> None:
    """Every field of a features config dataclass holds its annotated type (an int is a float;
    a bool is never an int or a float); otherwise a ConfigError naming the field."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not isinstance(value, _TYPES[field.type]) or (
            field.type != "bool" and isinstance(value, bool)
        ):
            raise ConfigError(
                f"{type(config).__name__}.{field.name} must be {field.type}, got {value!r} "
                f"({type(value).__name__})"
            )
