"""espeak-ng through ctypes, with sample-accurate IPA phone timings.

libespeak-ng (Debian: ``espeak-ng``, ``libespeak-ng1``) is initialised in synchronous mode with
phoneme events in IPA; each phoneme event carries the sample where the phone starts, and a phone
ends where the next one begins. Empty phoneme names are pauses (silence).

The library keeps global state, so one :class:`EspeakSynth` per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
from dataclasses import dataclass

import numpy as np

from avatar.data.types import AlignedUtterance, Phone
from avatar.errors import AvatarError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x1
_INIT_PHONEME_IPA = 0x2
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_CHARS_UTF8 = 1


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakMissing(AvatarError):
    """libespeak-ng is not installed."""


@dataclass(frozen=True, slots=True)
class Prosody:
    """Speaking rate (words per minute), pitch base and range (0..100)."""

    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise EspeakMissing(
            "libespeak-ng not found: install it with `apt-get install espeak-ng libespeak-ng1`"
        ) from None


class EspeakSynth:
    """Synthesise text to float32 audio plus an IPA phone alignment."""

    def __init__(self) -> None:
        self._lib = _load_library()
        self.sample_rate = int(
            self._lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA
            )
        )
        if self.sample_rate <= 0:
            raise EspeakMissing("espeak_Initialize failed (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._n = 0
        self._cb = _Callback(self._on_synth)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._cb)

    def _on_synth(self, wav: ctypes._Pointer, n: int, events: ctypes._Pointer) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._events.append((int(ev.sample), ev.id.decode("utf-8", "replace")))
            i += 1
        return 0

    def set_voice(self, voice: str, prosody: Prosody = Prosody()) -> None:
        """Select ``voice`` (e.g. ``en-us+f3``) and prosody; raises if the voice is unknown."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise AvatarError(f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`)")
        self._lib.espeak_SetParameter(_RATE, prosody.rate, 0)
        self._lib.espeak_SetParameter(_PITCH, prosody.pitch, 0)
        self._lib.espeak_SetParameter(_RANGE, prosody.pitch_range, 0)

    def synthesize(self, text: str, source: str, family: str) -> AlignedUtterance:
        """Speak ``text`` with the current voice."""
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        buf = ctypes.create_string_buffer(data)
        self._lib.espeak_Synth(buf, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        audio = (
            np.concatenate(self._chunks).astype(np.float32) / 32768.0
            if self._chunks
            else np.zeros(0, np.float32)
        )
        phones = events_to_phones(self._events, len(audio), self.sample_rate)
        return AlignedUtterance(audio, self.sample_rate, phones, text, source, family)


def events_to_phones(events: list[tuple[int, str]], n_samples: int, rate: int) -> list[Phone]:
    """Phone start events -> contiguous phones covering ``[0, n_samples)``; gaps are silence."""
    phones: list[Phone] = []
    cursor = 0
    starts = [(min(max(s, 0), n_samples), name) for s, name in events]
    for k, (start, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else n_samples
        if start > cursor:
            phones.append(Phone("", cursor / rate, start / rate))
        if end > start:
            phones.append(Phone(name.strip(), start / rate, end / rate))
        cursor = max(cursor, end)
    if cursor < n_samples:
        phones.append(Phone("", cursor / rate, n_samples / rate))
    return _merge_silences(phones)


def _merge_silences(phones: list[Phone]) -> list[Phone]:
    out: list[Phone] = []
    for p in phones:
        if out and p.ipa == "" and out[-1].ipa == "":
            out[-1] = Phone("", out[-1].start, p.end)
        else:
            out.append(p)
    return out


def list_variants() -> list[str]:
    """Names of espeak-ng's voice variants (``espeak-ng --voices=variant``)."""
    try:
        out = subprocess.run(
            ["espeak-ng", "--voices=variant"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        raise EspeakMissing("espeak-ng not found: `apt-get install espeak-ng`") from None
    names = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            names.append(parts[4][3:])
    return names
