"""Options of ``avatar train motion`` (torch-free, so the CLI can build its parser cheaply)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_LOOKAHEAD_MS = 80


@dataclass(slots=True)
class TrainOptions:
    corpus: Path
    out: Path
    hours: float = 4.0
    copies: int = 2
    minutes: float = 25.0
    seed: int = 0
    quick: bool = False
    rebuild: bool = False
    processes: int = 2
    # The recipe of the shipped model (see avatar/weights/MODEL_CARD.md).
    dropout: float = 0.1
    spec_augment: bool = True
    time_masks: bool = False
    vtlp: float = 0.12
    lookahead_ms: int = 60
    closure_weight: float = 3.0
