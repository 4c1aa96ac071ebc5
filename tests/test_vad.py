"""The speech gate: START before the onset, END after the offset, the model woken and slept."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from avatar.audio.io import load_audio
from avatar.audio.pcm import to_pcm16
from avatar.audio.vad import SpeechGate
from avatar.config import VadConfig
from avatar.frames import SpeechEvent, SpeechEventKind

RATE = 16000
NS_PER_SAMPLE = 1_000_000_000 // RATE
START, END = SpeechEventKind.START, SpeechEventKind.END
ALSA_SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")

Event = tuple[SpeechEventKind, float]


class LevelVad:
    """A scripted classifier (the real protocol): a frame is voiced when it is loud."""

    def is_speech(self, buf: bytes, sample_rate: int) -> bool:
        return bool(np.abs(np.frombuffer(buf, np.int16)).mean() > 3000)


def frames_signal(voiced: list[range], n_frames: int, frame: int = 320) -> np.ndarray:
    x = np.zeros(n_frames * frame, np.float32)
    for r in voiced:
        x[r.start * frame : r.stop * frame] = 0.5
    return x


def vowel(seconds: float, amp: float = 0.3) -> np.ndarray:
    """A harmonic, pitch-wobbling tone that webrtcvad takes for speech."""
    t = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / RATE
    y = sum((1 / k) * np.sin(k * phase) for k in range(1, 25))
    return (amp * y / np.abs(y).max()).astype(np.float32)


def noise(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * RATE)) * level).astype(np.float32)


def padded(speech: np.ndarray, seconds: float = 1.0, level: float = 3e-4) -> np.ndarray:
    """Speech with ``seconds`` of near-silence (low white noise) on both sides."""
    quiet = np.zeros(round(seconds * RATE), np.float32)
    x = np.concatenate([quiet, speech.astype(np.float32), quiet])
    return x + noise(len(x) / RATE, level, seed=1)


def run(gate: SpeechGate, x: np.ndarray, block: int | None = None) -> list[SpeechEvent]:
    step = block or max(1, len(x))
    out = [e for i in range(0, len(x), step) for e in gate.push(x[i : i + step]).events]
    return out + gate.flush().events


def events(items: list[SpeechEvent]) -> list[Event]:
    return [(e.kind, e.pts_ns / 1e9) for e in items]


def check_events(items: list[SpeechEvent]) -> None:
    """Events alternate START/END in time order, and the stream ends outside speech."""
    speaking, last = False, -1
    for e in items:
        assert e.kind is (END if speaking else START), "events alternate"
        assert e.pts_ns >= last, "events are in time order"
        speaking, last = e.kind is START, e.pts_ns
    assert not speaking, "flush closes open speech"


def speech_mask(items: list[SpeechEvent], n: int) -> np.ndarray:
    """Per sample: inside a START..END interval."""
    mask = np.zeros(n, bool)
    for a, b in zip(items[::2], items[1::2], strict=True):
        mask[a.pts_ns // NS_PER_SAMPLE : b.pts_ns // NS_PER_SAMPLE] = True
    return mask


# -- the decision rules, with a scripted classifier -----------------------------------------


def test_hysteresis_and_pre_padding_place_events_exactly() -> None:
    # 20 ms frames; start: 3 of the last 5 voiced; end: 14 of the last 15 unvoiced; pad 10 frames.
    cfg = VadConfig(warmup_ms=0)
    gate = SpeechGate(cfg, classifier=LevelVad())
    x = frames_signal([range(50, 75)], 140)
    items = run(gate, x)
    check_events(items)
    # START decided after frame 52 reaches back 10 frames; END after 14 silent frames (74..88).
    assert events(items) == [(START, 0.86), (END, 1.78)]
    assert gate.delay_ms == 200


def test_a_short_pause_does_not_split_an_utterance() -> None:
    gate = SpeechGate(VadConfig(warmup_ms=0), classifier=LevelVad())
    x = frames_signal([range(50, 75), range(90, 115)], 160)
    items = run(gate, x, block=320)
    check_events(items)
    assert events(items) == [(START, 0.86), (END, 2.58)]  # the END at 1.78 was withdrawn

    gate = SpeechGate(VadConfig(warmup_ms=0), classifier=LevelVad())
    x = frames_signal([range(50, 75), range(110, 135)], 160)
    items = run(gate, x, block=320)
    check_events(items)
    assert events(items) == [(START, 0.86), (END, 1.78), (START, 2.06), (END, 2.98)]


def test_speech_from_the_first_sample_survives_the_warm_up() -> None:
    gate = SpeechGate(VadConfig(warmup_ms=150), classifier=LevelVad())
    x = frames_signal([range(0, 25)], 80)
    items = run(gate, x, block=320)
    check_events(items)
    assert events(items) == [(START, 0.0), (END, 0.78)]


def test_flush_closes_speech_and_the_timeline_continues() -> None:
    gate = SpeechGate(VadConfig(warmup_ms=0), classifier=LevelVad(), start_pts_ns=7)
    x = frames_signal([range(10, 40)], 40)
    items = run(gate, x)
    check_events(items)
    assert events(items)[-1] == (END, (len(x) * NS_PER_SAMPLE + 7) / 1e9)
    again = run(gate, frames_signal([range(10, 40)], 40))  # the timeline goes on after flush
    assert again[0].kind is START and again[0].pts_ns > len(x) * NS_PER_SAMPLE
    gate.push(frames_signal([range(0, 20)], 20))
    gate.reset()  # an interruption: undecided events are dropped, the timeline goes on
    assert run(gate, np.zeros(3200, np.float32)) == []


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_every_webrtcvad_frame_size_works(frame_ms: Literal[10, 20, 30]) -> None:
    gate = SpeechGate(VadConfig(frame_ms=frame_ms))
    x = padded(np.concatenate([vowel(0.7), np.zeros(8000, np.float32), vowel(0.5)]))
    items = run(gate, x, block=777)
    check_events(items)
    assert events(items)[0][0] is START


def test_the_model_wakes_on_voice_and_sleeps_after_speech() -> None:
    cfg = VadConfig(warmup_ms=0)
    gate = SpeechGate(cfg, classifier=LevelVad(), sleep_after_ms=300)
    x = frames_signal([range(20, 45)], 120)
    steps = [gate.push(x[i : i + 320]) for i in range(0, len(x), 320)]
    woke = [k for k, s in enumerate(steps) if s.wake]
    slept = [k for k, s in enumerate(steps) if s.sleep]
    assert woke == [20]  # the first voiced frame: the model runs from its block (with pre-roll)
    assert len(slept) == 1 and slept[0] > 44 + 14  # after the END (14 unvoiced frames) ...
    assert slept[0] >= 44 + 300 // 20  # ... and 300 ms without a voiced frame
    assert not gate.awake
    gate.push(x[20 * 320 : 21 * 320])
    assert gate.awake and gate.flush().sleep and not gate.awake


def test_an_interruption_mid_word_puts_the_model_to_sleep_until_the_next_voice() -> None:
    gate = SpeechGate(VadConfig(warmup_ms=0), classifier=LevelVad(), sleep_after_ms=300)
    x = frames_signal([range(5, 30)], 30)
    gate.push(x)
    assert gate.awake
    gate.reset()  # clear_buffer while the word is still sounding
    quiet = [gate.push(np.zeros(320, np.float32)) for _ in range(10)]
    assert not gate.awake and not any(s.wake for s in quiet)
    assert gate.push(frames_signal([range(0, 1)], 1)).wake  # the next voice wakes it


# -- webrtcvad on real and synthetic audio --------------------------------------------------


def espeak_speech(tmp_path: Path) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path / "speech.wav"
    text = "Peter picked a peck of pickled peppers. Five fuzzy frogs sat still."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    return load_audio(wav, RATE)


def alsa_speech(tmp_path: Path) -> np.ndarray:
    if not ALSA_SPEECH.exists():
        pytest.skip("alsa-utils' sample speech is not installed")
    return load_audio(ALSA_SPEECH, RATE)


@pytest.mark.parametrize("source", [espeak_speech, alsa_speech])
def test_real_speech_is_bracketed_by_start_and_end(tmp_path: Path, source) -> None:
    speech = source(tmp_path)
    x = padded(speech)
    items = run(SpeechGate(VadConfig()), x, block=480)
    check_events(items)

    loud = np.abs(x) > 0.02 * np.abs(speech).max()
    onset, offset = np.flatnonzero(loud)[[0, -1]] / RATE
    ev = events(items)
    assert ev and ev[0][0] is START
    assert onset - 0.4 <= ev[0][1] <= onset, (ev, onset)
    assert offset <= ev[-1][1] <= offset + 0.8, (ev, offset)
    # Nothing audible is ever outside speech: onsets and tails travel with the speech.
    assert speech_mask(items, len(x))[loud].all()


@pytest.mark.parametrize(
    "x",
    [np.zeros(3 * RATE, np.float32), noise(3.0, 0.01, 2), noise(3.0, 0.01, 3), noise(3.0, 3e-4)],
    ids=["digital-silence", "noise-40dBFS-a", "noise-40dBFS-b", "noise-70dBFS"],
)
def test_silence_and_low_noise_are_not_speech(x: np.ndarray) -> None:
    gate = SpeechGate(VadConfig())
    items = run(gate, x, block=320)
    assert events(items) == []
    assert gate.frames_classified == len(x) // 320


def test_any_block_sizes_give_identical_output() -> None:
    x = padded(np.concatenate([vowel(0.6), np.zeros(5000, np.float32), vowel(0.4)]), 0.7)
    ref = events(run(SpeechGate(VadConfig()), x))
    assert ref
    for block in [7, 160, 333, 4096]:
        assert events(run(SpeechGate(VadConfig()), x, block)) == ref, block
    rng = np.random.default_rng(0)
    gate, out, i = SpeechGate(VadConfig()), [], 0
    while i < len(x):
        n = int(rng.integers(1, 2000))
        out += gate.push(x[i : i + n]).events
        i += n
    assert events(out + gate.flush().events) == ref


def test_wake_and_sleep_points_do_not_depend_on_block_sizes() -> None:
    x = padded(np.concatenate([vowel(0.5), np.zeros(12000, np.float32), vowel(0.4)]), 0.5)

    def switches(block: int) -> list[tuple[int, bool]]:
        gate, out = SpeechGate(VadConfig(), sleep_after_ms=300), []
        for i in range(0, len(x), block):
            out += [(i + offset, awake) for offset, awake in gate.push(x[i : i + block]).switches]
        return out

    ref = switches(320)  # one 20 ms frame per push: the live case
    assert [awake for _, awake in ref] == [True, False, True, False]
    for block in (7, 777, 16000, len(x)):  # a 1 s block may hold a whole word: it still wakes
        assert switches(block) == ref, block


def test_a_long_stream_holds_no_audio_and_releases_events_in_time() -> None:
    pattern = padded(vowel(0.8), 0.6)  # 2 s: one utterance
    gate = SpeechGate(VadConfig())
    starts = ends = 0
    for _ in range(90):  # 3 minutes in 1000-sample blocks
        for i in range(0, len(pattern), 1000):
            for e in gate.push(pattern[i : i + 1000]).events:
                starts += e.kind is START
                ends += e.kind is END
            assert gate.held_samples < gate.frame_samples  # only a frame being assembled
    assert starts == 90 and ends >= 89


def test_rejects_input_it_cannot_classify() -> None:
    with pytest.raises(ValueError, match="rate"):
        SpeechGate(VadConfig(), sample_rate=22050)
    with pytest.raises(ValueError, match="mono"):
        SpeechGate(VadConfig()).push(np.zeros((2, 320), np.float32))


def test_pcm16_conversion_saturates_and_silences_nan() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.5, -2.0, 1.0], np.float32)
    np.testing.assert_array_equal(to_pcm16(x), [0, 32767, -32767, 16383, -32767, 32767])
