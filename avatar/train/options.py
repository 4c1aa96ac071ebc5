"""Options of ``avatar train motion`` (torch-free, so the CLI can build its parser cheaply)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Live models hear 60 ms ahead (latency); a model for buffered audio (a file, TTS, agent audio
# ahead of playout) may hear much further: its lookahead costs no latency there.
MAX_LOOKAHEAD_MS = 400


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
    # Real talkers' jaw (shards of scripts/build_talker_corpus.py) beside the synthetic corpus,
    # and a trained model to go on from (fine-tuning, at a lower learning rate).
    talkers: Path | None = None
    talker_weight: float = 1.0
    init: Path | None = None
