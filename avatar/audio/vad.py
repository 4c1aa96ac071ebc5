"""The speech gate: webrtcvad decisions -> speech START/END events and model wake/sleep.

:class:`SpeechGate` takes mono float32 audio at the analysis rate in blocks of any size, judges
every ``frame_ms`` frame voiced or not (webrtcvad), and returns per block a :class:`GateStep`:
the speech events that became final, and where in the block the motion model should wake or may
sleep. It holds no audio, only the samples of a frame not yet complete. Every decision is taken
per frame, so blocks of any size (20 ms WebRTC packets, 1 s file blocks) give the same events and
the same wake/sleep points.

Events (``VadConfig``): speech opens when at least ``start_ratio`` of the last
``start_window_ms`` frames are voiced and closes when at least ``end_ratio`` of the last
``end_window_ms`` frames are unvoiced; after each switch the opposite window starts empty, so an
utterance lasts at least ``end_ratio * end_window_ms``. A START reaches back ``pre_padding_ms``
before the frame that decided it (a word's onset, which webrtcvad often misses, belongs to the
speech); an END sits at the end of the frame that decided it, so the hangover stays in the speech.
Events are released once nothing later can move them: an END waits ``pre_padding_ms``
(:attr:`SpeechGate.delay_ms`), and if speech reopens within that time and the new START would
reach back over it, the END is withdrawn: a pause shorter than the pre-padding does not split an
utterance. Event times are on the analysis timeline: ``pts_ns = start_pts_ns + sample * 1e9 //
rate``, counted from the gate's first sample.

Warm-up: a fresh webrtcvad calls any non-silent sound voiced for its first ~100 ms (measured: up
to 150 ms in mode 0 with 30 ms frames) while its noise model adapts. The first ``warmup_ms`` are
classified (to adapt) but counted as unvoiced, and a START decided within the pre-padding after
the warm-up reaches back to the start of the stream, so speech at the very start is still labelled
from its first sample (events are then held until that is decided). Once per gate:
:meth:`SpeechGate.reset` and :meth:`SpeechGate.flush` keep the adapted model.

Wake and sleep (the silence gate of the motion model): asleep, the model wakes at the end of the
first voiced frame (after the warm-up); awake, it may sleep at the end of a frame once speech has
ended and nothing was voiced for ``sleep_after_ms``. Measured cost: ~20 us per 20 ms frame pushed
frame by frame (webrtcvad itself ~3.5 us), ~7 us per frame in 1 s blocks (an earlier VM; on a
later one ~7.6 us per 20 ms packet pushed one by one, webrtcvad ~1.6 us of it).

webrtcvad reads 16-bit PCM, so the analysis branch (float32, 16 kHz, decimated from the output
timeline) is quantised once more here: ~3.4 us per 20 ms packet (0.14 us per 20 ms in 1 s
blocks), against ~1.3 ms of analysis per 40 ms frame. The one way round it, webrtcvad on the
source's own s16 at 48 kHz, costs ~13.4 us per 20 ms and leaves the analysis timeline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import webrtcvad

from avatar.audio.pcm import to_pcm16
from avatar.config import VadConfig
from avatar.frames import SpeechEvent, SpeechEventKind
from avatar.observe import NULL_OBSERVER, Observer
from avatar.units import ANALYSIS_RATE, NS_PER_S

VAD_RATES = (8000, 16000, 32000, 48000)
START = SpeechEventKind.START
END = SpeechEventKind.END


class FrameClassifier(Protocol):
    """Says whether one frame of 16-bit little-endian mono PCM is voiced (``webrtcvad.Vad``)."""

    def is_speech(self, buf: bytes, sample_rate: int) -> bool: ...


@dataclass(slots=True)
class _Pending:
    """A decided event not yet released, at an absolute sample index."""

    kind: SpeechEventKind
    index: int


@dataclass(slots=True)
class GateStep:
    """What one block decided: released events, and the model's wake/sleep switches."""

    events: list[SpeechEvent] = field(default_factory=list)
    # (offset in the block, awake from there on), in order: True = run the model from this
    # point (with its pre-roll), False = flush it here
    switches: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def wake(self) -> bool:
        return any(awake for _, awake in self.switches)

    @property
    def sleep(self) -> bool:
        return any(not awake for _, awake in self.switches)


