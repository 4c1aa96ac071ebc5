"""Data types shared by the synthesizers, aligners, corpus builder and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Phone:
    """One phone of an alignment: IPA symbol(s) (``""`` = silence), start and end in seconds."""

    ipa: str
    start: float
    end: float


@dataclass(slots=True)
class AlignedUtterance:
    """Mono float32 audio with a phone alignment covering it.

    ``source`` names the synthesizer/aligner and voice (e.g. ``espeak:en-us+f3``,
    ``festival:kal_diphone``, ``human:alsa``); ``family`` is the group held out together.
    """

    audio: np.ndarray  # (n,) float32 in [-1, 1]
    sample_rate: int
    phones: list[Phone]
    text: str
    source: str
    family: str
    meta: dict[str, float | str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate
