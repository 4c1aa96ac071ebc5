"""MediaPipe face mesh: 478 landmarks per face, in pixels, and the index sets the renderers use.

mediapipe 0.10.14 ships the face-mesh models inside its wheel (no download). It is imported only
when a face has to be found (``avatar prepare``, ``avatar train renderer``, evaluation), never on
the rendering path: a prepared avatar stores its landmarks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from avatar.errors import BackendUnavailable

# Lip contours, each from the image-left mouth corner to the image-right one.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)
INNER_CORNERS = (78, 308)
UPPER_LIP_MID = (0, 13)  # outer, inner
LOWER_LIP_MID = (17, 14)  # outer, inner
CHIN = 152
NOSE_BRIDGE = 168
NOSE_TIP = 1
NOSE_BOTTOM = 2
# Eyes as seen in the image: "left" is the image-left eye (the subject's right).
EYE_LEFT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_LEFT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_RIGHT_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
EYE_RIGHT_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
EYEBROW_LEFT = (70, 63, 105, 66, 107)
EYEBROW_RIGHT = (336, 296, 334, 293, 300)
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip
# Points that do not move when the mouth or the eyelids do: used to align frames of a video.
STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 98, 327, 234, 454, 10)
EYE_OUTER_CORNERS = (33, 263)
N_LANDMARKS = 478


def eye_centers(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image-left and image-right eye centres (mean of each eye's contour), (2,) each."""
    left = lm[list(EYE_LEFT_UPPER + EYE_LEFT_LOWER), :2].mean(0)
    right = lm[list(EYE_RIGHT_UPPER + EYE_RIGHT_LOWER), :2].mean(0)
    return left, right


def interocular(lm: np.ndarray) -> float:
    left, right = eye_centers(lm)
    return float(np.linalg.norm(right - left))


def inner_lip_gap(lm: np.ndarray) -> float:
    """Mean vertical distance between the inner lip contours (pixels); 0 when the lips meet."""
    up = lm[list(LIPS_INNER_UPPER[2:-2]), 1]
    lo = lm[list(LIPS_INNER_LOWER[2:-2]), 1]
    return float(np.clip(lo - up, 0, None).mean())


def _distance(lm: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(lm[a, :2] - lm[b, :2]))


def mouth_opening(lm: np.ndarray) -> float:
    """Inner-lip gap at the middle (13-14) over the inner mouth width (78-308), in the image
    plane: a real talker's median is ~0.2, wide vowels reach ~0.8."""
    gap = _distance(lm, UPPER_LIP_MID[1], LOWER_LIP_MID[1])
    return gap / max(_distance(lm, *INNER_CORNERS), 1e-6)


def chin_length(lm: np.ndarray) -> float:
    """Chin (152) to nose bridge (168) over the outer-eye distance (33-263): grows as the jaw
    drops (and changes with head pitch)."""
    return _distance(lm, CHIN, NOSE_BRIDGE) / max(_distance(lm, *EYE_OUTER_CORNERS), 1e-6)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what TFLite/absl print straight to file descriptor 2 (INFO/W0000 lines), so a
    user sees our one-line messages, not MediaPipe's internals."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protobuf deprecation noise from mediapipe
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceMesh:
    """Finds faces in RGB images; ``detect`` returns (478, 3) pixel landmarks per face.

    ``static=True`` detects in every image (portraits); ``False`` tracks across video frames.
    """

    def __init__(self, max_faces: int = 2, static: bool = True) -> None:
        try:
            with quiet_native_stderr():
                from mediapipe.python.solutions import face_mesh
        except ImportError as e:
            raise BackendUnavailable(
                f"mediapipe face mesh is not available ({e}); install it with "
                "`pip install -e '.[face]' && pip install --no-deps mediapipe==0.10.14`"
            ) from None
        with quiet_native_stderr():
            self._mesh: Any = face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=0.5,
            )
            # MediaPipe opens its models on graph threads after the constructor returns and
            # they log as they open: wait for them here, while fd 2 is still quiet.
            self._mesh._graph.wait_until_idle()

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        with quiet_native_stderr():
            result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float32)
            faces.append(pts)
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
