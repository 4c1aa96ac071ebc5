"""Training data for a per-person GAN renderer, read from a talking-head video.

Every frame: face mesh (tracking mode) -> similarity alignment onto the reference frame's
portrait (from stable landmarks: eye corners, nose, temples) -> the same ARKit blendshape channels
the audio model predicts, read off the landmarks by inverting the face rig (bounded least squares
on the lips and jaw) -> the mouth crop, the warp renderer's picture of the same motion, and the
rig's lip sketch. The reference frame is the one with the lips most closed; it becomes the
avatar's portrait.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from avatar.errors import FaceError, ImageInputError
from avatar.face import mesh, sketch
from avatar.face.prepare import alignment
from avatar.face.rig import BASES, BASIS_INDEX, LIP_SLACK, FaceRig, basis_weights
from avatar.motion.channels import BLENDSHAPE_INDEX as BI
from avatar.motion.channels import BLENDSHAPES
from avatar.render.warp import WarpRenderer

MIN_FACE_SHARE = 0.8  # frames where face mesh must find the face
FIT_POINTS = sorted(
    set(mesh.LIPS_OUTER_UPPER + mesh.LIPS_OUTER_LOWER + mesh.LIPS_INNER_UPPER
        + mesh.LIPS_INNER_LOWER + (mesh.CHIN, 148, 377, 176, 400))
)  # fmt: skip


@dataclass(slots=True)
class VideoFaceData:
    portrait: np.ndarray  # (P, P, 3) uint8, the aligned reference frame
    rest: np.ndarray  # (478, 3) reference landmarks in portrait pixels
    frames: np.ndarray  # (N, P, P, 3) uint8, every frame aligned to the portrait
    landmarks: np.ndarray  # (N, 478, 2) in portrait pixels
    blendshapes: np.ndarray  # (N, 16) read off the landmarks
    fps: float
    source_interocular: float = 0.0  # eye distance in the video's own pixels (its sharpness)


def read_video(path: Path, max_frames: int = 3000) -> tuple[list[np.ndarray], float]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= max_frames:
                    break
    except (av.FFmpegError, IndexError) as e:
        raise ImageInputError(f"{path}: cannot read video ({e})") from None
    if len(frames) < 10:
        raise ImageInputError(f"{path}: {len(frames)} frames; need at least 10")
    return frames, fps


def track_faces(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    with mesh.FaceMesh(max_faces=1, static=False) as fm:
        for f in frames:
            faces = fm.detect(f)
            out.append(faces[0] if faces else None)
    found = sum(x is not None for x in out)
    if found < MIN_FACE_SHARE * len(frames):
        raise FaceError(f"face found in {found} of {len(frames)} frames; need a steady face")
    return out


def fit_blendshapes(rig: FaceRig, landmarks: np.ndarray) -> np.ndarray:
    """ARKit blendshapes whose rig landmarks best match ``landmarks`` (bounded least squares)."""
    from scipy.optimize import lsq_linear

    free = [i for i, n in enumerate(BASES) if n not in ("rest_close", "blink", "relax")]
    pts = FIT_POINTS
    base = rig.landmarks(basis_weights(np.zeros(len(BLENDSHAPES))))[pts]  # the fixed bases
    a = rig.bases[free][:, pts].reshape(len(free), -1).T  # (2 * n_pts, n_free)
    b = (landmarks[pts, :2] - base).reshape(-1)
    w = np.zeros(len(BASES), np.float32)
    w[free] = lsq_linear(a.astype(np.float64), b.astype(np.float64), bounds=(0.0, 1.0)).x
    return weights_to_blendshapes(w)


def weights_to_blendshapes(w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`avatar.face.rig.basis_weights` for fitted weights."""
    bs = np.zeros(len(BLENDSHAPES), np.float32)
    pairs = {
        "jaw": "jawOpen", "seal": "mouthClose", "funnel": "mouthFunnel", "pucker": "mouthPucker",
        "stretch_l": "mouthStretchRight", "stretch_r": "mouthStretchLeft",
        "smile_l": "mouthSmileRight", "smile_r": "mouthSmileLeft",
        "lower_down_l": "mouthLowerDownRight", "lower_down_r": "mouthLowerDownLeft",
        "upper_up_l": "mouthUpperUpRight", "upper_up_r": "mouthUpperUpLeft",
        "roll_lower": "mouthRollLower", "roll_upper": "mouthRollUpper",
    }  # fmt: skip
    for basis, shape in pairs.items():
        bs[BI[shape]] = w[BASIS_INDEX[basis]]
    press = w[BASIS_INDEX["press"]]
    bs[BI["mouthPressLeft"]] = bs[BI["mouthPressRight"]] = press
    seal = w[BASIS_INDEX["seal"]]  # = min(jaw, close + 0.7 press + slack)
    bs[BI["mouthClose"]] = min(max(seal - LIP_SLACK - 0.7 * press, 0.0), bs[BI["jawOpen"]])
    return bs


