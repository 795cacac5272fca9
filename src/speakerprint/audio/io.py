"""Reading audio files: one loader for every format, one resampler, one header reader.

Every function returns or describes mono float32 audio in [-1, 1]. Files that libsndfile reads
(WAV, FLAC, Ogg Vorbis/Opus, ...) go through :mod:`soundfile`, which can seek, so a training crop
of a long file decodes only the crop. Anything else (MP3, M4A/AAC, MP4, WebM, ...) and any file
soundfile refuses is decoded with PyAV (FFmpeg). Whatever goes wrong, the caller sees one error
type, :class:`AudioLoadError`, naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from speakerprint.errors import SpeakerprintError

__all__ = [
    "AudioInfo",
    "AudioLoadError",
    "AudioTooLongError",
    "audio_info",
    "fit_to_length",
    "load_audio",
    "resample",
    "stream_audio",
]

# Extensions tried with soundfile first; everything else goes straight to PyAV. MP3 is left to
# PyAV on purpose: FFmpeg applies the encoder delay/padding (gapless) info consistently.
_SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au", ".snd"}
    | {".w64", ".rf64", ".caf"}
)
# libsndfile's frame count for a stream of unknown length (e.g. a FLAC whose STREAMINFO states 0
# samples): SF_COUNT_MAX. Such a file is read block by block, never in one read of that size.
_UNKNOWN_FRAMES = 2**63 - 1
_BLOCK_FRAMES = 1 << 16


class AudioLoadError(SpeakerprintError, ValueError):
    """An audio file cannot be read: missing, empty, corrupt, not audio, or a bad crop window.

    Attributes:
        path: the path as given.
        reason: what went wrong, in words.
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None):
        if reason is None:
            # A DataLoader worker re-raises errors in the main process as ``type(message)``,
            # with the whole formatted message (which names the file) as the only argument.
            self.path, self.reason = "", str(path)
            super().__init__(str(path))
            return
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load audio '{self.path}': {reason}")

    def __reduce__(self):
        # So the error survives pickling (e.g. out of a DataLoader worker) with its attributes.
        return (type(self), (self.path, self.reason))


