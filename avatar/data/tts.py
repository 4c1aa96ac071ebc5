"""Local text-to-speech: festival voices from Debian's packages, sentence by sentence.

Nothing is downloaded at run time: the voices are ``festvox-us-slt-hts`` (``slt``, the default:
the most intelligible here, pocketsphinx WER 0.20; 0.07 x real time), ``festvox-kallpc16k``
(``kal``) and ``festvox-kdlpc16k`` (``ked``), 0.04 x real time (../shared/NOTES.md). Text is
checked (:func:`clean_text`), cut into sentences (:func:`split_sentences`) and all of them are
spoken by one festival process (start-up ~0.3 s). Festival's voices are English: other scripts
are reduced to ASCII letters first, and what is left of them is spelled as English.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from avatar.data.festival import FestivalPipe, FestivalSynth, available_voices
from avatar.data.types import Phone
from avatar.errors import FestivalError, TextError

VOICES = {"slt": "cmu_us_slt_arctic_hts", "kal": "kal_diphone", "ked": "ked_diphone"}
DEFAULT_VOICE = "slt"
MAX_SENTENCE_WORDS = 40  # a longer run without punctuation is cut at word boundaries
_ALLOWED_CONTROLS = frozenset("\n\r\t")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_SPEAKABLE = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class Speech:
    """Mono float32 speech with its phones (seconds from the start of ``audio``)."""

    audio: np.ndarray
    rate: int
    phones: list[Phone]
    sentences: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.rate


def clean_text(text: str, max_chars: int) -> str:
    """``text`` as festival will read it, or :class:`TextError` saying what is wrong."""
    if len(text) > max_chars:
        raise TextError(f"text is {len(text)} characters; at most {max_chars} are spoken per job")
    bad = sorted({f"U+{ord(c):04X}" for c in text if _is_control(c)})
    if bad:
        raise TextError(f"text has control characters ({', '.join(bad[:5])})")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    if not _SPEAKABLE.search(ascii_text):
        raise TextError("text has nothing to speak (no letters or digits an English voice reads)")
    return " ".join(ascii_text.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of cleaned ``text``; runs longer than MAX_SENTENCE_WORDS are cut."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        for i in range(0, len(words), MAX_SENTENCE_WORDS):
            part = " ".join(words[i : i + MAX_SENTENCE_WORDS])
            if _SPEAKABLE.search(part):
                out.append(part)
    return out


def installed_voices() -> list[str]:
    """Our voice names whose festival voice is installed here (none without festival)."""
    try:
        found = set(_festival_voices())
    except FestivalError:
        return []
    return [name for name, voice in VOICES.items() if voice in found]


def check_voice(voice: str | None) -> str:
    """The voice to use, or :class:`TextError` naming the installed ones."""
    name = voice or DEFAULT_VOICE
    if name not in VOICES:
        raise TextError(f"unknown voice {name[:40]!r}: choose one of {', '.join(VOICES)}")
    if name not in installed_voices():
        hint = "apt-get install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k"
        raise TextError(f"voice {name!r} is not installed on this machine ({hint})")
    return name


def speak(text: str, voice: str = DEFAULT_VOICE, max_chars: int = 5000) -> Speech:
    """Speak ``text`` with one of :data:`VOICES`: every sentence, in order, one after another."""
    sentences = split_sentences(clean_text(text, max_chars))
    utterances = _synth(check_voice(voice)).synthesize(sentences)
    rate = utterances[0].sample_rate
    pieces, phones, t = [], [], 0.0
    for u in utterances:
        phones += [Phone(p.ipa, p.start + t, p.end + t) for p in u.phones]
        pieces.append(u.audio)
        t += len(u.audio) / rate
    return Speech(np.concatenate(pieces), rate, phones, len(sentences))


def say_sentence(sentence: str, voice: str = DEFAULT_VOICE) -> Speech:
    """One sentence of :func:`split_sentences` spoken by ``voice``'s long-lived festival process
    (live text: no start-up per sentence). Blocking: call it in an executor."""
    u = _pipe(check_voice(voice)).say(sentence)
    return Speech(u.audio, u.sample_rate, u.phones, 1)


def trim_start(speech: Speech, keep_s: float = 0.05) -> Speech:
    """``speech`` without the leading pause festival puts before a sentence (~0.17 s), but for
    ``keep_s`` of it: what a reply starts with is latency."""
    if not speech.phones or speech.phones[0].ipa or speech.phones[0].end <= keep_s:
        return speech
    cut_s = speech.phones[0].end - keep_s
    phones = [Phone(p.ipa, max(p.start - cut_s, 0.0), p.end - cut_s) for p in speech.phones]
    return Speech(speech.audio[round(cut_s * speech.rate) :], speech.rate, phones, speech.sentences)


def write_wave(path: Path, audio: np.ndarray, rate: int) -> None:
    """Mono float32 as a 16-bit PCM RIFF wave."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _is_control(c: str) -> bool:
    return unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROLS


@cache
def _festival_voices() -> tuple[str, ...]:
    return tuple(available_voices())


@cache
def _synth(voice: str) -> FestivalSynth:
    return FestivalSynth(VOICES[voice])


_pipes: dict[str, FestivalPipe] = {}
_pipes_lock = threading.Lock()


def _pipe(voice: str) -> FestivalPipe:
    """The voice's festival process, shared by every session (festival ends when its input
    closes, i.e. with this process)."""
    with _pipes_lock:
        if voice not in _pipes:
            _pipes[voice] = FestivalPipe(_synth(voice))
        return _pipes[voice]
