"""Decode any audio file FFmpeg reads into mono float32 at the model rate, in bounded memory.

:class:`AudioReader` streams a file as fixed-size blocks (a one-hour file is never held whole);
:func:`load_audio` is the whole-clip convenience for short files and :func:`probe_audio` reads
the header only. Every failure is an :class:`~avatar.errors.AudioInputError` with a one-line
message that says what to do; FFmpeg's own exceptions never escape.

What cannot be trusted in a file is repaired and counted in :class:`DecodeReport`: NaN/inf
samples (float wavs) become 0, packets the decoder rejects are skipped, and a file that ends
early is decoded up to where it breaks. ``report.warning()`` gives one line for the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.container import InputContainer

from avatar.audio.resample import MonoResampler
from avatar.errors import AudioInputError
from avatar.units import ANALYSIS_RATE

log = logging.getLogger(__name__)

_FORMATS_HINT = "pass a wav, flac, mp3, ogg/vorbis, opus or m4a file"
_IMAGE_DEMUXERS = ("_pipe", "image2")
_SHORT_TOLERANCE_S = 0.1  # decoded vs declared duration: slack before calling a file truncated


@dataclass(slots=True, frozen=True)
class AudioInfo:
    """What a file's header says about its (first) audio stream."""

    path: str
    container: str  # FFmpeg demuxer name, e.g. "wav", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # FFmpeg decoder name, e.g. "pcm_s16le", "mp3float", "opus"
    sample_rate: int
    channels: int
    duration_s: float | None  # None when the header does not say


@dataclass(slots=True)
class DecodeReport:
    """What decoding a file had to repair or skip (filled in while iterating)."""

    rate: int
    declared_s: float | None = None
    samples_out: int = 0
    nonfinite: int = 0  # NaN/inf input samples replaced by 0
    bad_packets: int = 0  # packets the decoder rejected and that were skipped
    stopped_early: bool = False  # the demuxer failed before the end of the file
    last_error: str = ""

    @property
    def decoded_s(self) -> float:
        return self.samples_out / self.rate

    @property
    def truncated(self) -> bool:
        """True when part of the file could not be decoded (corrupt or cut short).

        "Cut short" compares with the duration the header declares; for a VBR mp3 without an
        index that is FFmpeg's estimate from the bitrate, so this can be a false alarm there.
        """
        short = (
            self.declared_s is not None
            and self.decoded_s < self.declared_s * 0.99 - _SHORT_TOLERANCE_S
        )
        return self.stopped_early or self.bad_packets > 0 or short

    def warning(self) -> str | None:
        """One line describing what was repaired, or None for a clean decode."""
        notes = []
        if self.nonfinite:
            notes.append(f"{self.nonfinite} NaN/inf samples replaced by silence")
        if self.bad_packets:
            notes.append(f"{self.bad_packets} corrupt packets skipped")
        if self.truncated:
            declared = f" of {self.declared_s:.2f} s" if self.declared_s else ""
            notes.append(f"only {self.decoded_s:.2f} s{declared} could be decoded")
        return "; ".join(notes) if notes else None


