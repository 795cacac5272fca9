"""Build the WeSpeaker test fixtures in tests/fixtures/peers/wespeaker/ with WeSpeaker's own code.

Run where ``wespeaker-unofficial`` (WeSpeaker's model files) and ``kaldi-native-fbank`` are
installed (both are in the dev venv):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python scripts/peer_fixtures/wespeaker.py

For each model (a narrow ECAPA_TDNN_GLOB and a narrow ResNet34) it builds the network with
WeSpeaker's classes, perturbs every BatchNorm's running statistics and affine parameters away from
their initial values, adds the AAM head as WeSpeaker's training does (``projection.*``), saves
``avg_model.pt`` (a ``torch.save``'d state dict, as WeSpeaker's average_model.py writes it) and a
``config.yaml`` in WeSpeaker's layout, and stores WeSpeaker's embedding of ``speech.wav``.

The peer-side features are what WeSpeaker computes with ``torchaudio.compliance.kaldi.fbank``
(int16-scale samples, Hamming window, ``use_energy=False``, ``energy_floor=0``, dither 0, other
options at their defaults) followed by subtracting the utterance mean. torchaudio has no CPU build
here, so they are computed with kaldi-native-fbank set to the same options; both implement Kaldi's
``compute-fbank-feats``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import soundfile as sf
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "peers" / "wespeaker"
CLIP = ROOT / "data" / "demo" / "speechocean762" / "SPEAKER0001" / "000010011.opus"
SAMPLE_RATE = 16000
CLIP_SECONDS = 2.5
NUM_SPEAKERS = 10  # rows of the AAM head that the checkpoints carry and the converter drops


def import_wespeaker_models(module: str) -> types.ModuleType:
    """``wespeaker.models.<module>`` without running the package __init__ (it imports torchaudio)."""
    if "wespeaker" not in sys.modules:
        # This script is itself named wespeaker.py: keep its folder out of the search.
        here = Path(__file__).resolve().parent
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
        spec = importlib.util.find_spec("wespeaker")
        if spec is None:
            raise SystemExit(
                "wespeaker is not installed: pip install --no-deps wespeaker-unofficial"
            )
        package = types.ModuleType("wespeaker")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["wespeaker"] = package
    return importlib.import_module(f"wespeaker.models.{module}")


def perturb_batchnorms(model: nn.Module, generator: torch.Generator) -> None:
    """Move every BatchNorm's statistics and affine parameters off their init (1, 0, 0, 1)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.num_batches_tracked.fill_(1000)
                if module.affine:
                    module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                    module.bias.copy_(0.1 * torch.randn(n, generator=generator))


def wespeaker_features(samples_int16: np.ndarray, num_mel_bins: int = 80) -> torch.Tensor:
    """(1, T, num_mel_bins): WeSpeaker's test-time fbank of int16 samples, mean-normalised."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.mel_opts.num_bins = num_mel_bins
    opts.energy_floor = 0.0
    opts.use_energy = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(SAMPLE_RATE, samples_int16.astype(np.float32).tolist())
    online.input_finished()
    frames = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    feats = torch.from_numpy(frames).float()
    return (feats - feats.mean(dim=0)).unsqueeze(0)


@torch.no_grad()
def wespeaker_embedding(model: nn.Module, feats: torch.Tensor) -> np.ndarray:
    """The embedding WeSpeaker's extraction keeps: the last output of the model's forward."""
    outputs = model.eval()(feats)
    emb = outputs[-1] if isinstance(outputs, tuple) else outputs
    return emb[0].numpy().astype(np.float32)


def add_head(model: nn.Module, embed_dim: int) -> None:
    """The AAM-softmax head WeSpeaker's train.py attaches as ``model.projection``."""
    projections = import_wespeaker_models("projections")
    model.add_module(
        "projection", projections.ArcMarginProduct(embed_dim, NUM_SPEAKERS, scale=32.0, margin=0.2)
    )


