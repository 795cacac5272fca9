"""Codec simulation: an utterance re-encoded through Opus or AAC at a low bitrate, with PyAV.

Unlike the other augmentations this one runs on the CPU, one utterance at a time, in the data
loader workers (``CropDataset.__getitem__``), not in the training step on the GPU: encoders are
sequential C code in FFmpeg with no batched or GPU form, and in the workers their cost overlaps
the training step instead of adding to it. Encoding and decoding happen in memory (Opus in Ogg,
AAC in MP4); nothing touches the disk.

The decoded audio is put back in line with the input: the codec's delay (AAC's 1,024 priming
samples; Opus's pre-skip, which FFmpeg already removes) is measured once per codec and sample
rate by coding white noise and finding the cross-correlation peak, then cut off, and the output
has the input's length.

>>> wav = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
>>> encode_decode(wav, 16000, "opus", 16).shape
(16000,)
"""

from __future__ import annotations

import functools
import io

import numpy as np

from speakerprint.augment.config import AugmentConfig
from speakerprint.errors import ConfigError

__all__ = ["CODECS", "CodecAugment", "build_codec", "encode_decode"]

# name -> (FFmpeg encoder, container, sample rates the encoder takes)
CODECS = {
    "opus": ("libopus", "ogg", (8000, 12000, 16000, 24000, 48000)),
    "aac": ("aac", "mp4", (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
}


def _encode(wav: np.ndarray, sample_rate: int, codec: str, bitrate_bps: int) -> bytes:
    import av

    encoder, container, _ = CODECS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(encoder, rate=sample_rate, layout="mono")
        stream.bit_rate = bitrate_bps
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wav, dtype=np.float32)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def _decode(data: bytes, sample_rate: int) -> np.ndarray:
    import av

    chunks = []
    with av.open(io.BytesIO(data), mode="r") as source:
        stream = source.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in source.decode(stream):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


@functools.cache
def _codec_delay(codec: str, sample_rate: int) -> int:
    """Samples the decoded audio lags the input: the cross-correlation peak on white noise."""
    probe = np.random.default_rng(0).uniform(-0.5, 0.5, sample_rate).astype(np.float32)
    decoded = _decode(_encode(probe, sample_rate, codec, 64000), sample_rate)
    size = 1 << (len(probe) + len(decoded)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(probe, size)), size)
    max_lag = min(len(decoded), 4 * sample_rate // 10)  # decoders only ever delay, < 0.4 s
    return int(np.argmax(correlation[:max_lag]))


def encode_decode(wav: np.ndarray, sample_rate: int, codec: str, bitrate_kbps: float) -> np.ndarray:
    """``wav`` ``(N,)`` float32 through ``codec`` (``"opus"`` or ``"aac"``) at ``bitrate_kbps``
    and back: ``(N,)`` float32 in [-1, 1], aligned with the input."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if sample_rate not in CODECS[codec][2]:
        raise ValueError(f"{codec} does not take {sample_rate} Hz; it takes {CODECS[codec][2]}")
    num_samples = len(wav)
    if num_samples == 0:
        return np.zeros(0, np.float32)
    decoded = _decode(_encode(wav, sample_rate, codec, round(bitrate_kbps * 1000)), sample_rate)
    delay = _codec_delay(codec, sample_rate)
    decoded = decoded[delay : delay + num_samples]
    if len(decoded) < num_samples:
        decoded = np.pad(decoded, (0, num_samples - len(decoded)))
    return np.clip(decoded, -1.0, 1.0).astype(np.float32, copy=False)


class CodecAugment:
    """Re-encodes an utterance with probability ``prob``: codec and bitrate drawn per utterance.

    Called in a data loader worker with the item's own generator (e.g. one seeded by the crop
    seed), so the result does not depend on the number of workers.
    """

    def __init__(
        self,
        prob: float,
        sample_rate: int,
        *,
        codecs: tuple[str, ...] = ("opus", "aac"),
        bitrate_kbps: tuple[int, int] = (8, 32),
    ) -> None:
        for codec in codecs:
            if codec not in CODECS:
                raise ConfigError(f"augment.codec: unknown codec {codec!r}")
            if sample_rate not in CODECS[codec][2]:
                raise ConfigError(
                    f"augment.codec={codec} cannot encode {sample_rate} Hz audio "
                    f"(it takes {', '.join(map(str, CODECS[codec][2]))} Hz)"
                )
        self.prob = prob
        self.sample_rate = sample_rate
        self.codecs = codecs
        self.bitrate_kbps = bitrate_kbps

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(N,)`` float32 in, ``(N,)`` float32 out (the input itself when not drawn)."""
        if rng.random() >= self.prob:
            return wav
        codec = self.codecs[int(rng.integers(len(self.codecs)))]
        bitrate = int(rng.integers(self.bitrate_kbps[0], self.bitrate_kbps[1] + 1))
        return encode_decode(wav, self.sample_rate, codec, bitrate)


def build_codec(config: AugmentConfig, sample_rate: int) -> CodecAugment | None:
    """The codec augmentation of ``config``, or ``None`` when ``codec_prob`` is 0."""
    if config.codec_prob <= 0:
        return None
    codecs = ("opus", "aac") if config.codec == "any" else (config.codec,)
    return CodecAugment(
        config.codec_prob,
        sample_rate,
        codecs=codecs,
        bitrate_kbps=(config.codec_bitrate_kbps_min, config.codec_bitrate_kbps_max),
    )
