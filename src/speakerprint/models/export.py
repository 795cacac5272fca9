"""TorchScript export of the encoders: one compiled graph for every batch size and frame count.

``torch.jit.trace`` records the shapes of its example input, which is wrong for speech of varying
length; every registered encoder is written so that ``torch.jit.script`` compiles it instead, and
the registry-driven tests hold each family's scripted output to its eager one.
"""

from __future__ import annotations

import copy

import torch

from speakerprint.models.base import EncoderModule


def script_encoder(model: EncoderModule) -> torch.jit.ScriptModule:
    """Compile an eval-mode copy of ``model`` with TorchScript; ``model`` itself is left unchanged.

    The result has the encoder's contract, ``forward(feats (B, T, F), lengths (B,) | None) ->
    (B, D)``, for any B and T, and runs without the speakerprint package. Bad input shapes raise
    ``torch.jit.Error`` with the eager model's message.

    Raises:
        TypeError: ``model`` is not an :class:`EncoderModule`.
        RuntimeError: TorchScript cannot compile the model; the message names its family and
            class and quotes the compiler, which points at the offending line.

    >>> from speakerprint.models import create_model
    >>> scripted = script_encoder(create_model("xvector", channels=16, stats_channels=24))
    >>> scripted(torch.randn(2, 50, 24), torch.tensor([50, 31])).shape
    torch.Size([2, 512])
    >>> torch.jit.save(scripted, "xvector.pt")  # doctest: +SKIP
    """
    if not isinstance(model, EncoderModule):
        raise TypeError(f"script_encoder takes an EncoderModule, got {type(model).__name__}")
    encoder = copy.deepcopy(model).eval()
    try:
        return torch.jit.script(encoder)
    except Exception as err:  # the compiler raises RuntimeError, NotSupportedError and others
        raise RuntimeError(
            f"TorchScript cannot compile model family {model.family!r} "
            f"({type(model).__name__}): {err}"
        ) from err