def small_ecapa(generator: torch.Generator) -> tuple[nn.Module, dict]:
    """ECAPA_TDNN with global-context attention, its fixed widths (MFA 1536, attention and SE 128)
    swapped for narrow ones built from WeSpeaker's own layer classes, so the file stays small."""
    ecapa = import_wespeaker_models("ecapa_tdnn")
    pooling = import_wespeaker_models("pooling_layers")
    channels, mfa, embed_dim = 16, 48, 24
    args = {
        "channels": channels,
        "feat_dim": 80,
        "embed_dim": embed_dim,
        "pooling_func": "ASTP",
        "global_context_att": True,
        "emb_bn": False,
    }
    model = ecapa.ECAPA_TDNN(**args)
    for layer in (model.layer2, model.layer3, model.layer4):
        layer.se_res2block[3] = ecapa.SE_Connect(channels, se_bottleneck_dim=8)
    model.conv = nn.Conv1d(3 * channels, mfa, kernel_size=1)
    model.pool = pooling.ASTP(in_dim=mfa, bottleneck_dim=12, global_context_att=True)
    model.bn = nn.BatchNorm1d(model.pool.get_out_dim())
    model.linear = nn.Linear(model.pool.get_out_dim(), embed_dim)
    perturb_batchnorms(model, generator)
    add_head(model, embed_dim)
    return model, {"model": "ECAPA_TDNN", "model_args": args}


def small_resnet34(generator: torch.Generator) -> tuple[nn.Module, dict]:
    """ResNet34's blocks [3, 4, 6, 3] and TSTP pooling with 3 base channels instead of 32."""
    resnet = import_wespeaker_models("resnet")
    args = {"feat_dim": 80, "embed_dim": 16, "pooling_func": "TSTP", "two_emb_layer": False}
    model = resnet.ResNet(resnet.BasicBlock, [3, 4, 6, 3], m_channels=3, **args)
    perturb_batchnorms(model, generator)
    add_head(model, args["embed_dim"])
    return model, {"model": "ResNet34", "model_args": args}


def wespeaker_config(model: dict) -> dict:
    """A config.yaml as WeSpeaker's train.py saves it (the parts the converter reads, and more)."""
    return {
        **model,
        "dataset_args": {
            "resample_rate": SAMPLE_RATE,
            "num_frms": 200,
            "fbank_args": {
                "num_mel_bins": 80,
                "frame_shift": 10,
                "frame_length": 25,
                "dither": 1.0,
            },
        },
        "projection_args": {
            "project_type": "arc_margin",
            "scale": 32.0,
            "easy_margin": False,
            "embed_dim": model["model_args"]["embed_dim"],
            "num_class": NUM_SPEAKERS,
        },
    }


def write_clip(path: Path) -> np.ndarray:
    """A 16 kHz 16-bit mono wav of real speech; returns its int16 samples."""
    from speakerprint.audio import load_audio

    wav = load_audio(CLIP, SAMPLE_RATE, start_s=0.5, duration_s=CLIP_SECONDS)
    samples = np.round(wav * 32767).astype(np.int16)
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return sf.read(path, dtype="int16")[0]


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    samples = write_clip(OUT / "speech.wav")
    feats = wespeaker_features(samples)
    for name, build in [("ecapa", small_ecapa), ("resnet34", small_resnet34)]:
        model, config = build(generator)
        folder = OUT / name
        folder.mkdir(exist_ok=True)
        torch.save(model.state_dict(), folder / "avg_model.pt")
        (folder / "config.yaml").write_text(yaml.safe_dump(wespeaker_config(config)))
        np.save(OUT / f"{name}_embedding.npy", wespeaker_embedding(model, feats))
        params = sum(p.numel() for n, p in model.named_parameters() if "projection" not in n)
        size = (folder / "avg_model.pt").stat().st_size
        print(f"{name}: {params} parameters, avg_model.pt {size} bytes")
    versions = {p: importlib.metadata.version(p) for p in ["wespeaker-unofficial", "torch"]}
    versions["kaldi-native-fbank"] = importlib.metadata.version("kaldi_native_fbank")
    print("versions:", versions)


if __name__ == "__main__":
    main()
