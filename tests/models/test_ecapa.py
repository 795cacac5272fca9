"""ECAPA-TDNN specifics: arguments, attention weights, the generic factory's signature."""

from __future__ import annotations

import inspect

import pytest
import torch

from speakerprint.errors import ConfigError
from speakerprint.models import EcapaTdnn, create_model
from speakerprint.models.ecapa import ecapa_tdnn

SMALL = {
    "channels": 32,
    "mfa_channels": 96,
    "embed_dim": 16,
    "se_channels": 8,
    "attention_channels": 8,
}


def test_generic_factory_mirrors_the_constructor():
    factory = inspect.signature(ecapa_tdnn).parameters
    constructor = inspect.signature(EcapaTdnn.__init__).parameters
    assert list(factory) == [p for p in constructor if p != "self"]
    for name, param in factory.items():
        assert param.default == constructor[name].default, name


def test_variants_rebuild_from_the_generic_family():
    model = create_model("ecapa_tdnn_c1024_mfa3072", embed_dim=256, feat_dim=64)
    assert model.family == "ecapa_tdnn"
    assert model.hparams["channels"] == 1024 and model.hparams["mfa_channels"] == 3072
    assert (model.embed_dim, model.feat_dim) == (256, 64)


def test_hparams_are_a_copy():
    model = create_model("ecapa_tdnn", **SMALL)
    model.hparams["dilations"].append(5)
    assert model.hparams["dilations"] == [2, 3, 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 36}, "divisible by res2_scale"),
        ({"channels": "512"}, "channels must be an int"),
        ({"embed_dim": 0}, "embed_dim must be >= 1"),
        ({"res2_scale": True}, "res2_scale must be an int"),
        ({"dilations": []}, "at least one"),
        ({"dilations": "234"}, "list of ints"),
        ({"dilations": [2, 3.5]}, "must be an int"),
        ({"global_context": 1}, "global_context must be a bool"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model("ecapa_tdnn", **{**SMALL, **kwargs})


@pytest.mark.parametrize("global_context", [True, False])
@pytest.mark.parametrize("dilations", [[2, 3, 4], [2, 3, 4, 5], [1]])
def test_architecture_options(global_context, dilations):
    model = create_model("ecapa_tdnn", **SMALL, dilations=dilations, global_context=global_context)
    assert len(model.blocks) == len(dilations)
    emb = model.eval()(torch.randn(2, 20, 80), torch.tensor([20, 12]))
    assert emb.shape == (2, 16) and torch.isfinite(emb).all()


def test_res2_scale_one_is_a_single_conv():
    model = create_model("ecapa_tdnn", **SMALL, res2_scale=1)
    assert len(model.blocks[0].res2.convs) == 1
    assert model.eval()(torch.randn(2, 20, 80)).shape == (2, 16)


def test_attention_weights_sum_to_one_over_valid_frames():
    model = create_model("ecapa_tdnn", **SMALL).eval()
    lengths = torch.tensor([20, 13])
    with torch.no_grad():
        alpha = model.attention_weights(torch.randn(2, 20, 80), lengths)
    assert alpha.shape == (2, 96, 20)
    torch.testing.assert_close(alpha.sum(dim=-1), torch.ones(2, 96))
    assert (alpha[1, :, 13:] == 0).all() and (alpha >= 0).all()


def test_training_statistics_ignore_padding():
    """In training mode the BatchNorm statistics, hence the running stats, skip padded frames."""
    torch.manual_seed(0)
    model_a = create_model("ecapa_tdnn", **SMALL).train()
    model_b = create_model("ecapa_tdnn", **SMALL).train()
    model_b.load_state_dict(model_a.state_dict())
    feats = torch.randn(4, 15, 80)
    padded = torch.cat([feats, 3 * torch.randn(4, 10, 80)], dim=1)
    with torch.no_grad():
        emb_a = model_a(feats)
        emb_b = model_b(padded, torch.full((4,), 15))
    # Looser than in eval mode: batch statistics over 4 rows magnify rounding differences.
    torch.testing.assert_close(emb_b, emb_a, atol=1e-4, rtol=1e-4)
    for (name, buffer_a), buffer_b in zip(model_a.named_buffers(), model_b.buffers(), strict=True):
        torch.testing.assert_close(buffer_b, buffer_a, atol=1e-6, rtol=1e-5, msg=name)
