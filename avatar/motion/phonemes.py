"""Phone symbols -> visemes and vowel heights.

Every aligner we use is converted to IPA first (espeak-ng reports IPA directly; festival and
pocketsphinx speak ARPAbet-like sets, see :data:`ARPABET_TO_IPA`). An IPA phone string is cleaned
of stress, length and most diacritics, then split into *segments*: a diphthong becomes two vowel
segments (the first takes 60% of the time), an affricate stays one segment.

The table (documented in docs/motion.md):

=======  =====================================================  =========================
viseme   IPA                                                    notes
=======  =====================================================  =========================
sil      pause, silence                                         mouth at rest, lips closed
PP       p b m ɓ ʙ                                              lips fully closed
FF       f v ɱ ʋ                                                lower lip to upper teeth
TH       θ ð                                                    tongue between teeth
DD       t d ɾ ʈ ɖ ɗ ɽ                                          alveolar stops
kk       k ɡ g ŋ x ɣ q ɢ χ ʔ h ɦ ħ ʕ c ɟ                          back consonants, lips free
CH       ʃ ʒ tʃ dʒ ç ʝ ɕ ʑ tɕ dʑ ʂ ʐ                              lips slightly rounded/protruded
SS       s z ts dz                                              teeth nearly closed
nn       n l ɲ ɫ ʎ ɬ ɮ ɳ ɭ                                      alveolar nasal / lateral
RR       r ɹ ɻ ʁ ʀ ɐ̯ ɚ-colour                                  slight rounding
aa       a ɑ æ ɐ ʌ ä ɶ                                          open vowels
E        e ɛ ə ɜ ɘ ɤ                                            mid unrounded vowels
ih       i ɪ ɨ ɯ j ɪ̈                                            close unrounded vowels, yod
oh       o ɔ ɒ ø œ ɵ                                            mid/open rounded vowels
ou       u ʊ w y ʏ ʉ ɥ                                          close rounded vowels, w
=======  =====================================================  =========================

Vowel height (jaw opening, 0 closed .. 1 wide) is its own table, :data:`VOWEL_OPENNESS`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

SILENCE = ""

VISEME_OF: dict[str, str] = {}


def _assign(viseme: str, symbols: str) -> None:
    for s in symbols.split():
        VISEME_OF[s] = viseme


_assign("PP", "p b m ɓ ʙ")
_assign("FF", "f v ɱ ʋ ɸ β")
_assign("TH", "θ ð")
_assign("DD", "t d ɾ ʈ ɖ ɗ ɽ")
_assign("kk", "k ɡ g ŋ x ɣ q ɢ χ ʔ h ɦ ħ ʕ c ɟ ɰ")
_assign("CH", "ʃ ʒ tʃ dʒ ç ʝ ɕ ʑ tɕ dʑ ʂ ʐ")
_assign("SS", "s z ts dz")
_assign("nn", "n l ɲ ɫ ʎ ɬ ɮ ɳ ɭ ɴ")
_assign("RR", "r ɹ ɻ ʁ ʀ ɺ")
_assign("aa", "a ɑ æ ɐ ʌ ä ɶ")
_assign("E", "e ɛ ə ɜ ɘ ɤ ɞ")
_assign("ih", "i ɪ ɨ ɯ j")
_assign("oh", "o ɔ ɒ ø œ ɵ")
_assign("ou", "u ʊ w y ʏ ʉ ɥ")

# Jaw opening per vowel by height (open .. close), 0..1.
VOWEL_OPENNESS: dict[str, float] = {
    "a": 0.70,
    "ɑ": 0.70,
    "æ": 0.62,
    "ä": 0.68,
    "ɶ": 0.62,
    "ɒ": 0.62,
    "ɐ": 0.50,
    "ʌ": 0.50,
    "ɛ": 0.45,
    "ɔ": 0.48,
    "œ": 0.42,
    "ɜ": 0.40,
    "ɞ": 0.40,
    "ə": 0.30,
    "ɘ": 0.28,
    "ɵ": 0.28,
    "e": 0.30,
    "o": 0.33,
    "ø": 0.28,
    "ɤ": 0.28,
    "ɪ": 0.20,
    "ʊ": 0.20,
    "ʏ": 0.18,
    "i": 0.12,
    "u": 0.14,
    "y": 0.12,
    "ɯ": 0.12,
    "ɨ": 0.12,
    "ʉ": 0.12,
}

VOWELS = frozenset(VOWEL_OPENNESS)

# Multi-character symbols that are one segment.
_MULTI = ("tʃ", "dʒ", "ts", "dz", "tɕ", "dʑ")

# Marks that do not change the viseme: stress, length, tone, syllabicity, aspiration, etc.
_DROP = set("ˈˌːˑ'\",.:%=_-|‖#!^;0123456789ʰʲʷˠˤⁿˡ̃ ̩̯̪̺̻̥̬̤̰̼̝̞̘̙̹̜̟̠̈̽˞ʼ")

# espeak-ng marks a switch of language inside a word as "(en)" ... "(fr)".
_LANG_SWITCH = re.compile(r"\([a-z-]*\)?|\)")

# Letters that espeak-ng's dialect voices sometimes emit in IPA mode, mapped to IPA.
_REPLACE = {
    "?": "ʔ",  # espeak-ng writes the glottal stop as "?" in some languages
    "ᵻ": "ɨ",
    "ʍ": "w",
    "ɚ": "əɹ",
    "ɝ": "ɜɹ",
    "ɫ": "l",
    "g": "ɡ",
    "ɡ": "ɡ",
    "ʤ": "dʒ",
    "ʧ": "tʃ",
    "ʦ": "ts",
}


@dataclass(frozen=True, slots=True)
class Segment:
    """One articulatory segment: an IPA base symbol and its share of the phone's duration."""

    symbol: str
    share: float