class SpeechGate:
    """Streaming voice activity of mono float32 audio; see the module docstring."""

    def __init__(
        self,
        cfg: VadConfig,
        sample_rate: int = ANALYSIS_RATE,
        classifier: FrameClassifier | None = None,
        sleep_after_ms: int = 300,
        start_pts_ns: int = 0,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        if sample_rate not in VAD_RATES:
            raise ValueError(f"webrtcvad needs a rate in {VAD_RATES}, got {sample_rate}")
        self.cfg, self.sample_rate, self.observer = cfg, sample_rate, observer
        self.frame_samples = sample_rate * cfg.frame_ms // 1000
        self._pad_frames = math.ceil(cfg.pre_padding_ms / cfg.frame_ms)
        self._start_window = max(1, round(cfg.start_window_ms / cfg.frame_ms))
        self._end_window = max(1, round(cfg.end_window_ms / cfg.frame_ms))
        self._start_need = math.ceil(cfg.start_ratio * self._start_window - 1e-9)
        self._end_need = math.ceil(cfg.end_ratio * self._end_window - 1e-9)
        self._sleep_frames = max(1, sleep_after_ms // cfg.frame_ms)
        self._vad: FrameClassifier = classifier or webrtcvad.Vad(cfg.aggressiveness)
        self._warmup_left = math.ceil(cfg.warmup_ms / cfg.frame_ms)  # frames, once per gate
        self._start_pts_ns = start_pts_ns
        self._partial = np.zeros(0, np.float32)  # the samples of a frame not yet complete
        self._next_frame = 0  # absolute index of the first unclassified sample
        self.frames_classified = 0
        self.frames_voiced = 0
        self._switches: list[tuple[int, bool]] = []  # (absolute end of a frame, awake after it)
        self.reset()

    def reset(self) -> None:
        """Interruption: drop undecided events and put the model to sleep; the timeline and the
        adapted webrtcvad model go on."""
        self._origin = self._next_frame + len(self._partial)  # where the current segment began
        # Set when the warm-up ends: a START whose pre-padding begins at or before this index
        # reaches back to _origin.
        self._warmup_end: int | None = None
        self._speaking = False
        self._recent_voiced: deque[bool] = deque(maxlen=self._start_window)
        self._recent_unvoiced: deque[bool] = deque(maxlen=self._end_window)
        self._events: deque[_Pending] = deque()
        self.awake = False
        # frame number of the last voiced frame (after warm-up): forgotten, or the first frame
        # after an interruption mid-word would wake the model again for ``sleep_after_ms``
        self._last_voiced = -(10**9)

    @property
    def delay_ms(self) -> float:
        """How long a decided END waits before it is released (the pre-padding)."""
        return self._pad_frames * self.cfg.frame_ms

    @property
    def warming_up(self) -> bool:
        """True while a START could still reach back to the start of the stream."""
        if self._warmup_left:
            return True
        return self._warmup_end is not None and self._pad_start() <= self._warmup_end

    @property
    def held_samples(self) -> int:
        """Samples pushed but not yet judged: less than one frame."""
        return len(self._partial)

    @property
    def speaking(self) -> bool:
        """The latest decision (it runs ahead of the released events by :attr:`delay_ms`)."""
        return self._speaking

    def push(self, samples: np.ndarray) -> GateStep:
        """Add mono float32 samples; returns the released events and the model's transitions."""
        x = np.asarray(samples, np.float32)
        if x.ndim != 1:
            raise ValueError(f"SpeechGate takes mono (n,) samples, got shape {x.shape}")
        block_start = self._next_frame + len(self._partial)  # absolute index of x[0]
        with self.observer.stage("vad"):
            self._switches = []
            self._classify(x)
            limit = self._origin if self.warming_up else max(self._origin, self._pad_start())
            switches = [(end - block_start, awake) for end, awake in self._switches]
            return GateStep(self._release(limit), switches)

    def flush(self) -> GateStep:
        """End of stream: an END if speech is open, every event released, the model asleep. A
        partial last frame is not judged. The timeline continues for later pushes."""
        end = self._next_frame + len(self._partial)
        if self._speaking:
            self._events.append(_Pending(END, end))
        step = GateStep(self._release(end), [(0, False)] if self.awake else [])
        self._next_frame, self._partial = end, np.zeros(0, np.float32)
        self.reset()
        return step

    # -- decisions ------------------------------------------------------------------------

    def _classify(self, x: np.ndarray) -> None:
        buf = np.concatenate([self._partial, x]) if len(self._partial) else x
        fs = self.frame_samples
        n = len(buf) // fs
        pcm = to_pcm16(buf[: n * fs])
        for k in range(n):
            voiced = self._vad.is_speech(pcm[k * fs : (k + 1) * fs].tobytes(), self.sample_rate)
            self._next_frame += fs
            self._decide(bool(voiced))
        self._partial = buf[n * fs :].copy()

    def _pad_start(self) -> int:
        """Where the pre-padding of a START decided now would begin."""
        return self._next_frame - self._pad_frames * self.frame_samples

    def _decide(self, voiced: bool) -> None:
        self.frames_classified += 1
        self.frames_voiced += voiced
        if self._warmup_left:
            self._warmup_left -= 1
            if self._warmup_left == 0:
                self._warmup_end = self._next_frame
            voiced = False
        if voiced:
            self._last_voiced = self.frames_classified
        self._recent_voiced.append(voiced)
        self._recent_unvoiced.append(not voiced)
        if not self._speaking and sum(self._recent_voiced) >= self._start_need:
            self._open()
        elif self._speaking and sum(self._recent_unvoiced) >= self._end_need:
            self._close()
        self._gate_model()

    def _gate_model(self) -> None:
        """Wake or sleep the model at the end of the frame just judged."""
        quiet = self.frames_classified - self._last_voiced
        if not self.awake and quiet <= 1:
            self.awake = True
            self._switches.append((self._next_frame, True))
        elif self.awake and not self._speaking and quiet > self._sleep_frames:
            self.awake = False
            self._switches.append((self._next_frame, False))

    def _open(self) -> None:
        self._speaking = True
        self._recent_unvoiced.clear()
        start = self._pad_start()
        if self._warmup_end is not None and start <= self._warmup_end:
            start = self._origin  # the warm-up audio was not judged: it may be speech
        start = max(self._origin, start)
        last = self._events[-1] if self._events else None
        if last is not None and last.kind is END and last.index >= start:
            self._events.pop()  # not released yet: the utterance simply continues
            return
        self._events.append(_Pending(START, start))

    def _close(self) -> None:
        self._speaking = False
        self._recent_voiced.clear()
        self._events.append(_Pending(END, self._next_frame))

    def _release(self, limit: int) -> list[SpeechEvent]:
        out: list[SpeechEvent] = []
        while self._events and self._events[0].index <= limit:
            pending = self._events.popleft()
            out.append(SpeechEvent(pending.kind, self._pts(pending.index)))
        return out

    def _pts(self, index: int) -> int:
        return self._start_pts_ns + index * NS_PER_S // self.sample_rate
