"""NeMo TitaNet ``.nemo`` archives -> speakerprint bundles, checked against NeMo's forward.

NeMo is too heavy to install here, so the archives are built from its documented layout: a tar of
``model_config.yaml`` and ``model_weights.ckpt`` (``SaveRestoreConnector``), with the keys and
shapes that ``ConvASREncoder`` / ``JasperBlock`` / ``SqueezeExcite`` / ``SpeakerDecoder`` /
``AttentivePoolLayer`` / ``TDNNModule`` / ``FilterbankFeatures`` register (NeMo's source, read for
this test). The reference embedding is NeMo's forward written out below with plain
``torch.nn.functional`` ops over that state dict, not through any speakerprint module; its mel
filters are librosa's (``tests/fixtures/peers/nemo``, from ``scripts/peer_fixtures/nemo.py``), as
NeMo stores them. Random weights; BatchNorm affine parameters far from their init and running
statistics fitted to real speech, then moved off it; quiet channels (where NeMo's BatchNorm eps of
1e-3 matters) and dead ones (where its pooling clamp matters).
"""

from __future__ import annotations

import copy
import hashlib
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.convert import convert
from speakerprint.convert.nemo import map_state_dict, titanet_args_from_nemo
from speakerprint.errors import BundleError
from speakerprint.features import frontend_from_dict
from speakerprint.features.nemo import NemoFeatures, NemoFeaturesConfig, slaney_mel_filters
from speakerprint.inference.encoder import SpeakerEncoder
from speakerprint.models.bundle import load_bundle
from speakerprint.models.titanet import TitaNet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peers" / "nemo"
BN_EPS_JASPER = 1e-3  # JasperBlock's BatchNorm1d(eps=1e-3)
BN_EPS_DEFAULT = 1e-5  # TDNNModule's and the decoder's BatchNorm1d
POOL_EPS = 1e-10  # AttentivePoolLayer / get_statistics_with_mask


def _block(filters, repeat, kernel, residual, dropout):
    return {
        "filters": filters,
        "repeat": repeat,
        "kernel": [kernel],
        "stride": [1],
        "dilation": [1],
        "dropout": dropout,
        "residual": residual,
        "separable": True,
        "se": True,
        "se_context_size": -1,
    }


def small_config() -> dict:
    """A resolved model_config.yaml as NeMo saves it: titanet-large.yaml with small widths."""
    return {
        "sample_rate": 16000,
        "train_ds": {"manifest_filepath": None, "batch_size": 64},
        "model_defaults": {"filters": 32, "repeat": 3, "dropout": 0.1, "separable": True},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.025,
            "sample_rate": 16000,
            "window_stride": 0.01,
            "window": "hann",
            "features": 80,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 1e-05,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": 80,
            "activation": "relu",
            "conv_mask": True,
            "jasper": [
                _block(32, 1, 3, False, 0.0),
                _block(32, 3, 7, True, 0.1),
                _block(32, 3, 11, True, 0.1),
                _block(32, 3, 15, True, 0.1),
                _block(96, 1, 1, False, 0.0),
            ],
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
            "feat_in": 96,
            "num_classes": 50,
            "pool_mode": "attention",
            "emb_sizes": 24,
            "attention_channels": 16,
            "angular": True,
        },
        "loss": {"_target_": "nemo.collections.asr.losses.angularloss.AngularSoftmaxLoss"},
    }


