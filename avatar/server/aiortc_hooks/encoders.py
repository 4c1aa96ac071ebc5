"""Hooks on aiortc's video encoders: our libvpx / libx264 options over aiortc's.

:func:`tune_encoders` / :func:`make_encoder`: ``aiortc.rtcrtpsender.get_encoder`` (how a sender
makes its encoder) and the ``codec`` context aiortc's VP8 and H264 encoders create on their first
frame and give their ``options`` to before it opens.
"""

from __future__ import annotations

import inspect
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpsender
from aiortc import RTCRtpCodecParameters
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder

from avatar.config import EncoderConfig

_stock_get_encoder = aiortc.codecs.get_encoder


def _check_encoders() -> str | None:
    if getattr(aiortc.rtcrtpsender, "get_encoder", None) not in (_stock_get_encoder, make_encoder):
        return "aiortc.rtcrtpsender no longer makes encoders with codecs.get_encoder"
    for cls, call in ((Vp8Encoder, "encode"), (H264Encoder, "_encode_frame")):
        src = inspect.getsource(getattr(cls, call))
        if "self.codec = av.CodecContext.create(" not in src or "self.codec.options = {" not in src:
            return f"{cls.__name__} no longer sets its codec context's options when it opens"
    return None


# -- encoder settings ------------------------------------------------------------------------

_tuning: dict[str, dict[str, str]] = {}  # mime type (lower case) -> options over aiortc's


class _TunedContext:
    """A codec context whose ``options`` always include ``tuning`` (aiortc sets them once,
    before the context opens); everything else goes to the context itself."""

    __slots__ = ("_ctx", "_tuning")

    def __init__(self, ctx: Any, tuning: dict[str, str]) -> None:
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "_tuning", tuning)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._tuning}
        setattr(self._ctx, name, value)


def _tuned_class(base: type[Encoder]) -> type[Encoder]:
    class Tuned(base):  # type: ignore[valid-type,misc]
        def __init__(self, tuning: dict[str, str]) -> None:
            self.tuning = tuning
            super().__init__()

        @property
        def codec(self) -> Any:
            return self.__dict__.get("_tuned_codec")

        @codec.setter
        def codec(self, ctx: Any) -> None:
            tuned = ctx if ctx is None else _TunedContext(ctx, self.tuning)
            self.__dict__["_tuned_codec"] = tuned

    Tuned.__name__ = f"Tuned{base.__name__}"
    return Tuned


_TUNED = {"video/vp8": _tuned_class(Vp8Encoder), "video/h264": _tuned_class(H264Encoder)}


def make_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    """aiortc's encoder for ``codec``, with the options :func:`tune_encoders` set."""
    mime = codec.mimeType.lower()
    tuning = _tuning.get(mime)
    if not tuning or mime not in _TUNED:
        return _stock_get_encoder(codec)
    return _TUNED[mime](dict(tuning))  # type: ignore[call-arg]


def tune_encoders(cfg: EncoderConfig) -> None:
    """Encoders made from now on (process-wide) take these libvpx / libx264 options over
    aiortc's (which are tuned for camera video: a denoiser, x264's default preset)."""
    _tuning.clear()
    _tuning.update({"video/vp8": dict(cfg.vp8), "video/h264": dict(cfg.h264)})
    aiortc.rtcrtpsender.get_encoder = make_encoder
