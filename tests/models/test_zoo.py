"""Model-zoo specifics: published sizes, layer placement, and what each family promises beyond
the registry-wide properties of test_encoders.py."""

from __future__ import annotations

import inspect

import pytest
import torch

from speakerprint.errors import ConfigError
from speakerprint.models import (
    CamPlusPlus,
    DeepSpeakerResCnn,
    Ge2eLstm,
    LstmDvector,
    ResNet,
    TitaNet,
    XVectorTdnn,
    count_parameters,
    create_model,
    lengths_to_mask,
    script_encoder,
)
from speakerprint.models.campplus import campplus
from speakerprint.models.deep_speaker import deep_speaker
from speakerprint.models.ge2e import ge2e_lstm
from speakerprint.models.layers import (
    BasicBlock2d,
    Bottleneck2d,
    MaskedBatchNorm2d,
    SqueezeExcitation1d,
)
from speakerprint.models.lstm import lstm_dvector
from speakerprint.models.resnet import resnet
from speakerprint.models.tdnn import xvector
from speakerprint.models.titanet import titanet
from tests.models.test_encoders import SMALL_HPARAMS, build_on_meta

# TitaNet's paper (table 1) counts its AAM head over the 16,681 training speakers: 192 x 16,681.
TITANET_HEAD = 192 * 16_681
TITANET_PAPER_MILLIONS = {"titanet_s": 6.4, "titanet_m": 13.4, "titanet_l": 25.3}


@pytest.mark.parametrize("name", sorted(TITANET_PAPER_MILLIONS))
def test_titanet_with_its_training_head_has_the_paper_size(name):
    total = count_parameters(build_on_meta(name)) + TITANET_HEAD
    # 6,480,944 / 13,428,592 / 25,332,848
    assert total == pytest.approx(TITANET_PAPER_MILLIONS[name] * 1e6, rel=0.02)


def test_resnet34_has_wespeakers_size():
    assert count_parameters(build_on_meta("resnet34")) == pytest.approx(6.63e6, rel=0.02)


@pytest.mark.parametrize("name", ["titanet_s", "titanet_m", "titanet_l"])
def test_titanet_has_one_se_per_block_and_nemos_widths(name):
    model = build_on_meta(name)
    num_se = sum(isinstance(m, SqueezeExcitation1d) for m in model.modules())
    assert num_se == 1 + 3 + 1  # prolog, three mega blocks, epilog
    assert [len(block.convs) for block in model.mega_blocks] == [3, 3, 3]
    assert [block.convs[0].depthwise.kernel_size[0] for block in model.mega_blocks] == [7, 11, 15]
    assert model.prolog.convs[0].depthwise.kernel_size == (3,)
    expected = {"titanet_s": (256, 1536), "titanet_m": (512, 3072), "titanet_l": (1024, 3072)}
    assert (model.hparams["channels"], model.hparams["epilog_channels"]) == expected[name]
    assert (model.embed_dim, model.feat_dim) == (192, 80)


@pytest.mark.parametrize(
    "factory, cls",
    [
        (titanet, TitaNet),
        (resnet, ResNet),
        (xvector, XVectorTdnn),
        (lstm_dvector, LstmDvector),
        (ge2e_lstm, Ge2eLstm),
        (deep_speaker, DeepSpeakerResCnn),
        (campplus, CamPlusPlus),
    ],
)
def test_generic_factory_mirrors_the_constructor(factory, cls):
    params = inspect.signature(factory).parameters
    constructor = inspect.signature(cls.__init__).parameters
    assert list(params) == [p for p in constructor if p != "self"]
    for name, param in params.items():
        assert param.default == constructor[name].default, name


