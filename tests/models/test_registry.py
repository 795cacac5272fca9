"""The registry mechanics, separate from the models registered in it."""

from __future__ import annotations

import pytest

from speakerprint.models import register_model
from speakerprint.models.ecapa import EcapaTdnn
from speakerprint.models.registry import _MODELS


def test_duplicate_registration_is_an_error():
    def ecapa_tdnn_c512(*, feat_dim: int = 80) -> EcapaTdnn:
        return EcapaTdnn(feat_dim=feat_dim)

    with pytest.raises(ValueError, match="already registered"):
        register_model(ecapa_tdnn_c512)


def test_factories_must_take_keyword_only_arguments():
    def catch_all_encoder(**kwargs) -> EcapaTdnn:
        return EcapaTdnn(**kwargs)

    def positional_encoder(feat_dim: int = 80) -> EcapaTdnn:
        return EcapaTdnn(feat_dim=feat_dim)

    for factory in (catch_all_encoder, positional_encoder):
        with pytest.raises(TypeError, match="keyword-only"):
            register_model(factory)
        assert factory.__name__ not in _MODELS
