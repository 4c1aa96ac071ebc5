"""Festival speech synthesis with the phone timings of its Segment relation.

One ``festival`` process synthesizes a whole batch of sentences (start-up is ~0.3 s, a sentence
takes tens of milliseconds), writing a RIFF wave and a ``name end_time`` list per sentence into a
temporary folder. Festival's segment end times are the times the waveform generator was given,
so they are sample-accurate up to the synthesizer's own frame (5 ms for HTS, one pitch period for
the diphone voices).

Voice families and what they allow (checked with festival 2.5 on Debian):

* diphone voices (``kal_diphone``, ``ked_diphone``): 16 kHz, radio phone set, ``Duration_Stretch``
  changes the rate, ``int_lr_params`` (``target_f0_mean``/``target_f0_std``) moves the pitch.
* HTS voices (``cmu_us_slt_arctic_hts``): 32 kHz, radio phone set. ``Duration_Stretch`` is
  ignored by the HTS engine; its ``-r`` option (speech rate) is used instead. Pitch cannot be
  changed: ``-fm`` and the intonation model have no effect on this build, so ``pitch_scale``
  other than 1 raises :class:`FestivalError`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.data.types import AlignedUtterance, Phone
from avatar.errors import FestivalError
from avatar.motion.phonemes import SILENCE, arpabet_to_ipa

# Segment names festival uses for silence and breath, beyond the ARPAbet silences.
FESTIVAL_SILENCE = frozenset({"pau", "h#", "brth", "#", "sil"})
# Phone sets whose symbols are ARPAbet (see avatar.motion.phonemes.ARPABET_TO_IPA). British
# voices use "mrpa", which has no table here.
SUPPORTED_PHONESETS = frozenset({"radio"})

_STARTUP_TIMEOUT_S = 60.0
_SENTENCE_TIMEOUT_S = 10.0
_INSTALL_HINT = "install it with: apt-get install festival festvox-kallpc16k"


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """What festival reports about a voice once it is selected."""

    name: str
    phoneset: str
    synth_method: str
    duration_stretch: float  # the voice's own default
    f0_mean: float  # int_lr_params target; meaningful for diphone voices only
    f0_std: float

    @property
    def family(self) -> str:
        """Group of voices held out together: ``festival-diphone`` or ``festival-hts``."""
        method = self.synth_method.lower()
        if method == "hts":
            return "festival-hts"
        if method in ("unisyn", "diphone"):
            return "festival-diphone"
        return f"festival-{method}"

    @property
    def is_hts(self) -> bool:
        return self.synth_method.lower() == "hts"


def festival_binary() -> str:
    """Path of the ``festival`` executable; raises :class:`FestivalError` when absent."""
    path = shutil.which("festival")
    if path is None:
        raise FestivalError(f"festival is not installed; {_INSTALL_HINT}")
    return path


def run_festival_script(script: str, timeout: float) -> str:
    """Run a Scheme script with ``festival -b`` and return its standard output."""
    binary = festival_binary()
    with tempfile.TemporaryDirectory(prefix="avatar-festival-") as tmp:
        path = Path(tmp) / "run.scm"
        path.write_text(script, encoding="utf-8")
        try:
            done = subprocess.run(
                [binary, "-b", str(path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise FestivalError(f"festival did not finish within {timeout:.0f} s") from e
    if done.returncode != 0:
        raise FestivalError(f"festival failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def available_voices() -> list[str]:
    """Names of the installed festival voices (``voice.list``), e.g. ``kal_diphone``."""
    out = run_festival_script("(print (voice.list))\n", _STARTUP_TIMEOUT_S)
    return out.strip().strip("()").split()


def voice_info(voice: str) -> VoiceInfo:
    """Select ``voice`` in festival and report its phone set, synthesis method and defaults."""
    installed = available_voices()
    if voice not in installed:
        raise FestivalError(f"festival voice {voice!r} is not installed; installed: {installed}")
    script = (
        f"(voice_{voice})\n"
        "(format t \"%s\\n\" (cadr (assoc 'name (PhoneSet.description '(name)))))\n"
        '(format t "%s\\n" (Param.get \'Synth_Method))\n'
        '(format t "%f\\n" (Param.get \'Duration_Stretch))\n'
        '(format t "%f\\n" (cadr (assoc \'target_f0_mean int_lr_params)))\n'
        '(format t "%f\\n" (cadr (assoc \'target_f0_std int_lr_params)))\n'
    )
    lines = run_festival_script(script, _STARTUP_TIMEOUT_S).split()
    if len(lines) < 5:
        raise FestivalError(f"could not query festival voice {voice!r}: got {lines!r}")
    phoneset, method, stretch, f0_mean, f0_std = lines[-5:]
    return VoiceInfo(voice, phoneset, method, float(stretch), float(f0_mean), float(f0_std))


def festival_phone_to_ipa(name: str) -> str:
    """Convert one radio-phone-set segment name to IPA (silence and breath -> ``""``)."""
    if name.lower() in FESTIVAL_SILENCE:
        return SILENCE
    try:
        return arpabet_to_ipa(name)
    except KeyError as e:
        raise FestivalError(f"festival phone {name!r} has no IPA mapping") from e


def scheme_string(text: str) -> str:
    """``text`` as a Scheme string literal on one line."""
    flat = " ".join(text.split())
    return '"' + flat.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SCRIPT_HELPERS = """
