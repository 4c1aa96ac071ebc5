"""Opus round trip: what a browser microphone's audio goes through on its way over WebRTC."""

from __future__ import annotations

import fractions
import functools

import av
import numpy as np
from scipy import signal

from avatar.data.audio_ops import resample_audio, with_audio
from avatar.data.types import AlignedUtterance

OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms at 48 kHz, as WebRTC sends


def _opus_encoder(bitrate: int, complexity: int) -> av.AudioCodecContext:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = OPUS_RATE
    enc.layout = "mono"
    enc.format = "flt"
    enc.bit_rate = bitrate
    enc.time_base = fractions.Fraction(1, OPUS_RATE)
    # WebRTC's choices: VoIP application, VBR, in-band FEC on, 20 ms frames.
    enc.options = {
        "application": "voip",
        "vbr": "on",
        "fec": "1",
        "frame_duration": "20",
        "compression_level": str(complexity),
    }
    enc.open()
    return enc


def _opus_codec(
    x: np.ndarray, bitrate: int, complexity: int, lost: np.ndarray | None
) -> np.ndarray:
    """Encode 48 kHz mono in 20 ms frames and decode with FFmpeg's decoder (as aiortc does).

    ``lost[i]`` drops packet ``i``: 20 ms of zeros take its place (FFmpeg's decoder has no
    concealment for a missing packet). The first two packets are never dropped.
    Output is not delay-compensated; see :func:`opus_delay`.
    """
    enc = _opus_encoder(bitrate, complexity)
    dec = av.CodecContext.create("opus", "r")
    dec.sample_rate = OPUS_RATE
    dec.layout = "mono"
    dec.extradata = enc.extradata  # OpusHead: the decoder drops the encoder's pre-skip
    frames = np.zeros(-(-len(x) // OPUS_FRAME) * OPUS_FRAME, np.float32)
    frames[: len(x)] = x
    packets = []
    for i, block in enumerate(frames.reshape(-1, OPUS_FRAME)):
        frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts = OPUS_RATE, i * OPUS_FRAME
        packets += enc.encode(frame)
    packets += enc.encode(None)
    out: list[np.ndarray] = []
    for i, packet in enumerate(packets):
        if lost is not None and i >= 2 and i < len(lost) and lost[i]:
            out.append(np.zeros(OPUS_FRAME, np.float32))
            continue
        out += [f.to_ndarray().reshape(-1) for f in dec.decode(packet)]
    out += [f.to_ndarray().reshape(-1) for f in dec.decode(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@functools.lru_cache(maxsize=1)
def opus_delay() -> int:
    """Measured lag (48 kHz samples) of the decoded stream behind the encoder's input.

    Measured once per process: 1 s of white noise through the codec at 128 kbit/s (where it
    keeps the waveform), then the peak of the cross-correlation within +-40 ms. Opus's delay
    does not depend on the bitrate. The encoder's pre-skip (312 samples, 6.5 ms, signalled in
    the OpusHead) is already dropped by FFmpeg's decoder, so this is 0 with PyAV 18; measuring
    keeps the compensation right if a build behaves differently.
    """
    x = (0.1 * np.random.default_rng(0).standard_normal(OPUS_RATE)).astype(np.float32)
    y = _opus_codec(x, 128000, 9, None)[: len(x)]
    corr = signal.correlate(y, x, mode="full", method="fft")
    max_lag, mid = 2 * OPUS_FRAME, len(x) - 1
    return int(np.argmax(corr[mid - max_lag : mid + max_lag + 1])) - max_lag


def opus_round_trip(
    utt: AlignedUtterance,
    bitrate: int = 32000,
    *,
    complexity: int = 9,
    loss_rate: float = 0.0,
    rng: np.random.Generator | None = None,
) -> AlignedUtterance:
    """What a browser microphone's audio goes through: up to 48 kHz, Opus at ``bitrate`` in
    20 ms frames, FFmpeg decode, s16 (aiortc hands s16), back to the input rate.

    The codec's measured delay (:func:`opus_delay`) is removed so the phone times stay exact.
    ``loss_rate`` drops that share of packets at random (needs ``rng``), leaving 20 ms gaps.
    """
    sr = utt.sample_rate
    x = resample_audio(utt.audio.astype(np.float64), sr, OPUS_RATE)
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    lost = None
    if loss_rate > 0.0:
        if rng is None:
            raise ValueError("opus_round_trip with loss_rate > 0 needs an rng")
        lost = rng.random(len(x) // OPUS_FRAME + 4) < loss_rate
    delay = opus_delay()
    y = _opus_codec(x, bitrate, complexity, lost).astype(np.float64)
    y = y[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay), y])
    y = np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]
    y = np.round(np.clip(y, -1.0, 1.0) * 32767.0) / 32768.0
    audio = resample_audio(y, OPUS_RATE, sr)[: len(utt.audio)]
    audio = np.pad(audio, (0, len(utt.audio) - len(audio)))
    n_lost = float(np.sum(lost)) if lost is not None else 0.0
    return with_audio(utt, audio, opus_kbps=bitrate / 1000, opus_lost=n_lost)
