"""Properties every registered encoder must have.

Registry-driven at two levels, to stay fast on CPU:
* every name in ``list_models()`` is built at full size for the contract, one tiny forward and the
  parameter count;
* every model family (the ``family`` of some registered model) is built small, from
  ``SMALL_HPARAMS``, for the properties that need backward passes and many forwards. A new family
  must add an entry there.
"""

from __future__ import annotations

import io
import json

import pytest
import torch

from speakerprint.errors import ConfigError
from speakerprint.models import EncoderModule, count_parameters, create_model, list_models

MODEL_NAMES = list_models()
ZOO_NAMES = [
    "titanet",
    "titanet_s",
    "titanet_m",
    "titanet_l",
    "resnet",
    "resnet34",
    "resnet152",
    "resnet221",
    "resnet293",
    "xvector",
    "lstm_dvector",
    "deep_speaker",
    "deep_speaker_rescnn",
    "deep_speaker_small",
]
BATCH, FRAMES = 3, 24

# Small but complete versions of each family: every layer type present, widths cut down.
SMALL_HPARAMS = {
    "ecapa_tdnn": {
        "channels": 32,
        "mfa_channels": 96,
        "embed_dim": 16,
        "se_channels": 8,
        "attention_channels": 8,
    },
    "titanet": {
        "channels": 16,
        "epilog_channels": 32,
        "embed_dim": 16,
        "kernel_sizes": [3, 5],
        "repeat": 2,  # an inner sub-block and a last one with SE
        "attention_channels": 8,
    },
    # Two blocks in stage 1, so an identity shortcut as well as the strided 1x1 ones.
    "resnet": {"base_channels": 4, "blocks": [2, 1, 1, 1], "embed_dim": 16},
    "xvector": {"channels": 16, "stats_channels": 24, "embed_dim": 16},
    "lstm_dvector": {"hidden_size": 16, "num_layers": 2, "embed_dim": 8},
    # Windows of 8 frames every 4, so the FRAMES-long rows are embedded as several partials.
    "ge2e_lstm": {
        "hidden_size": 16,
        "num_layers": 2,
        "embed_dim": 8,
        "partial_frames": 8,
        "partial_step_frames": 4,
    },
    "deep_speaker": {"channels": [4, 8], "blocks_per_stage": 1, "embed_dim": 16},
    # Two blocks in stage 1 (an identity shortcut), three Res2Net groups (two chained fusions),
    # global fusion from stage 2 so the chain has two steps.
    "eres2net": {
        "base_channels": 4,
        "blocks": [2, 1, 1, 1],
        "embed_dim": 16,
        "scale": 3,
        "local_fusion_from": 2,
        "global_fusion_from": 2,
    },
    # Two dense blocks (dilations 1 and 2); 4-frame CAM segments, so a 24-frame input (12 after
    # the TDNN's stride) spans several, the last one cut short.
    "campplus": {
        "head_channels": 4,
        "tdnn_channels": 16,
        "growth_rate": 8,
        "bottleneck_scale": 2,
        "block_layers": [2, 2],
        "embed_dim": 16,
        "segment_frames": 4,
    },
}


def build_on_meta(name: str) -> EncoderModule:
    """The full-size model without allocating or initialising weights: for names and counts."""
    with torch.device("meta"):
        return create_model(name)


def _families() -> list[str]:
    return sorted({build_on_meta(name).family for name in MODEL_NAMES})


FAMILIES = _families()


def _randomise_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics, so eval-mode checks exercise them."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            shape = module.running_mean.shape
            module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))


def _build(family: str) -> EncoderModule:
    """The small model of a family, with non-trivial BatchNorm statistics."""
    assert family in SMALL_HPARAMS, f"add small hyperparameters for model family {family!r}"
    torch.manual_seed(0)
    model = create_model(family, **SMALL_HPARAMS[family])
    with torch.no_grad():
        _randomise_norm_stats(model)
    return model


def _feats(model: EncoderModule, batch: int = BATCH, frames: int = FRAMES) -> torch.Tensor:
    return torch.randn(batch, frames, model.feat_dim, generator=torch.Generator().manual_seed(1))


def test_registry_holds_ecapa_variants():
    for name in ["ecapa_tdnn", "ecapa_tdnn_c512", "ecapa_tdnn_c1024", "ecapa_tdnn_c1024_mfa3072"]:
        assert name in MODEL_NAMES


