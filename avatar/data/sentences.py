"""Read English sentences of real people (public media) with pocketsphinx phone alignments.

The audio comes from :mod:`avatar.data.media` (LJSpeech LJ001-0001..0032, JFK's "ask not",
speechbrain's two test speakers reading Harvard sentences); each utterance is force-aligned
with :mod:`avatar.data.align` exactly as :mod:`avatar.data.human` does for Debian's word
recordings, and the same quality filter drops alignments that call loud signal silence.

Transcripts are the words as said: numbers spelled out, punctuation gone, hyphenated words
split. speechbrain's annotation files misspell several sentences ("tue", "wore", "ken pairs")
and give spk2_snt5 the text of spk2_snt6; the texts below are the Harvard sentences the speakers
read, checked with pocketsphinx's own recogniser. cmudict lacks a few of LJSpeech's names and
rare words; :data:`EXTRA_PRONUNCIATIONS` supplies them, and :func:`unknown_words` lists any
word still without one (a test keeps that list empty). JFK's clip is cut at 10.5 s, before
the applause. LJSpeech and speechbrain clips are trimmed to within ~20 ms of the speech, so
their alignments mostly start (and often end) with a phone, not with silence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from avatar.data.align import (
    ALIGNER_VERSION,
    PocketsphinxAligner,
    align_recording,
    load_alignment_cache,
    load_mono,
    non_rhotic,
    phones_from_alignment,
    save_alignment_cache,
    speech_to_floor_db,
)
from avatar.data.alignment_report import loud_silence_s
from avatar.data.human import MAX_LOUD_SILENCE_S, MIN_SPEECH_TO_FLOOR_DB
from avatar.data.media import DEFAULT_MEDIA_DIR, SENTENCE_AUDIO, MediaFile, media_path
from avatar.data.types import AlignedUtterance, Phone
from avatar.errors import HumanSpeechError

log = logging.getLogger(__name__)

SENTENCES_VERSION = "1"  # bump when transcripts or pronunciations change, to invalidate caches
DEFAULT_CACHE_DIR = Path("data/sentences")

# fmt: off
_LJ_TEXT = (  # the `transcription` column of coqui-ai/TTS@25c07e3d tests/data/ljspeech/metadata.csv
    "Printing, in the only sense with which we are at present concerned, differs from most if"
    " not from all the arts and crafts represented in the Exhibition",
    "in being comparatively modern.",
    "For although the Chinese took impressions from wood blocks engraved in relief for "
    "centuries before the woodcutters of the Netherlands, by a similar process",
    "produced the block books, which were the immediate predecessors of the true printed book,",
    "the invention of movable metal letters in the middle of the fifteenth century may justly"
    " be considered as the invention of the art of printing.",
    "And it is worth mention in passing that, as an example of fine typography,",
    'the earliest book printed with movable types, the Gutenberg, or "forty-two line Bible" '
    "of about fourteen fifty-five,",
    "has never been surpassed.",
    "Printing, then, for our purpose, may be considered as the art of making books by means "
    "of movable types.",
    "Now, as all books not primarily intended as picture-books consist principally of types "
    "composed to form letterpress,",
    "it is of the first importance that the letter used should be fine in form;",
    "especially as no more time is occupied, or cost incurred, in casting, setting, or "
    "printing beautiful letters",
    "than in the same operations with ugly ones.",
    "And it was a matter of course that in the Middle Ages, when the craftsmen took care that"
    " beautiful form should always be a part of their productions whatever they were,",
    "the forms of printed letters should be beautiful, and that their arrangement on the page"
    " should be reasonable and a help to the shapeliness of the letters themselves.",
    "The Middle Ages brought calligraphy to perfection, and it was natural therefore",
    "that the forms of printed letters should follow more or less closely those of the "
    "written character, and they followed them very closely.",
    "The first books were printed in black letter, i.e. the letter which was a Gothic "
    "development of the ancient Roman character,",
    'and which developed more completely and satisfactorily on the side of the "lower-case" '
    "than the capital letters;",
    'the "lower-case" being in fact invented in the early Middle Ages.',
    "The earliest book printed with movable type, the aforesaid Gutenberg Bible, is printed "
    "in letters which are an exact imitation",
    "of the more formal ecclesiastical writing which obtained at that time; this has since "
    'been called "missal type,"',
    "and was in fact the kind of letter used in the many splendid missals, psalters, etc., "
    "produced by printing in the fifteenth century.",
    "But the first Bible actually dated (which also was printed at Maintz by Peter Schoeffer "
    "in the year fourteen sixty-two)",
    "imitates a much freer hand, simpler, rounder, and less spiky, and therefore far "
    "pleasanter and easier to read.",
    "On the whole the type of this book may be considered the ne-plus-ultra of Gothic type,",
    "especially as regards the lower-case letters; and type very similar was used during the "
    "next fifteen or twenty years not only by Schoeffer,",
    "but by printers in Strasburg, Basle, Paris, Lubeck, and other cities.",
    "But though on the whole, except in Italy, Gothic letter was most often used",
    "a very few years saw the birth of Roman character not only in Italy, but in Germany and "
    "France.",
    "In fourteen sixty-five Sweynheim and Pannartz began printing in the monastery of Subiaco"
    " near Rome,",
    "and used an exceedingly beautiful type, which is indeed to look at a transition between "
    "Gothic and Roman,",
)  # LJ001-0001 .. LJ001-0032
_SPEECHBRAIN_TEXT = {  # Harvard sentences
    "spk1_snt1": "The child almost hurt the small dog.",
    "spk1_snt2": "Drop the two when you add the figures.",
    "spk1_snt3": "At that high level the air is pure.",
    "spk1_snt4": "A thin stripe runs down the middle.",
    "spk1_snt5": "Sunday is the best part of the week.",
    "spk1_snt6": "The pencils have all been used.",
    "spk2_snt1": "We are sure that one war is enough.",
    "spk2_snt2": "What joy there is in living.",
    "spk2_snt3": "Tear a thin sheet from the yellow pad.",
    "spk2_snt4": "Mend the coat before you go out.",
    "spk2_snt5": "Jump the fence and hurry up the bank.",
    "spk2_snt6": "Canned pears lack full flavor.",
}
# fmt: on
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
SENTENCE_TEXT: dict[str, str] = {
    **{f"ljspeech/LJ001-{i:04d}": text for i, text in enumerate(_LJ_TEXT, start=1)},
    "jfk/jfk": JFK_TEXT,
    **{f"speechbrain/{stem}": text for stem, text in _SPEECHBRAIN_TEXT.items()},
}  # media name -> the words as said, for every file of SENTENCE_AUDIO
# Clips cut short (seconds): applause follows JFK's last word, and the quality filter would read
# it as loud signal aligned as silence.
SPEECH_END_S: dict[str, float] = {"jfk/jfk": 10.5}

# cmudict lacks these names and rare words of LJ001; ARPAbet as cmudict would write them.
EXTRA_PRONUNCIATIONS: dict[str, tuple[str, ...]] = {
    "maintz": ("M AY N T S", "M EY N T S"),
    "missal": ("M IH S AH L",),
    "missals": ("M IH S AH L Z",),
    "pannartz": ("P AE N AA R T S", "P AH N AA R T S"),
    "pleasanter": ("P L EH Z AH N T ER",),
    "schoeffer": ("SH EH F ER", "SH ER F ER", "SH OW F ER"),
    "shapeliness": ("SH EY P L IY N AH S",),
    "subiaco": ("S UW B IY AA K OW", "S UW B Y AA K OW"),
    "sweynheim": ("S W AY N HH AY M", "S W EY N HH AY M"),
    "woodcutters": ("W UH D K AH T ER Z",),
}
# Written abbreviations as read: LJ001-0018 aligns better with "i.e." as letters than as "that is".
ABBREVIATIONS: dict[str, str] = {"i.e.": "i e", "e.g.": "e g", "etc.": "et cetera"}

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen")  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")


def spell_number(n: int) -> str:
    """Cardinal words for ``0 <= n < 10**9``: ``1465`` -> "one thousand four hundred sixty five"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f" {_ONES[n % 10]}" if n % 10 else "")
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if size <= n < 1000 * size:
            head, rest = divmod(n, size)
            return f"{spell_number(head)} {name}" + (f" {spell_number(rest)}" if rest else "")
    raise ValueError(f"{n} is out of range for spell_number")


