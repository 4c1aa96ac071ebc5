"""The chain through the engine: per-frame audio tiles the input exactly; idle motion."""

from __future__ import annotations

import numpy as np

from avatar.compose.offline import speech_frames
from avatar.config import load_config
from avatar.engine.assembly import AudioSlicer
from avatar.face.store import AvatarAssets
from avatar.motion.idle import IdleAnimator
from avatar.render.warp import WarpRenderer
from tests.conftest import motion_frame


def test_slicer_tiles_audio_exactly_at_any_fps() -> None:
    for fps in (25.0, 30.0, 29.97):
        s = AudioSlicer(48000, fps)
        audio = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
        for k in range(0, len(audio), 777):
            s.push(audio[k : k + 777])
        n = int(np.ceil(len(audio) * fps / 48000))
        pieces = [s.take(i) for i in range(n)]
        joined = np.concatenate([p.samples for p in pieces])
        assert np.array_equal(joined[: len(audio)], audio)
        assert not joined[len(audio) :].any()  # past the end: silence, not garbage
        assert pieces[1].pts_ns == round(48000 / fps) * 1_000_000_000 // 48000


def test_offline_frames_carry_their_audio(default_avatar: AvatarAssets) -> None:
    t = np.arange(int(2.3 * 48000)) / 48000
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    renderer = WarpRenderer(default_avatar, 128)
    frames = speech_frames(load_config(), audio, 48000, renderer)  # the chain `avatar render` runs
    assert [f.index for f in frames] == list(range(58))  # ceil(2.3 s * 25)
    assert all(f.image.shape == (128, 128, 3) for f in frames)
    assert all(f.audio is not None and len(f.audio.samples) == 1920 for f in frames)
    joined = np.concatenate([f.audio.samples for f in frames if f.audio is not None])
    assert np.array_equal(joined[: len(audio)], audio)
    assert [f.pts_ns for f in frames] == [i * 40_000_000 for i in range(58)]


def test_idle_is_reproducible_and_blinks() -> None:
    def run(seed: int) -> tuple[list[float], np.ndarray]:
        idle = IdleAnimator(seed)
        frames = [idle.apply(motion_frame(i)) for i in range(25 * 20)]
        return [f.blink for f in frames], np.stack([f.head_pose for f in frames])

    blinks, poses = run(3)
    blinks2, poses2 = run(3)
    assert blinks == blinks2 and np.array_equal(poses, poses2)
    closed = np.array(blinks) > 0.9
    starts = np.flatnonzero(closed[1:] & ~closed[:-1])
    assert 3 <= len(starts) <= 11  # one every 2-6 s over 20 s
    assert np.abs(poses[:, :3]).max() < 0.06  # a few degrees at most
    assert poses[:, 0].std() > 0.003  # but it does move
