"""Build the SpeechBrain ECAPA-TDNN test fixture with SpeechBrain's own code.

Writes tests/fixtures/peers/speechbrain/: a small random-init ``ECAPA_TDNN`` saved as SpeechBrain
saves it (``embedding_model.ckpt``, the bare state dict) with a ``hyperparams.yaml`` in the layout
of ``spkrec-ecapa-voxceleb``'s, a 2.5 s clip of real speech (``speech.wav``, 16 kHz 16-bit), and
what SpeechBrain computes from it: the features after ``Fbank`` + ``InputNormalization``
(``features.npy``) and the embedding (``embedding.npy``). The BatchNorm statistics are first
fitted to real speech in train mode and then every BN (stats and affine) is perturbed, so that
a BN mapped wrongly or forgotten changes the embedding.

Needs speechbrain (``pip install --no-deps speechbrain``; torchaudio, which SpeechBrain imports
but this path does not use, is stubbed when absent). Run from the repository root:

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python scripts/peer_fixtures/speechbrain.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this file, speechbrain.py,
# would shadow the speechbrain package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from _peers import import_speechbrain  # noqa: E402  (stubs torchaudio when it is absent)

OUT = REPO / "tests" / "fixtures" / "peers" / "speechbrain"
CLIP = REPO / "data" / "demo" / "speechocean762" / "SPEAKER2022" / "020220056.opus"
CALIBRATION = sorted((REPO / "data" / "demo" / "speechocean762").glob("SPEAKER00*/*.opus"))[:8]
CLIP_SECONDS = 2.5

# The public model's hyperparams.yaml with small widths (channels 1024/3072, attention 128 and
# lin_neurons 192 there); n_mels and the feature settings are the public ones.
HYPERPARAMS = """\
# Small random-init stand-in for speechbrain/spkrec-ecapa-voxceleb (test fixture)
n_mels: 80

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: 24
"""
MODEL_ARGS = dict(
    input_size=80,
    channels=[32, 32, 32, 32, 96],
    kernel_sizes=[5, 3, 3, 3, 1],
    dilations=[1, 2, 3, 4, 1],
    attention_channels=16,
    se_channels=16,
    lin_neurons=24,
)


def calibrate_and_perturb(model: torch.nn.Module, feats: list[torch.Tensor], seed: int) -> None:
    """Fit the BN running stats to ``feats`` in train mode, then move every BN off its fit."""
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for module in batch_norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average: the stats of ``feats``, not 10% of them
    model.train()
    with torch.no_grad():
        for x in feats:
            model(x)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in batch_norms:
            n = module.num_features
            std = module.running_var.sqrt()
            module.running_mean += 0.2 * std * torch.randn(n, generator=generator)
            module.running_var *= torch.empty(n).uniform_(0.5, 2.0, generator=generator)
            module.weight.copy_(1.0 + 0.3 * torch.randn(n, generator=generator))
            module.bias.copy_(0.2 * torch.randn(n, generator=generator))
            module.momentum = 0.1
    model.eval()


def main() -> None:
    from speakerprint.audio.io import load_audio

    version, Fbank, InputNormalization, ECAPA_TDNN = import_speechbrain()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    clip = load_audio(CLIP, 16000)[: int(CLIP_SECONDS * 16000)]
    sf.write(OUT / "speech.wav", clip, 16000, subtype="PCM_16")
    wav, sample_rate = sf.read(OUT / "speech.wav", dtype="float32")  # the int16 values, / 32768
    assert sample_rate == 16000

    fbank = Fbank(n_mels=80)
    norm = InputNormalization(norm_type="sentence", std_norm=False).eval()

    def features(x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(x).unsqueeze(0)
        return norm(fbank(x), torch.ones(1))

    model = ECAPA_TDNN(**MODEL_ARGS)
    calibration = [features(load_audio(p, 16000)) for p in CALIBRATION]
    frames = min(x.shape[1] for x in calibration)
    batches = [torch.cat([x[:, :frames] for x in calibration])]  # (8, T, 80): BN needs B > 1
    calibrate_and_perturb(model, batches, seed=1)
    torch.save(model.state_dict(), OUT / "embedding_model.ckpt")
    (OUT / "hyperparams.yaml").write_text(HYPERPARAMS, encoding="utf-8")

    with torch.no_grad():
        feats = features(wav)  # (1, T, 80)
        emb = model(feats, torch.ones(1))  # (1, 1, D)
    np.save(OUT / "features.npy", feats[0].numpy().astype(np.float32))
    np.save(OUT / "embedding.npy", emb[0, 0].numpy().astype(np.float32))
    params = sum(p.numel() for p in model.parameters())
    (OUT / "README.md").write_text(
        f"""# SpeechBrain ECAPA-TDNN fixture

Made by `scripts/peer_fixtures/speechbrain.py` with speechbrain {version} and torch
{torch.__version__.split("+")[0]} (CPU), with SpeechBrain's own classes:

- `embedding_model.ckpt`: `speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN` ({params} parameters;
  channels {MODEL_ARGS["channels"]}, attention 16, SE 16, embedding 24, Res2Net scale 8), random
  init, BatchNorm statistics fitted in train mode on {len(CALIBRATION)} demo utterances and then
  every BatchNorm's statistics and affine parameters perturbed; saved as SpeechBrain's
  checkpointer saves it (`torch.save(model.state_dict())`).
- `hyperparams.yaml`: the layout of `spkrec-ecapa-voxceleb`'s, with these widths.
- `speech.wav`: the first {CLIP_SECONDS} s of `data/demo/speechocean762/SPEAKER2022/020220056.opus`,
  16 kHz 16-bit PCM.
- `features.npy`: `(T, 80)` float32, `Fbank(n_mels=80)` then
  `InputNormalization(norm_type="sentence", std_norm=False)` of `speech.wav` read as float32.
- `embedding.npy`: `(24,)` float32, the model's embedding of those features (eval mode).

The perturbed BatchNorms make the embedding depend on every layer: with speakerprint's own
Res2Net channel order instead of SpeechBrain's in one block, or one BatchNorm left at its init,
the converted model's cosine to `embedding.npy` falls far below the tests' 0.9999
(`tests/convert/test_speechbrain.py` checks both).
""",
        encoding="utf-8",
    )
    print(f"wrote {OUT} ({params} parameters, features {tuple(feats.shape[1:])})")


if __name__ == "__main__":
    main()
