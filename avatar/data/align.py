"""Audio level helpers and pocketsphinx forced alignment of known words.

Pronunciations: every dictionary variant of a word is offered to the aligner, plus a
non-rhotic variant (post-vocalic R dropped, or a schwa after IH/EH/UH) because several speakers
are British; the aligner keeps the most likely one. Letters are spelled as letter names.

Alignment: each clip is cropped to its loud part plus 0.3 s, padded with noise at its own floor
level and aligned by a fresh pocketsphinx decoder (see :class:`PocketsphinxAligner` and
:func:`align_recording` for why). Times are shifted by half a window minus half a hop (7.8 ms)
so a boundary sits between the two frames' window centres.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from avatar.data.types import Phone
from avatar.errors import HumanSpeechError
from avatar.motion.phonemes import SILENCE, arpabet_to_ipa

log = logging.getLogger(__name__)
_RECOGNISED_VARIANT = re.compile(r"\(\d+\)$")  # "read(2)": the second pronunciation
ALIGN_RATE = 16000
FRAME_S = 0.01  # pocketsphinx frame shift
# pocketsphinx frame i spans [10 i, 10 i + 25.6] ms; a boundary between frames i-1 and i lies
# halfway between their window centres, 7.8 ms after 10 i ms.
BOUNDARY_SHIFT_S = (0.025625 - FRAME_S) / 2
MIN_PHONE_S = 3 * FRAME_S  # the aligner's shortest phone (one frame per HMM state)
PAD_FRAMES = 25  # frames of floor noise added on each side before aligning
CROP_MARGIN_FRAMES = 30  # frames kept around the loud part of a clip when aligning
DIGITAL_SILENCE_DB = -90.0  # frames below this are exact zeros, not background
ALIGNER_VERSION = "7"  # bump when alignments change, to invalidate caches

# Letter names (ARPAbet, several accepted spellings each).
LETTER_NAMES: dict[str, tuple[str, ...]] = {
    "a": ("EY",), "b": ("B IY",), "c": ("S IY",), "d": ("D IY",), "e": ("IY",),
    "f": ("EH F",), "g": ("JH IY",), "h": ("EY CH", "HH EY CH"), "i": ("AY",),
    "j": ("JH EY",), "k": ("K EY",), "l": ("EH L",), "m": ("EH M",), "n": ("EH N",),
    "o": ("OW",), "p": ("P IY",), "q": ("K Y UW",), "r": ("AA R",), "s": ("EH S",),
    "t": ("T IY",), "u": ("Y UW",), "v": ("V IY",),
    "w": ("D AH B AH L Y UW", "D AH B L Y UW"), "x": ("EH K S",), "y": ("W AY",),
    "z": ("Z IY", "Z EH D"),
}  # fmt: skip
LETTER_PREFIX = "letter_"

_ARPABET_VOWELS = frozenset(
    {"AA", "AE", "AH", "AO", "AW", "AX", "AXR", "AY", "EH", "ER", "EY", "IH", "IX", "IY", "OW",
     "OY", "UH", "UW", "UX"}
)  # fmt: skip


def is_letter(word: str) -> bool:
    """True for a ``letter_x`` token (a letter spoken as its name)."""
    return word.startswith(LETTER_PREFIX)


# ---- audio ------------------------------------------------------------------------------------


def load_mono(path: Path) -> tuple[np.ndarray, int]:
    """Read a wave/ogg file as mono float32 at its own rate."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio.mean(axis=1), dtype=np.float32), int(rate)


