"""Training augmentation on batched tensors, on the training device: noise, reverb, speed,
SpecAugment; plus codec simulation per utterance in the data loader.

The papers' recipes (Kaldi x-vector, ECAPA-TDNN, TitaNet) add MUSAN noise, music and babble,
RIRS_NOISES reverberation, speed perturbation and SpecAugment. Here all of it happens inside the
training step on the batch already on the GPU (or CPU), so nothing is augmented offline and
nothing extra is stored: the noise and RIR banks are decoded once at start-up.

- :mod:`~speakerprint.augment.noise`: MUSAN noise 0-15 dB, music 5-15 dB, babble of 3-7 speech
  files 13-20 dB, SNR measured over valid samples only.
- :mod:`~speakerprint.augment.reverb`: FFT convolution with RIRS_NOISES RIRs or rooms simulated
  with pyroomacoustics (``pip install 'speakerprint[sim]'``), aligned on the direct path.
- :mod:`~speakerprint.augment.speed`: speed 0.9 / 1.0 / 1.1 by windowed-sinc resampling; the
  perturbed copies are new speakers.
- :mod:`~speakerprint.augment.specaugment`: time and frequency masks inside valid frames.
- :mod:`~speakerprint.augment.codec`: Opus/AAC/MP3/GSM/AMR-NB re-encoding with PyAV, telephone band
  and G.711 mu-law/A-law at 8 kHz; CPU, in the loader workers.

How the training loop calls it (``train/loop.py``)
--------------------------------------------------
1. After ``fbank`` is built, build it once and size the loss head with it. With
   ``augment.speed_perturb`` the head has ``3 * len(speakers)`` classes (label ``y`` at speed
   0.9 becomes ``y + num_speakers``, at 1.1 ``y + 2 * num_speakers``); otherwise
   ``len(speakers)``. The checkpoint's ``num_speakers`` stays ``len(speakers)``::

       augment = build_augmentation(cfg.augment, sample_rate, device, num_speakers=len(speakers))
       loss_fn = build_loss(..., num_classes=augment.num_classes, ...)

2. In the step, between moving the batch to the device and the features, without gradients and
   outside autocast (fp32). The generator is a CPU one seeded from the step, so a resumed run
   augments step ``s`` exactly as an uninterrupted one did, with no extra checkpoint state::

       wav, labels = next(data_iter)                       # (B, N) float32, (B,) int64
       wav = wav.to(device, non_blocking=True)
       labels = labels.to(device, non_blocking=True)
       generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + step)
       lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=device)
       with torch.no_grad():
           wav, lengths, labels = augment.waveform(wav, lengths, labels, generator)
           feats, frame_lengths = fbank(wav, lengths)      # lengths: sped-up rows are shorter
           feats = augment.features(feats, frame_lengths, generator)
       # then, as now: emb = model(feats, frame_lengths); out = loss_fn(emb, labels)

   ``waveform`` keeps ``(B, N)``: rows slowed to 0.9 are cut at ``N`` samples, rows sped up
   to 1.1 end after ``ceil(N / 1.1)`` samples, zero-padded, which ``lengths`` carries into the
   fbank and the model (padding never changes an embedding).

3. Codec simulation (``augment.codec_prob > 0``) belongs to ``CropDataset``: build
   ``codec = build_codec(cfg.augment, sample_rate)`` (``None`` when off), pass it to the
   dataset, and in ``__getitem__`` after ``fit_to_length`` call ``wav = codec(wav, rng)`` with
   the item's own ``rng`` (the one seeded by the crop seed), so the result does not depend on
   the number of workers. Dev evaluation and inference are never augmented.

>>> import torch
>>> from speakerprint.augment import AugmentConfig, build_augmentation
>>> aug = build_augmentation(AugmentConfig(speed_perturb=True), 16000, "cpu", num_speakers=100)
>>> aug.num_classes
300
>>> wav, lengths, labels = aug.waveform(
...     torch.zeros(4, 16000), torch.full((4,), 16000), torch.arange(4), torch.Generator()
... )
>>> wav.shape
torch.Size([4, 16000])
"""

from __future__ import annotations

from speakerprint.augment.codec import CodecAugment, build_codec, encode_decode
from speakerprint.augment.config import AugmentConfig, AugmentDataError
from speakerprint.augment.noise import AdditiveNoise, NoiseBank, add_noise, find_musan
from speakerprint.augment.pipeline import Augmentation, build_augmentation
from speakerprint.augment.reverb import Reverb, RirBank, find_rirs, reverberate, simulate_rirs
from speakerprint.augment.specaugment import SpecAugment
from speakerprint.augment.speed import SPEEDS, SpeedPerturb, resample_speed

__all__ = [
    "SPEEDS",
    "AdditiveNoise",
    "AugmentConfig",
    "AugmentDataError",
    "Augmentation",
    "CodecAugment",
    "NoiseBank",
    "Reverb",
    "RirBank",
    "SpecAugment",
    "SpeedPerturb",
    "add_noise",
    "build_augmentation",
    "build_codec",
    "encode_decode",
    "find_musan",
    "find_rirs",
    "resample_speed",
    "reverberate",
    "simulate_rirs",
]
