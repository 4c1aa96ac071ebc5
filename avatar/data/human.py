"""A small evaluation set of real human speech with phone alignments, from Debian packages.

The recordings ship with Debian: ``alsa-utils`` (one voice saying speaker-channel names),
``klettres-data`` (English letter names and short words, US and British speakers) and
``ktuberling-data`` (English object names). Their text is known from file names and the games'
sound catalogues; each is force-aligned with pocketsphinx 5 (en-us acoustic model and cmudict
from its wheel) at 16 kHz by :mod:`avatar.data.align`; :mod:`avatar.data.alignment_report`
checks the result against the signal.

Left out, with a logged reason: ``alsa-utils``' ``Noise.wav`` (a burst of noise, not the word),
clips whose peak is less than 12 dB above their background (ktuberling's ``tv_car``,
``tv_bicycle``, ``tv_train``), failed alignments, and alignments that label more than 50 ms of
loud signal as silence (pocketsphinx's typical failure, mostly on the high-pitched en_GB
klettres voice).

The audio is returned mono at the recording's own rate; phones tile the whole clip, with
silence (``""``) where the aligner found no speech. pocketsphinx's dictionary has no stress, so
ARPAbet AH is always ``ʌ`` here, never ``ə``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avatar.data.align import (
    ALIGNER_VERSION,
    LETTER_NAMES,
    LETTER_PREFIX,
    PocketsphinxAligner,
    align_recording,
    is_letter,
    load_alignment_cache,
    load_mono,
    phones_from_alignment,
    save_alignment_cache,
    speech_to_floor_db,
)
from avatar.data.alignment_report import QualitySummary, alignment_quality_report, loud_silence_s
from avatar.data.types import AlignedUtterance, Phone
from avatar.errors import HumanSpeechError

__all__ = [
    "HumanSpeechError",
    "QualitySummary",
    "Recording",
    "alignment_quality_report",
    "alsa_recordings",
    "find_recordings",
    "human_speech_set",
    "klettres_recordings",
    "ktuberling_recordings",
]

log = logging.getLogger(__name__)

MAX_LOUD_SILENCE_S = 0.05  # more loud signal labelled silence than this: alignment rejected
MIN_SPEECH_TO_FLOOR_DB = 12.0  # quieter clips are background with a word in it: left out

ALSA_DIR = Path("/usr/share/sounds/alsa")
KLETTRES_DIR = Path("/usr/share/klettres")
KTUBERLING_DIR = Path("/usr/share/ktuberling/sounds")

# klettres "syllables" that are phonics sounds, not words: their pronunciation is unknown.
KLETTRES_PHONICS = frozenset({"aw", "ch", "th"})
KLETTRES_LANGUAGES = ("en", "en_GB")

# ktuberling sound names whose spoken text is not the last part of the name.
KTUBERLING_TEXT: dict[str, str] = {
    "egypt_palmtree": "palm tree",
    "egypt_sphynx": "sphinx",
    "moon_fallingstar": "falling star",
    "moon_moonwalker": "moon walker",
    "pizzeria_brocolli": "broccoli",  # the catalogue's spelling
}
KTUBERLING_LANGUAGES = ("en",)

_INSTALL_HINT = "apt-get install alsa-utils klettres-data ktuberling-data"


@dataclass(frozen=True, slots=True)
class Recording:
    """One human recording and the words it says (cmudict words or ``letter_x`` tokens)."""

    package: str
    name: str
    path: Path
    words: tuple[str, ...]
    language: str

    @property
    def text(self) -> str:
        """The words as said: letters upper-case (``"B"``), words as spelled."""
        return " ".join(_display(w) for w in self.words)


def _display(word: str) -> str:
    return word.removeprefix(LETTER_PREFIX).upper() if is_letter(word) else word


# ---- catalogues -------------------------------------------------------------------------------


def alsa_recordings(root: Path = ALSA_DIR) -> list[Recording]:
    """alsa-utils' channel-name recordings (``Front_Left.wav`` says "front left")."""
    out = []
    for path in sorted(root.glob("*.wav")):
        if path.stem.lower() == "noise":  # a noise burst, not the word
            continue
        words = tuple(path.stem.lower().split("_"))
        out.append(Recording("alsa-utils", path.stem, path, words, "en-US"))
    return out


def _sound_entries(catalogue: Path) -> list[tuple[str, str, str]]:
    """``(section, name, file)`` for each ``<sound>`` of a klettres/ktuberling catalogue."""
    root = ET.parse(catalogue).getroot()
    out = []
    for parent in root.iter():
        for child in parent:
            if child.tag == "sound" and child.get("name") and child.get("file"):
                out.append((parent.tag, str(child.get("name")), str(child.get("file"))))
    return out