def test_registry_holds_the_model_zoo():
    assert set(ZOO_NAMES) <= set(MODEL_NAMES)
    assert {"titanet", "resnet", "xvector", "lstm_dvector", "deep_speaker"} <= set(FAMILIES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_contract_and_tiny_forward_at_full_size(name):
    model = create_model(name).eval()
    assert isinstance(model, EncoderModule)
    assert isinstance(model.embed_dim, int) and isinstance(model.feat_dim, int)
    assert isinstance(model.min_frames, int) and model.min_frames >= 1
    assert model.family in MODEL_NAMES
    assert json.loads(json.dumps(model.hparams)) == model.hparams
    with torch.no_grad():
        emb = model(torch.randn(2, 8, model.feat_dim), torch.tensor([8, 5]))
    assert emb.shape == (2, model.embed_dim) and torch.isfinite(emb).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_output_shape_and_finite(family, training):
    model = _build(family).train(training)
    lengths = torch.tensor([FRAMES, FRAMES - 5, 7])
    with torch.no_grad():
        emb = model(_feats(model), lengths)
    assert isinstance(emb, torch.Tensor)
    assert emb.shape == (BATCH, model.embed_dim)
    assert emb.dtype == torch.float32
    assert torch.isfinite(emb).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_reaches_every_parameter(family):
    model = _build(family).train()
    emb = model(_feats(model), torch.tensor([FRAMES, FRAMES - 5, 7]))
    # A fixed random projection: the sum of a batch-normalised output has zero gradient.
    projection = torch.randn(emb.shape, generator=torch.Generator().manual_seed(2))
    (emb * projection).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_does_not_change_the_embedding(family):
    model = _build(family).eval()
    short_len, long_len = 11, 29
    short = torch.randn(1, short_len, model.feat_dim)
    batch = torch.randn(2, long_len, model.feat_dim) * 5  # noise in the padding, not zeros
    batch[0, :short_len] = short[0]
    lengths = torch.tensor([short_len, long_len])
    with torch.no_grad():
        alone = model(short)
        padded = model(batch, lengths)
    torch.testing.assert_close(padded[0], alone[0], atol=1e-5, rtol=1e-5)
    if not hasattr(model, "attention_weights"):  # only attentive pooling has frame weights
        return
    with torch.no_grad():
        alpha_alone = model.attention_weights(short)
        alpha_padded = model.attention_weights(batch, lengths)
    torch.testing.assert_close(alpha_padded[0, :, :short_len], alpha_alone[0], atol=1e-6, rtol=1e-5)
    assert (alpha_padded[0, :, short_len:] == 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuild_from_family_and_hparams(family):
    model = _build(family).eval()
    hparams = json.loads(json.dumps(model.hparams))  # as read back from a bundle's config.json
    rebuilt = create_model(model.family, **hparams).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert type(rebuilt) is type(model)
    assert rebuilt.hparams == model.hparams
    feats, lengths = _feats(model), torch.tensor([FRAMES, 9, 13])
    with torch.no_grad():
        assert torch.equal(rebuilt(feats, lengths), model(feats, lengths))


@pytest.mark.parametrize("family", FAMILIES)
def test_min_frames_input_works(family):
    model = _build(family)
    frames = model.min_frames
    with torch.no_grad():
        for training in (True, False):
            emb = model.train(training)(_feats(model, batch=2, frames=frames))
            assert emb.shape == (2, model.embed_dim) and torch.isfinite(emb).all()
        # A min_frames utterance padded inside a longer batch also works.
        emb = model.eval()(_feats(model, batch=2, frames=10), torch.tensor([frames, 10]))
        assert torch.isfinite(emb).all()
    with pytest.raises(ValueError, match="at least"):
        model(_feats(model, batch=2, frames=frames - 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_lengths_none_equals_full_lengths(family):
    model = _build(family).eval()
    feats = _feats(model)
    with torch.no_grad():
        assert torch.equal(model(feats), model(feats, torch.full((BATCH,), FRAMES)))


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_input_shapes_are_rejected(family):
    model = _build(family)
    with pytest.raises(ValueError, match="features per frame"):
        model(torch.randn(2, FRAMES, model.feat_dim + 1))
    with pytest.raises(ValueError, match="lengths"):
        model(_feats(model), torch.tensor([FRAMES]))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_matches_eager_for_any_shape(family):
    """``torch.jit.script`` compiles the model to one graph for every batch size and frame count
    (tracing would bake in the example's), equal to eager before and after a save/load round trip."""
    model = _build(family).eval()
    generator = torch.Generator().manual_seed(3)
    batches = []  # different B and T, padded rows whose padding is noise, not zeros
    for frames, lengths in [(FRAMES, [FRAMES, FRAMES - 5, 7]), (FRAMES + 13, [12, FRAMES + 13])]:
        feats = torch.randn(len(lengths), frames, model.feat_dim, generator=generator)
        batches.append((feats, torch.tensor(lengths)))
    # Off: the profiling executor's optimisation passes, which take seconds on CPU on the first two
    # calls; under test is that the code compiles to a shape-generic graph, which the interpreter
    # runs as it is. test_export.py runs a model under the default executor.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        scripted = torch.jit.script(model)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        for compiled in (scripted, loaded):
            for feats, lengths in batches:
                expected = model(feats, lengths)
                torch.testing.assert_close(compiled(feats, lengths), expected, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(compiled(feats), model(feats), atol=1e-6, rtol=1e-5)
        # The input checks survive compilation, as torch.jit.Error with the eager message.
        with pytest.raises(torch.jit.Error, match="features per frame"):
            scripted(torch.randn(2, FRAMES, model.feat_dim + 1))
        with pytest.raises(torch.jit.Error, match="lengths must be"):
            loaded(feats, torch.tensor([FRAMES]))


# Exact counts without any classifier. WeSpeaker reports ECAPA_TDNN_GLOB_c512 as 6.19M and
# ECAPA_TDNN_GLOB_c1024 as 14.65M (truncated); 3D-Speaker reports 20.8M for its C=1024 ECAPA.
# TitaNet's paper figures include a 16,681-speaker head: see test_zoo.py. WeSpeaker reports
# ResNet34 as 6.63M, ResNet221 as 23.79M and ResNet293 as 28.62M (truncated: 28,626,016; see
# tests/convert/test_wespeaker.py); Deep Speaker's paper ResCNN as 24M; 3D-Speaker CAM++ (512-d,
# VoxCeleb) as 7.18M (egs/voxceleb/sv-cam++/README.md), ERes2Net-base as 6.61M and ERes2NetV2 as
# 17.8M (egs/voxceleb READMEs); the other ERes2Net counts equal those of speakerlab's own classes
# (tests/convert/test_speakerlab_eres2net.py). The x-vector TDNN (24 filterbanks, up to segment6)
# and the GE2E LSTM have no published encoder-only count to hold them to.
EXPECTED_PARAMETERS = {
    "campplus": 7_176_224,
    "campplus_base": 7_176_224,
    "ecapa_tdnn": 6_194_432,
    "ecapa_tdnn_c512": 6_194_432,
    "ecapa_tdnn_c1024": 14_660_800,
    "ecapa_tdnn_c1024_mfa3072": 20_767_936,
    "titanet": 22_130_352,
    "titanet_s": 3_278_448,
    "titanet_m": 10_226_096,
    "titanet_l": 22_130_352,
    "resnet": 6_634_336,
    "resnet34": 6_634_336,
    "resnet152": 19_814_880,
    "resnet221": 23_792_224,
    "resnet293": 28_626_016,
    "xvector": 4_211_604,
    "xvector_speechbrain": 4_211_604,
    "lstm_dvector": 4_663_296,
    # Resemblyzer's pretrained.pt holds these 1,423,616 plus GE2E's similarity_weight and _bias.
    "ge2e_lstm": 1_423_616,
    "deep_speaker": 24_165_568,
    "deep_speaker_rescnn": 24_165_568,
    "deep_speaker_small": 98_040,
    "eres2net": 6_610_688,
    "eres2net_base": 6_610_688,
    "eres2net_large": 29_016_704,
    "eres2net_huge": 55_165_024,
    "eres2netv2": 17_859_632,
    "eres2netv2_w24s4ep4": 53_513_632,
}
EXPECTED_MILLIONS = {
    "campplus_base": (7.18, 2),
    "ecapa_tdnn_c512": (6.19, 2),
    "ecapa_tdnn_c1024": (14.66, 2),
    "ecapa_tdnn_c1024_mfa3072": (20.8, 1),
    "resnet34": (6.63, 2),
    "resnet221": (23.79, 2),
    "deep_speaker_rescnn": (24, 0),
    "eres2net_base": (6.61, 2),
    "eres2netv2": (17.86, 2),
}


def test_every_model_has_an_expected_parameter_count():
    assert sorted(EXPECTED_PARAMETERS) == MODEL_NAMES


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_parameter_count(name):
    count = count_parameters(build_on_meta(name))
    assert count == EXPECTED_PARAMETERS[name]
    if name in EXPECTED_MILLIONS:
        millions, digits = EXPECTED_MILLIONS[name]
        assert round(count / 1e6, digits) == millions


def test_count_parameters_trainable_only():
    model = create_model("ecapa_tdnn", channels=16, mfa_channels=48, embed_dim=8)
    total = count_parameters(model)
    model.stem.requires_grad_(False)
    frozen = sum(p.numel() for p in model.stem.parameters())
    assert count_parameters(model, trainable_only=True) == total - frozen
    assert count_parameters(model) == total


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_model("ecapa_tdn")
    message = str(info.value)
    assert "ecapa_tdn" in message and "did you mean 'ecapa_tdnn'" in message
    for name in MODEL_NAMES:
        assert name in message


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bad_keyword_names_argument_and_valid_ones(name):
    with pytest.raises(ConfigError) as info:
        create_model(name, embedding_dim=256)
    message = str(info.value)
    assert "embedding_dim" in message and "embed_dim" in message and "feat_dim" in message