def clean(phone: str) -> str:
    """Strip stress, length and diacritics; keep base IPA letters."""
    phone = _LANG_SWITCH.sub("", unicodedata.normalize("NFD", phone))
    out = "".join(ch for ch in phone if ch not in _DROP and not unicodedata.combining(ch))
    for a, b in _REPLACE.items():
        out = out.replace(a, b)
    return out


def split_segments(phone: str) -> list[Segment]:
    """Split a (cleaned or raw) IPA phone into segments; ``[]`` for silence.

    Unknown characters are dropped here; :func:`unmapped_symbols` counts them.
    """
    s = clean(phone)
    symbols: list[str] = []
    i = 0
    while i < len(s):
        two = s[i : i + 2]
        if two in _MULTI:
            symbols.append(two)
            i += 2
            continue
        if s[i] in VISEME_OF:
            symbols.append(s[i])
        i += 1
    if not symbols:
        return []
    if len(symbols) == 1:
        return [Segment(symbols[0], 1.0)]
    # Diphthongs and clusters: first part 60%, the rest share the remainder.
    rest = 0.4 / (len(symbols) - 1)
    return [Segment(symbols[0], 0.6)] + [Segment(x, rest) for x in symbols[1:]]


def unmapped_symbols(phone: str) -> str:
    """The characters of ``phone`` that no table knows (for corpus statistics)."""
    s = clean(phone)
    for m in _MULTI:
        s = s.replace(m, "")
    return "".join(ch for ch in s if ch not in VISEME_OF)


def viseme_of(symbol: str) -> str:
    """Viseme name of one segment symbol (``sil`` for silence)."""
    return VISEME_OF.get(symbol, "sil") if symbol else "sil"


class SymbolStats:
    """Counts phones seen and characters that could not be mapped."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.unmapped: Counter[str] = Counter()

    def add(self, phone: str) -> None:
        self.seen[phone] += 1
        for ch in unmapped_symbols(phone):
            self.unmapped[ch] += 1


# ARPAbet (CMU dict, festival's radio set, pocketsphinx) -> IPA.
ARPABET_TO_IPA: dict[str, str] = {
    "aa": "ɑ",
    "ae": "æ",
    "ah": "ʌ",
    "ah0": "ə",
    "ao": "ɔ",
    "aw": "aʊ",
    "ax": "ə",
    "axr": "ɚ",
    "ay": "aɪ",
    "b": "b",
    "ch": "tʃ",
    "d": "d",
    "dh": "ð",
    "dx": "ɾ",
    "eh": "ɛ",
    "el": "əl",
    "em": "əm",
    "en": "ən",
    "er": "ɝ",
    "ey": "eɪ",
    "f": "f",
    "g": "ɡ",
    "hh": "h",
    "hv": "ɦ",
    "ih": "ɪ",
    "ix": "ɨ",
    "iy": "i",
    "jh": "dʒ",
    "k": "k",
    "l": "l",
    "m": "m",
    "n": "n",
    "ng": "ŋ",
    "nx": "ŋ",
    "ow": "oʊ",
    "oy": "ɔɪ",
    "p": "p",
    "q": "ʔ",
    "r": "ɹ",
    "s": "s",
    "sh": "ʃ",
    "t": "t",
    "th": "θ",
    "uh": "ʊ",
    "uw": "u",
    "ux": "ʉ",
    "v": "v",
    "w": "w",
    "y": "j",
    "z": "z",
    "zh": "ʒ",
}
ARPABET_SILENCE = frozenset({"pau", "sil", "h#", "sp", "spn", "ssil", "+nsn+", "+spn+", "#", ""})


def arpabet_to_ipa(phone: str) -> str:
    """Convert one ARPAbet phone (any case, optional stress digit) to IPA; silence -> ``""``."""
    p = phone.strip().lower()
    if p in ARPABET_SILENCE or p.startswith("+"):
        return SILENCE
    if p == "ah0":
        return ARPABET_TO_IPA["ah0"]
    base = p.rstrip("012")
    if base not in ARPABET_TO_IPA:
        raise KeyError(f"unknown ARPAbet phone {phone!r}")
    return ARPABET_TO_IPA[base]
