"""Streaming audio-to-motion: 16 kHz samples in, one :class:`MotionFrame` per video frame out.

The model emits one output per 20 ms token; token ``n`` animates time
``(n + 1) * token_s - lookahead_s``. Video frame ``i`` shows time ``i / fps + lead_s``; its motion
is interpolated between the two tokens around that time, so any frame rate works (25 and 30 fps
are exact or near-exact). Frame ``i`` is ready once the audio up to
``i / fps + lead_s + lookahead_s`` (rounded up to a token) has been pushed: that is the model's
algorithmic latency.

``lead_s`` is how far the mouth runs ahead of its sound. Real talkers shape the mouth before the
sound comes (anticipatory coarticulation): read with face mesh against their own sound, their
mouths lead a model placed on the phones' acoustic times by ~60 ms. Where the audio is there to
see (a file, text-to-speech or agent audio ahead of playout) the lead costs nothing; on a live
microphone it adds its length to the latency.

The same class serves the server (small pushes), ``avatar motion`` (1 s blocks of a file) and the
evaluation, so offline and streaming results are the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avatar.audio.features import LogMel
from avatar.backends.protocol import InferenceBackend
from avatar.config import FeatureConfig
from avatar.frames import MotionFrame
from avatar.observe import NULL_OBSERVER, Observer
from avatar.units import NS_PER_S


def initial_state(meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Zero streaming state from the shapes recorded in the model's metadata."""
    return {name: np.zeros(shape, np.float32) for name, shape in meta["state_shapes"].items()}


class MotionStreamer:
    """Explicit-state streaming wrapper around an audio-to-motion backend."""

    def __init__(
        self,
        backend: InferenceBackend,
        fps: float,
        start_ns: int = 0,
        observer: Observer = NULL_OBSERVER,
        lead_s: float = 0.0,
    ) -> None:
        if lead_s < 0:
            raise ValueError("the mouth's lead cannot be negative")
        meta = backend.meta
        self.observer = observer  # profiling: "features" and "motion" stages
        self.backend = backend
        self.fps = float(fps)
        self.start_ns = start_ns
        self.features = LogMel(FeatureConfig(**meta["features"]))
        self.frames_per_token = int(meta["dims"]["frames_per_token"])
        self.token_s = self.frames_per_token * self.features.cfg.hop / self.features.cfg.sample_rate
        self.lookahead_s = int(meta["dims"]["lookahead_tokens"]) * self.token_s
        self.lead_s = lead_s
        self.state_names = tuple(meta["state_shapes"])
        self._state = initial_state(meta)
        self._mel = np.zeros((0, self.features.cfg.n_mels), np.float32)
        self._bs: list[np.ndarray] = []  # outputs of tokens [self._first_token, ...)
        self._vis: list[np.ndarray] = []
        self._first_token = 0
        self._tokens = 0
        self._next_frame = 0
        self.samples_in = 0

    @property
    def latency_s(self) -> float:
        """Audio that must arrive after a frame's time before the frame can be produced."""
        return math.ceil((self.lookahead_s + self.lead_s) / self.token_s - 1e-9) * self.token_s

    def push(self, samples: np.ndarray) -> list[MotionFrame]:
        """Feed mono float32 samples at the model rate; return the frames that became ready."""
        samples = np.asarray(samples, np.float32)
        self.samples_in += len(samples)
        with self.observer.stage("features"):
            mel = self.features.push(samples)
        if len(mel):
            self._mel = np.concatenate([self._mel, mel]) if len(self._mel) else mel
        self._run_tokens(final=False)
        return self._emit(final_time_s=None)

    def flush(self) -> list[MotionFrame]:
        """End of stream: pad with silence and return every frame up to the audio's end."""
        end_s = self.samples_in / self.features.cfg.sample_rate
        pad_s = self.latency_s + 2 * self.token_s
        pad = np.zeros(round(pad_s * self.features.cfg.sample_rate), np.float32)
        mel = self.features.push(pad)
        if len(mel):
            self._mel = np.concatenate([self._mel, mel]) if len(self._mel) else mel
        self._run_tokens(final=True)
        return self._emit(final_time_s=end_s)

    def _tokens_needed(self) -> int:
        """Tokens that must have run before the next frame can be emitted."""
        u = max(self._token_pos(self._next_frame), 0.0)
        n0 = math.floor(u + 1e-9)
        return n0 + (1 if u - n0 > 1e-9 else 0) + 1

    def _run_tokens(self, final: bool) -> None:
        n_tok = len(self._mel) // self.frames_per_token
        if n_tok == 0:
            return
        if not final and self._tokens + n_tok < self._tokens_needed():
            return  # no frame would be ready yet: batch these tokens with the next ones
        chunk = self._mel[: n_tok * self.frames_per_token]
        self._mel = self._mel[n_tok * self.frames_per_token :]
        with self.observer.stage("motion"):
            out = self.backend.run({"mel": chunk[None], **self._state})
        for name in self.state_names:
            self._state[name] = out[f"{name}_out"]
        # copies: a backend may reuse its output buffers on later calls
        self._bs.extend(out["blendshapes"][0].copy())
        self._vis.extend(out["visemes"][0].copy())
        self._tokens += n_tok

    def _token_pos(self, frame: int) -> float:
        return (frame / self.fps + self.lead_s + self.lookahead_s) / self.token_s - 1.0

    def _emit(self, final_time_s: float | None) -> list[MotionFrame]:
        frames: list[MotionFrame] = []
        while True:
            i = self._next_frame
            if final_time_s is not None and i / self.fps >= final_time_s:
                break
            u = max(self._token_pos(i), 0.0)
            n0 = math.floor(u + 1e-9)
            w = u - n0
            if n0 + (1 if w > 1e-9 else 0) >= self._tokens:
                break
            frames.append(self._frame(i, n0, w))
            self._next_frame += 1
        self._drop_old_tokens()
        return frames

    def _frame(self, i: int, n0: int, w: float) -> MotionFrame:
        k = n0 - self._first_token
        bs, vis = self._bs[k], self._vis[k]
        if w > 1e-9:
            bs = (1 - w) * bs + w * self._bs[k + 1]
            vis = (1 - w) * vis + w * self._vis[k + 1]
        pts = self.start_ns + round(i * NS_PER_S / self.fps)
        return MotionFrame(i, pts, bs.astype(np.float32), vis.astype(np.float32))

    def _drop_old_tokens(self) -> None:
        keep_from = max(math.floor(self._token_pos(self._next_frame)) - 1, 0)
        drop = min(keep_from - self._first_token, len(self._bs))
        if drop > 0:
            del self._bs[:drop]
            del self._vis[:drop]
            self._first_token += drop
