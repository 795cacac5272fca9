"""Build the NeMo TitaNet test fixtures.

NeMo itself is too heavy to install here, so tests/convert/test_nemo.py builds its ``.nemo``
archives from NeMo's documented layout and computes the reference embedding with a functional
re-implementation of NeMo's forward. What it cannot build independently is written here:

* ``mel_fb_16000_512_80.npy`` and ``mel_fb_8000_256_64_20_3800.npy``: the mel filters that
  NeMo's ``FilterbankFeatures`` stores as ``preprocessor.featurizer.fb``, computed with
  ``librosa.filters.mel(..., norm="slaney")`` exactly as NeMo calls it (float32, shape
  ``(n_mels, n_fft // 2 + 1)``): TitaNet's settings, and a second set with a band limit;
* ``speech.wav``: 2.5 s of real speech (speechocean762, in the repository's demo data), 16 kHz
  16-bit.

Needs librosa, which speakerprint does not depend on; a throwaway install is enough:

    .venv/bin/python -m pip install --target /tmp/librosa_pkgs librosa
    OMP_NUM_THREADS=1 PYTHONPATH=src:/tmp/librosa_pkgs .venv/bin/python scripts/peer_fixtures/nemo.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "peers" / "nemo"
CLIP = REPO / "data" / "demo" / "speechocean762" / "SPEAKER0104"
CLIP_SECONDS = 2.5
# (sample_rate, n_fft, n_mels, fmin, fmax) -> file name
FILTERBANKS = {
    (16000, 512, 80, 0.0, None): "mel_fb_16000_512_80.npy",
    (8000, 256, 64, 20.0, 3800.0): "mel_fb_8000_256_64_20_3800.npy",
}


def main() -> None:
    import librosa

    from speakerprint.audio import load_audio

    OUT.mkdir(parents=True, exist_ok=True)
    for (sample_rate, n_fft, n_mels, fmin, fmax), name in FILTERBANKS.items():
        filters = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, norm="slaney"
        )
        np.save(OUT / name, filters.astype(np.float32))
        print(f"wrote {name} {filters.shape} (librosa {librosa.__version__})")

    source = sorted(CLIP.glob("*.opus"))[0]
    wav = load_audio(source, sample_rate=16000)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    start = int(0.2 * 16000)
    clip = wav[start : start + int(CLIP_SECONDS * 16000)]
    sf.write(OUT / "speech.wav", clip, 16000, subtype="PCM_16")
    print(f"wrote speech.wav from {source.relative_to(REPO)} ({len(clip) / 16000:.2f} s)")


if __name__ == "__main__":
    main()