class AudioReader:
    """Stream an audio file as mono float32 blocks of ``round(block_s * rate)`` samples.

    The file is opened and checked at construction (so a bad path fails at once); iterating
    yields full blocks and a shorter last one. Memory stays at about one block plus one decoded
    frame whatever the file's length. Use as a context manager, or iterate to the end, to close
    the file. Raises :class:`AudioInputError` for a file with no decodable audio.
    """

    def __init__(self, path: str | Path, rate: int = ANALYSIS_RATE, block_s: float = 1.0) -> None:
        if rate <= 0 or block_s <= 0:
            raise ValueError("rate and block_s must be positive")
        self.path = Path(path)
        self.rate = rate
        self.block = max(1, round(block_s * rate))
        self._container, self._stream = _open_audio(self.path)
        self.info = _info(self.path, self._container, self._stream)
        self.report = DecodeReport(rate=rate, declared_s=self.info.duration_s)
        self._mono = MonoResampler(rate)
        self._blocks: Generator[np.ndarray, None, None] = self._iter_blocks()

    def __iter__(self) -> AudioReader:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._blocks)

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; iteration stops."""
        self._blocks.close()
        self._container.close()

    def read_all(self) -> np.ndarray:
        """The rest of the file as one (n,) float32 array."""
        blocks = list(self)
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)

    def _iter_blocks(self) -> Generator[np.ndarray, None, None]:
        try:
            parts: list[np.ndarray] = []
            held = 0
            for samples in self._samples():
                parts.append(samples)
                held += len(samples)
                if held >= self.block:
                    buf = np.concatenate(parts)
                    n_full = len(buf) // self.block * self.block
                    yield from np.split(buf[:n_full], n_full // self.block)
                    parts, held = [buf[n_full:]], len(buf) - n_full
            if held:
                yield np.concatenate(parts)
            self._check_not_empty()
        finally:
            self._container.close()

    def _samples(self) -> Iterator[np.ndarray]:
        for frame in self._frames():
            out = self._convert(frame)
            self.report.nonfinite = self._mono.nonfinite
            self.report.samples_out += len(out)
            yield out
        tail = self._mono.flush()
        self.report.samples_out += len(tail)
        yield tail

    def _convert(self, frame: av.AudioFrame) -> np.ndarray:
        try:
            return self._mono.push(frame)
        except (av.FFmpegError, ValueError) as e:
            layout = f"{frame.format.name}, {frame.layout.name}, {frame.sample_rate} Hz"
            raise AudioInputError(
                f"{self.path}: cannot convert its audio ({layout}: {_reason(e)});"
                " convert the file to wav or flac first"
            ) from None

    def _frames(self) -> Iterator[av.AudioFrame]:
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as e:
                self.report.stopped_early = True
                self.report.last_error = _reason(e)
                return
            yield from self._decode(packet)

    def _decode(self, packet: av.Packet[av.AudioStream]) -> list[av.AudioFrame]:
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            self.report.bad_packets += 1
            self.report.last_error = _reason(e)
            return []
        return frames

    def _check_not_empty(self) -> None:
        if self.report.samples_out > 0:
            return
        if self.report.last_error:
            raise AudioInputError(
                f"{self.path}: no audio could be decoded ({self.report.last_error});"
                " the file is corrupt or truncated, re-export it"
            )
        raise AudioInputError(
            f"{self.path} contains no audio samples (its audio stream is empty);"
            " pass a file with sound"
        )


def iter_audio(path: str | Path, rate: int = ANALYSIS_RATE, block_s: float = 1.0) -> AudioReader:
    """Stream ``path`` as mono float32 blocks at ``rate``; see :class:`AudioReader`.

    The returned reader is the iterator; its ``report`` says what was repaired once iteration
    ends. Raises :class:`AudioInputError` at once for a missing, empty or non-audio file.
    """
    return AudioReader(path, rate, block_s)


def load_audio(path: str | Path, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """Decode a whole (short) file to one (n,) float32 mono array at ``rate``.

    Repairs (NaN samples, corrupt packets, a truncated end) are logged as one warning; use
    :class:`AudioReader` to read the :class:`DecodeReport` instead.
    """
    with AudioReader(path, rate, block_s=10.0) as reader:
        audio = reader.read_all()
        warning = reader.report.warning()
    if warning:
        log.warning("%s: %s", path, warning)
    return audio


def probe_audio(path: str | Path) -> AudioInfo:
    """Read the header of ``path``: codec, rate, channels and duration if known."""
    p = Path(path)
    container, stream = _open_audio(p)
    try:
        return _info(p, container, stream)
    finally:
        container.close()


def _open_audio(path: Path) -> tuple[InputContainer, av.AudioStream]:
    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except PermissionError:
        raise AudioInputError(f"cannot read {path}: permission denied") from None
    except (av.FFmpegError, OSError) as e:
        raise AudioInputError(
            f"{path} is not an audio file FFmpeg can read ({_reason(e)}); {_FORMATS_HINT}"
        ) from None
    try:
        return container, _audio_stream(path, container)
    except AudioInputError:
        container.close()
        raise


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioInputError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioInputError(f"{path} is a directory; pass an audio file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path} is empty (0 bytes); {_FORMATS_HINT}")


def _audio_stream(path: Path, container: InputContainer) -> av.AudioStream:
    if container.streams.audio:
        best = container.streams.best("audio")
        stream = best if isinstance(best, av.AudioStream) else container.streams.audio[0]
        if stream.sample_rate > 0 and stream.channels > 0:
            return stream
        raise AudioInputError(f"{path}: the audio stream has no sample rate or channels")
    fmt = container.format.name
    if fmt == "tty" or fmt.endswith(_IMAGE_DEMUXERS):
        kind = "text" if fmt == "tty" else "an image"
        raise AudioInputError(f"{path} is not an audio file (it reads as {kind}); {_FORMATS_HINT}")
    found = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams) or "none"
    raise AudioInputError(
        f"{path} has no audio stream (streams found: {found}); pass a file with sound"
    )


def _info(path: Path, container: InputContainer, stream: av.AudioStream) -> AudioInfo:
    return AudioInfo(
        path=str(path),
        container=container.format.name,
        codec=stream.codec_context.name,
        sample_rate=stream.sample_rate,
        channels=stream.channels,
        duration_s=_duration_s(container, stream),
    )


def _duration_s(container: InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _reason(e: BaseException) -> str:
    """FFmpeg's message without the errno number and file name."""
    text = getattr(e, "strerror", None) or str(e)
    return str(text).strip().rstrip(".").lower()