def load_video_faces(path: Path, portrait_size: int = 256) -> VideoFaceData:
    frames, fps = read_video(path)
    found = [(i, lm) for i, lm in enumerate(track_faces(frames)) if lm is not None]
    ref = int(np.argmin([mesh.inner_lip_gap(lm) for _, lm in found]))
    ref_lm = found[ref][1]
    m_ref = alignment(ref_lm, portrait_size)
    stable = list(mesh.STABLE)
    aligned, landmarks = [], []
    for i, lm in found:
        m_i, _ = cv2.estimateAffinePartial2D(lm[stable, :2], ref_lm[stable, :2])
        m = _compose(m_ref, m_i)
        aligned.append(cv2.warpAffine(frames[i], m, (portrait_size,) * 2, flags=cv2.INTER_CUBIC,
                                      borderMode=cv2.BORDER_REFLECT101))  # fmt: skip
        landmarks.append(lm[:, :2] @ m[:, :2].T + m[:, 2])
    rest = np.c_[landmarks[ref], ref_lm[:, 2:] * m_ref[0, 0]].astype(np.float32)
    rig = FaceRig(rest)
    bs = np.stack([fit_blendshapes(rig, lm) for lm in landmarks])
    return VideoFaceData(aligned[ref], rest, np.stack(aligned), np.stack(landmarks), bs, fps,
                         mesh.interocular(ref_lm))  # fmt: skip


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The affine ``a o b`` (apply b, then a)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


@dataclass(slots=True)
class MouthPairs:
    """Per frame, 64x64-style crops in [-1, 1] of the mouth box: what the generator learns from."""

    target: np.ndarray  # (N, 3, S, S) the real aligned frame
    warped: np.ndarray  # (N, 3, S, S) the warp render of the portrait at the frame's motion
    sketch: np.ndarray  # (N, 3, S, S) opening, lips, painted region (from the rig)
    code: np.ndarray  # (N, n_code) rig basis weights, the photo's smile relax left out
    reference: np.ndarray  # (3, S, S) the portrait's own crop


def mouth_pairs(data: VideoFaceData, warp: WarpRenderer, size: int) -> MouthPairs:
    """Crop every frame and the warp renderer's picture of the same motion.

    ``warp`` renders the avatar made from ``data`` (its portrait and rest landmarks) at the
    portrait's size. The warp render, sketch and code come from the *rig* at the fitted
    blendshapes (as at render time), never from the raw landmarks, so the generator sees nothing
    in training that the audio model cannot give it at run time.
    """
    box = sketch.mouth_box(warp.rig.rest)
    targets = [sketch.to_unit(sketch.crop(frame, box, size)) for frame in data.frames]
    warped, sketches, codes = render_inputs(warp, data.blendshapes, size)
    reference = sketch.to_unit(sketch.crop(data.portrait, box, size))
    return MouthPairs(np.stack(targets), warped, sketches, codes, reference)


def render_inputs(
    warp: WarpRenderer, blendshapes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The generator's inputs at render time for every row of ``blendshapes`` (N, 16): the warp
    render's mouth crop (N, 3, S, S), the rig sketch (N, 3, S, S) and the code (N, n_code)."""
    box = sketch.mouth_box(warp.rig.rest)
    warped, sketches, codes = [], [], []
    for bs in blendshapes:
        w = basis_weights(bs)
        warped.append(sketch.to_unit(sketch.crop(warp.warp_face(w), box, size)))
        sketches.append(sketch.rig_sketch(warp.rig, w, box, size))
        codes.append(w[: BASIS_INDEX["relax"]])  # the code: every basis before the photo's relax
    return np.stack(warped), np.stack(sketches), np.stack(codes).astype(np.float32)
