"""Model registry: every encoder variant is a named factory, created by name from configs."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule

Factory = TypeVar("Factory", bound=Callable[..., EncoderModule])

_MODELS: dict[str, Callable[..., EncoderModule]] = {}


def register_model(fn: Factory) -> Factory:
    """Register a factory under its function name; used as a decorator.

    The factory takes keyword arguments only, with no ``*args`` or ``**kwargs``, so that
    :func:`create_model` can name a misspelt argument instead of passing it down.

    >>> @register_model
    ... def my_encoder(*, embed_dim: int = 192) -> EncoderModule: ...  # doctest: +SKIP
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__module__})")
    for param in inspect.signature(fn).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(
                f"model factory {name!r} must take keyword-only arguments, "
                f"but {param.name!r} is {param.kind.description}"
            )
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs: object) -> EncoderModule:
    """Build the registered model ``name`` with the given keyword arguments.

    Raises:
        ConfigError: ``name`` is not registered, or an argument is not one the factory takes, or
            a value is invalid. The message lists the valid names.

    >>> model = create_model("ecapa_tdnn_c512", embed_dim=256)
    >>> rebuilt = create_model(model.family, **model.hparams)
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint}; valid models: {', '.join(list_models())}"
        ) from None
    valid = list(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
            f"valid arguments: {', '.join(valid)}"
        )
    return factory(**kwargs)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once), optionally only those that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
