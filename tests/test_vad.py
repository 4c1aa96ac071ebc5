"""VadChunker: every sample out exactly once, START before the onset, END after the offset."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avatar.audio.io import load_audio
from avatar.audio.vad import VadChunker, to_pcm16
from avatar.config import VadConfig
from avatar.frames import AudioChunk, SpeechEvent, SpeechEventKind

RATE = 16000
NS_PER_SAMPLE = 1_000_000_000 // RATE
START, END = SpeechEventKind.START, SpeechEventKind.END
ALSA_SPEECH = Path("/usr/share/sounds/alsa/Front_Center.wav")

Item = AudioChunk | SpeechEvent


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


def run(chunker: VadChunker, x: np.ndarray, block: int | None = None) -> list[Item]:
    step = block or max(1, len(x))
    out = [item for i in range(0, len(x), step) for item in chunker.push(x[i : i + step])]
    return out + chunker.flush()


def chunks(items: list[Item]) -> list[AudioChunk]:
    return [i for i in items if isinstance(i, AudioChunk)]


def events(items: list[Item]) -> list[tuple[SpeechEventKind, float]]:
    return [(i.kind, i.pts_ns / 1e9) for i in items if isinstance(i, SpeechEvent)]


def check_stream(items: list[Item], x: np.ndarray, chunker: VadChunker, start_ns: int = 0) -> None:
    """Every sample once, in order; a continuous timeline; labels agree with the events."""
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks(items)]), x)
    pts, speaking = start_ns, False
    for item in items:
        if isinstance(item, SpeechEvent):
            assert item.pts_ns == pts, "an event sits between chunks"
            assert item.kind is (END if speaking else START), "events alternate"
            speaking = item.kind is START
        else:
            assert item.pts_ns == pts and item.sample_rate == RATE
            assert item.is_speech == speaking
            assert 0 < len(item.samples) <= chunker.chunk_samples
            pts += len(item.samples) * NS_PER_SAMPLE
    assert not speaking, "flush closes open speech"


def key(items: list[Item]) -> list[tuple]:
    return [
        (i.kind, i.pts_ns)
        if isinstance(i, SpeechEvent)
        else (i.pts_ns, i.is_speech, i.samples.tobytes())
        for i in items
    ]


# -- the decision rules, with a scripted classifier -----------------------------------------


def test_hysteresis_and_pre_padding_place_events_exactly() -> None:
    # 20 ms frames; start: 3 of the last 5 voiced; end: 14 of the last 15 unvoiced; pad 10 frames.
    cfg = VadConfig(warmup_ms=0)
    chunker = VadChunker(cfg, classifier=LevelVad())
    x = frames_signal([range(50, 75)], 140)
    items = run(chunker, x)
    check_stream(items, x, chunker)
    # START decided after frame 52 reaches back 10 frames; END after 14 silent frames (74..88).
    assert events(items) == [(START, 0.86), (END, 1.78)]
    assert chunker.delay_ms == 200


def test_a_short_pause_does_not_split_an_utterance() -> None:
    chunker = VadChunker(VadConfig(warmup_ms=0), classifier=LevelVad())
    x = frames_signal([range(50, 75), range(90, 115)], 160)
    items = run(chunker, x)
    check_stream(items, x, chunker)
    assert events(items) == [(START, 0.86), (END, 2.58)]  # the END at 1.78 was withdrawn

    chunker = VadChunker(VadConfig(warmup_ms=0), classifier=LevelVad())
    x = frames_signal([range(50, 75), range(110, 135)], 160)
    items = run(chunker, x)
    check_stream(items, x, chunker)
    assert events(items) == [(START, 0.86), (END, 1.78), (START, 2.06), (END, 2.98)]


def test_speech_from_the_first_sample_survives_the_warm_up() -> None:
    chunker = VadChunker(VadConfig(warmup_ms=150), classifier=LevelVad())
    x = frames_signal([range(0, 25)], 80)
    items = run(chunker, x)
    check_stream(items, x, chunker)
    assert events(items) == [(START, 0.0), (END, 0.78)]


def test_flush_closes_speech_and_the_timeline_continues() -> None:
    chunker = VadChunker(VadConfig(warmup_ms=0), classifier=LevelVad(), start_pts_ns=7)
    x = frames_signal([range(10, 40)], 40)
    items = run(chunker, x)
    check_stream(items, x, chunker, start_ns=7)
    assert events(items)[-1] == (END, (len(x) * NS_PER_SAMPLE + 7) / 1e9)
    more = run(chunker, np.zeros(640, np.float32))
    assert chunks(more)[0].pts_ns == len(x) * NS_PER_SAMPLE + 7

    chunker.reset(start_pts_ns=10**10)
    assert chunker.held_samples == 0
    assert chunks(run(chunker, np.zeros(640, np.float32)))[0].pts_ns == 10**10


@pytest.mark.parametrize(("frame_ms", "chunk_ms"), [(30, 20), (10, 40), (20, 50)])
def test_frame_and_chunk_sizes_need_not_match(frame_ms: int, chunk_ms: int) -> None:
    cfg = VadConfig(frame_ms=frame_ms, chunk_ms=chunk_ms)
    chunker = VadChunker(cfg)
    x = padded(np.concatenate([vowel(0.7), np.zeros(8000, np.float32), vowel(0.5)]))
    items = run(chunker, x, block=777)
    check_stream(items, x, chunker)
    assert events(items)[0][0] is START
    cuts = {i.pts_ns for i in items if isinstance(i, SpeechEvent)}
    for c in chunks(items):  # chunks sit on the grid except where an event cuts them
        end = c.pts_ns + len(c.samples) * NS_PER_SAMPLE
        on_grid = (end // NS_PER_SAMPLE) % chunker.chunk_samples == 0
        assert on_grid or end in cuts or c is chunks(items)[-1]


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
    chunker = VadChunker(VadConfig())
    items = run(chunker, x, block=480)
    check_stream(items, x, chunker)

    loud = np.abs(x) > 0.02 * np.abs(speech).max()
    onset, offset = np.flatnonzero(loud)[[0, -1]] / RATE
    ev = events(items)
    assert ev and ev[0][0] is START
    assert onset - 0.4 <= ev[0][1] <= onset, (ev, onset)
    assert offset <= ev[-1][1] <= offset + 0.8, (ev, offset)
    # Nothing audible is ever labelled silence: onsets and tails travel with the speech.
    labels = np.concatenate([np.full(len(c.samples), c.is_speech) for c in chunks(items)])
    assert labels[loud].all()


@pytest.mark.parametrize(
    "x",
    [np.zeros(3 * RATE, np.float32), noise(3.0, 0.01, 2), noise(3.0, 0.01, 3), noise(3.0, 3e-4)],
    ids=["digital-silence", "noise-40dBFS-a", "noise-40dBFS-b", "noise-70dBFS"],
)
def test_silence_and_low_noise_are_not_speech(x: np.ndarray) -> None:
    chunker = VadChunker(VadConfig())
    items = run(chunker, x, block=320)
    check_stream(items, x, chunker)
    assert events(items) == []


def test_any_block_sizes_give_identical_output() -> None:
    x = padded(np.concatenate([vowel(0.6), np.zeros(5000, np.float32), vowel(0.4)]), 0.7)
    ref = run(VadChunker(VadConfig()), x)
    assert events(ref)
    for block in [7, 160, 333, 4096]:
        assert key(run(VadChunker(VadConfig()), x, block)) == key(ref), block
    rng = np.random.default_rng(0)
    chunker, out, i = VadChunker(VadConfig()), [], 0
    while i < len(x):
        n = int(rng.integers(1, 2000))
        out += chunker.push(x[i : i + n])
        i += n
    assert key(out + chunker.flush()) == key(ref)


def test_a_long_stream_holds_a_bounded_amount_of_audio() -> None:
    pattern = padded(vowel(0.8), 0.6)  # 2 s: one utterance
    chunker = VadChunker(VadConfig())
    pushed = emitted = starts = 0
    most_held = 0
    for _ in range(90):  # 3 minutes in 1000-sample blocks
        for i in range(0, len(pattern), 1000):
            out = chunker.push(pattern[i : i + 1000])
            pushed += len(pattern[i : i + 1000])
            emitted += sum(len(c.samples) for c in chunks(out))
            starts += sum(1 for e in events(out) if e[0] is START)
            assert emitted + chunker.held_samples == pushed
            if not chunker.warming_up:
                most_held = max(most_held, chunker.held_samples)
    assert starts == 90
    assert most_held <= chunker.max_held_samples
    # delay_ms of pre-padding plus one 20 ms frame being assembled (chunks = frames here).
    assert most_held <= (chunker.delay_ms + 20) * RATE // 1000


def test_rejects_input_it_cannot_classify() -> None:
    with pytest.raises(ValueError, match="rate"):
        VadChunker(VadConfig(), sample_rate=22050)
    with pytest.raises(ValueError, match="mono"):
        VadChunker(VadConfig()).push(np.zeros((2, 320), np.float32))


def test_pcm16_conversion_saturates_and_silences_nan() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.5, -2.0, 1.0], np.float32)
    np.testing.assert_array_equal(to_pcm16(x), [0, 32767, -32767, 16383, -32767, 32767])