def spell_year(n: int) -> str:
    """A year as read in pairs: 1465 -> "fourteen sixty five", 1905 -> "nineteen oh five".

    Only 1100-1999 and 2010-2099 are read so; other numbers are cardinals (2005: "two
    thousand five").
    """
    if not (1100 <= n < 2000 or 2010 <= n < 2100):
        return spell_number(n)
    head, rest = divmod(n, 100)
    tail = "hundred" if rest == 0 else f"oh {_ONES[rest]}" if rest < 10 else spell_number(rest)
    return f"{spell_number(head)} {tail}"


def _spell(match: re.Match[str]) -> str:
    token = match.group()
    whole, _, decimals = token.replace(",", "").partition(".")
    n = int(whole)
    if decimals:
        return f"{spell_number(n)} point {' '.join(_ONES[int(d)] for d in decimals)}"
    if len(token) == 4:  # four digits, no comma: most likely a year in read text
        return spell_year(n)
    return spell_number(n) if n < 10**9 else " ".join(_ONES[int(d)] for d in whole)


def transcript_words(text: str, known: Callable[[str], bool] | None = None) -> tuple[str, ...]:
    """The cmudict words of a transcript: lower case, numbers spelled, punctuation dropped.

    Hyphens and dashes separate words. An apostrophe inside a word stays when ``known`` (the
    dictionary) has the word ("don't"); when it has only the word without it, that is used;
    quotes (apostrophes at the edges) always go.
    """
    text = text.lower().replace("\u2019", "'")
    for written, spoken in ABBREVIATIONS.items():
        text = re.sub(rf"(?<!\w){re.escape(written)}", f" {spoken} ", text)
    text = _NUMBER.sub(lambda m: f" {_spell(m)} ", text)
    return tuple(_apostrophe(w, known) for w in _WORD.findall(text))


