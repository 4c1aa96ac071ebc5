"""A 2D face rig: ARKit blendshapes, blink and rest-closure -> displacements of face-mesh landmarks.

Every *basis* is a displacement of the 478 landmarks (portrait pixels) at weight 1, derived from the
avatar's own geometry (distances in inter-ocular units ``d``). A frame's landmarks are
``rest + sum_k w_k * basis_k`` with weights from :func:`basis_weights`, which turns blendshapes into
basis weights (the only non-linear step: ``mouthClose``/``mouthPress`` and the lips' slack seal
the lips only as far as the jaw has opened them, as ARKit defines them). The warp renderer
interpolates the same bases into dense fields; the GAN trainer inverts the rig to read blendshapes
off video landmarks.
"""

from __future__ import annotations

import numpy as np

from avatar.face import mesh
from avatar.frames import MotionFrame
from avatar.motion.channels import BLENDSHAPE_INDEX as BI
from avatar.motion.channels import VISEME_INDEX

BASES: tuple[str, ...] = (
    "rest_close",  # closes the portrait's own mouth (always weight 1)
    "jaw",  # jaw drop: lower lip, chin, lower face
    "seal",  # lower lip back up to the upper one while the jaw stays open
    "funnel",
    "pucker",
    "stretch_l",  # image-left corner (subject's right: mouthStretchRight)
    "stretch_r",
    "smile_l",
    "smile_r",
    "press",
    "lower_down_l",
    "lower_down_r",
    "upper_up_l",
    "upper_up_r",
    "roll_lower",
    "roll_upper",
    "blink",
    "relax",  # a photo's resting smile relaxed to a talker's neutral mouth (weight: talking)
)
BASIS_INDEX = {n: i for i, n in enumerate(BASES)}

