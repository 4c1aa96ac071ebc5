"""Writers for motion results: streamed ``motion.json`` and a plot over the waveform."""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType

import numpy as np

from avatar.frames import MotionFrame
from avatar.motion.channels import BLENDSHAPE_INDEX, VISEMES, output_channels


def frame_row(frame: MotionFrame) -> list[float]:
    """One motion.json row: blendshapes then viseme probabilities, 4 decimals."""
    values = np.concatenate([frame.blendshapes, frame.visemes])
    return [round(float(v), 4) for v in values]


class MotionJsonWriter:
    """Write ``{"fps", "channels", "frames"}`` row by row (bounded memory for long inputs)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.frames = 0
        self._tmp = path.with_name(path.name + ".part")
        self._f = self._tmp.open("w")
        fps_value: float | int = int(fps) if float(fps).is_integer() else fps
        head = json.dumps({"fps": fps_value, "channels": output_channels()})
        self._f.write(head[:-1] + ', "frames": [')

    def write(self, frames: list[MotionFrame]) -> None:
        for fr in frames:
            self._f.write(("," if self.frames else "") + "\n" + json.dumps(frame_row(fr)))
            self.frames += 1

    def close(self) -> None:
        """Finish the file; it appears under its name only once complete."""
        self._f.write("\n]}\n")
        self._f.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> MotionJsonWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.close()
        else:
            self.abort()


class Envelope:
    """Min/max waveform envelope at a fixed number of points per second (bounded memory)."""

    def __init__(self, rate: int, points_per_s: int = 200) -> None:
        self.step = max(rate // points_per_s, 1)
        self.rate = rate
        self._rest = np.zeros(0, np.float32)
        self.lo: list[float] = []
        self.hi: list[float] = []

    def push(self, x: np.ndarray) -> None:
        buf = np.concatenate([self._rest, x])
        n = len(buf) // self.step
        blocks = buf[: n * self.step].reshape(n, self.step)
        self.lo.extend(blocks.min(1).tolist())
        self.hi.extend(blocks.max(1).tolist())
        self._rest = buf[n * self.step :]

    def times(self) -> np.ndarray:
        return (np.arange(len(self.lo)) + 0.5) * self.step / self.rate


PLOT_CHANNELS = (
    "jawOpen",
    "mouthClose",
    "mouthPucker",
    "mouthFunnel",
    "mouthStretchLeft",
    "mouthSmileLeft",
    "mouthPressLeft",
)


def plot_motion(path: Path, env: Envelope, rows: np.ndarray, fps: float, title: str) -> None:
    """Waveform, main blendshapes and the most likely viseme over time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(rows)) / fps
    width = float(np.clip(4 + 2.5 * (t[-1] if len(t) else 1), 10, 28))
    fig, ax = plt.subplots(
        3, 1, figsize=(width, 8.5), sharex=True, gridspec_kw={"height_ratios": [1, 2, 1.7]}
    )
    ax[0].fill_between(env.times(), env.lo, env.hi, color="#555", lw=0)
    ax[0].set_ylabel("audio")
    ax[0].set_title(title)
    for name in PLOT_CHANNELS:
        ax[1].plot(t, rows[:, BLENDSHAPE_INDEX[name]], label=name, lw=1.3)
    ax[1].set_ylim(0, 1)
    ax[1].set_ylabel("blendshape")
    ax[1].legend(loc="upper right", fontsize=8, ncol=4)
    vis = rows[:, -len(VISEMES) :]
    ax[2].scatter(t, vis.argmax(1), c=vis.max(1), cmap="viridis", s=6, vmin=0, vmax=1)
    ax[2].set_yticks(range(len(VISEMES)), VISEMES, fontsize=7)
    ax[2].set_ylabel("viseme")
    ax[2].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
