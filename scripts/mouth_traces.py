"""Render clips through the engine and read every frame back with face mesh (a worker of
``scripts/eval_mouth.py``).

It touches only what every version of the package since the mouth rework has had (``load_config``,
``load_renderer``, ``load_motion_backend``, ``speech_frames``, ``avatar.face.mesh``), so that
``eval_mouth.py --code OLD_CHECKOUT`` runs an older engine and renderer through it and judges both
with the same measuring code.

Input: a JSON job (faces, modes with their ``--set`` overrides, clips: ``.npz`` files with
``audio``, ``rate`` and the ``times`` to save frames at). Output, per face, mode and clip:
``<out>/<face>/<mode>/<clip>.npz`` with per-frame ``gap`` (inner-lip gap / inter-ocular),
``opening`` (13-14 over 78-308), ``chin``, ``jaw`` (the model's jawOpen, 0 when idle), and the
requested frames as ``<clip>@<time>.png``.
Usage: python scripts/mouth_traces.py JOB.json OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avatar.compose.offline import speech_frames
from avatar.compose.renderers import load_renderer
from avatar.config import load_config
from avatar.face import mesh
from avatar.motion.runtime import load_motion_backend


def measure(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: np.full(len(images), np.nan, np.float32) for k in ("gap", "opening", "chin")}
    with mesh.FaceMesh(max_faces=1, static=False) as fm:
        for i, img in enumerate(images):
            faces = fm.detect(img)
            if faces:
                lm = faces[0]
                out["gap"][i] = mesh.inner_lip_gap(lm) / mesh.interocular(lm)
                out["opening"][i] = mesh.mouth_opening(lm)
                out["chin"][i] = mesh.chin_length(lm)
    return out


def run_face(face: dict[str, object], modes: dict[str, list[str]], clips: list[Path],
             out: Path) -> None:  # fmt: skip
    base = [f"render.avatar={face['avatar']}", f"render.renderer={face['renderer']}",
            f"render.size={face['size']}"]  # fmt: skip
    for mode, overrides in modes.items():
        cfg = load_config(None, base + list(overrides))
        motion = cfg.motion  # offline audio is buffered input (versions that tell them apart)
        motion = motion.for_input(False) if hasattr(motion, "for_input") else motion
        backend = load_motion_backend(motion)
        renderer = load_renderer(cfg.render)
        folder = out / str(face["name"]) / mode
        folder.mkdir(parents=True, exist_ok=True)
        for clip in clips:
            data = np.load(clip)
            frames = speech_frames(cfg, data["audio"], int(data["rate"]), renderer, backend)
            values = measure([f.image for f in frames])
            jaw = [float(f.motion.blendshapes[0]) if f.motion is not None else 0.0 for f in frames]
            # one mapping: numpy's stubs would match a ``**values`` key to ``allow_pickle``
            arrays: dict[str, Any] = {"jaw": np.asarray(jaw, np.float32), **values}
            np.savez(folder / f"{clip.stem}.npz", **arrays)
            for t in data["times"]:
                img = frames[min(round(float(t) * cfg.motion.fps), len(frames) - 1)].image
                cv2.imwrite(str(folder / f"{clip.stem}@{float(t):.3f}.png"),
                            cv2.cvtColor(img, cv2.COLOR_RGB2BGR))  # fmt: skip
        print(f"{face['name']} {mode}: {len(clips)} clips", flush=True)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    clips = sorted(Path(job["clips"]).glob("*.npz"))
    for face in job["faces"]:
        run_face(face, job["modes"], clips, out)


if __name__ == "__main__":
    main()