# How far the mouth opens is calibrated in units of the face's own mouth, not of the photo: the
# jaw's amplitude is solved per face so that at jawOpen 0.5 (talking, a resting smile relaxed)
# the rig's inner-lip gap at the middle is OPENING_AT_HALF of the inner mouth width, the measure
# face mesh reads on real talkers (13-14 over 78-308). On 20 real talkers' voiced frames the
# opening's p50/p90/p95 are 0.10/0.29/0.36 where the motion model's jawOpen on the same sound is
# 0.19/0.36/0.42: about 1.1 x (jawOpen - 0.1).
OPENING_AT_HALF = 0.44
SEAL_SKIN_D = 0.3  # how far below the lower lip the skin stays with a sealed lip (d)
JAW_CORNER_SHARE = 0.275  # mouth corners follow the jaw this share of the lower lip's drop
UPPER_LIP_SHARE = 0.0625  # the upper lip's middle lifts this share of it on a wide opening
# Lips have slack: they stay sealed over the first few percent of jaw opening (what makes a
# /b/ with the jaw slightly open still a closure); the opening starts above it.
LIP_SLACK = 0.08
# The motion model's lips barely close on real read speech (at P/B/M its jawOpen is 0.14 and
# mouthClose/Press ~0 at the median), but its P/B/M viseme stands out there (median 0.09, p75
# 0.27 vs 0.002 / p90 0.09 on other speech frames): it seals the lips. On 114 P/B/M segments of
# read sentences 1.5 x PP plus the slack seals ~80 % (the old slack alone, 0.12: 47 %) and ~17 % of
# the other speech frames.
BILABIAL_SEAL = 1.5
# A talker's neutral mouth, read with face mesh on closed-mouth frames of 20 real talkers (median;
# in inter-ocular units): corners level with the lips' middle (elevation -0.04..+0.05) and
# 0.79 d wide (0.62-0.92). A photo that smiles beyond these limits (the astronaut: corners 0.165 d
# up, 1.01 d wide) relaxes to them while it talks.
NEUTRAL_ELEVATION = 0.02
NEUTRAL_WIDTH = 0.84
# At rest the smile is softened by this share: a full grin with closed lips is not how people
# listen (and face mesh reads the astronaut's closed grin as lips 0.03 d apart).
REST_RELAX = 0.3


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FaceRig:
    """Displacement bases for one avatar's rest landmarks, (n_bases, 478, 2)."""

    def __init__(self, rest: np.ndarray, jaw_map: dict[str, list[float]] | None = None) -> None:
        """``rest``: the avatar's landmarks; ``jaw_map``: its measured ``jawOpen`` -> jaw weight
        (``avatar.json``, :mod:`avatar.compose.calibrate`; None: the identity)."""
        self.jaw_map = (
            (np.asarray(jaw_map["jaw"]), np.asarray(jaw_map["weight"])) if jaw_map else None
        )
        self.rest = rest[:, :2].astype(np.float32)
        self.rest_z = rest[:, 2].astype(np.float32) if rest.shape[1] > 2 else np.zeros(len(rest))
        self.d = mesh.interocular(rest)
        self.mouth_center = self.rest[list(mesh.INNER_CORNERS)].mean(0)
        self.lip_drop = 0.8 * self.d  # pixels at jawOpen 1; calibrated below
        self.lip_drop = self._calibrated_lip_drop()
        self.bases = np.stack([getattr(self, f"_b_{n}")() for n in BASES]).astype(np.float32)

    # -- geometry helpers ------------------------------------------------------------------
    def _zeros(self) -> np.ndarray:
        return np.zeros_like(self.rest)

    def _side(self) -> np.ndarray:
        """-1 on the image-left half of the mouth, +1 on the right, smooth across the middle."""
        half_width = 0.5 * abs(self.rest[291, 0] - self.rest[61, 0])
        return np.clip((self.rest[:, 0] - self.mouth_center[0]) / (0.6 * half_width), -1, 1)

    def _near_mouth(self, radius: float) -> np.ndarray:
        dist = np.linalg.norm(self.rest - self.mouth_center, axis=1) / self.d
        return 1.0 - _smoothstep(dist / radius)

    def _lip_points(self) -> tuple[list[int], list[int], list[int], list[int]]:
        ui = list(mesh.LIPS_INNER_UPPER[1:-1])
        uo = list(mesh.LIPS_OUTER_UPPER[1:-1])
        li = list(mesh.LIPS_INNER_LOWER[1:-1])
        lo = list(mesh.LIPS_OUTER_LOWER[1:-1])
        return ui, uo, li, lo

    def _gap(self) -> np.ndarray:
        """Source gap between inner lips at each inner-lip column (pixels, >= 0)."""
        ui, _, li, _ = self._lip_points()
        return np.clip(self.rest[li, 1] - self.rest[ui, 1], 0, None)

    def _jaw_weight(self) -> np.ndarray:
        """How far each point follows the jaw: 1 for the lower lip, fading to 0 above the mouth
        corners, times the point's depth in front of the jaw joint (:meth:`_jaw_depth`)."""
        y_c = self.rest[list(mesh.MOUTH_CORNERS), 1].mean()
        y_lip = self.rest[mesh.LOWER_LIP_MID[0], 1]  # bottom of the lower lip
        w = _smoothstep((self.rest[:, 1] - y_c + 0.05 * self.d) / (y_lip - y_c + 0.1 * self.d))
        return w * self._jaw_depth()

    def _jaw_depth(self) -> np.ndarray:
        """The jaw rotates about the joints in front of the ears: seen from the front, a point
        moves down in proportion to how far in front of the joints' axis it lies. 1 at the lower
        lip, less at the chin, nothing at the jaw's angle. MediaPipe's z (towards the camera is
        negative) gives the depth; a portrait with no usable depth moves rigidly."""
        z = self.rest_z
        joint = 0.5 * (z[234] + z[454])  # face-oval points at ear level
        lip = joint - z[mesh.LOWER_LIP_MID[0]]
        if lip < 0.3 * self.d:
            return np.ones(len(z), np.float32)
        return np.clip((joint - z) / lip, 0.0, 1.1).astype(np.float32)

    def _corner_weight(self, corner: int) -> np.ndarray:
        dist = np.linalg.norm(self.rest - self.rest[corner], axis=1) / self.d
        return 1.0 - _smoothstep(dist / 0.45)

    def _oval(self, points: list[int]) -> np.ndarray:
        """1 in the middle of the opening, 0 at its corners, tapering like a lens between."""
        half_width = 0.5 * abs(self.rest[308, 0] - self.rest[78, 0])
        u = np.clip((self.rest[points, 0] - self.mouth_center[0]) / half_width, -1, 1)
        return ((1 - u * u) ** 0.6).astype(np.float32)

    def _b_rest_close(self) -> np.ndarray:
        out = self._zeros()
        ui, uo, li, lo = self._lip_points()
        half = 0.5 * self._gap() + 0.012 * self.d  # a little overlap hides the teeth fully
        out[ui, 1] += half
        out[uo, 1] += half * 0.8
        out[li, 1] -= half
        out[lo, 1] -= half * 0.8
        return out

    def _calibrated_lip_drop(self) -> float:
        """The lower lip's drop at jawOpen 1 (pixels) that opens this face's mouth by
        :data:`OPENING_AT_HALF` at jawOpen 0.5 (the opening is linear in the drop)."""
        w = basis_weights(np.eye(1, len(BI), BI["jawOpen"])[0] * 0.5, talking=1.0)
        names = ("rest_close", "jaw", "seal", "relax")

        def opening(drop: float) -> float:
            self.lip_drop = drop
            moved = self.rest + sum(w[BASIS_INDEX[n]] * getattr(self, f"_b_{n}")() for n in names)
            return mesh.mouth_opening(moved)

        a, b = opening(0.4 * self.d), opening(0.8 * self.d)
        return float(0.4 * self.d + (OPENING_AT_HALF - a) * 0.4 * self.d / max(b - a, 1e-6))

    def _b_jaw(self) -> np.ndarray:
        """The jaw drops; the lips open as a lens from the corners (which follow the jaw a
        little) to the middle (the lower lip with the jaw, the upper one lifting a little)."""
        out = self._zeros()
        out[:, 1] = self._jaw_weight() * self.lip_drop
        ui, uo, li, lo = self._lip_points()
        corner = JAW_CORNER_SHARE * self.lip_drop
        out[li + lo, 1] = corner + (self.lip_drop - corner) * self._oval(li + lo)
        o_up = self._oval(ui + uo)
        out[ui + uo, 1] = corner * (1 - o_up) ** 2 - UPPER_LIP_SHARE * self.lip_drop * o_up
        out[list(mesh.MOUTH_CORNERS + mesh.INNER_CORNERS), 1] = corner
        # the mouth narrows a little as it opens
        out[:, 0] = -0.06 * self.d * self._side() * self._near_mouth(0.6)
        return out

    def _b_seal(self) -> np.ndarray:
        """The lips back together over an open jaw (the jaw's own lip motion, undone). The skin
        under the lower lip stays with it over :data:`SEAL_SKIN_D` and the chin takes the rest:
        a sealed lip over a dropped jaw stretches the skin below it smoothly (a sharp step
        there smears the lip's colour down the chin)."""
        out = self._zeros()
        ui, uo, li, lo = self._lip_points()
        lips = ui + uo + li + lo + list(mesh.MOUTH_CORNERS + mesh.INNER_CORNERS)
        jaw = self._b_jaw()
        below = self.rest[:, 1] - np.interp(self.rest[:, 0], *self._lower_lip_line())
        follow = 1.0 - _smoothstep(below / (SEAL_SKIN_D * self.d))
        follow *= below > 0
        out[:, 1] = -0.97 * jaw[:, 1] * follow
        out[lips, 1] = -0.97 * jaw[lips, 1]
        return out

    def _lower_lip_line(self) -> tuple[np.ndarray, np.ndarray]:
        """The outer lower lip contour as (x, y) sorted by x, for interpolation."""
        pts = self.rest[list(mesh.LIPS_OUTER_LOWER)]
        order = np.argsort(pts[:, 0])
        return pts[order, 0], pts[order, 1]

    def _inward(self, amount: float, radius: float) -> np.ndarray:
        out = self._zeros()
        out[:, 0] = -amount * self.d * self._side() * self._near_mouth(radius)
        return out

    def _b_funnel(self) -> np.ndarray:
        out = self._inward(0.12, 0.7)
        ui, _, li, lo = self._lip_points()
        out[ui, 1] -= 0.05 * self.d
        out[li, 1] += 0.07 * self.d
        out[lo, 1] += 0.03 * self.d
        return out

    def _b_pucker(self) -> np.ndarray:
        out = self._inward(0.16, 0.7)
        _, uo, _, lo = self._lip_points()
        out[uo, 1] -= 0.02 * self.d
        out[lo, 1] += 0.02 * self.d
        return out

    def _corner_move(self, corner: int, dx: float, dy: float) -> np.ndarray:
        out = self._zeros()
        w = self._corner_weight(corner)
        sign = 1.0 if self.rest[corner, 0] > self.mouth_center[0] else -1.0
        out[:, 0] = sign * dx * self.d * w
        out[:, 1] = dy * self.d * w
        return out

    def _b_stretch_l(self) -> np.ndarray:
        return self._corner_move(61, 0.09, 0.03)

    def _b_stretch_r(self) -> np.ndarray:
        return self._corner_move(291, 0.09, 0.03)

    def _b_smile_l(self) -> np.ndarray:
        return self._corner_move(61, 0.05, -0.09)

    def _b_smile_r(self) -> np.ndarray:
        return self._corner_move(291, 0.05, -0.09)

    def _b_press(self) -> np.ndarray:
        out = self._zeros()
        _, uo, _, lo = self._lip_points()
        out[uo, 1] += 0.03 * self.d
        out[lo, 1] -= 0.03 * self.d
        return out

    def _half_lip(self, points: list[int], dy: float, left: bool) -> np.ndarray:
        out = self._zeros()
        side = self._side()[points]
        w = np.clip(0.5 - side, 0, 1) if left else np.clip(0.5 + side, 0, 1)
        out[points, 1] = dy * self.d * w
        return out

    def _b_lower_down_l(self) -> np.ndarray:
        _, _, li, lo = self._lip_points()
        return self._half_lip(li + lo, 0.12, left=True)

    def _b_lower_down_r(self) -> np.ndarray:
        _, _, li, lo = self._lip_points()
        return self._half_lip(li + lo, 0.12, left=False)

    def _b_upper_up_l(self) -> np.ndarray:
        ui, uo, _, _ = self._lip_points()
        return self._half_lip(ui + uo, -0.08, left=True)

    def _b_upper_up_r(self) -> np.ndarray:
        ui, uo, _, _ = self._lip_points()
        return self._half_lip(ui + uo, -0.08, left=False)

    def _b_roll_lower(self) -> np.ndarray:
        out = self._zeros()
        _, _, li, lo = self._lip_points()
        out[lo, 1] = 0.6 * (self.rest[li, 1] - self.rest[lo, 1])  # outer edge towards the inner
        return out

    def _b_roll_upper(self) -> np.ndarray:
        out = self._zeros()
        ui, uo, _, _ = self._lip_points()
        out[uo, 1] = 0.6 * (self.rest[ui, 1] - self.rest[uo, 1])
        return out

    def smile(self) -> tuple[float, float]:
        """(corner elevation, mouth width) of the closed resting mouth, inter-ocular units: how
        far the corners sit above the lips' middle and how far apart they are."""
        lm = self.rest + self._b_rest_close()
        corners = lm[list(mesh.MOUTH_CORNERS)]
        middle = 0.5 * (lm[mesh.UPPER_LIP_MID[1]] + lm[mesh.LOWER_LIP_MID[1]])
        elevation = float(middle[1] - corners[:, 1].mean()) / self.d
        return elevation, float(np.linalg.norm(corners[1] - corners[0])) / self.d

    def _b_relax(self) -> np.ndarray:
        """A resting smile relaxed: the corners down to the lips' middle and in to a neutral
        width (:data:`NEUTRAL_ELEVATION`, :data:`NEUTRAL_WIDTH`), the lips between flattened
        (their points move with the square of their distance from the middle), the cheeks
        following the corners. Zero for a photo that does not smile."""
        elevation, width = self.smile()
        drop = max(elevation - NEUTRAL_ELEVATION, 0.0) * self.d
        inward = 0.5 * max(width - NEUTRAL_WIDTH, 0.0) * self.d
        out = self._zeros()
        for corner in mesh.MOUTH_CORNERS:
            w = self._corner_weight(corner)
            sign = 1.0 if self.rest[corner, 0] > self.mouth_center[0] else -1.0
            out[:, 0] -= sign * inward * w
            out[:, 1] += drop * w
        ui, uo, li, lo = self._lip_points()
        lips = ui + uo + li + lo + list(mesh.MOUTH_CORNERS + mesh.INNER_CORNERS)
        half_width = 0.5 * abs(self.rest[291, 0] - self.rest[61, 0])
        u = np.clip((self.rest[lips, 0] - self.mouth_center[0]) / half_width, -1, 1)
        out[lips, 0] = -inward * u
        out[lips, 1] = drop * u * u
        return out

    def _b_blink(self) -> np.ndarray:
        """Upper lids down onto the lower lids; the skin above follows, fading over 0.3 d."""
        out = self._zeros()
        for upper, lower in (
            (mesh.EYE_LEFT_UPPER, mesh.EYE_LEFT_LOWER),
            (mesh.EYE_RIGHT_UPPER, mesh.EYE_RIGHT_LOWER),
        ):
            up, lo = self.rest[list(upper)], self.rest[list(lower)]
            drop = lo[:, 1] - up[:, 1]
            x = self.rest[:, 0]
            inside = (x > up[0, 0]) & (x < up[-1, 0])
            lid_y = np.interp(x, up[:, 0], up[:, 1])
            above = (lid_y - self.rest[:, 1]) / (0.3 * self.d)
            w = np.where(inside & (above >= -0.05), 1.0 - _smoothstep(above), 0.0)
            w[list(lower)] = 0.0
            out[:, 1] += w * np.interp(x, up[:, 0], drop)
        return out

    # -- use -------------------------------------------------------------------------------
    def weights(self, motion: MotionFrame) -> np.ndarray:
        """Basis weights of a motion frame on this face: :func:`basis_weights` after the
        face's jaw map, the P/B/M viseme sealing the lips."""
        blendshapes = motion.blendshapes
        if self.jaw_map is not None:
            blendshapes = np.array(blendshapes, np.float32)
            jaw = float(blendshapes[BI["jawOpen"]])
            blendshapes[BI["jawOpen"]] = np.interp(jaw, *self.jaw_map)
        bilabial = float(motion.visemes[VISEME_INDEX["PP"]]) if len(motion.visemes) else 0.0
        return basis_weights(blendshapes, motion.blink, motion.talking, bilabial)

    def landmarks(self, weights: np.ndarray) -> np.ndarray:
        """Displaced landmarks (478, 2) for basis weights (n_bases,)."""
        return self.rest + np.tensordot(weights, self.bases, axes=1)