def resample_pcm16(audio: np.ndarray, rate: int, target: int = ALIGN_RATE) -> np.ndarray:
    """Resample mono float audio to ``target`` Hz, as int16 PCM."""
    g = math.gcd(rate, target)
    resampled = resample_poly(audio, target // g, rate // g) if rate != target else audio
    return (np.clip(resampled, -1.0, 1.0) * 32767.0).astype(np.int16)


def frame_levels_db(audio: np.ndarray, rate: int, frame_s: float = FRAME_S) -> np.ndarray:
    """Level (dB re full scale) of consecutive ``frame_s`` frames of float audio."""
    hop = max(1, round(frame_s * rate))
    n = len(audio) // hop
    frames = audio[: n * hop].reshape(n, hop).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


def floor_db(levels: np.ndarray) -> float:
    """Background level: 5th percentile of the frame levels, digital silence ignored."""
    live = levels[levels > DIGITAL_SILENCE_DB]
    return float(np.percentile(live, 5)) if live.size else DIGITAL_SILENCE_DB


def loud_span(levels: np.ndarray, min_frames: int = 5) -> tuple[int, int] | None:
    """First and one-past-last frame of the signal's loud part, or None.

    Loud: ``min_frames`` frames in a row (so clicks do not count) within 45 dB of the peak and
    12 dB above the floor. A rough reference: weak fricatives and nasal decays may fall below.
    """
    if levels.size < min_frames:
        return None
    threshold = max(float(np.max(levels)) - 45.0, floor_db(levels) + 12.0)
    runs = np.convolve(levels > threshold, np.ones(min_frames), mode="valid") == min_frames
    starts = np.flatnonzero(runs)
    if starts.size == 0:
        return None
    return int(starts[0]), int(starts[-1] + min_frames)


def speech_to_floor_db(audio: np.ndarray, rate: int) -> float:
    """Peak minus floor of the 10 ms frame levels."""
    levels = frame_levels_db(audio, rate)
    return float(np.max(levels)) - floor_db(levels) if levels.size else 0.0


def pad_with_floor(pcm16: np.ndarray, pad_frames: int, seed: int = 0) -> np.ndarray:
    """Add ``pad_frames`` frames of noise at the clip's own floor level before and after.

    Tightly trimmed clips otherwise leave the aligner no room for silence, and it stretches the
    last phone over the decay.
    """
    levels = frame_levels_db(pcm16.astype(np.float64) / 32768.0, ALIGN_RATE)
    floor_rms = 32768.0 * 10.0 ** (floor_db(levels) / 20.0)
    n = pad_frames * int(ALIGN_RATE * FRAME_S)
    rng = np.random.default_rng(seed)
    pads = [np.clip(rng.normal(0.0, floor_rms, n), -32768, 32767) for _ in range(2)]
    return np.concatenate([pads[0].astype(np.int16), pcm16, pads[1].astype(np.int16)])


# ---- alignment --------------------------------------------------------------------------------


def non_rhotic(phones: str) -> str:
    """A British-style variant: drop R before a consonant or at the end; IH/EH/UH + R -> + AH."""
    p = phones.split()
    out: list[str] = []
    for i, ph in enumerate(p):
        nxt = p[i + 1] if i + 1 < len(p) else None
        after_vowel = bool(out) and out[-1] in _ARPABET_VOWELS
        if ph == "R" and after_vowel and (nxt is None or nxt not in _ARPABET_VOWELS):
            if out[-1] in ("IH", "EH", "UH"):
                out.append("AH")
            continue
        out.append(ph)
    return " ".join(out)


@dataclass(frozen=True, slots=True)
class AlignedPhone:
    """One aligned ARPAbet phone in 10 ms frames, with its word (and variant) name."""

    arpabet: str
    word: str
    start: int
    frames: int


@dataclass(frozen=True, slots=True)
class AlignmentResult:
    """Phones of a forced alignment and how well a free phone loop agrees with them."""

    phones: list[AlignedPhone]
    score_per_frame: float
    loop_agreement: float  # share of speech frames where a free phone loop finds the same phone

    def shifted(self, frames: int) -> AlignmentResult:
        """The same alignment with every phone moved by ``frames`` (may become negative)."""
        moved = [AlignedPhone(p.arpabet, p.word, p.start + frames, p.frames) for p in self.phones]
        return AlignmentResult(moved, self.score_per_frame, self.loop_agreement)


class PocketsphinxAligner:
    """Forced alignment of known words with pocketsphinx (en-us model, cmudict).

    Each utterance gets a fresh decoder: pocketsphinx carries its noise and CMN estimates from
    one utterance to the next, which moved boundaries by up to 0.3 s depending on what was
    aligned before. ``bestpath`` is off: its lattice pass hands the phone aligner zero-length
    entries that make it fail.
    """

    def __init__(self) -> None:
        try:
            import pocketsphinx
        except ImportError as e:
            raise HumanSpeechError("pocketsphinx is not installed; pip install pocketsphinx") from e
        self._ps = pocketsphinx
        self._phone_lm = pocketsphinx.get_model_path("en-us/en-us-phone.lm.bin")
        self._lexicon = self._new_decoder()

    def _new_decoder(self) -> Any:
        decoder = self._ps.Decoder(lm=None, bestpath=False, loglevel="FATAL")
        decoder.add_allphone_file("phone_loop", self._phone_lm)
        return decoder

    def pronunciations(self, word: str) -> list[str]:
        """The ARPAbet pronunciations offered for ``word``: dictionary (or letter-name)
        variants, then their non-rhotic forms."""
        if is_letter(word):
            prons = list(LETTER_NAMES[word.removeprefix(LETTER_PREFIX)])
        else:
            prons = []
            for i in range(1, 10):
                phones = self._lexicon.lookup_word(word if i == 1 else f"{word}({i})")
                if phones is None:
                    break
                prons.append(phones)
        return list(dict.fromkeys(prons + [non_rhotic(p) for p in prons]))

    def _register(self, decoder: Any, word: str) -> bool:
        prons = self.pronunciations(word)
        new = [
            (word if i == 1 else f"{word}({i})", phones)
            for i, phones in enumerate(prons, start=1)
            if decoder.lookup_word(word if i == 1 else f"{word}({i})") is None
        ]
        for j, (key, phones) in enumerate(new):
            decoder.add_word(key, phones, j == len(new) - 1)  # rebuild the search once
        return bool(prons)

    def align(self, pcm16: np.ndarray, words: Iterable[str]) -> AlignmentResult:
        """Align 16 kHz int16 speech with ``words``; raises :class:`HumanSpeechError`."""
        words = list(words)
        decoder = self._new_decoder()
        missing = [w for w in words if not self._register(decoder, w)]
        if missing:
            raise HumanSpeechError(f"no pronunciation for {missing}")
        pcm = pcm16.tobytes()
        loop = _phone_loop(decoder, pcm)  # first: after alignment the loop search misbehaves
        try:
            decoder.set_align_text(" ".join(words))
            _decode(decoder, pcm)
            decoder.set_alignment()
            _decode(decoder, pcm)
        except RuntimeError as e:
            raise HumanSpeechError(f"alignment of {words} failed: {e}") from e
        alignment = decoder.get_alignment()
        if alignment is None:
            raise HumanSpeechError(f"alignment of {words} produced nothing")
        phones, score = [], 0
        for word in alignment:
            for ph in word:
                phones.append(AlignedPhone(ph.name, word.name, ph.start, ph.duration))
                score += ph.score
        per_frame = score / max(decoder.n_frames(), 1)
        return AlignmentResult(phones, per_frame, _loop_agreement(loop, phones))

    def transcribe(self, pcm16: np.ndarray) -> list[str]:
        """The words pocketsphinx's recogniser hears (its en-us language model; a fresh decoder,
        as for :meth:`align`): a transcript for speech that has none, to align. On real read
        sentences its alignment came far nearer the true transcript's than :meth:`recognise`
        (``scripts/eval_text_mouth.py``); its words are often wrong, their sounds less so."""
        decoder = self._ps.Decoder(loglevel="FATAL")
        _decode(decoder, pcm16.tobytes())
        words = [_RECOGNISED_VARIANT.sub("", s.word) for s in decoder.seg()]
        return [w for w in words if w and not w.startswith(("<", "[", "+"))]

    def recognise(self, pcm16: np.ndarray) -> AlignmentResult:
        """Free phone recognition (pocketsphinx's phone loop, no words): for speech with no
        transcript. Noisier than a forced alignment; ``loop_agreement`` is 1 by definition."""
        loop = _phone_loop(self._new_decoder(), pcm16.tobytes())
        phones = [AlignedPhone(name, "", first, last - first + 1) for name, first, last in loop]
        return AlignmentResult(phones, 0.0, 1.0)


def load_alignment_cache(path: Path | None) -> dict[str, Any]:
    """A JSON cache of alignments (empty when missing or unreadable: they are made again)."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable alignment cache %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def save_alignment_cache(path: Path, cache: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache, ensure_ascii=False))


def _decode(decoder: Any, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def _phone_loop(decoder: Any, pcm: bytes) -> list[tuple[str, int, int]]:
    """Free phone recognition: ``(phone, first frame, last frame)`` segments."""
    decoder.activate_search("phone_loop")
    _decode(decoder, pcm)
    return [(s.word, s.start_frame, s.end_frame) for s in decoder.seg()]


def _loop_agreement(loop: list[tuple[str, int, int]], phones: list[AlignedPhone]) -> float:
    """Share of the aligned speech frames on which a free phone loop finds the same phone.

    A wrong transcript drives this towards 0; 0.4-0.9 is usual for correct words.
    """
    n = max((p.start + p.frames for p in phones), default=0)
    forced = np.full(n, "SIL", dtype=object)
    for p in phones:
        forced[p.start : p.start + p.frames] = p.arpabet
    free = np.full(n, "SIL", dtype=object)
    for word, first, last in loop:
        free[first : last + 1] = word
    speech = forced != "SIL"
    return float(np.mean(forced[speech] == free[speech])) if speech.any() else 0.0


def _frame_time(frame: int) -> float:
    return frame * FRAME_S + BOUNDARY_SHIFT_S if frame > 0 else 0.0  # <= 0: before the clip


def phones_from_alignment(result: AlignmentResult, duration: float) -> list[Phone]:
    """IPA phones tiling ``[0, duration]``.

    Gaps become silence; a remainder shorter than :data:`MIN_PHONE_S` at the end is given to
    the last phone, a longer one becomes silence; slivers at the edges are absorbed.
    """
    out: list[Phone] = []
    t = 0.0
    for p in result.phones:
        start = min(_frame_time(p.start), duration)
        end = min(_frame_time(p.start + p.frames), duration)
        if start > t + 1e-9:
            out.append(Phone(SILENCE, t, start))
            t = start
        if end > t + 1e-9:
            out.append(Phone(arpabet_to_ipa(p.arpabet), t, end))
            t = end
    if out and (duration - t < MIN_PHONE_S or out[-1].ipa == SILENCE):
        out[-1] = Phone(out[-1].ipa, out[-1].start, duration)
    elif t < duration:
        out.append(Phone(SILENCE, t, duration))
    return absorb_slivers(out)


def absorb_slivers(phones: list[Phone], min_s: float = MIN_PHONE_S) -> list[Phone]:
    """Merge phones shorter than ``min_s`` into the previous phone (the first into the next).

    Cutting an alignment to the clip leaves such slivers of silence at its edges. Durations
    are compared with a nanosecond's slack: a 3-frame phone is 0.0299999... s after the boundary
    shift and must not count as a sliver.
    """
    out: list[Phone] = []
    short = min_s - 1e-9
    for p in phones:
        if out and p.end - p.start < short:
            out[-1] = Phone(out[-1].ipa, out[-1].start, p.end)
        elif out and out[-1].end - out[-1].start < short:
            out[-1] = Phone(p.ipa, out[-1].start, p.end)
        else:
            out.append(p)
    return out


def cropped_for_aligner(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """(16 kHz int16 speech, frame offset): the clip cropped to its loud part plus
    :data:`CROP_MARGIN_FRAMES` each side and padded with floor noise (:data:`PAD_FRAMES`); a
    result's frames plus the offset count from the start of the clip."""
    pcm = resample_pcm16(audio, rate)
    span = loud_span(frame_levels_db(pcm.astype(np.float64) / 32768.0, ALIGN_RATE))
    hop = int(ALIGN_RATE * FRAME_S)
    first, last = span if span else (0, len(pcm) // hop)
    first = max(0, first - CROP_MARGIN_FRAMES)
    last = last + CROP_MARGIN_FRAMES
    return pad_with_floor(pcm[first * hop : last * hop], PAD_FRAMES), first - PAD_FRAMES


def align_recording(
    aligner: PocketsphinxAligner, words: Iterable[str], audio: np.ndarray, rate: int
) -> AlignmentResult:
    """Align a whole clip: crop to its loud part plus a margin, pad with floor noise, align.

    Long silences around a short word made pocketsphinx call the first part of loud vowels
    silence; cropping to the loud part (with :data:`CROP_MARGIN_FRAMES` each side) avoids it.
    The result's frames count from the start of the clip.
    """
    pcm, offset = cropped_for_aligner(audio, rate)
    return aligner.align(pcm, words).shifted(offset)


def recognise_recording(
    aligner: PocketsphinxAligner, audio: np.ndarray, rate: int
) -> AlignmentResult:
    """:meth:`PocketsphinxAligner.recognise` on a whole clip, cropped and padded as
    :func:`align_recording` does; frames count from the start of the clip."""
    pcm, offset = cropped_for_aligner(audio, rate)
    return aligner.recognise(pcm).shifted(offset)


def transcribe_recording(aligner: PocketsphinxAligner, audio: np.ndarray, rate: int) -> list[str]:
    """:meth:`PocketsphinxAligner.transcribe` on a whole clip, cropped and padded as
    :func:`align_recording` does (align the words with it)."""
    return aligner.transcribe(cropped_for_aligner(audio, rate)[0])