def _apostrophe(word: str, known: Callable[[str], bool] | None) -> str:
    if "'" not in word or known is None or known(word):
        return word
    plain = word.replace("'", "")
    return plain if known(plain) else word


class SentenceAligner(PocketsphinxAligner):
    """:class:`PocketsphinxAligner` that also knows :data:`EXTRA_PRONUNCIATIONS`."""

    def pronunciations(self, word: str) -> list[str]:
        """cmudict's variants, or the extra ones (with their non-rhotic forms)."""
        extra = list(EXTRA_PRONUNCIATIONS.get(word, ()))
        if not extra:
            return super().pronunciations(word)
        return list(dict.fromkeys(extra + [non_rhotic(p) for p in extra]))

    def knows(self, word: str) -> bool:
        """True when ``word`` has at least one pronunciation."""
        return bool(self.pronunciations(word))


def unknown_words(
    aligner: SentenceAligner, items: tuple[MediaFile, ...] = SENTENCE_AUDIO
) -> dict[str, list[str]]:
    """Media name -> the words of its transcript that have no pronunciation (none: ``{}``)."""
    out = {}
    for item in items:
        words = transcript_words(SENTENCE_TEXT[item.name], aligner.knows)
        missing = [w for w in words if not aligner.knows(w)]
        if missing:
            out[item.name] = missing
    return out


# ---- the set ----------------------------------------------------------------------------------


def _cache_key(item: MediaFile, n_samples: int) -> str:
    # The words follow from the text, the dictionary and these versions.
    ident = f"{item.name}|{item.sha256}|{n_samples}|{SENTENCE_TEXT[item.name]}"
    return f"{SENTENCES_VERSION}|{ALIGNER_VERSION}|{ident}"