def basis_weights(
    blendshapes: np.ndarray, blink: float = 0.0, talking: float = 0.0, bilabial: float = 0.0
) -> np.ndarray:
    """Blendshape coefficients (ARKit order of ``BLENDSHAPES``) -> rig basis weights;
    ``talking`` (0 at rest .. 1) relaxes a resting smile; ``bilabial``: the motion model's
    P/B/M viseme probability, which seals the lips (:data:`BILABIAL_SEAL`)."""
    b = np.clip(np.asarray(blendshapes, np.float32), 0.0, 1.0)
    jaw = float(b[BI["jawOpen"]])
    press = 0.5 * float(b[BI["mouthPressLeft"]] + b[BI["mouthPressRight"]])
    w = np.zeros(len(BASES), np.float32)
    w[BASIS_INDEX["rest_close"]] = 1.0
    w[BASIS_INDEX["jaw"]] = jaw
    seal = float(b[BI["mouthClose"]]) + 0.7 * press + BILABIAL_SEAL * bilabial + LIP_SLACK
    w[BASIS_INDEX["seal"]] = min(jaw, seal)
    for basis, shape in (
        ("funnel", "mouthFunnel"),
        ("pucker", "mouthPucker"),
        ("stretch_l", "mouthStretchRight"),  # ARKit sides are the subject's
        ("stretch_r", "mouthStretchLeft"),
        ("smile_l", "mouthSmileRight"),
        ("smile_r", "mouthSmileLeft"),
        ("lower_down_l", "mouthLowerDownRight"),
        ("lower_down_r", "mouthLowerDownLeft"),
        ("upper_up_l", "mouthUpperUpRight"),
        ("upper_up_r", "mouthUpperUpLeft"),
        ("roll_lower", "mouthRollLower"),
        ("roll_upper", "mouthRollUpper"),
    ):
        w[BASIS_INDEX[basis]] = b[BI[shape]]
    w[BASIS_INDEX["press"]] = press
    w[BASIS_INDEX["blink"]] = float(np.clip(blink, 0.0, 1.0))
    w[BASIS_INDEX["relax"]] = REST_RELAX + (1 - REST_RELAX) * float(np.clip(talking, 0.0, 1.0))
    return w
