"""The augmentation of a training step, built from an :class:`AugmentConfig`.

:func:`build_augmentation` loads what the config asks for once (noise bank, RIRs) onto the
training device and returns an :class:`Augmentation` with two calls, one for the waveform batch
and one for the feature batch. Each augmentation is applied to each utterance with its own
probability; the decisions are drawn from the ``generator`` passed in (a CPU
:class:`torch.Generator`), so the same generator state gives the same output on any device, and
a resumed run can reproduce its batches by seeding the generator from the step. Disabled
augmentations are not built and cost nothing; with all of them off both calls return their
inputs as they are.

Order on the waveform: speed, then reverberation, then additive noise. Speed changes the voice
(and the label); the room reverberates the talker, and noise is added after it, as in the Kaldi
recipe, where MUSAN noise is not reverberated. The probabilities are independent, so an
utterance may get both reverberation and noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from speakerprint.augment import _random as rnd
from speakerprint.augment.config import AugmentConfig
from speakerprint.augment.noise import AdditiveNoise, NoiseBank
from speakerprint.augment.reverb import Reverb
from speakerprint.augment.specaugment import SpecAugment
from speakerprint.augment.speed import SpeedPerturb
from speakerprint.errors import ConfigError

__all__ = ["Augmentation", "build_augmentation"]


class Augmentation:
    """Batched training augmentation: :meth:`waveform` before the features, :meth:`features`
    after. Any part may be ``None`` (off).

    Args:
        speed: speed perturbation, which relabels perturbed utterances.
        reverb: reverberation by RIR convolution.
        noise: additive MUSAN noise, music or babble.
        specaugment: time and frequency masks on the features.
        num_speakers: speakers in the training data, for :attr:`num_classes`.
    """

    def __init__(
        self,
        *,
        speed: SpeedPerturb | None = None,
        reverb: Reverb | None = None,
        noise: AdditiveNoise | None = None,
        specaugment: SpecAugment | None = None,
        num_speakers: int | None = None,
    ) -> None:
        self.speed = speed
        self.reverb = reverb
        self.noise = noise
        self.specaugment = specaugment
        self.num_speakers = num_speakers if speed is None else speed.num_speakers

    @property
    def num_classes(self) -> int:
        """Classes the loss head needs: ``num_speakers``, times 3 with speed perturbation."""
        if self.num_speakers is None:
            raise ValueError("num_classes needs num_speakers (pass it to build_augmentation)")
        return self.speed.num_classes if self.speed is not None else self.num_speakers

    @property
    def enabled(self) -> bool:
        return any(p is not None for p in (self.speed, self.reverb, self.noise, self.specaugment))

    def __repr__(self) -> str:
        parts = [
            name
            for name in ("speed", "reverb", "noise", "specaugment")
            if getattr(self, name) is not None
        ]
        return f"Augmentation({', '.join(parts) or 'off'})"

    def waveform(
        self,
        wav: Tensor,
        lengths: Tensor,
        labels: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Augment a waveform batch.

        Args:
            wav: ``(B, N)`` float32 in [-1, 1] on the training device, zero beyond ``lengths``.
            lengths: ``(B,)`` int64 valid samples per row, on the same device.
            labels: ``(B,)`` int64 speaker labels in ``[0, num_speakers)``.
            generator: a CPU generator; ``None`` uses torch's global one.

        Returns:
            ``(wav (B, N), lengths (B,), labels (B,))``: same shapes; with speed perturbation
            lengths shrink for sped-up rows and labels move to ``[0, num_classes)``. The
            inputs themselves when nothing is enabled.
        """
        if self.speed is None and self.reverb is None and self.noise is None:
            return wav, lengths, labels
        rnd.check_generator(generator)
        if self.speed is not None:
            wav, lengths, labels = self.speed(wav, lengths, labels, generator)
        if self.reverb is not None:
            wav = self.reverb(wav, lengths, generator)
        if self.noise is not None:
            wav = self.noise(wav, lengths, generator)
        return wav, lengths, labels

    def features(
        self, feats: Tensor, frame_lengths: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """SpecAugment on ``(B, T, F)`` features with ``(B,)`` valid frames; the input itself
        when off."""
        if self.specaugment is None:
            return feats
        rnd.check_generator(generator)
        return self.specaugment(feats, frame_lengths, generator)


def build_augmentation(
    config: AugmentConfig,
    sample_rate: int,
    device: torch.device | str = "cpu",
    *,
    num_speakers: int | None = None,
) -> Augmentation:
    """Build the batched augmentation ``config`` asks for, its banks loaded onto ``device``.

    Codec simulation is not part of it: it runs per utterance in the data loader, see
    :func:`speakerprint.augment.build_codec`.

    Args:
        config: the ``augment`` section of the experiment config.
        sample_rate: of the training waveforms, in Hz (noise and RIRs are resampled to it).
        device: where the batches live.
        num_speakers: speakers in the training data; needed with speed perturbation.

    >>> aug = build_augmentation(AugmentConfig(specaugment_prob=0.5), 16000)
    >>> aug
    Augmentation(specaugment)
    """
    device = torch.device(device)
    speed = reverb = noise = specaugment = None
    if config.speed_perturb:
        if num_speakers is None:
            raise ConfigError(
                "augment.speed_perturb relabels perturbed utterances as new speakers: "
                "build_augmentation needs num_speakers"
            )
        speed = SpeedPerturb(num_speakers)
    if config.reverb_prob > 0:
        reverb = Reverb.from_config(config, sample_rate)
        reverb.bank = reverb.bank.to(device)
    if config.noise_prob > 0:
        bank = NoiseBank.from_folder(
            config.noise_dir,
            sample_rate,
            segment_s=config.noise_bank_s,
            max_files=config.noise_bank_max_files,
            seed=config.seed,
        )
        noise = AdditiveNoise(bank.to(device), config)
    if config.specaugment_prob > 0:
        specaugment = SpecAugment(
            config.specaugment_prob,
            time_masks=config.time_masks,
            time_mask_max_frames=config.time_mask_max_frames,
            freq_masks=config.freq_masks,
            freq_mask_max_bins=config.freq_mask_max_bins,
        )
    return Augmentation(
        speed=speed,
        reverb=reverb,
        noise=noise,
        specaugment=specaugment,
        num_speakers=num_speakers,
    )