@pytest.mark.parametrize(
    "family, kwargs, match",
    [
        ("titanet", {"kernel_sizes": [3, 4]}, "odd"),
        ("titanet", {"kernel_sizes": []}, "at least one"),
        ("titanet", {"channels": "256"}, "channels must be an int"),
        ("titanet", {"dropout": 1.0}, "dropout"),
        ("titanet", {"channels": 4}, "se_reduction"),
        ("resnet", {"blocks": "3463"}, "list of ints"),
        ("resnet", {"blocks": [3, 0]}, "blocks\\[\\] must be >= 1"),
        ("xvector", {"stats_channels": 0}, "stats_channels must be >= 1"),
        ("lstm_dvector", {"embed_dim": 16}, "must be < hidden_size"),
        ("deep_speaker", {"channels": []}, "at least one"),
        ("deep_speaker", {"eps": 0}, "eps must be a positive"),
    ],
)
def test_invalid_arguments_raise_config_error(family, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model(family, **{**SMALL_HPARAMS[family], **kwargs})


@pytest.mark.parametrize("family", ["titanet", "resnet", "xvector", "lstm_dvector", "deep_speaker"])
def test_training_mode_ignores_padding(family):
    """Masked batch statistics (or packing) keep padding out of training-mode outputs and buffers."""
    torch.manual_seed(0)
    model_a = create_model(family, **SMALL_HPARAMS[family]).train()
    model_b = create_model(family, **SMALL_HPARAMS[family]).train()
    model_b.load_state_dict(model_a.state_dict())
    feats = torch.randn(4, 15, model_a.feat_dim)
    padded = torch.cat([feats, 3 * torch.randn(4, 10, model_a.feat_dim)], dim=1)
    with torch.no_grad():
        emb_a = model_a(feats)
        emb_b = model_b(padded, torch.full((4,), 15))
    torch.testing.assert_close(emb_b, emb_a, atol=1e-4, rtol=1e-4)
    for (name, buffer_a), buffer_b in zip(model_a.named_buffers(), model_b.buffers(), strict=True):
        torch.testing.assert_close(buffer_b, buffer_a, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_2d_blocks_downsample_lengths_exactly(stride, kind):
    torch.manual_seed(0)
    if kind == "basic":
        block = BasicBlock2d(2, 3, stride=stride, activation=torch.nn.ReLU()).eval()
    else:
        block = Bottleneck2d(2, 3, stride=stride).eval()
    frames = 13
    batch = 4 * torch.randn(frames, 2, 6, frames)  # row l - 1 has l valid steps
    lengths = torch.arange(1, frames + 1)
    mask = lengths_to_mask(lengths, frames)[:, None, None, :]
    with torch.no_grad():
        out, out_mask = block(batch, mask)
        for row, length in enumerate(lengths.tolist()):
            all_valid = torch.ones(1, 1, 1, length, dtype=torch.bool)
            alone, _ = block(batch[row : row + 1, ..., :length], all_valid)
            steps = -(-length // stride)
            assert alone.shape[-1] == steps and int(out_mask[row].sum()) == steps
            torch.testing.assert_close(out[row, ..., :steps], alone[0], atol=1e-6, rtol=1e-5)
            assert (out[row, ..., steps:] == 0).all()


def test_masked_batch_norm_2d_equals_batch_norm_over_valid_steps():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 6)
    masked, reference = MaskedBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    reference.load_state_dict(masked.state_dict())
    mask = lengths_to_mask(torch.tensor([6, 2]), 6)[:, None, None, :]
    out = masked(x, mask)
    expected = reference(torch.cat([x[0], x[1, ..., :2]], dim=-1).unsqueeze(0))
    torch.testing.assert_close(out[0], expected[0, ..., :6])
    torch.testing.assert_close(out[1, ..., :2], expected[0, ..., 6:])
    torch.testing.assert_close(masked.running_var, reference.running_var)


def test_resnet_pools_channels_times_frequency():
    model = build_on_meta("resnet34")
    assert model.stats_dim == 2 * 256 * 10  # 80 bins / 8
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]


@pytest.mark.parametrize(
    ("name", "blocks"),
    [("resnet152", [3, 8, 36, 3]), ("resnet221", [6, 16, 48, 3]), ("resnet293", [10, 20, 64, 3])],
)
def test_deep_resnets_are_wespeakers_bottleneck_layouts(name, blocks):
    model = build_on_meta(name)
    assert [len(stage) for stage in model.stages] == blocks
    assert all(isinstance(block, Bottleneck2d) for stage in model.stages for block in stage)
    assert model.stats_dim == 2 * 4 * 256 * 10  # 4x expansion of 8c = 256 channels, 80 bins / 8
    assert model.stages[1][0].conv2.stride == 2 and model.stages[1][0].conv1.stride == 1
    assert (model.embed_dim, model.feat_dim) == (256, 80)
    assert "block" not in build_on_meta("resnet34").hparams  # older bundles keep their configs


def test_bottleneck_resnet_ignores_padding_and_trains():
    """The ``resnet`` family's SMALL_HPARAMS build BasicBlocks; the same properties here."""
    torch.manual_seed(0)
    hparams = {**SMALL_HPARAMS["resnet"], "block": "bottleneck"}
    model = create_model("resnet", **hparams)
    rebuilt = create_model(model.family, **model.hparams)
    rebuilt.load_state_dict(model.state_dict())
    feats = torch.randn(3, 30, model.feat_dim)
    padded = torch.cat([feats[:, :19], 3 * torch.randn(3, 11, model.feat_dim)], dim=1)
    for training in (True, False):
        model.train(training), rebuilt.train(training)
        with torch.no_grad():
            alone = model(feats[:, :19])
            torch.testing.assert_close(
                rebuilt(padded, torch.full((3,), 19)), alone, atol=1e-4, rtol=1e-4
            )
    model.train()
    model(feats, torch.tensor([30, 12, 3])).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    lengths = torch.tensor([30, 12, 3])
    torch.testing.assert_close(script_encoder(model)(feats, lengths), model(feats, lengths))
    with pytest.raises(ConfigError, match="block must be one of"):
        create_model("resnet", block="preact")


def test_lstm_dvector_is_the_unit_output_at_the_last_valid_frame():
    torch.manual_seed(0)
    model = create_model("lstm_dvector", **SMALL_HPARAMS["lstm_dvector"]).eval()
    feats, lengths = torch.randn(3, 12, model.feat_dim), torch.tensor([12, 5, 1])
    with torch.no_grad():
        emb = model(feats, lengths)
        for row, length in enumerate(lengths.tolist()):
            outputs, _ = model.lstm(feats[row : row + 1, :length])
            expected = torch.nn.functional.normalize(outputs[0, -1], dim=0)
            torch.testing.assert_close(emb[row], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_xvector_frame_contexts_are_the_papers():
    model = build_on_meta("xvector")
    contexts = [(layer.conv.kernel_size[0], layer.conv.dilation[0]) for layer in model.frame_layers]
    assert contexts == [(5, 1), (3, 2), (3, 3), (1, 1), (1, 1)]
    assert [layer.conv.out_channels for layer in model.frame_layers] == [512] * 4 + [1500]
    assert model.embedding.in_features == 3000 and model.embed_dim == 512


def test_deep_speaker_normalises_each_frame_and_outputs_unit_vectors():
    torch.manual_seed(0)
    model = create_model("deep_speaker", **SMALL_HPARAMS["deep_speaker"]).eval()
    feats = torch.randn(2, 20, model.feat_dim)
    scale, shift = torch.rand(2, 20, 1) + 0.5, torch.randn(2, 20, 1)  # per-frame gain and offset
    with torch.no_grad():
        emb = model(feats)
        torch.testing.assert_close(model(feats * scale + shift), emb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_deep_speaker_rescnn_follows_the_paper():
    model = build_on_meta("deep_speaker_rescnn")
    assert [d.conv.out_channels for d in model.downsamples] == [64, 128, 256, 512]
    assert all(d.conv.kernel_size == (5, 5) and d.conv.stride == (2, 2) for d in model.downsamples)
    assert [len(stage) for stage in model.stages] == [3, 3, 3, 3]
    assert model.pooled_dim == 2048 and model.embed_dim == 512  # 512 channels x 4 bins
    assert count_parameters(build_on_meta("deep_speaker_small")) == pytest.approx(1e5, rel=0.05)


def test_speechbrain_xvector_layout_scripts_and_survives_one_frame():
    """xvector_speechbrain's layout (LeakyReLU, reflect padding, unbiased std) compiles with
    TorchScript to the same output, and one frame (where torch.std gives NaN) stays finite."""
    torch.manual_seed(0)
    model = create_model(
        "xvector",
        channels=16,
        stats_channels=24,
        embed_dim=16,
        negative_slope=0.01,
        padding_mode="reflect",
        pooling_std="unbiased",
    ).eval()
    assert model.hparams["pooling_std"] == "unbiased"
    assert "pooling_std" not in create_model("xvector", **SMALL_HPARAMS["xvector"]).hparams
    feats, lengths = torch.randn(2, 40, 24), torch.tensor([40, 1])
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(feats, lengths), model(feats, lengths))
    model.train()
    emb = model(feats, lengths)
    emb.square().sum().backward()
    assert torch.isfinite(emb).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ConfigError, match="pooling_std"):
        create_model("xvector", pooling_std="sample")