class AudioTooLongError(AudioLoadError):
    """Audio longer than the ``max_duration_s`` given to :func:`load_audio`.

    Refused from the header's length when it states one, else once decoding passes the limit
    (then ``duration_s`` is how far decoding got, not the file's length): a header can understate
    the length, and a small compressed file can hold hours of silence.

    Attributes:
        duration_s: the header's length, or the audio decoded before stopping, in seconds.
        max_duration_s: the limit, in seconds.
        from_header: whether ``duration_s`` is the header's length.
    """

    def __init__(
        self, path: str | os.PathLike, duration_s: float, max_duration_s: float, from_header: bool
    ):
        self.duration_s = duration_s
        self.max_duration_s = max_duration_s
        self.from_header = from_header
        what = f"{duration_s:.2f} s" if from_header else f"more than {duration_s:.2f} s"
        super().__init__(path, f"{what} of audio, over the limit of {max_duration_s:g} s")

    def __reduce__(self):
        return (
            type(self),
            (self.path, self.duration_s, self.max_duration_s, self.from_header),
        )


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, before any resampling or mix-down.

    Attributes:
        sample_rate: samples per second per channel, in Hz.
        num_samples: samples per channel.
        num_channels: number of channels.
        duration_s: ``num_samples / sample_rate``, in seconds.
        format: container and codec in lower case, e.g. ``"wav/pcm_16"``, ``"ogg/opus"``,
            ``"mp3/mp3"``, ``"mov/aac"``.
    """

    sample_rate: int
    num_samples: int
    num_channels: int
    duration_s: float
    format: str


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr (quality 'HQ'); returns float32.

    Args:
        wav: samples, shape ``(N,)`` or ``(N, C)`` (time first, as soundfile returns).
        orig_sr: sample rate of ``wav`` in Hz.
        target_sr: wanted sample rate in Hz.

    Returns:
        float32 array of shape ``(M,)`` or ``(M, C)``, ``M ≈ N * target_sr / orig_sr``;
        the input itself (as float32) when the rates are equal.

    >>> resample(np.zeros(8000, np.float32), 8000, 16000).shape
    (16000,)
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr or wav.shape[0] == 0:
        return wav
    return np.asarray(soxr.resample(wav, orig_sr, target_sr, quality="HQ"), dtype=np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
    max_duration_s: float | None = None,
) -> np.ndarray:
    """Load an audio file as mono float32 in [-1, 1] at ``sample_rate``.

    Channels are averaged; the signal is resampled with soxr when the file's rate differs.
    With ``start_s``/``duration_s`` only that window (in seconds of the file) is returned; for
    formats soundfile reads, only the window is decoded. A window that runs past the end returns
    what exists; a window that starts at or past the end is an error.

    ``max_duration_s`` bounds the work and memory of untrusted files: audio longer than that is
    refused from the header when it states the length, and otherwise decoding stops as soon as
    it passes the limit, so a small file that decodes to hours costs no more than the limit.

    Args:
        path: any file libsndfile or FFmpeg can decode.
        sample_rate: output rate in Hz.
        start_s: start of the window in seconds.
        duration_s: length of the window in seconds; ``None`` reads to the end.
        max_duration_s: the longest audio (of the window) accepted, in seconds; ``None``: any.

    Returns:
        float32 array of shape ``(num_samples,)``.

    Raises:
        AudioLoadError: for every failure (missing, empty, corrupt or non-audio file, no samples,
            NaN/Inf samples, bad window); :class:`AudioTooLongError`, a subclass, for audio
            longer than ``max_duration_s``.

    >>> wav = load_audio("utt.opus", 16000, start_s=1.0, duration_s=2.0)  # doctest: +SKIP
    >>> wav.shape, wav.dtype  # doctest: +SKIP
    ((32000,), dtype('float32'))
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioLoadError(path, f"sample_rate must be a positive int, got {sample_rate!r}")
    if not _is_finite_number(start_s) or start_s < 0:
        raise AudioLoadError(path, f"start_s must be a finite number >= 0, got {start_s!r}")
    if duration_s is not None and (not _is_finite_number(duration_s) or duration_s <= 0):
        raise AudioLoadError(path, f"duration_s must be a finite number > 0, got {duration_s!r}")
    if max_duration_s is not None and (
        not _is_finite_number(max_duration_s) or max_duration_s <= 0
    ):
        raise AudioLoadError(
            path, f"max_duration_s must be a finite number > 0, got {max_duration_s!r}"
        )
    file = _check_file(path)
    return _decode(file, file.suffix, path, sample_rate, start_s, duration_s, max_duration_s)