(define (avatar_segs utt path)
  (let ((fd (fopen path "w")))
    (mapcar
     (lambda (s) (format fd "%s %f\\n" (item.name s) (item.feat s 'end)))
     (utt.relation.items utt 'Segment))
    (fclose fd)))
(define (avatar_say text wav segs)
  (let ((utt (utt.synth (eval (list 'Utterance 'Text text)))))
    (utt.save.wave utt wav 'riff)
    (avatar_segs utt segs)))
"""


def parse_segments(text: str) -> list[tuple[str, float]]:
    """Parse ``name end_time`` lines as written by the synthesis script."""
    out: list[tuple[str, float]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((parts[0], float(parts[1])))
    return out


def segments_to_phones(segments: list[tuple[str, float]], duration: float) -> list[Phone]:
    """Turn festival end times into IPA phones that tile ``[0, duration]`` exactly.

    Zero-length segments are dropped; the last phone is stretched (or a silence appended) to
    reach the end of the audio, which diphone voices overshoot by a few tens of milliseconds.
    """
    phones: list[Phone] = []
    start = 0.0
    for name, end in segments:
        end = min(end, duration)
        if end > start:
            phones.append(Phone(festival_phone_to_ipa(name), start, end))
            start = end
    if start < duration:
        if phones and phones[-1].ipa == SILENCE:
            phones[-1] = Phone(SILENCE, phones[-1].start, duration)
        else:
            phones.append(Phone(SILENCE, start, duration))
    return phones


def read_wave(path: Path) -> tuple[np.ndarray, int]:
    """Read festival's RIFF wave (16-bit PCM) as mono float32, with the standard library only
    (the runtime's text-to-speech has no soundfile)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise FestivalError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        audio = raw.reshape(-1, w.getnchannels()).mean(axis=1) / 32768.0
        return np.ascontiguousarray(audio, dtype=np.float32), w.getframerate()


class FestivalSynth:
    """Synthesize English sentences with one festival voice, with phone timings.

    ``batch_size`` sentences share one festival process.
    """

    def __init__(self, voice: str, batch_size: int = 200) -> None:
        self.info = voice_info(voice)
        if self.info.phoneset not in SUPPORTED_PHONESETS:
            raise FestivalError(
                f"voice {voice!r} uses phone set {self.info.phoneset!r}; "
                f"only {sorted(SUPPORTED_PHONESETS)} can be converted to IPA"
            )
        self.voice = voice
        self.batch_size = batch_size

    @property
    def source(self) -> str:
        return f"festival:{self.voice}"

    def synthesize(
        self, texts: list[str], rate_stretch: float = 1.0, pitch_scale: float = 1.0
    ) -> list[AlignedUtterance]:
        """Synthesize each text; one :class:`AlignedUtterance` per text, in order.

        ``rate_stretch`` > 1 speaks slower (durations multiplied), ``pitch_scale`` multiplies the
        intonation model's mean and range of F0 (diphone voices only).
        """
        if rate_stretch <= 0 or pitch_scale <= 0:
            raise ValueError("rate_stretch and pitch_scale must be positive")
        if self.info.is_hts and pitch_scale != 1.0:
            raise FestivalError(f"voice {self.voice!r} (HTS) cannot change pitch in festival")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"texts {empty} are empty")
        out: list[AlignedUtterance] = []
        for i in range(0, len(texts), self.batch_size):
            out.extend(self._batch(texts[i : i + self.batch_size], rate_stretch, pitch_scale))
        return out

    def settings(self, rate_stretch: float, pitch_scale: float) -> str:
        if self.info.is_hts:  # the HTS engine ignores Duration_Stretch; -r is its speech rate
            option = f'(list "-r" {1.0 / rate_stretch:.6f})'
            return f"(set! hts_engine_params (append hts_engine_params (list {option})))\n"
        stretch = self.info.duration_stretch * rate_stretch
        f0_mean = self.info.f0_mean * pitch_scale
        f0_std = self.info.f0_std * pitch_scale
        return (
            f"(Parameter.set 'Duration_Stretch {stretch:.6f})\n"
            f"(set! int_lr_params (append (list (list 'target_f0_mean {f0_mean:.3f})"
            f" (list 'target_f0_std {f0_std:.3f})) int_lr_params))\n"
        )

    def _batch(
        self, texts: list[str], rate_stretch: float, pitch_scale: float
    ) -> list[AlignedUtterance]:
        with tempfile.TemporaryDirectory(prefix="avatar-festival-") as tmp:
            folder = Path(tmp)
            lines = [f"(voice_{self.voice})", self.settings(rate_stretch, pitch_scale)]
            lines.append(_SCRIPT_HELPERS)
            for i, text in enumerate(texts):
                wav, segs = folder / f"{i:05d}.wav", folder / f"{i:05d}.segs"
                lines.append(f'(avatar_say {scheme_string(text)} "{wav}" "{segs}")')
            timeout = _STARTUP_TIMEOUT_S + _SENTENCE_TIMEOUT_S * len(texts)
            run_festival_script("\n".join(lines) + "\n", timeout)
            return [
                self.collect(
                    folder / f"{i:05d}.wav",
                    folder / f"{i:05d}.segs",
                    text,
                    rate_stretch,
                    pitch_scale,
                )
                for i, text in enumerate(texts)
            ]

    def collect(
        self, wav: Path, segs: Path, text: str, rate_stretch: float, pitch_scale: float
    ) -> AlignedUtterance:
        """The utterance festival wrote to ``wav`` and ``segs``."""
        if not wav.exists() or not segs.exists():
            raise FestivalError(f"festival produced no output for {text!r}")
        audio, rate = read_wave(wav)
        if audio.size == 0:
            raise FestivalError(f"festival produced empty audio for {text!r}")
        phones = segments_to_phones(parse_segments(segs.read_text()), len(audio) / rate)
        meta: dict[str, float | str] = {
            "voice": self.voice,
            "rate_stretch": rate_stretch,
            "pitch_scale": pitch_scale,
        }
        return AlignedUtterance(audio, rate, phones, text, self.source, self.info.family, meta)


class FestivalPipe:
    """One long-lived ``festival --pipe`` process speaking one voice, a sentence per call.

    For live text (a session's ``say``): festival's start-up (~0.1-0.3 s) is paid once, so a
    sentence's audio is ready after its synthesis alone (40-100 ms for a short sentence with the
    HTS voice, measured on the 2-core VM). Calls are serialised (one process, one lock); a process
    that died or hung (``timeout_s`` per sentence) is killed and started again on the next call.
    Blocking: call it in an executor.
    """

    def __init__(self, synth: FestivalSynth, timeout_s: float = _SENTENCE_TIMEOUT_S) -> None:
        self.synth, self.timeout_s = synth, timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="avatar-festival-pipe-"))
        self._calls = 0

    def say(self, text: str) -> AlignedUtterance:
        """``text`` (one sentence, non-empty) spoken, with its phones."""
        if not text.strip():
            raise ValueError("text is empty")
        with self._lock:
            self._calls += 1
            wav, segs = self._dir / "say.wav", self._dir / "say.segs"
            wav.unlink(missing_ok=True)
            segs.unlink(missing_ok=True)
            self._run(f'(avatar_say {scheme_string(text)} "{wav}" "{segs}")', self.timeout_s)
            return self.synth.collect(wav, segs, text, 1.0, 1.0)

    def close(self) -> None:
        with self._lock:
            self._stop()
            shutil.rmtree(self._dir, ignore_errors=True)

    def _run(self, command: str, timeout_s: float) -> None:
        """Send ``command``, then wait for the line it is followed by (festival is restarted if
        it does not come within ``timeout_s``)."""
        proc = self._proc if self._proc is not None and self._proc.poll() is None else None
        if proc is None:
            proc = self._start()
        done = f"avatar-done-{self._calls}"
        assert proc.stdin is not None and proc.stdout is not None
        watchdog = threading.Timer(timeout_s, proc.kill)
        watchdog.start()
        try:
            proc.stdin.write(f"{command}\n(print '{done})\n(fflush nil)\n")
            proc.stdin.flush()
            for line in proc.stdout:
                if line.strip() == done:
                    return
        except (BrokenPipeError, OSError):
            pass
        finally:
            watchdog.cancel()
        self._stop()
        raise FestivalError(f"festival stopped or did not answer within {timeout_s:g} s")

    def _start(self) -> subprocess.Popen[str]:
        self._proc = subprocess.Popen(
            [festival_binary(), "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )  # fmt: skip
        setup = f"(voice_{self.synth.voice})\n{self.synth.settings(1.0, 1.0)}{_SCRIPT_HELPERS}"
        self._run(setup, _STARTUP_TIMEOUT_S)
        return self._proc

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