def load_sentence_audio(
    item: MediaFile, media_dir: Path = DEFAULT_MEDIA_DIR
) -> tuple[np.ndarray, int]:
    """Mono float32 audio of a sentence at its own rate, cut at :data:`SPEECH_END_S`."""
    audio, rate = load_mono(media_path(item, media_dir))
    end_s = SPEECH_END_S.get(item.name)
    return (audio if end_s is None else audio[: round(end_s * rate)]), rate


def _align_entry(
    aligner: SentenceAligner, item: MediaFile, audio: np.ndarray, rate: int
) -> dict[str, Any] | None:
    """The cache entry of one alignment; None (logged) when pocketsphinx cannot align it."""
    words = transcript_words(SENTENCE_TEXT[item.name], aligner.knows)
    missing = [w for w in words if not aligner.knows(w)]
    if missing:  # a transcript problem, not a bad recording: never skipped quietly
        raise HumanSpeechError(f"no pronunciation for {missing}; add them to EXTRA_PRONUNCIATIONS")
    try:
        result = align_recording(aligner, words, audio, rate)
    except HumanSpeechError as e:
        log.info("skipping %s: %s", item.name, e)
        return None
    phones = phones_from_alignment(result, len(audio) / rate)
    return {
        "phones": [[p.ipa, p.start, p.end] for p in phones],
        "meta": {
            "score_per_frame": result.score_per_frame,
            "loop_agreement": result.loop_agreement,
        },
    }


def _utterance(
    item: MediaFile, audio: np.ndarray, rate: int, entry: dict[str, Any]
) -> AlignedUtterance:
    family, key = item.name.split("/", 1)
    phones = [Phone(ipa, start, end) for ipa, start, end in entry["phones"]]
    speaker = key.split("_")[0] if family == "speechbrain" else family
    meta: dict[str, float | str] = {"split": item.split, "speaker": speaker, "media": item.name}
    meta.update(entry["meta"])
    utt = AlignedUtterance(audio, rate, phones, SENTENCE_TEXT[item.name], f"{family}:{key}", family)
    utt.meta = {**meta, "loud_silence_s": loud_silence_s(utt)}
    return utt


def sentence_set(
    split: str | None = None,
    media_dir: Path = DEFAULT_MEDIA_DIR,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    max_loud_silence_s: float | None = MAX_LOUD_SILENCE_S,
) -> list[AlignedUtterance]:
    """Real read sentences (``split``: "dev", "test" or both) with phone alignments.

    Audio is fetched through :func:`~avatar.data.media.media_path` (``media_dir``); alignments
    are cached as JSON in ``cache_dir`` (``None``: not kept). Utterances whose alignment fails
    or calls more than ``max_loud_silence_s`` of loud signal silence (``None``: keep all) are
    logged and left out; a word without a pronunciation raises :class:`HumanSpeechError`.
    Needs pocketsphinx only for alignments not in the cache.
    """
    if split not in (None, "dev", "test"):
        raise ValueError(f"split must be 'dev', 'test' or None, not {split!r}")
    items = [m for m in SENTENCE_AUDIO if split is None or m.split == split]
    cache_path = cache_dir / "sentence_alignments.json" if cache_dir is not None else None
    cache = load_alignment_cache(cache_path)
    aligner: SentenceAligner | None = None
    out, changed = [], False
    for item in items:
        audio, rate = load_sentence_audio(item, media_dir)
        if speech_to_floor_db(audio, rate) < MIN_SPEECH_TO_FLOOR_DB:
            log.info("skipping %s: speech is not clearly above the background", item.name)
            continue
        key = _cache_key(item, len(audio))
        if key not in cache:
            aligner = aligner or SentenceAligner()
            entry = _align_entry(aligner, item, audio, rate)
            if entry is None:
                continue
            cache[key], changed = entry, True
        utt = _utterance(item, audio, rate, cache[key])
        silent = float(utt.meta["loud_silence_s"])
        if max_loud_silence_s is not None and silent > max_loud_silence_s:
            log.info("skipping %s: %.2f s of loud signal aligned as silence", item.name, silent)
            continue
        out.append(utt)
    if cache_path is not None and changed:
        save_alignment_cache(cache_path, cache)
    return out
