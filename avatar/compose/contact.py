"""Contact sheets for people: rendered frames at open vowels, P/B/M closures and pauses.

Frames are picked at the middle of the utterance's aligned segments of each kind; a tile is a
whole frame or a close-up of the mouth, both :data:`TILE` pixels square, with a label.
"""

from __future__ import annotations

import cv2
import numpy as np

from avatar.data.types import AlignedUtterance
from avatar.face import mesh
from avatar.face.store import AvatarAssets
from avatar.frames import VideoFrame
from avatar.motion.targets import segments_of

KINDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("open vowel", frozenset({"aa"})),
    ("P/B/M closure", frozenset({"PP"})),
    ("silence", frozenset({"sil"})),
)
TILE = 256
CLOSEUP_EYE_UNITS = 1.6  # side of the mouth close-up, in inter-ocular distances


def pick_times(utt: AlignedUtterance, visemes: set[str] | frozenset[str], n: int) -> list[float]:
    """Up to ``n`` times (s), spread over the utterance, at the middle of segments of
    ``visemes`` that last over 60 ms (the first and last such segment skipped when possible)."""
    segs = [s for s in segments_of(utt.phones) if s.viseme in visemes and s.end - s.start > 0.06]
    segs = sorted(segs, key=lambda s: s.start)[1:-1] or segs  # skip the edges of the clip
    step = max(len(segs) // n, 1)
    return [(s.start + s.end) / 2 for s in segs[::step][:n]]


def pick_examples(
    utts: list[AlignedUtterance], visemes: set[str] | frozenset[str], n: int
) -> list[tuple[AlignedUtterance, float]]:
    """The ``n`` longest segments of ``visemes``, each from a different utterance, as
    (utterance, time at the segment's middle): for sets of short clips such as single words."""
    longest = []
    for utt in utts:
        segs = [s for s in segments_of(utt.phones) if s.viseme in visemes]
        if segs:
            seg = max(segs, key=lambda s: s.end - s.start)
            longest.append((seg.end - seg.start, (seg.start + seg.end) / 2, utt))
    longest.sort(key=lambda x: -x[0])
    return [(utt, t) for _, t, utt in longest[:n]]


def frame_at(frames: list[VideoFrame], t: float, fps: float) -> VideoFrame:
    return frames[min(round(t * fps), len(frames) - 1)]


def label(img: np.ndarray, text: str) -> np.ndarray:
    """``img`` with ``text`` written along its bottom edge on a dark band (in place; returned
    for chaining), so that it reads on light skin too."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    (w, h), base = cv2.getTextSize(text, font, scale, 1)
    y = img.shape[0] - 8
    band = img[y - h - 4 : y + base + 2, 2 : 10 + w]
    band[:] = band // 3
    cv2.putText(img, text, (6, y), font, scale, (255, 255, 0), 1, cv2.LINE_AA)
    return img


def whole_tile(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)


def mouth_closeup(image: np.ndarray, assets: AvatarAssets) -> np.ndarray:
    """A square around the avatar's mouth (from its stored landmarks, scaled to ``image``),
    :data:`CLOSEUP_EYE_UNITS` inter-ocular distances wide, resized to a tile."""
    lm = assets.landmarks
    scale = image.shape[0] / assets.size
    centre = lm[list(mesh.LIPS_OUTER_UPPER + mesh.LIPS_OUTER_LOWER), :2].mean(0) * scale
    side = CLOSEUP_EYE_UNITS * mesh.interocular(lm) * scale
    k = TILE / side
    m = np.array([[k, 0, TILE / 2 - k * centre[0]], [0, k, TILE / 2 - k * centre[1]]])
    return cv2.warpAffine(image, m, (TILE, TILE), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def title_strip(text: str, width: int, height: int = 28) -> np.ndarray:
    strip = np.zeros((height, width, 3), np.uint8)
    cv2.putText(strip, text, (8, height - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    return strip
