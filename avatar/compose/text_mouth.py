"""Two mouths for the same sound, on the same face: the audio model's and one driven by phones.

For text input the synthesiser knows its phones and their times, so the mouth could follow them
(:func:`~avatar.motion.phone_motion.phone_motion`) instead of the audio model. To judge that, each
clip is rendered by the same renderer once through the engine exactly as ``avatar render`` runs
it (buffered input: the mouth leads its sound by ``engine.lead_ms``), and once per phone-driven
mouth (phones from different sources, a jaw map) at the same lead, with the engine's own frames'
head pose, blinks and ``talking`` envelope: only the mouth differs. Face mesh reads every frame
back with the evaluation's own code (:func:`~avatar.compose.render_eval.measure_mouths`), shaped
as ``scripts/mouth_traces.py`` saves it, so :func:`~avatar.compose.mouth_eval.aligned_result`
and :func:`~avatar.compose.mouth_eval.talker_result` judge the readings unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

from avatar.backends.protocol import InferenceBackend
from avatar.compose.offline import speech_frames
from avatar.compose.render_eval import measure_mouths
from avatar.config import Config
from avatar.face import mesh
from avatar.frames import MotionFrame, VideoFrame
from avatar.motion.channels import BLENDSHAPE_INDEX
from avatar.motion.phone_motion import JawCurve, PhoneMotion, phone_motion, with_jaw_curve
from avatar.motion.stream import MotionStreamer
from avatar.motion.targets import TimedPhone
from avatar.render.base import Renderer
from avatar.units import ANALYSIS_RATE

AUDIO = "audio"  # the shipped path: the engine's audio model
JAW = BLENDSHAPE_INDEX["jawOpen"]


@dataclass(slots=True)
class Mouths:
    """Per mouth, the readings of every frame (``gap``, ``opening``, ``chin``, ``jaw``: the
    jawOpen it was given) and the frames asked for (frame index -> RGB image)."""

    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    stills: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)


def phone_frame(engine_frame: VideoFrame, motion: PhoneMotion, i: int) -> MotionFrame:
    """The engine's frame ``i`` with the phones' mouth: head pose, blink and the talking
    envelope are the engine's (its idle animator's), so only the mouth differs."""
    src = engine_frame.motion
    assert src is not None  # the render stage gives every frame its motion
    return MotionFrame(engine_frame.index, engine_frame.pts_ns, motion.blendshapes[i],
                       motion.visemes[i], head_pose=src.head_pose.copy(), blink=src.blink,
                       is_speech=True, talking=src.talking)  # fmt: skip


def read_back(images: list[np.ndarray], jaw: np.ndarray) -> dict[str, np.ndarray]:
    """Face mesh on a clip's frames (tracking, one face) as ``mouth_traces.py`` saves them."""
    with mesh.FaceMesh(max_faces=1, static=False) as fm:
        m = measure_mouths(images, fm)
    return {"gap": m.gap, "opening": m.opening, "chin": m.chin, "jaw": jaw.astype(np.float32)}


Driver = tuple[Sequence[TimedPhone], JawCurve | None]  # a phone mouth's phones, jaw map


def render_mouths(
    cfg: Config,
    backend: InferenceBackend,
    renderer: Renderer,
    audio: np.ndarray,
    rate: int,
    drivers: Mapping[str, Driver],
    keep: Sequence[int] = (),
) -> Mouths:
    """The clip through the engine (:data:`AUDIO`) and each of ``drivers`` (name -> phones and
    an optional jaw map) at the engine's lead, read back; frames ``keep`` kept as images."""
    frames = speech_frames(cfg, audio, rate, renderer, backend)
    lead_s = cfg.engine.lead_ms / 1000
    out = Mouths()
    engine_jaw = np.array([f.motion.blendshapes[JAW] if f.motion else 0.0 for f in frames])
    out.traces[AUDIO] = read_back([f.image for f in frames], engine_jaw)
    out.stills[AUDIO] = {i: frames[i].image for i in keep if i < len(frames)}
    for name, (phones, curve) in drivers.items():
        motion = phone_motion(phones, cfg.motion.fps, lead_s, len(frames))
        motion = motion if curve is None else with_jaw_curve(motion, curve)
        images = [renderer.render(phone_frame(f, motion, i)) for i, f in enumerate(frames)]
        out.traces[name] = read_back(images, motion.blendshapes[:, JAW])
        out.stills[name] = {i: images[i] for i in keep if i < len(images)}
    return out


def model_jaw(
    backend: InferenceBackend, audio: np.ndarray, rate: int, fps: float, lead_s: float
) -> np.ndarray:
    """The audio model's jawOpen per video frame of a whole clip (the engine's streamer and
    lead, without its speech gate or a renderer): what a jaw map can match a phone mouth to."""
    x = np.asarray(audio, np.float64)
    if rate != ANALYSIS_RATE:
        g = np.gcd(rate, ANALYSIS_RATE)
        x = resample_poly(x, ANALYSIS_RATE // g, rate // g)
    streamer = MotionStreamer(backend, fps, lead_s=lead_s)
    frames = streamer.push(x.astype(np.float32)) + streamer.flush()
    return np.array([f.blendshapes[JAW] for f in frames], np.float32)