def klettres_recordings(root: Path = KLETTRES_DIR) -> list[Recording]:
    """klettres' English letters (spoken as letter names) and words."""
    out = []
    for lang in KLETTRES_LANGUAGES:
        catalogue = root / lang / "sounds.xml"
        if not catalogue.exists():
            continue
        for section, name, file in _sound_entries(catalogue):
            word = name.lower()
            if section == "alphabet" and word in LETTER_NAMES:
                words: tuple[str, ...] = (LETTER_PREFIX + word,)
            elif section == "syllables" and word not in KLETTRES_PHONICS:
                words = (word,)
            else:
                continue
            path = root / file
            if path.exists():
                label = "en-US" if lang == "en" else "en-GB"
                out.append(Recording("klettres-data", file, path, words, label))
    return out


def ktuberling_recordings(root: Path = KTUBERLING_DIR) -> list[Recording]:
    """ktuberling's English object names (``egypt_camel`` says "camel")."""
    out = []
    for lang in KTUBERLING_LANGUAGES:
        catalogue = root / f"{lang}.soundtheme"
        if not catalogue.exists():
            continue
        for _, name, file in _sound_entries(catalogue):
            text = KTUBERLING_TEXT.get(name, name.split("_")[-1])
            path = root / file
            if path.exists():
                out.append(Recording("ktuberling-data", file, path, tuple(text.split()), lang))
    return out


def find_recordings() -> list[Recording]:
    """Every known English human recording installed here."""
    return alsa_recordings() + klettres_recordings() + ktuberling_recordings()


# ---- the set ----------------------------------------------------------------------------------


def _cache_key(rec: Recording) -> str:
    st = rec.path.stat()
    return f"{ALIGNER_VERSION}|{rec.package}|{rec.name}|{st.st_size}|{st.st_mtime_ns}|{rec.words}"


def _align_entry(
    aligner: PocketsphinxAligner, rec: Recording, audio: np.ndarray, rate: int
) -> dict[str, Any]:
    result = align_recording(aligner, rec.words, audio, rate)
    phones = phones_from_alignment(result, len(audio) / rate)
    variants = " ".join(sorted({p.word for p in result.phones if p.arpabet != "SIL"}))
    return {
        "phones": [[p.ipa, p.start, p.end] for p in phones],
        "meta": {
            "score_per_frame": result.score_per_frame,
            "loop_agreement": result.loop_agreement,
            "pronunciation": variants,
        },
    }


def _utterance(
    rec: Recording, audio: np.ndarray, rate: int, entry: dict[str, Any]
) -> AlignedUtterance:
    phones = [Phone(ipa, start, end) for ipa, start, end in entry["phones"]]
    meta: dict[str, float | str] = {
        "package": rec.package,
        "language": rec.language,
        "path": str(rec.path),
        **entry["meta"],
    }
    source = f"human:{rec.package}:{rec.name}"
    return AlignedUtterance(audio, rate, phones, rec.text, source, "human", meta)


def human_speech_set(
    cache_dir: Path | None = None,
    recordings: list[Recording] | None = None,
    max_loud_silence_s: float | None = MAX_LOUD_SILENCE_S,
) -> list[AlignedUtterance]:
    """Real human English speech with pocketsphinx phone alignments.

    ``cache_dir`` keeps the alignments (JSON) so later calls only read audio. Recordings that
    cannot be aligned, that are mostly background, or whose alignment calls more than
    ``max_loud_silence_s`` of loud signal silence (``None``: keep all) are logged and left out.
    Raises :class:`HumanSpeechError` naming the Debian packages to install when none is found.
    """
    recs = find_recordings() if recordings is None else recordings
    if not recs:
        raise HumanSpeechError(f"no human speech recordings found; install them: {_INSTALL_HINT}")
    cache_path = cache_dir / "human_alignments.json" if cache_dir is not None else None
    cache = load_alignment_cache(cache_path)
    aligner: PocketsphinxAligner | None = None
    out, changed = [], False
    for rec in recs:
        audio, rate = load_mono(rec.path)
        if speech_to_floor_db(audio, rate) < MIN_SPEECH_TO_FLOOR_DB:
            log.info("skipping %s: speech is not clearly above the background", rec.path)
            continue
        key = _cache_key(rec)
        if key not in cache:
            aligner = aligner or PocketsphinxAligner()
            try:
                cache[key] = _align_entry(aligner, rec, audio, rate)
            except HumanSpeechError as e:
                log.info("skipping %s: %s", rec.path, e)
                continue
            changed = True
        utt = _utterance(rec, audio, rate, cache[key])
        silent = loud_silence_s(utt)
        if max_loud_silence_s is not None and silent > max_loud_silence_s:
            log.info("skipping %s: %.2f s of loud signal aligned as silence", rec.path, silent)
            continue
        out.append(utt)
    if cache_path is not None and changed:
        save_alignment_cache(cache_path, cache)
    return out
