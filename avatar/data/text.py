"""Sentence material for the synthetic corpus.

The main source is the fortune databases that Debian ships (packages ``fortunes``,
``fortunes-de``, ``fortunes-es``, ``fortunes-it``): thousands of short real sentences per language,
read from the system at corpus-build time (files are named per language: ``fortunes-it``
also installs into the top folder) (nothing is copied into the repository). A small set of
our own English sentences is the fallback, and the material of the quick test mode.
"""

from __future__ import annotations

import re
from pathlib import Path

FORTUNE_ROOT = Path("/usr/share/games/fortunes")
# The English package and fortunes-it both install into the top folder: name the files.
_ENGLISH = [
    "art",
    "ascii-art",
    "computers",
    "cookie",
    "debian",
    "definitions",
    "disclaimer",
    "drugs",
    "education",
    "ethnic",
    "food",
    "goedel",
    "humorists",
    "kids",
    "knghtbrd",
    "law",
    "linux",
    "linuxcookie",
    "love",
    "magic",
    "medicine",
    "men-women",
    "miscellaneous",
    "news",
    "paradoxum",
    "people",
    "perl",
    "pets",
    "platitudes",
    "politics",
    "pratchett",
    "science",
    "songs-poems",
    "sports",
    "startrek",
    "tao",
    "wisdom",
    "work",
    "zippy",
]
_ITALIAN_TOP = [
    "adams",
    "banner",
    "computer",
    "definizioni",
    "formiche",
    "italia",
    "itatrek",
    "jackfr",
    "leggi",
    "luke",
    "luttazzi",
    "norm",
    "paolotedeschi",
    "zuse",
]
FORTUNE_FILES = {
    "en": _ENGLISH,
    "de": ["de/*"],
    "es": ["es/*"],
    "it": [*_ITALIAN_TOP, "it/*"],
}

# Our own sentences, phonetically varied (bilabials, rounded vowels, fricatives, open vowels).
BUILTIN_SENTENCES = (
    "Bob bought a big map and put it in the box by the bed.",
    "Pam made bread and butter pudding for my mother.",
    "Who knew that the blue moon would move so soon?",
    "Father saw a large car parked far from the harbour.",
    "She sells fresh fish at the seaside shop each Friday.",
    "The quick brown fox jumps over the lazy dog.",
    "Five wives of Vivian vowed to visit Vienna in the fall.",
    "Think of three things that the other thirty thieves thought.",
    "A cup of hot coffee helps me wake up in the morning.",
    "We were away when the weather went wild last week.",
    "Could you call Kate and ask her to come back quickly?",
    "The judge charged the jury with a much larger job.",
    "Measure the pleasure of leisure with usual vision.",
    "Ruby rode the red roller coaster around the river road.",
    "Lily likes little lemon lollipops and yellow lilies.",
    "Nine new nurses need nothing more than a nap at noon.",
    "Open the window, please, and let the cool air in.",
    "My name is Emma, and I am happy to meet you.",
    "Maybe the baby will babble before bedtime tonight.",
    "Good morning! How are you doing on this bright day?",
    "Please pass the pepper and the potatoes to Paul.",
    "Our team won the game by a margin of one point.",
    "Heavy rain fell over the hills for seven hours.",
    "Should we order pizza, or would you rather cook?",
    "Bring me a bowl of warm soup and a piece of pie.",
    "The old boat floated slowly toward the golden shore.",
    "I hope the meeting ends before the bus leaves at five.",
    "Mumbling, the man pumped more air into the bike tyre.",
    "Every evening she reads a book about ancient Egypt.",
    "Is it true that you moved here from Amsterdam in May?",
)

_DROP_LINE = re.compile(r"^\s*(--|—|~|\s*-\s*[A-Z])")
_ALLOWED = re.compile(r"[^\w\s.,;:!?'\-()äöüßéèêàâçñáíóúìòùÄÖÜÉÈÀÇÑ]")
_SENT_END = re.compile(r"(?<=[.!?])\s+")


def _clean_entry(entry: str) -> list[str]:
    lines = [ln for ln in entry.splitlines() if ln.strip() and not _DROP_LINE.match(ln)]
    text = " ".join(ln.strip() for ln in lines)
    text = _ALLOWED.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in _SENT_END.split(text) if s.strip()]


def _usable(sentence: str, min_words: int, max_words: int) -> bool:
    words = sentence.split()
    letters = sum(ch.isalpha() for ch in sentence)
    return min_words <= len(words) <= max_words and letters >= 0.6 * len(sentence)


def _fortune_files(lang: str) -> list[Path]:
    files = []
    for pattern in FORTUNE_FILES[lang]:
        for p in sorted(FORTUNE_ROOT.glob(pattern)):
            if p.is_dir() or p.suffix in {".dat", ".u8"}:
                continue
            u8 = p.with_name(p.name + ".u8")
            files.append(u8 if u8.exists() else p)
    return files


def fortune_sentences(lang: str, min_words: int = 4, max_words: int = 30) -> list[str]:
    """Sentences of the Debian fortune database for ``lang`` (``[]`` if not installed)."""
    if lang not in FORTUNE_FILES:
        raise ValueError(f"no sentence source for language {lang!r}")
    seen: set[str] = set()
    out: list[str] = []
    for path in _fortune_files(lang):
        text = path.read_bytes().decode("utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            for s in _clean_entry(entry):
                if _usable(s, min_words, max_words) and s not in seen:
                    seen.add(s)
                    out.append(s)
    return out