def nemo_state_dict(cfg: dict, *, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``EncDecSpeakerLabelModel.state_dict()`` for ``cfg``: NeMo's key names and shapes."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def rand(*shape, scale=1.0):
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=generator) * scale

    def conv(key, out_channels, in_channels, kernel, bias=False):
        state[f"{key}.weight"] = rand(
            out_channels, in_channels, kernel, scale=1 / math.sqrt(in_channels * kernel)
        )
        if bias:
            state[f"{key}.bias"] = rand(out_channels, scale=0.1)

    def batch_norm(key, channels):
        if device == "meta":
            state[f"{key}.running_var"] = rand(channels)
        else:  # log-uniform in [1e-3, 1]
            state[f"{key}.running_var"] = 10 ** (-3 * torch.rand(channels, generator=generator))
        state[f"{key}.weight"] = 1.0 + 0.3 * rand(channels)
        state[f"{key}.bias"] = 0.2 * rand(channels)
        state[f"{key}.running_mean"] = 0.3 * rand(channels)
        state[f"{key}.num_batches_tracked"] = torch.tensor(1000, device=device)

    pre = cfg["preprocessor"]
    win_length = int(pre["window_size"] * pre["sample_rate"])
    if device == "meta":
        state["preprocessor.featurizer.window"] = rand(win_length)
        state["preprocessor.featurizer.fb"] = rand(1, pre["features"], pre["n_fft"] // 2 + 1)
    else:
        state["preprocessor.featurizer.window"] = torch.hann_window(win_length, periodic=False)
        fb = np.load(FIXTURES / f"mel_fb_{pre['sample_rate']}_{pre['n_fft']}_{pre['features']}.npy")
        state["preprocessor.featurizer.fb"] = torch.from_numpy(fb)[None]

    in_channels = cfg["encoder"]["feat_in"]
    for b, block in enumerate(cfg["encoder"]["jasper"]):
        prefix, planes = f"encoder.encoder.{b}", block["filters"]
        kernel, repeat = block["kernel"][0], block["repeat"]
        index, channels = 0, in_channels
        for i in range(repeat):  # [depthwise, pointwise, BN, ReLU, Dropout] ... [dw, pw, BN], SE
            conv(f"{prefix}.mconv.{index}.conv", channels, 1, kernel)
            conv(f"{prefix}.mconv.{index + 1}.conv", planes, channels, 1)
            batch_norm(f"{prefix}.mconv.{index + 2}", planes)
            index += 5 if i < repeat - 1 else 3
            channels = planes
        squeeze = planes // 8
        state[f"{prefix}.mconv.{index}.fc.0.weight"] = rand(squeeze, planes, scale=planes**-0.5)
        state[f"{prefix}.mconv.{index}.fc.2.weight"] = rand(planes, squeeze, scale=squeeze**-0.5)
        if block["residual"]:
            conv(f"{prefix}.res.0.0.conv", planes, in_channels, 1)
            batch_norm(f"{prefix}.res.0.1", planes)
        in_channels = planes

    dec = cfg["decoder"]
    pooled, attention = 2 * in_channels, dec.get("attention_channels", 128)
    conv("decoder._pooling.attention_layer.0.conv_layer", attention, 3 * in_channels, 1, True)
    batch_norm("decoder._pooling.attention_layer.0.bn", attention)
    conv("decoder._pooling.attention_layer.2", in_channels, attention, 1, True)
    batch_norm("decoder.emb_layers.0.0", pooled)
    conv("decoder.emb_layers.0.1", dec["emb_sizes"], pooled, 1, True)
    state["decoder.final.weight"] = rand(dec["num_classes"], dec["emb_sizes"])
    if not dec.get("angular", False):
        state["decoder.final.bias"] = rand(dec["num_classes"])
    return state


def calibrate(state: dict, cfg: dict, wavs: list[torch.Tensor], seed: int = 1) -> None:
    """Set every BatchNorm's running statistics near those of real speech (``_bn``), in place,
    so that activations keep a sensible scale and the embedding depends on its input."""
    feats = [nemo_features(state, cfg["preprocessor"], wav) for wav in wavs]
    assert len({length for _, length in feats}) == 1, "calibrate on equal lengths"
    x = torch.cat([f for f, _ in feats])
    with torch.no_grad():
        nemo_encode(state, cfg, x, feats[0][1], calibrate=torch.Generator().manual_seed(seed))


def write_nemo(path: Path, cfg: dict, state: dict, *, gzip: bool = False) -> Path:
    """``SaveRestoreConnector._make_nemo_file_from_folder``: the folder tarred as ``.``."""
    folder = path.parent / f"{path.stem}_folder"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    torch.save(state, folder / "model_weights.ckpt")
    with tarfile.open(path, "w:gz" if gzip else "w:") as tar:
        tar.add(folder, arcname=".")
    return path


# ------------------------------------------------ NeMo's forward, functionally, over its state dict


def nemo_features(state: dict, pre: dict, wav: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``FilterbankFeatures.forward`` in eval mode for one waveform -> ((1, F, T), seq_len)."""
    sample_rate = pre["sample_rate"]
    hop, n_fft = int(pre["window_stride"] * sample_rate), pre["n_fft"]
    win_length = int(pre["window_size"] * sample_rate)
    x = wav[None].clone()
    seq_len = (x.shape[1] + n_fft // 2 * 2 - n_fft) // hop
    x = torch.cat((x[:, 0].unsqueeze(1), x[:, 1:] - 0.97 * x[:, :-1]), dim=1)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win_length,
        center=True,
        window=state["preprocessor.featurizer.window"],
        return_complex=True,
        pad_mode="constant",
    )
    x = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1)).pow(2.0)
    x = torch.matmul(state["preprocessor.featurizer.fb"], x)
    x = torch.log(x + 2**-24)
    valid = x[:, :, :seq_len]
    mean = valid.mean(dim=2, keepdim=True)
    std = valid.std(dim=2, keepdim=True) + 1e-5  # unbiased, as normalize_batch
    x = (x - mean) / std
    x[:, :, seq_len:] = 0.0
    if x.shape[-1] % 16:
        x = F.pad(x, (0, 16 - x.shape[-1] % 16))  # pad_to: 16
    return x, seq_len


def _masked_conv(x, length, weight, groups=1):
    """MaskedConv1d: zero the frames beyond the length, then a 'same' padded conv."""
    mask = (torch.arange(x.shape[-1]) < length)[None, None]
    return F.conv1d(x * mask, weight, padding=(weight.shape[-1] - 1) // 2, groups=groups)


def _bn(x, state, key, eps, calibrate=None, mask=None):
    if calibrate is not None:
        # Running statistics fitted to this batch's valid frames, then moved off them: the
        # variance scaled by up to 1/10 (as a channel that was quieter in training) and the mean
        # shifted by a fifth of the std. Affine parameters stay as drawn.
        weight = (
            torch.ones_like(x[:1, :1]) if mask is None else mask.to(x.dtype).expand_as(x[:, :1])
        )
        count = weight.sum()
        mean = (x * weight).sum(dim=(0, 2)) / count
        var = ((x - mean[:, None]).square() * weight).sum(dim=(0, 2)) / count
        channels = mean.shape[0]
        state[f"{key}.running_mean"] = mean + 0.2 * var.sqrt() * torch.randn(
            channels, generator=calibrate
        )
        state[f"{key}.running_var"] = var * 10 ** (-torch.rand(channels, generator=calibrate))
    return F.batch_norm(
        x,
        state[f"{key}.running_mean"],
        state[f"{key}.running_var"],
        state[f"{key}.weight"],
        state[f"{key}.bias"],
        training=False,
        eps=eps,
    )


def nemo_embedding(state: dict, cfg: dict, wav: torch.Tensor) -> torch.Tensor:
    """``EncDecSpeakerLabelModel.forward`` in eval mode for one waveform -> ``embs`` (1, D)."""
    x, length = nemo_features(state, cfg["preprocessor"], wav)
    return nemo_encode(state, cfg, x, length)


def nemo_encode(state, cfg, x, length, calibrate=None):
    """Encoder + decoder on features (B, F, T) of ``length`` valid frames each -> (B, D).

    With a ``calibrate`` generator, every BatchNorm's running statistics are first set from the
    batch (see ``_bn``); the state dict is edited in place."""
    frames = x.shape[-1]
    mask = (torch.arange(frames) < length)[None, None]
    for b, block in enumerate(cfg["encoder"]["jasper"]):
        prefix, repeat = f"encoder.encoder.{b}", block["repeat"]
        layers = []
        for i in range(repeat):
            layers += ["depthwise", "pointwise", "bn"] + (["relu", "dropout"] * (i < repeat - 1))
        layers.append("se")
        out = x
        for index, kind in enumerate(layers):
            key = f"{prefix}.mconv.{index}"
            if kind == "depthwise":
                out = _masked_conv(out, length, state[f"{key}.conv.weight"], groups=out.shape[1])
            elif kind == "pointwise":
                out = _masked_conv(out, length, state[f"{key}.conv.weight"])
            elif kind == "bn":
                out = _bn(out, state, key, BN_EPS_JASPER, calibrate, mask)
            elif kind == "relu":
                out = F.relu(out)
            elif kind == "se":  # SqueezeExcite, global context
                out = out.masked_fill(~mask, 0.0)
                context = out.sum(dim=-1) / mask.sum(dim=-1)
                gate = F.linear(
                    F.relu(F.linear(context, state[f"{key}.fc.0.weight"])),
                    state[f"{key}.fc.2.weight"],
                )
                out = out * torch.sigmoid(gate)[:, :, None]
        if block["residual"]:
            res = _masked_conv(x, length, state[f"{prefix}.res.0.0.conv.weight"])
            out = out + _bn(res, state, f"{prefix}.res.0.1", BN_EPS_JASPER, calibrate, mask)
        x = F.relu(out)

    # AttentivePoolLayer
    weights = mask / mask.sum(dim=2, keepdim=True)
    mean = (weights * x).sum(dim=2)
    std = torch.sqrt((weights * (x - mean[:, :, None]).pow(2)).sum(2).clamp(POOL_EPS))
    attn = torch.cat(
        [x, mean[:, :, None].repeat(1, 1, frames), std[:, :, None].repeat(1, 1, frames)], dim=1
    )
    layer = "decoder._pooling.attention_layer"
    attn = F.conv1d(
        attn, state[f"{layer}.0.conv_layer.weight"], state[f"{layer}.0.conv_layer.bias"]
    )
    attn = _bn(F.relu(attn), state, f"{layer}.0.bn", BN_EPS_DEFAULT, calibrate, mask)
    attn = F.conv1d(torch.tanh(attn), state[f"{layer}.2.weight"], state[f"{layer}.2.bias"])
    alpha = F.softmax(attn.masked_fill(~mask, float("-inf")), dim=2)
    mu = (alpha * x).sum(dim=2)
    sg = torch.sqrt((alpha * (x - mu[:, :, None]).pow(2)).sum(2).clamp(POOL_EPS))
    pooled = torch.cat((mu, sg), dim=1)[:, :, None]
    # SpeakerDecoder.emb_layers[0] = BatchNorm1d + Conv1d(kernel 1)
    emb = _bn(pooled, state, "decoder.emb_layers.0.0", BN_EPS_DEFAULT, calibrate)
    emb = F.conv1d(
        emb, state["decoder.emb_layers.0.1.weight"], state["decoder.emb_layers.0.1.bias"]
    )
    return emb[:, :, 0]


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, sample_rate = sf.read(FIXTURES / "speech.wav", dtype="float32")
    assert sample_rate == 16000
    return torch.from_numpy(wav)


@pytest.fixture(scope="module")
def small(tmp_path_factory, demo_root):
    """(config, NeMo state dict, archive path, converted bundle path)."""
    from speakerprint.audio import load_audio

    folder = tmp_path_factory.mktemp("nemo")
    cfg = small_config()
    state = nemo_state_dict(cfg)
    clips = [sorted(d.glob("*.opus"))[0] for d in sorted(demo_root.glob("SPEAKER*"))[:6]]
    wavs = [torch.from_numpy(load_audio(c, 16000, duration_s=1.5)) for c in clips]
    # As in trained models: quiet channels, whose BatchNorm variance is near NeMo's eps of 1e-3
    # (the prolog's and one sub-block's pointwise conv scaled down), and dead channels after the
    # epilog's ReLU, whose pooled std is NeMo's clamp of 1e-10. Both make the layout arguments
    # norm_eps and pooling_eps matter (test_layout_arguments_matter).
    state["encoder.encoder.0.mconv.1.conv.weight"] *= 0.03
    state["encoder.encoder.1.mconv.6.conv.weight"] *= 0.03
    state["encoder.encoder.4.mconv.2.bias"][:8] = -20.0
    calibrate(state, cfg, wavs)
    archive = write_nemo(folder / "titanet_small.nemo", cfg, state)
    bundle = convert("nemo", archive, folder / "bundle")
    return cfg, state, archive, bundle


def _cosine(a, b) -> float:
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    return float(F.cosine_similarity(a, b, dim=0))


# ---------------------------------------------------------------------------------- tests


def test_converted_titanet_gives_nemos_embedding(small, speech):
    cfg, state, _, bundle = small
    with torch.no_grad():
        reference = nemo_embedding(state, cfg, speech)[0]
        short = nemo_embedding(state, cfg, speech[:27_000])[0]
    encoder = SpeakerEncoder.from_pretrained(bundle)
    ours = encoder.embed(speech.numpy())
    assert ours.shape == (24,)
    print(
        f"\nNeMo TitaNet (functional reference) vs converted bundle: cosine {_cosine(ours, reference):.7f}"
    )
    assert _cosine(ours, reference) >= 0.9999
    # A padded batch through the bundle: each row still NeMo's embedding of that row alone.
    wav = torch.zeros(2, len(speech))
    wav[0], wav[1, :27_000] = speech, speech[:27_000]
    batch = load_bundle(bundle).embed_batch(wav, torch.tensor([len(speech), 27_000]))
    assert _cosine(batch[0], reference) >= 0.9999
    assert _cosine(batch[1], short) >= 0.9999
    assert _cosine(reference, short) < 0.9999  # the two rows differ: the check can fail


def test_features_are_nemos_featurizer(small, speech):
    cfg, state, _, bundle = small
    reference, seq_len = nemo_features(state, cfg["preprocessor"], speech)
    features = frontend_from_dict(load_bundle(bundle).fbank.config.to_dict())
    assert isinstance(features, NemoFeatures)
    feats, frames = features.eval()(speech[None])
    assert int(frames[0]) == seq_len == len(speech) // 160
    assert feats.shape == (1, reference.shape[-1], 80)  # padded to a multiple of 16 alike
    torch.testing.assert_close(feats[0].T, reference[0], atol=2e-4, rtol=0)


def _swap_norms(state: dict, a: str, b: str) -> dict:
    state = dict(state)
    for t in ("weight", "bias", "running_mean", "running_var"):
        state[f"{a}.{t}"], state[f"{b}.{t}"] = state[f"{b}.{t}"], state[f"{a}.{t}"]
    return state


@pytest.mark.parametrize(
    "change",
    [{"norm_eps": 1e-5}, {"pooling_eps": 1e-7}, "swap two same-shaped BatchNorms"],
    ids=str,
)
def test_layout_arguments_matter(small, speech, change):
    """The reference check can fail: NeMo's eps values and every BN's place change the result."""
    cfg, state, _, bundle = small
    with torch.no_grad():
        reference = nemo_embedding(state, cfg, speech)[0]
    loaded = load_bundle(bundle)
    args, weights = loaded.encoder.hparams, loaded.encoder.state_dict()
    assert (args["se_bias"], args["norm_eps"], args["pooling_eps"]) == (False, 1e-3, 1e-10)
    if isinstance(change, dict):
        args = {**args, **change}
    else:
        weights = _swap_norms(weights, "mega_blocks.0.convs.0.norm", "mega_blocks.0.residual_norm")
    other = TitaNet(**args).eval()
    other.load_state_dict(weights)
    feats, frames = loaded.fbank(speech[None])
    with torch.no_grad():
        assert _cosine(other(feats, frames), reference) < 0.9999


@pytest.mark.parametrize(
    "name, args",
    [
        ("mel_fb_16000_512_80.npy", (16000, 512, 80, 0.0, 8000.0)),
        ("mel_fb_8000_256_64_20_3800.npy", (8000, 256, 64, 20.0, 3800.0)),
    ],
)
def test_mel_filters_are_librosas(name, args):
    expected = torch.from_numpy(np.load(FIXTURES / name))
    ours = slaney_mel_filters(*args)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-9)


def test_features_config_round_trip_and_nemo_defaults(small):
    cfg, _, _, bundle = small
    config = load_bundle(bundle).fbank.config
    assert config.to_dict()["kind"] == "nemo"
    assert (config.win_length, config.hop_length, config.n_fft, config.pad_to) == (
        400,
        160,
        512,
        16,
    )
    assert config.dither == 1e-5 and config.log_zero_guard_value == 2**-24
    assert NemoFeaturesConfig.from_dict(config.to_dict()) == config
    assert (config.frame_length_ms, config.frame_shift_ms) == (25.0, 10.0)


def test_bundle_info_lists_the_head_and_the_archive(small):
    _, state, archive, bundle = small
    info = load_bundle(bundle).info
    assert info["source"] == "nemo" and info["checkpoint"] == archive.name
    assert info["checkpoint_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "decoder.final.weight" in info["dropped_keys"]
    assert set(info["checked_buffers"]) == {
        "preprocessor.featurizer.fb",
        "preprocessor.featurizer.window",
    }
    assert info["num_training_speakers"] == 50
    assert info["peer_config"]["decoder"]["pool_mode"] == "attention"


def test_gzip_archive_and_extracted_folder(small, speech, tmp_path):
    cfg, state, archive, bundle = small
    expected = load_bundle(bundle).embed_batch(speech[None])
    gz = write_nemo(tmp_path / "model.nemo", cfg, state, gzip=True)
    for source in (gz, tmp_path / "model_folder"):
        out = convert("nemo", source, tmp_path / f"bundle_{source.name}")
        torch.testing.assert_close(load_bundle(out).embed_batch(speech[None]), expected)


def test_cli_converts_an_archive(small, speech, tmp_path):
    _, _, archive, bundle = small
    out = tmp_path / "cli_bundle"
    result = CliRunner().invoke(app, ["convert", "nemo", str(archive), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    torch.testing.assert_close(
        load_bundle(out).embed_batch(speech[None]), load_bundle(bundle).embed_batch(speech[None])
    )
    bad = CliRunner().invoke(
        app, ["convert", "nemo", str(tmp_path / "none.nemo"), "--out", str(out)]
    )
    assert bad.exit_code != 0 and "none.nemo" in bad.output and "Traceback" not in bad.output


def _edit_missing(state, cfg):
    del state["encoder.encoder.2.mconv.5.conv.weight"]
    return "encoder.encoder.2.mconv.5.conv.weight"


def _edit_renamed(state, cfg):
    state["decoder.emb_layers.0.1.kernel"] = state.pop("decoder.emb_layers.0.1.weight")
    return "decoder.emb_layers.0.1.kernel"


def _edit_shape(state, cfg):
    state["encoder.encoder.1.mconv.13.fc.0.weight"] = torch.zeros(3, 32)
    return "mega_blocks.0.se.squeeze.weight"


def _edit_extra(state, cfg):
    state["encoder.encoder.4.mconv.3.fc.0.bias"] = torch.zeros(12)
    return "encoder.encoder.4.mconv.3.fc.0.bias"


def _edit_filters(state, cfg):
    state["preprocessor.featurizer.fb"] = state["preprocessor.featurizer.fb"] * 1.01
    return "preprocessor.featurizer.fb"


def _edit_pool_mode(state, cfg):
    cfg["decoder"]["pool_mode"] = "xvector"
    return "pool_mode"


def _edit_dense(state, cfg):
    cfg["encoder"]["jasper"][2]["residual_dense"] = True
    return "residual_dense"


@pytest.mark.parametrize(
    "edit",
    [
        _edit_missing,
        _edit_renamed,
        _edit_shape,
        _edit_extra,
        _edit_filters,
        _edit_pool_mode,
        _edit_dense,
    ],
)
def test_bad_archives_name_the_file_and_the_key(small, tmp_path, edit):
    cfg, state, _, _ = small
    cfg, state = copy.deepcopy(cfg), dict(state)
    key = edit(state, cfg)
    archive = write_nemo(tmp_path / "bad.nemo", cfg, state)
    with pytest.raises(BundleError) as error:
        convert("nemo", archive, tmp_path / "out")
    assert "bad.nemo" in str(error.value) and key in str(error.value)
    assert not (tmp_path / "out").exists()


def test_files_that_are_not_nemo_archives(tmp_path):
    text = tmp_path / "notes.nemo"
    text.write_text("not a tar file\n")
    with pytest.raises(BundleError, match="notes.nemo.*not a NeMo .nemo archive"):
        convert("nemo", text, tmp_path / "out")
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "model_config.yaml").write_text(yaml.safe_dump(small_config()))
    (folder / "model_weights.ckpt").write_bytes(b"garbage")
    for name, members in [("no_weights.nemo", ["model_config.yaml"]), ("garbage.nemo", None)]:
        with tarfile.open(tmp_path / name, "w:") as tar:
            for member in members or ["model_config.yaml", "model_weights.ckpt"]:
                tar.add(folder / member, arcname=f"./{member}")
        with pytest.raises(BundleError, match=f"{name}.*model_weights.ckpt"):
            convert("nemo", tmp_path / name, tmp_path / "out")


# The published TitaNet-L config, examples/speaker_tasks/recognition/conf/titanet-large.yaml
# (model section; its interpolations as there), with the 16,681-speaker head of the paper.
TITANET_LARGE_YAML = (
    """
name: &name "TitaNet-L"
sample_rate: &sample_rate 16000
model:
  model_defaults:
    filters: 1024
    repeat: 3
    dropout: 0.1
    separable: true
    se: true
    se_context_size: -1
    kernel_size_factor: 1.0
  preprocessor:
    _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
    normalize: "per_feature"
    window_size: 0.025
    sample_rate: *sample_rate
    window_stride: 0.01
    window: "hann"
    features: &n_mels 80
    n_fft: 512
    frame_splicing: 1
    dither: 0.00001
  encoder:
    _target_: nemo.collections.asr.modules.ConvASREncoder
    feat_in: *n_mels
    activation: relu
    conv_mask: true
    jasper:
"""
    + "".join(
        f"""
      -   filters: {filters}
          repeat: {repeat}
          kernel: [{kernel}]
          stride: [1]
          dilation: [1]
          dropout: {dropout}
          residual: {residual}
          separable: ${{model.model_defaults.separable}}
          se: ${{model.model_defaults.se}}
          se_context_size: ${{model.model_defaults.se_context_size}}
"""
        for filters, repeat, kernel, dropout, residual in [
            ("${model.model_defaults.filters}", 1, 3, 0.0, "false"),
            (
                "${model.model_defaults.filters}",
                "${model.model_defaults.repeat}",
                7,
                "${model.model_defaults.dropout}",
                "true",
            ),
            (
                "${model.model_defaults.filters}",
                "${model.model_defaults.repeat}",
                11,
                "${model.model_defaults.dropout}",
                "true",
            ),
            (
                "${model.model_defaults.filters}",
                "${model.model_defaults.repeat}",
                15,
                "${model.model_defaults.dropout}",
                "true",
            ),
            ("&enc_feat_out 3072", 1, 1, 0.0, "false"),
        ]
    )
    + """
  decoder:
    _target_: nemo.collections.asr.modules.SpeakerDecoder
    feat_in: *enc_feat_out
    num_classes: 16681
    pool_mode: 'attention'
    emb_sizes: 192
    angular: true
"""
)


def test_full_size_titanet_large_through_the_converter_on_meta(tmp_path):
    from speakerprint.convert.nemo import _parse_config

    cfg = _parse_config(TITANET_LARGE_YAML, "titanet-large.yaml")
    args = titanet_args_from_nemo(cfg, "titanet-large.yaml")
    assert (args["channels"], args["epilog_channels"], args["kernel_sizes"]) == (
        1024,
        3072,
        [7, 11, 15],
    )
    assert (args["repeat"], args["embed_dim"], args["attention_channels"]) == (3, 192, 128)
    state = nemo_state_dict(cfg, device="meta")
    mapped, dropped = map_state_dict(state, args, where="titanet-large")
    assert dropped[0] == "decoder.final.weight"
    with torch.device("meta"):
        model = TitaNet(**args)
    expected = model.state_dict()
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)
    buffers = ("running_mean", "running_var", "num_batches_tracked", "featurizer.")
    nemo_params = sum(v.numel() for k, v in state.items() if not any(b in k for b in buffers))
    ours = sum(p.numel() for p in model.parameters())
    head = state["decoder.final.weight"].numel()
    assert head == 192 * 16681
    assert ours == nemo_params - head == 22_122_288
    assert round((ours + head) / 1e6, 1) == 25.3  # the paper's TitaNet-L


def test_nemo_features_batch_padding_and_dither(speech):
    features = NemoFeatures(NemoFeaturesConfig())
    wav = torch.stack(
        [speech, torch.cat([speech[:20_000], torch.full((len(speech) - 20_000,), 0.5)])]
    )
    lengths = torch.tensor([len(speech), 20_000])
    feats, frames = features.eval()(wav, lengths)
    alone, alone_frames = features(speech[None, :20_000])
    assert frames.tolist() == [len(speech) // 160, 125] and alone_frames.tolist() == [125]
    torch.testing.assert_close(feats[1, :125], alone[0, :125], atol=1e-5, rtol=0)
    assert bool((feats[1, 125:] == 0).all())  # pad_value beyond the length
    torch.manual_seed(0)
    trained, _ = features.train()(speech[None])
    assert not torch.equal(trained, features.eval()(speech[None])[0])  # dither in training only


@pytest.mark.parametrize(
    "args, message",
    [
        ({"window": "povey"}, "window"),
        ({"win_length": 600}, "n_fft"),
        ({"normalize": "fixed"}, "normalize"),
        ({"high_freq_hz": 9000.0}, "high_freq_hz"),
        ({"pad_to": "16"}, "pad_to"),
    ],
)
def test_nemo_features_config_errors(args, message):
    from speakerprint.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        NemoFeaturesConfig(**args)
    with pytest.raises(ConfigError, match="unknown"):
        NemoFeaturesConfig.from_dict({"kind": "nemo", "window_size": 0.025})


def test_with_nemo_itself(tmp_path, speech):
    """Local only, where NeMo is installed: its own modules at TitaNet-L size, BN perturbed.

    Never run in this repository's environment (NeMo is not installable here)."""
    modules = pytest.importorskip("nemo.collections.asr.modules", reason="NeMo is not installed")
    from speakerprint.convert.nemo import _parse_config

    cfg = _parse_config(TITANET_LARGE_YAML, "titanet-large.yaml")
    cfg["decoder"]["num_classes"] = 100

    def build(name, cls):
        return cls(**{k: v for k, v in cfg[name].items() if k != "_target_"})

    model = torch.nn.ModuleDict(
        {
            "preprocessor": build("preprocessor", modules.AudioToMelSpectrogramPreprocessor),
            "encoder": build("encoder", modules.ConvASREncoder),
            "decoder": build("decoder", modules.SpeakerDecoder),
        }
    ).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                size = module.num_features
                module.running_mean.normal_(0, 0.3, generator=generator)
                module.running_var.uniform_(0.3, 2.0, generator=generator)
                module.weight.normal_(1.0, 0.3, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                assert module.weight.shape == (size,)
        feats, feat_lengths = model["preprocessor"](
            input_signal=speech[None], length=torch.tensor([len(speech)])
        )
        encoded, encoded_lengths = model["encoder"](audio_signal=feats, length=feat_lengths)
        _, expected = model["decoder"](encoder_output=encoded, length=encoded_lengths)
    archive = write_nemo(tmp_path / "titanet_l.nemo", cfg, model.state_dict())
    bundle = load_bundle(convert("nemo", archive, tmp_path / "bundle"))
    assert _cosine(bundle.embed_batch(speech[None])[0], expected[0]) >= 0.9999
    assert sum(p.numel() for p in bundle.encoder.parameters()) == 22_122_288
