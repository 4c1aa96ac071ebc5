"""Video encoder settings: CPU per frame and picture quality on the avatar's own frames.

    python scripts/bench_encoders.py [--seconds 8] [--size 512]

Renders real speech with the shipped engine, then encodes the frames with aiortc's stock encoders
and with ours (``server.encoder`` options through :func:`avatar.server.aiortc_hooks.make_encoder`,
the factory every sender uses), VP8 and H264, in the same run; CPU is the process's (x264 runs
its own threads). The payloads are depacketized and decoded to give PSNR against the rendered
frames; bitrate is what the encoder produced at aiortc's default target.
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
from avatar.config import load_config
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
    args = ap.parse_args()
    cfg = load_config(overrides=[f"render.size={args.size}"])
    images = np.stack([f.image for f in speech_frames(cfg, session_speech(args.seconds),
                                                      OUTPUT_RATE)])  # fmt: skip
    print(f"machine: {machine()}; {len(images)} frames of speech at {args.size}x{args.size}, "
          f"aiortc's default bitrate")  # fmt: skip
    tune_encoders(cfg.server.encoder)
    for mime, (decoder_name, depayload) in CODECS.items():
        codec = RTCRtpCodecParameters(mimeType=f"video/{mime}", clockRate=VIDEO_CLOCK)
        rows = {}
        for name, make in (("aiortc stock", get_encoder), ("ours", make_encoder)):
            encoder = make(codec)
            cpu, _ = encode_all(encoder, images)  # the first pass warms caches and rate control
            encoder = make(codec)
            cpu, streams = encode_all(encoder, images)
            kbps = sum(len(b) for p in streams for b in p) * 8 / (len(images) / 25) / 1000
            rows[name] = cpu
            print(f"{mime:>5} {name:>13}: {1000 * cpu:5.2f} ms/frame, "
                  f"PSNR {psnr(decoder_name, depayload, streams, images):5.2f} dB, "
                  f"{kbps:4.0f} kbit/s")  # fmt: skip
        print(f"{mime:>5} ours / stock CPU: {rows['ours'] / rows['aiortc stock']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
