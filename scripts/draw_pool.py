"""docs/img/pool.png: the node pool's roles, its Redis keys, and the paths of signalling and media.

python scripts/draw_pool.py
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "pool.png"
SIGNAL, MEDIA, STATE = "#1f5fa8", "#c0392b", "#6d6d6d"


def box(
    ax: Axes, x: float, y: float, w: float, h: float, title: str, lines: Sequence[str] = (),
    color: str = "#f4f6f8",
) -> None:  # fmt: skip
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec="#333", lw=1.2))  # fmt: skip
    ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=11, weight="bold")
    for i, line in enumerate(lines):
        ax.text(x + w / 2, y + h - 0.62 - 0.3 * i, line, ha="center", va="top", fontsize=8.5)


def arrow(
    ax: Axes, a: tuple[float, float], b: tuple[float, float], color: str, label: str = "",
    style: str = "-|>", ls: str = "-", rad: float = 0.0, dx: float = 0.0, dy: float = 0.12,
) -> None:  # fmt: skip
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=13, color=color, lw=1.6,
                                 linestyle=ls, connectionstyle=f"arc3,rad={rad}"))  # fmt: skip
    if label:
        mx, my = (a[0] + b[0]) / 2 + dx, (a[1] + b[1]) / 2 + dy
        ax.text(mx, my, label, color=color, fontsize=8.5, ha="center", va="bottom",
                bbox={"fc": "white", "ec": "none", "pad": 1})  # fmt: skip


def main() -> None:
    fig, ax = plt.subplots(figsize=(13, 7.6))
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 7.6)
    ax.axis("off")
    box(ax, 0.3, 5.6, 2.6, 1.6, "Browser", ["avatar-client.js", "(roams: moves itself)"])
    box(ax, 4.0, 5.8, 2.6, 1.2, "Load balancer", ["HTTP(S), no stickiness"])
    box(ax, 7.6, 6.0, 2.3, 1.2, "gateway 1", ["--role gateway"], "#e8f0fb")
    box(ax, 10.3, 6.0, 2.3, 1.2, "gateway 2", ["--role gateway"], "#e8f0fb")
    box(ax, 8.0, 2.7, 4.6, 2.4, "Redis", ["nodes, node:{id}, alive:{id} (expires)",
                                          "holds:{id} (slot holds), sessions",
                                          "node-sessions:{id}, log (stream), counts",
                                          "sweeper (lease)"], "#fdf3e3")  # fmt: skip
    for i, (name, pool) in enumerate((("node cpu-a", "cpu"), ("node cpu-b", "cpu"),
                                      ("node gpu-a", "gpu"))):  # fmt: skip
        box(ax, 0.3 + 2.6 * i, 0.3, 2.3, 1.6, name, [f"--role node --pool {pool}",
                                                      "sessions, engines"], "#eaf6ea")  # fmt: skip
    box(ax, 1.7, 3.0, 1.9, 1.2, "coturn", ["only if UDP is blocked"])
    arrow(ax, (2.9, 6.4), (4.0, 6.4), SIGNAL, "offer, /ws", "<|-|>")
    arrow(ax, (6.6, 6.55), (7.6, 6.55), SIGNAL, "", "<|-|>")
    arrow(ax, (6.6, 6.0), (10.3, 6.2), SIGNAL, "", "<|-|>", rad=0.12)
    arrow(ax, (8.75, 6.0), (9.2, 5.1), STATE, "place: hold script", "<|-|>", dx=-0.75, dy=-0.15)
    arrow(ax, (11.45, 6.0), (11.45, 5.1), STATE, "session's node", "<|-|>", dx=0.6, dy=-0.15)
    arrow(ax, (7.8, 6.0), (4.05, 1.9), SIGNAL, "", "-|>")
    ax.text(6.55, 3.7, "offer to the node held;\n/ws relayed by session id", color=SIGNAL,
            fontsize=8.5, ha="left", va="center")  # fmt: skip
    arrow(ax, (6.65, 1.9), (8.0, 3.2), STATE, "", "-|>")
    ax.text(8.05, 2.6, "record + liveness every 1 s,\nsessions opened / closed", color=STATE,
            fontsize=8.5, ha="left", va="top")  # fmt: skip
    arrow(ax, (0.8, 5.6), (0.8, 1.9), MEDIA, "", "<|-|>")
    ax.text(0.15, 3.6, "WebRTC\nmedia:\nUDP,\ndirect", color=MEDIA, fontsize=8.5, ha="left",
            va="center")  # fmt: skip
    arrow(ax, (2.65, 5.6), (2.65, 4.2), MEDIA, "", "<|-|>", ls="--")
    arrow(ax, (2.9, 3.0), (3.9, 1.9), MEDIA, "", "<|-|>", ls="--")
    ax.text(0.3, 7.45, "signalling (HTTP, WebSocket)", color=SIGNAL, fontsize=9, va="top")
    ax.text(3.6, 7.45, "media (RTP over UDP; dashed: relayed by TURN)", color=MEDIA, fontsize=9,
            va="top")  # fmt: skip
    ax.text(8.4, 7.45, "state (Redis)", color=STATE, fontsize=9, va="top")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main()