def load_audio_bytes(
    data: bytes,
    name: str,
    sample_rate: int = 16000,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> np.ndarray:
    """:func:`load_audio` for an encoded file held in memory (e.g. a member of a tar shard).

    ``name`` is the file's name: its extension picks the decoder, as for a path, and errors name
    it. Raises :class:`AudioLoadError` exactly where :func:`load_audio` would.

    >>> import io, soundfile
    >>> buf = io.BytesIO()
    >>> soundfile.write(buf, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    >>> load_audio_bytes(buf.getvalue(), "zeros.wav").shape
    (1600,)
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioLoadError(name, f"sample_rate must be a positive int, got {sample_rate!r}")
    if not _is_finite_number(start_s) or start_s < 0:
        raise AudioLoadError(name, f"start_s must be a finite number >= 0, got {start_s!r}")
    if duration_s is not None and (not _is_finite_number(duration_s) or duration_s <= 0):
        raise AudioLoadError(name, f"duration_s must be a finite number > 0, got {duration_s!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioLoadError(name, f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioLoadError(name, "the file is empty (0 bytes)")
    return _decode(bytes(data), Path(name).suffix, name, sample_rate, start_s, duration_s)


def _decode(
    file: Path | bytes,
    suffix: str,
    path: str | os.PathLike,
    sample_rate: int,
    start_s: float,
    duration_s: float | None,
    max_duration_s: float | None = None,
) -> np.ndarray:
    """Decode a file on disk (Path) or in memory (bytes); ``path`` names it in errors."""
    if suffix.lower() in _SOUNDFILE_EXTENSIONS:
        try:
            wav, file_sr = _read_soundfile(file, path, start_s, duration_s, max_duration_s)
        except RuntimeError as sf_error:  # soundfile's LibsndfileError
            # libsndfile refuses some valid files (e.g. MP3 or ADPCM inside .wav): let FFmpeg try.
            wav, file_sr = _read_pyav(
                file, path, start_s, duration_s, sf_error, max_duration_s=max_duration_s
            )
    else:
        wav, file_sr = _read_pyav(file, path, start_s, duration_s, max_duration_s=max_duration_s)

    if wav.shape[0] == 0:
        raise AudioLoadError(path, "the file holds no audio samples")
    if not np.isfinite(wav).all():
        raise AudioLoadError(path, "the audio contains NaN or Inf samples")
    wav = wav.mean(axis=1, dtype=np.float32) if wav.shape[1] > 1 else wav[:, 0]
    num_file_samples = len(wav)
    wav = resample(wav, file_sr, sample_rate)
    if wav.shape[0] == 0:  # e.g. one sample at 162 kHz is no sample at all at 16 kHz
        raise AudioLoadError(
            path,
            f"{num_file_samples} sample(s) at {file_sr} Hz are shorter than one sample at "
            f"{sample_rate} Hz",
        )
    # Float files, lossy decoders and resampling can overshoot full scale slightly.
    return np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)


def stream_audio(
    path: str | os.PathLike, sample_rate: int = 16000, *, block_s: float = 30.0
) -> Iterator[np.ndarray]:
    """Decode a file once, front to back, as consecutive mono float32 blocks at ``sample_rate``.

    Memory stays bounded whatever the file's length: one block of decoded audio and the
    resampler's state. The concatenated blocks equal :func:`load_audio` of the whole file
    sample for sample (the same decoders and soxr 'HQ' resampler, run as a stream; the tests
    check wav, flac, opus, m4a and mp3 at 16-48 kHz). Blocks are ``block_s`` seconds long but
    the last.

    Raises:
        AudioLoadError: as :func:`load_audio`, from the block where the problem shows (a file
            whose middle is corrupt fails after earlier blocks were yielded).

    >>> total = sum(len(b) for b in stream_audio("meeting.m4a", 16000))  # doctest: +SKIP
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioLoadError(path, f"sample_rate must be a positive int, got {sample_rate!r}")
    if not _is_finite_number(block_s) or block_s <= 0:
        raise AudioLoadError(path, f"block_s must be a finite number > 0, got {block_s!r}")
    file = _check_file(path)
    if file.suffix.lower() in _SOUNDFILE_EXTENSIONS:
        try:
            with sf.SoundFile(str(file)) as f:
                if f.frames <= 0:
                    raise AudioLoadError(path, "the file holds no audio samples")
                _check_wav_not_truncated(f, file, path)
        except RuntimeError as sf_error:  # libsndfile refuses it: FFmpeg may not (as in load_audio)
            chunks = _pyav_chunks(file, path, sf_error)
        else:
            chunks = _soundfile_chunks(file, path, block_s)
    else:
        chunks = _pyav_chunks(file, path)
    yield from _rebatch(_mono_resampled(chunks, path, sample_rate), round(block_s * sample_rate))


def _soundfile_chunks(file: Path, path, block_s: float) -> Iterator[tuple[np.ndarray, int]]:
    with sf.SoundFile(str(file)) as f:
        size = max(1, round(block_s * f.samplerate))
        while True:
            try:
                chunk = f.read(size, dtype="float32", always_2d=True)
            except RuntimeError as error:
                raise AudioLoadError(path, f"decoding failed mid-file ({error})") from error
            if not len(chunk):
                return
            yield chunk, f.samplerate


def _pyav_chunks(
    file: Path | bytes, path, soundfile_error: Exception | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded chunks ``(N, C)`` float32 of the first audio stream, with the stream's rate."""
    import av

    with _open_pyav(file, path, soundfile_error) as container:
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        if not sr:
            raise AudioLoadError(path, "the audio stream states no sample rate")
        # Packed (interleaved) float: one plane whatever the channel count. PyAV 18 miscounts
        # the planes of a planar frame with 8 channels and to_ndarray() then reads past the
        # frame's buffers (a segfault, found by the nightly fuzz profile).
        resampler = av.AudioResampler(format="flt")
        channels = None
        try:
            for frame in itertools.chain(container.decode(stream), [None]):  # None: flush
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(out.samples, -1)
                    if channels is not None and chunk.shape[1] != channels:
                        raise AudioLoadError(
                            path,
                            f"the channel count changes within the stream: "
                            f"{channels} then {chunk.shape[1]}",
                        )
                    channels = chunk.shape[1]
                    yield chunk, sr
        except (av.FFmpegError, EOFError) as error:
            raise AudioLoadError(path, _decode_failure(error, soundfile_error)) from error


def _mono_resampled(
    chunks: Iterator[tuple[np.ndarray, int]], path, sample_rate: int
) -> Iterator[np.ndarray]:
    stream, total = None, 0
    for chunk, file_sr in chunks:
        if not np.isfinite(chunk).all():
            raise AudioLoadError(path, "the audio contains NaN or Inf samples")
        mono = chunk.mean(axis=1, dtype=np.float32) if chunk.shape[1] > 1 else chunk[:, 0]
        total += len(mono)
        if file_sr != sample_rate and stream is None:
            stream = soxr.ResampleStream(file_sr, sample_rate, 1, dtype="float32", quality="HQ")
        yield mono if stream is None else stream.resample_chunk(mono)
    if total == 0:
        raise AudioLoadError(path, "the file holds no audio samples")
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def _rebatch(pieces: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Pieces of any length regrouped into blocks of ``size`` samples (the last one shorter)."""
    held: list[np.ndarray] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += len(piece)
        while count >= size:
            joined = np.concatenate(held)
            yield np.clip(joined[:size], -1.0, 1.0)
            held, count = [joined[size:]], count - size
    if count:
        yield np.clip(np.concatenate(held), -1.0, 1.0)


def _readable(file: Path | bytes):
    """What soundfile and PyAV open: the path as a string, or the bytes as a file object."""
    return io.BytesIO(file) if isinstance(file, bytes) else str(file)


def fit_to_length(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """Repeat a short waveform until it fills ``num_samples`` (then cut); longer ones are cut.

    Repetition rather than zero padding keeps every training frame real speech, as WeSpeaker and
    the ECAPA recipes do.
    """
    if len(wav) == 0:
        raise ValueError("cannot fit an empty waveform")
    if len(wav) < num_samples:
        wav = np.tile(wav, -(-num_samples // len(wav)))
    return wav[:num_samples]


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header: sample rate, length, channels, format. Cheap: decodes nothing,
    unless an FFmpeg container states no duration, in which case the audio is decoded to count.

    Raises:
        AudioLoadError: the file is missing, empty, not audio or holds no samples.

    >>> info = audio_info("utt.opus")  # doctest: +SKIP
    >>> info.sample_rate, info.duration_s  # doctest: +SKIP
    (16000, 2.58)
    """
    file = _check_file(path)
    info = None
    if file.suffix.lower() in _SOUNDFILE_EXTENSIONS:
        try:
            with sf.SoundFile(file) as f:
                num_samples = f.frames
                _check_wav_not_truncated(f, file, path)
                info = AudioInfo(
                    sample_rate=f.samplerate,
                    num_samples=num_samples,
                    num_channels=f.channels,
                    duration_s=num_samples / f.samplerate,
                    format=f"{f.format}/{f.subtype}".lower(),
                )
        except RuntimeError as sf_error:  # soundfile's LibsndfileError
            info = _info_pyav(file, path, soundfile_error=sf_error)
    else:
        info = _info_pyav(file, path)
    if info.num_samples <= 0:
        raise AudioLoadError(path, "the file holds no audio samples")
    return info


def _is_finite_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_file(path: str | os.PathLike) -> Path:
    try:
        file = Path(path)
    except TypeError:
        raise AudioLoadError(str(path), f"not a path: {type(path).__name__}") from None
    if not file.exists():
        raise AudioLoadError(path, "no such file")
    if not file.is_file():
        raise AudioLoadError(path, "not a regular file (a directory?)")
    if file.stat().st_size == 0:
        raise AudioLoadError(path, "the file is empty (0 bytes)")
    return file


def _window_samples(
    path: str | os.PathLike, sr: int, total: int | None, start_s: float, duration_s: float | None
) -> tuple[int, int | None]:
    """Start sample and sample count (None: to the end) of the crop window at rate ``sr``."""
    start = round(start_s * sr)
    if total is not None and start > 0 and start >= total:
        raise AudioLoadError(
            path, f"start_s={start_s} is at or past the end of the audio ({total / sr:.3f} s)"
        )
    count = None if duration_s is None else max(1, round(duration_s * sr))
    return start, count


def _read_soundfile(
    file: Path | bytes,
    path: str | os.PathLike,
    start_s: float,
    duration_s: float | None,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    with sf.SoundFile(_readable(file)) as f:
        sr, total = f.samplerate, f.frames
        if total <= 0:
            raise AudioLoadError(path, "the file holds no audio samples")
        _check_wav_not_truncated(f, file, path)
        known = total < _UNKNOWN_FRAMES
        start, count = _window_samples(path, sr, total if known else None, start_s, duration_s)
        limit = None if max_duration_s is None else math.floor(max_duration_s * sr)
        if known and limit is not None:
            wanted = total - start if count is None else min(count, total - start)
            if wanted > limit:
                raise AudioTooLongError(path, wanted / sr, max_duration_s, from_header=True)
        if start:
            f.seek(start)
        if known:
            wav = f.read(-1 if count is None else count, dtype="float32", always_2d=True)
        else:
            wav = _read_blocks(f, path, count, limit, max_duration_s)
    if not known and start and not len(wav):
        raise AudioLoadError(path, f"start_s={start_s} is at or past the end of the audio")
    return wav, sr


def _read_blocks(
    f: sf.SoundFile, path, count: int | None, limit: int | None, max_duration_s: float | None
) -> np.ndarray:
    """Up to ``count`` frames (None: to the end) of a stream of unknown length, block by block;
    AudioTooLongError once more than ``limit`` frames were read."""
    blocks: list[np.ndarray] = []
    read = 0
    while count is None or read < count:
        size = _BLOCK_FRAMES if count is None else min(_BLOCK_FRAMES, count - read)
        block = f.read(size, dtype="float32", always_2d=True)
        if not len(block):
            break
        blocks.append(block)
        read += len(block)
        if limit is not None and read > limit:
            raise AudioTooLongError(path, read / f.samplerate, max_duration_s, from_header=False)
    if not blocks:
        return np.zeros((0, f.channels), np.float32)
    return np.concatenate(blocks, axis=0)


def _check_wav_not_truncated(f: sf.SoundFile, file: Path | bytes, path: str | os.PathLike) -> None:
    """libsndfile silently reads a WAV cut short; compare the data chunk's stated size with the
    bytes that exist. Sizes 0 and 0xFFFFFFFF mean "unknown" (streamed WAVs) and are accepted."""
    if f.format not in ("WAV", "WAVEX"):
        return
    in_memory = isinstance(file, bytes)
    with io.BytesIO(file) if in_memory else open(file, "rb") as raw:
        header = raw.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        file_size = len(file) if in_memory else file.stat().st_size
        while True:
            chunk = raw.read(8)
            if len(chunk) < 8:
                return
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"data":
                available = file_size - raw.tell()
                if size not in (0, 0xFFFFFFFF, 0x7FFFFFFF) and available < size:
                    raise AudioLoadError(
                        path,
                        f"truncated: the data chunk states {size} bytes but only "
                        f"{available} are present",
                    )
                return
            raw.seek(size + (size & 1), os.SEEK_CUR)


def _open_pyav(file: Path | bytes, path: str | os.PathLike, soundfile_error: Exception | None):
    import av

    try:
        container = av.open(_readable(file), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise AudioLoadError(path, _decode_failure(error, soundfile_error)) from error
    stream = container.streams.audio[0] if container.streams.audio else None
    if stream is None or stream.codec_context is None:
        # A header ffmpeg half-parses (e.g. a WAV 'fmt ' chunk shorter than 16 bytes) gives an
        # audio stream without a decoder; treat it like no audio stream at all.
        container.close()
        reason = "no audio stream in the file" if stream is None else "no decodable audio stream"
        if soundfile_error is not None:
            reason += f" (soundfile: {soundfile_error})"
        raise AudioLoadError(path, reason)
    return container


def _decode_failure(error: Exception, soundfile_error: Exception | None) -> str:
    reason = f"not a readable audio file (ffmpeg: {error})"
    if soundfile_error is not None:
        reason += f" (soundfile: {soundfile_error})"
    return reason


def _read_pyav(
    file: Path | bytes,
    path: str | os.PathLike,
    start_s: float,
    duration_s: float | None,
    soundfile_error: Exception | None = None,
    *,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to float32 ``(N, C)``; decode then slice the window.

    With ``max_duration_s``, decoding stops once the window holds more than that
    (AudioTooLongError): FFmpeg's stated duration is not trusted, it can be missing or false.
    """
    chunks: list[np.ndarray] = []
    decoded, sr, start, end, limit = 0, 0, 0, None, None
    with contextlib.closing(_pyav_chunks(file, path, soundfile_error)) as frames:
        for chunk, sr in frames:
            if not chunks:
                start, count = _window_samples(path, sr, None, start_s, duration_s)
                end = None if count is None else start + count
                limit = None if max_duration_s is None else math.floor(max_duration_s * sr)
            chunks.append(chunk)
            decoded += len(chunk)
            if end is not None and decoded >= end:
                break  # the window is complete: no need to decode the rest
            if limit is not None and decoded - start > limit:
                length_s = (decoded - start) / sr
                raise AudioTooLongError(path, length_s, max_duration_s, from_header=False)
    if decoded == 0:
        raise AudioLoadError(path, "the file holds no audio samples")
    wav = np.concatenate(chunks, axis=0)  # (N, C)
    if start >= wav.shape[0]:
        raise AudioLoadError(
            path,
            f"start_s={start_s} is at or past the end of the audio ({wav.shape[0] / sr:.3f} s)",
        )
    return np.ascontiguousarray(wav[start:end], dtype=np.float32), sr


def _info_pyav(
    file: Path, path: str | os.PathLike, soundfile_error: Exception | None = None
) -> AudioInfo:
    with _open_pyav(file, path, soundfile_error) as container:
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        codec = stream.codec_context.name
        container_name = container.format.name.split(",")[0]
        if stream.duration is not None and stream.time_base is not None:
            num_samples = round(stream.duration * stream.time_base * sr)
        elif container.duration is not None:
            num_samples = round(container.duration * sr / 1_000_000)  # AV_TIME_BASE is 1 µs
        else:
            num_samples = None
    if not sr:
        raise AudioLoadError(path, "the audio stream states no sample rate")
    if num_samples is None:
        num_samples = _read_pyav(file, path, 0.0, None, soundfile_error)[0].shape[0]
    return AudioInfo(
        sample_rate=sr,
        num_samples=num_samples,
        num_channels=channels,
        duration_s=num_samples / sr,
        format=f"{container_name}/{codec}".lower(),
    )
