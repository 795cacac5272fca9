"""Channel simulation: an utterance passed through a lossy codec or a telephone channel.

Wideband codecs (Opus, AAC, MP3) re-encode at the utterance's own sample rate with PyAV, at a
low bitrate. Narrowband channels resample to 8 kHz with soxr, pass the audio through the
channel there and resample back, as a call does:

- ``telephone``: the 300-3,400 Hz band of a telephone line (a zero-phase Butterworth band-pass).
- ``mulaw``, ``alaw``: ITU-T G.711 8-bit companding (mu = 255, A = 87.6), see :func:`g711`.
- ``gsm``, ``amrnb``: GSM 06.10 full rate and AMR-NB through FFmpeg's libgsm and
  libopencore_amrnb encoders, when the installed PyAV's FFmpeg has them.

Unlike the other augmentations this one runs on the CPU, one utterance at a time, in the data
loader workers (``CropDataset.__getitem__``), not in the training step on the GPU: encoders are
sequential C code in FFmpeg with no batched or GPU form, and in the workers their cost overlaps
the training step instead of adding to it. Encoding and decoding happen in memory (Opus in Ogg,
AAC in MP4, MP3, GSM and AMR in their raw formats); nothing touches the disk.

The decoded audio is put back in line with the input: the codec's delay (AAC's 1,024 priming
samples, MP3's encoder delay; Opus's pre-skip, which FFmpeg already removes) is measured once per
codec and sample rate by coding white noise and finding the cross-correlation peak, then cut
off, and the output has the input's length. The soxr resampling and the band-pass add no delay.

>>> wav = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
>>> encode_decode(wav, 16000, "opus", 16).shape
(16000,)
>>> encode_decode(wav, 16000, "telephone").shape
(16000,)
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

from speakerprint.augment.config import CHANNELS, AugmentConfig
from speakerprint.errors import ConfigError

__all__ = ["CHANNELS", "CODECS", "CodecAugment", "build_codec", "encode_decode", "g711"]

NARROWBAND_RATE = 8000

# name -> (FFmpeg encoder, container, sample rates the encoder takes); gsm and amrnb are
# narrowband codecs, always fed 8 kHz audio
CODECS = {
    "opus": ("libopus", "ogg", (8000, 12000, 16000, 24000, 48000)),
    "aac": ("aac", "mp4", (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "mp3": ("libmp3lame", "mp3", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "gsm": ("libgsm", "gsm", (NARROWBAND_RATE,)),
    "amrnb": ("libopencore_amrnb", "amr", (NARROWBAND_RATE,)),
}
# channels that pass through 8 kHz, whatever the utterance's sample rate
NARROWBAND = ("telephone", "mulaw", "alaw", "gsm", "amrnb")
# the eight AMR-NB modes, in bits per second
AMRNB_MODES_BPS = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)
# FFmpeg's bitrate for the probe that measures a codec's delay
_PROBE_BPS = {"gsm": 13000, "amrnb": 12200}

MU = 255.0
A = 87.6
TELEPHONE_BAND_HZ = (300.0, 3400.0)


def _check_encoder(codec: str) -> None:
    """Raise ConfigError when the installed FFmpeg cannot encode ``codec`` (never skip it)."""
    import av

    encoder = CODECS[codec][0]
    try:
        av.codec.Codec(encoder, "w")
    except av.codec.codec.UnknownCodecError:
        raise ConfigError(
            f"augment.codecs: {codec} needs FFmpeg's {encoder} encoder, which the installed PyAV "
            f"{av.__version__} (FFmpeg {av.ffmpeg_version_info}) does not have; remove {codec} "
            f"from augment.codecs or install a PyAV built with {encoder}"
        ) from None


def _encode(wav: np.ndarray, sample_rate: int, codec: str, bitrate_bps: int) -> bytes:
    import av

    encoder, container, _ = CODECS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(encoder, rate=sample_rate, layout="mono")
        stream.bit_rate = bitrate_bps
        # PyAV converts the frame to the encoder's sample format (16-bit PCM for GSM and AMR)
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
    decoded = _decode(_encode(probe, sample_rate, codec, _PROBE_BPS.get(codec, 64000)), sample_rate)
    size = 1 << (len(probe) + len(decoded)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(probe, size)), size)
    max_lag = min(len(decoded), 4 * sample_rate // 10)  # decoders only ever delay, < 0.4 s
    return int(np.argmax(correlation[:max_lag]))


def _fit(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """``wav`` cut or zero-padded to ``num_samples``."""
    wav = wav[:num_samples]
    if len(wav) < num_samples:
        wav = np.pad(wav, (0, num_samples - len(wav)))
    return wav


def _ffmpeg_round_trip(
    wav: np.ndarray, sample_rate: int, codec: str, bitrate_bps: int
) -> np.ndarray:
    decoded = _decode(_encode(wav, sample_rate, codec, bitrate_bps), sample_rate)
    delay = _codec_delay(codec, sample_rate)
    return _fit(decoded[delay:], len(wav))


@functools.cache
def _telephone_sos() -> np.ndarray:
    from scipy.signal import butter

    # steep (order 12, applied forward and backward) so that the half-power edges can sit on
    # 300 and 3,400 Hz and still take the bands outside them down by more than 20 dB
    return butter(12, TELEPHONE_BAND_HZ, btype="bandpass", fs=NARROWBAND_RATE, output="sos")


def g711(wav: np.ndarray, law: str) -> np.ndarray:
    """``wav`` ``(N,)`` in [-1, 1] companded to 8 bits and expanded back: ``(N,)`` float32 holding
    at most 256 distinct values.

    The continuous ITU-T G.711 laws (``"mulaw"``: mu = 255, ``"alaw"``: A = 87.6) with a mid-rise
    quantiser of 256 levels on the compressed value, so the error is roughly proportional to the
    amplitude (about 2 % of it above the small-signal range) rather than fixed. The input is taken
    to be at 8 kHz; the function itself is rate-free.

    >>> len(np.unique(g711(np.linspace(-1, 1, 10000), "mulaw")))
    256
    """
    if law not in ("mulaw", "alaw"):
        raise ValueError(f"law must be 'mulaw' or 'alaw', got {law!r}")
    x = np.clip(np.asarray(wav, dtype=np.float64), -1.0, 1.0)
    sign, magnitude = np.where(x < 0, -1.0, 1.0), np.abs(x)
    if law == "mulaw":
        compressed = np.log1p(MU * magnitude) / math.log1p(MU)
    else:
        scaled = A * magnitude
        compressed = np.where(scaled < 1, scaled, 1 + np.log(np.maximum(scaled, 1))) / (
            1 + math.log(A)
        )
    code = np.minimum(np.floor(compressed * 128), 127)  # 0..127 per sign: 256 codes
    level = (code + 0.5) / 128
    if law == "mulaw":
        magnitude = np.expm1(level * math.log1p(MU)) / MU
    else:
        scaled = level * (1 + math.log(A))
        magnitude = np.where(scaled < 1, scaled, np.exp(scaled - 1)) / A
    return (sign * magnitude).astype(np.float32)


def _narrowband(wav: np.ndarray, codec: str, bitrate_kbps: float | None) -> np.ndarray:
    """``wav`` at 8 kHz through a narrowband channel, at 8 kHz."""
    if codec == "telephone":
        from scipy.signal import sosfiltfilt

        return sosfiltfilt(_telephone_sos(), wav).astype(np.float32)
    if codec in ("mulaw", "alaw"):
        return g711(wav, codec)
    if codec == "amrnb":
        # the mode nearest the bitrate asked for; the 12.2 kbit/s mode when none is given
        target = 12200 if bitrate_kbps is None else bitrate_kbps * 1000
        bitrate_bps = min(AMRNB_MODES_BPS, key=lambda mode: abs(mode - target))
    else:
        bitrate_bps = _PROBE_BPS[codec]  # GSM full rate is 13 kbit/s only
    return _ffmpeg_round_trip(wav, NARROWBAND_RATE, codec, bitrate_bps)


def encode_decode(
    wav: np.ndarray, sample_rate: int, codec: str, bitrate_kbps: float | None = None
) -> np.ndarray:
    """``wav`` ``(N,)`` float32 through ``codec`` (one of :data:`CHANNELS`) and back: ``(N,)``
    float32 in [-1, 1], aligned with the input.

    ``bitrate_kbps`` is needed by ``opus``, ``aac`` and ``mp3``; ``amrnb`` takes the mode
    nearest it; ``telephone``, ``mulaw``, ``alaw`` and ``gsm`` have a fixed rate and ignore it.

    Raises:
        ConfigError: ``codec`` needs an FFmpeg encoder that the installed PyAV lacks.
    """
    if codec not in CHANNELS:
        raise ValueError(f"codec must be one of {list(CHANNELS)}, got {codec!r}")
    if codec in CODECS:
        _check_encoder(codec)
    num_samples = len(wav)
    if num_samples == 0:
        return np.zeros(0, np.float32)
    if codec in NARROWBAND:
        if sample_rate < NARROWBAND_RATE:
            raise ValueError(f"{codec} needs a sample rate of at least 8000 Hz, got {sample_rate}")
        import soxr

        narrow = soxr.resample(np.asarray(wav, dtype=np.float32), sample_rate, NARROWBAND_RATE)
        narrow = _narrowband(narrow, codec, bitrate_kbps)  # (N * 8000 / sample_rate,)
        decoded = _fit(soxr.resample(narrow, NARROWBAND_RATE, sample_rate), num_samples)
    else:
        if sample_rate not in CODECS[codec][2]:
            raise ValueError(f"{codec} does not take {sample_rate} Hz; it takes {CODECS[codec][2]}")
        if bitrate_kbps is None:
            raise ValueError(f"{codec} needs bitrate_kbps")
        decoded = _ffmpeg_round_trip(wav, sample_rate, codec, round(bitrate_kbps * 1000))
    return np.clip(decoded, -1.0, 1.0).astype(np.float32, copy=False)


class CodecAugment:
    """Passes an utterance through a channel with probability ``prob``: channel and bitrate drawn
    per utterance, the channel uniformly from ``codecs`` (names of :data:`CHANNELS`).

    Called in a data loader worker with the item's own generator (e.g. one seeded by the crop
    seed), so the result does not depend on the number of workers.

    Raises:
        ConfigError: an unknown channel, a sample rate a codec cannot encode, or a codec whose
            FFmpeg encoder the installed PyAV lacks (checked here, once, not per utterance).
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
            if codec not in CHANNELS:
                raise ConfigError(
                    f"augment.codec: unknown codec {codec!r} (known: {', '.join(CHANNELS)})"
                )
            if codec in NARROWBAND:
                if sample_rate < NARROWBAND_RATE:
                    raise ConfigError(
                        f"augment.codec={codec} passes audio through 8 kHz; it cannot take "
                        f"{sample_rate} Hz audio"
                    )
            elif sample_rate not in CODECS[codec][2]:
                raise ConfigError(
                    f"augment.codec={codec} cannot encode {sample_rate} Hz audio "
                    f"(it takes {', '.join(map(str, CODECS[codec][2]))} Hz)"
                )
            if codec in CODECS:
                _check_encoder(codec)
        self.prob = prob
        self.sample_rate = sample_rate
        self.codecs = codecs
        self.bitrate_kbps = bitrate_kbps

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(N,)`` float32 in, ``(N,)`` float32 out (the input itself when not drawn)."""
        if rng.random() >= self.prob:
            return wav
        codec = self.codecs[int(rng.integers(len(self.codecs)))]
        # drawn for every channel, so the random stream does not depend on which was drawn
        bitrate = int(rng.integers(self.bitrate_kbps[0], self.bitrate_kbps[1] + 1))
        return encode_decode(wav, self.sample_rate, codec, bitrate)


def build_codec(config: AugmentConfig, sample_rate: int) -> CodecAugment | None:
    """The codec augmentation of ``config``, or ``None`` when ``codec_prob`` is 0.

    Raises:
        ConfigError: see :class:`CodecAugment`.
    """
    if config.codec_prob <= 0:
        return None
    if config.codecs:
        codecs = tuple(config.codecs)
    else:
        codecs = ("opus", "aac") if config.codec == "any" else (config.codec,)
    return CodecAugment(
        config.codec_prob,
        sample_rate,
        codecs=codecs,
        bitrate_kbps=(config.codec_bitrate_kbps_min, config.codec_bitrate_kbps_max),
    )
