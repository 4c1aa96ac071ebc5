"""Encode and send times of the video sender, for ``avatar serve --profile``.

aiortc encodes inside ``RTCRtpSender._next_encoded_frame`` (``track.recv()``, then the encoder in
its executor) and sends the packets before asking for the next frame. That private method is
wrapped on the one sender instance: *encode* runs from our track handing the frame over to the
encoded payloads, *send* from there to the sender's next request. If aiortc changes this
internal, :func:`instrument_sender` raises instead of measuring something else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avatar.clock import Clock
from avatar.frames import VideoFrame
from avatar.server.tracks import EngineVideoTrack


def instrument_sender(
    sender: Any, track: EngineVideoTrack, clock: Clock, on_sent: Callable[[VideoFrame], None]
) -> None:
    """Time encode and send of every frame ``track`` gives ``sender``; ``on_sent`` gets each
    frame once its packets are out (its ``timing`` then has every stage)."""
    original = getattr(sender, "_next_encoded_frame", None)
    if original is None or not callable(original):
        raise RuntimeError("aiortc's RTCRtpSender has no _next_encoded_frame: profiling needs it")
    pending: list[tuple[VideoFrame, int]] = []

    async def timed(codec: Any) -> Any:
        now = clock.now_ns()
        if pending:
            sent, encoded = pending.pop()
            assert sent.timing is not None
            sent.timing.stages["send"] = now - encoded
            sent.timing.starts["send"] = encoded
            on_sent(sent)
        result = await original(codec)
        frame = track.last
        if frame is not None and frame.timing is not None and result is not None:
            done = clock.now_ns()
            frame.timing.stages["encode"] = done - track.returned_ns
            frame.timing.starts["encode"] = track.returned_ns
            pending.append((frame, done))
            track.last = None
        return result

    sender._next_encoded_frame = timed
