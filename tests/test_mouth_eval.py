"""The mouth evaluation's measures, and a real read sentence through the shipped engine: the
rendered mouth follows the phones, closes on every P/B/M and rests closed after the sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avatar.compose.render_eval import CLOSED_GAP, summarise, trace_utterance
from avatar.compose.renderers import load_renderer
from avatar.compose.talker_eval import TalkerTrace, best_lag, sample_at
from avatar.config import load_config
from avatar.data.align import align_recording, load_mono, phones_from_alignment
from avatar.data.talkers import voiced_at
from avatar.data.types import AlignedUtterance
from avatar.motion.runtime import load_motion_backend

LJ0002 = Path(__file__).parent / "data" / "LJ001-0002.flac"


def _smooth_noise(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n + 20)
    return np.convolve(x, np.hanning(9), "valid")[:n]


@pytest.mark.parametrize("lag_s", [-0.12, 0.0, 0.08])
def test_best_lag_finds_how_far_the_avatar_trails(lag_s: float) -> None:
    t = np.arange(250) / 25
    real = _smooth_noise(250, 1)
    avatar_t = np.arange(-50, 300) / 25
    avatar = np.interp(avatar_t - lag_s, t, real)  # the real mouth, lag_s later
    trace = TalkerTrace("x", t, real, avatar_t, avatar, avatar, np.ones(250, bool))
    r, lag = best_lag(trace)
    assert lag == pytest.approx(lag_s, abs=0.011) and r > 0.99


def test_sampling_leaves_unknown_frames_unknown() -> None:
    t = np.arange(5, dtype=np.float64)
    v = np.array([0.0, 1.0, np.nan, 3.0, 4.0])
    out = sample_at(t, v, np.array([0.5, 2.0, 3.5, 9.0]))
    assert out[0] == 0.5 and np.isnan(out[1]) and out[2] == 3.5 and np.isnan(out[3])


def test_voiced_frames_are_the_speech() -> None:
    audio, rate = load_mono(LJ0002)
    padded = np.concatenate([np.zeros(rate, np.float32), audio, np.zeros(rate, np.float32)])
    t = np.arange(0, len(padded) / rate, 0.04)
    voiced = voiced_at(padded, rate, t)
    speech = (t > 1.1) & (t < 1.0 + len(audio) / rate - 0.1)
    assert voiced[speech].mean() > 0.8 and voiced[t < 0.9].mean() == 0


@pytest.fixture(scope="module")
def sentence() -> AlignedUtterance:
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed")
    from avatar.data.sentences import SentenceAligner, transcript_words

    audio, rate = load_mono(LJ0002)
    audio = np.concatenate([audio, np.zeros(rate // 2, np.float32)])  # a pause after it
    aligner = SentenceAligner()
    words = transcript_words("in being comparatively modern.", aligner.knows)
    phones = phones_from_alignment(align_recording(aligner, words, audio, rate), len(audio) / rate)
    return AlignedUtterance(audio, rate, phones, "in being comparatively modern.", "lj", "lj")


@pytest.mark.parametrize("lead_ms", [40, 0])  # buffered input (the default lead), a microphone
def test_a_read_sentence_moves_the_rendered_mouth_with_its_phones(
    sentence: AlignedUtterance, lead_ms: int
) -> None:
    cfg = load_config(None, ["render.size=256", f"engine.lead_ms={lead_ms}"])
    trace = trace_utterance(cfg, load_motion_backend(cfg.motion), load_renderer(cfg.render),
                            sentence)  # fmt: skip
    res = summarise("lj", "warp", [trace])
    assert res.face_found == 1.0
    assert res.gap_r > 0.55  # measured 0.73 (buffered) / 0.72 (live)
    closed = [m <= CLOSED_GAP for m in trace.pbm_min]  # b, m, p, m (the b: one 50 ms frame)
    assert len(closed) == 4 and sum(closed) >= 3
    assert res.silence_gap < 0.01
    assert 0.15 < res.speech_open_p90 < 0.6  # real talkers: ~0.3
