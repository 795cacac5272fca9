"""TorchScript export, registry-driven: the saved file, loaded with torch.jit.load, equals eager."""

from __future__ import annotations

import pytest
import torch

from speakerprint.export import export_torchscript
from speakerprint.features import Fbank, FbankConfig
from speakerprint.models.bundle import load_bundle
from speakerprint.onnx_runtime import read_sidecar
from tests.models.test_encoders import FAMILIES, _build

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_with_features_equals_eager(family, tmp_path):
    """Features and encoder scripted together (the encoder alone is script_encoder, whose parity
    tests/models holds for every family)."""
    model = _build(family).eval()
    config = FbankConfig(num_mel_bins=model.feat_dim)
    fbank = Fbank(config).eval()
    wav_path = export_torchscript(model, tmp_path / "w.pt", with_features=True, fbank_config=config)
    on_wav = torch.jit.load(str(wav_path))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for batch, num_samples, lengths in [(1, 5000, [5000]), (3, 9100, [9100, 3000, 6543])]:
            wav = 0.1 * torch.randn(batch, num_samples, generator=generator)
            lengths = torch.tensor(lengths)
            feats, frames = fbank(wav, lengths)
            expected = model(feats, frames)
            atol = 1e-3 * float(expected.abs().max())  # the DFT matmul, see test_onnx.py
            torch.testing.assert_close(on_wav(wav, lengths), expected, rtol=0, atol=atol)
    assert read_sidecar(wav_path)["input_kind"] == "waveform"
    assert read_sidecar(wav_path)["model_format"] == "torchscript"


def test_torchscript_without_features_equals_eager(small_bundle, tmp_path):
    bundle = load_bundle(small_bundle)
    path = export_torchscript(small_bundle, tmp_path / "f.pt", with_features=False)
    feats = torch.randn(3, 40, 80, generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([40, 13, 27])
    with torch.no_grad():
        emb = torch.jit.load(str(path))(feats, lengths)
        torch.testing.assert_close(emb, bundle.encoder(feats, lengths), rtol=1e-5, atol=1e-5)
    assert read_sidecar(path)["input_kind"] == "features"


def test_torchscript_of_a_bundle_folder(small_bundle, tmp_path):
    path = export_torchscript(small_bundle, tmp_path / "b.pt", with_features=True)
    bundle = load_bundle(small_bundle)
    wav = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([16000, 7000])
    with torch.no_grad():
        emb = torch.jit.load(str(path))(wav, lengths)
    expected = bundle.embed_batch(wav, lengths)
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-3 * float(expected.abs().max()))
    assert read_sidecar(path)["threshold"]["value"] == 0.25


def test_export_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(TypeError, match="bundle folder, a Bundle or an EncoderModule"):
        export_torchscript(torch.nn.Linear(2, 2), tmp_path / "x.pt", with_features=False)
