"""Video encoder settings: CPU per frame and picture quality on the avatar's own frames.

    python scripts/bench_encoders.py [--seconds 8] [--size 512] [--vp8 KEY=VAL,KEY=VAL ...]

Renders real speech with the shipped engine, then encodes the frames with aiortc's stock encoders
and with ours (``server.encoder`` options through :func:`avatar.server.aiortc_hooks.make_encoder`,
the factory every sender uses), VP8 and H264, in the same run; CPU is the process's (x264 runs
its own threads). The payloads are depacketized and decoded to give PSNR against the rendered
frames; bitrate is what the encoder produced at aiortc's default target. Each ``--vp8`` adds a
VP8 row with those libvpx options over ours. Two clips: *talking* (every frame drawn) and
*listening* (each frame shown twice, as the engine repeats frames in silence).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import av
import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import get_encoder
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from avatar.compose.offline import speech_frames
from avatar.compose.profile import machine, session_speech
from avatar.config import Config, load_config
from avatar.server.aiortc_hooks import make_encoder, tune_encoders
from avatar.server.tracks import rgb_to_video_frame
from avatar.units import OUTPUT_RATE, VIDEO_CLOCK

CODECS = {"VP8": ("libvpx", vp8_depayload), "H264": ("h264", h264_depayload)}


def encode_all(encoder: Any, images: np.ndarray) -> tuple[float, list[list[bytes]]]:
    """Process CPU seconds per frame (x264 runs its own threads) and each frame's RTP payloads."""
    frames = [rgb_to_video_frame(im, round(i * 1e9 / 25)) for i, im in enumerate(images)]
    coded: list[list[bytes]] = []
    start = time.process_time()
    for f in frames:
        coded.append(encoder.encode(f)[0])
    cpu = (time.process_time() - start) / len(frames)
    return cpu, coded


def psnr(
    decoder_name: str, depayload: Any, streams: list[list[bytes]], images: np.ndarray
) -> float:
    dec = av.CodecContext.create(decoder_name, "r")
    assert isinstance(dec, av.VideoCodecContext)
    values = []
    for i, payloads in enumerate(streams):
        data = b"".join(depayload(p) for p in payloads)
        for frame in dec.decode(av.Packet(data)) if data else []:
            err = (frame.to_ndarray(format="rgb24").astype(np.float32) - images[i]) ** 2
            values.append(10 * np.log10(255**2 / max(float(err.mean()), 1e-6)))
    return float(np.mean(values[10:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--vp8", action="append", default=[], help="extra VP8 options, k=v,k=v")
    args = ap.parse_args()
    cfg = load_config(overrides=[f"render.size={args.size}"])
    images = np.stack([f.image for f in speech_frames(cfg, session_speech(args.seconds),
                                                      OUTPUT_RATE)])  # fmt: skip
    print(f"machine: {machine()}; {len(images)} frames of speech at {args.size}x{args.size}, "
          f"aiortc's default bitrate")  # fmt: skip
    silence = np.zeros(round(args.seconds * OUTPUT_RATE), np.float32)
    idle = np.stack([f.image for f in speech_frames(cfg, silence, OUTPUT_RATE)])
    listening = np.repeat(idle[::2], 2, axis=0)  # engine.idle_render_every = 2: each one twice
    for clip, frames in (("talking", images), ("listening", listening)):
        print(f"\n{clip}")
        for mime in CODECS:
            variants: list[tuple[str, dict[str, str] | None]] = [
                ("aiortc stock", None),
                ("ours", {}),
            ]
            if mime == "VP8":
                variants += [(v, dict(kv.split("=", 1) for kv in v.split(","))) for v in args.vp8]
            rows = {name: measure(mime, extra, frames, cfg) for name, extra in variants}
            for name, (cpu, db, kbps) in rows.items():
                ratio = cpu / rows["ours"][0]
                print(f"{mime:>5} {name:>32}: {1000 * cpu:5.2f} ms/frame (x{ratio:.2f} of ours), "
                      f"PSNR {db:5.2f} dB, {kbps:4.0f} kbit/s")  # fmt: skip
    return 0


def measure(
    mime: str, extra: dict[str, str] | None, images: np.ndarray, cfg: Config
) -> tuple[float, float, float]:
    """CPU s per frame, PSNR and kbit/s of one encoder: aiortc's stock one (``extra`` None) or
    ours with ``extra`` options over the configured ones."""
    decoder_name, depayload = CODECS[mime]
    codec = RTCRtpCodecParameters(mimeType=f"video/{mime}", clockRate=VIDEO_CLOCK)
    if extra is not None:
        tune_encoders(
            cfg.server.encoder.model_copy(update={"vp8": {**cfg.server.encoder.vp8, **extra}})
        )
    make = get_encoder if extra is None else make_encoder
    encode_all(make(codec), images)  # the first pass warms caches and rate control
    cpu, streams = encode_all(make(codec), images)
    kbps = sum(len(b) for p in streams for b in p) * 8 / (len(images) / 25) / 1000
    return cpu, psnr(decoder_name, depayload, streams, images), kbps

    return 0


if __name__ == "__main__":
    sys.exit(main())
