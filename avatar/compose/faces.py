"""``avatar prepare`` (a portrait found, aligned, cropped, then its mouth calibrated), and real
faces to judge renderers on besides the bundled avatars."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from avatar.compose.calibrate import calibrate_avatar
from avatar.face import mesh
from avatar.face.image import save_rgb
from avatar.face.prepare import prepare_portrait
from avatar.face.store import AvatarAssets


def prepare_avatar(
    image: Path, out_dir: Path, name: str | None = None, size: int = 512
) -> AvatarAssets:
    """``avatar prepare``: the portrait prepared (:func:`prepare_portrait`), then its jaw
    calibrated on its own renders (:func:`calibrate_avatar`)."""
    return calibrate_avatar(prepare_portrait(image, out_dir, name, size))


def hopper_avatar(faces_dir: Path = Path("data/faces")) -> str:
    """Grace Hopper's portrait (matplotlib's sample data: a real photograph with a closed mouth)
    as an avatar folder, prepared once by ``avatar prepare``'s code; returns the folder."""
    folder = faces_dir / "hopper"
    if not (folder / "avatar.json").exists():
        from matplotlib import cbook

        photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        prepare_avatar(photo, folder, name="hopper", size=512)
    return str(folder)


def video_portrait(video: Path, name: str, faces_dir: Path = Path("data/faces")) -> str:
    """A portrait avatar from a talking video's frame with the most closed mouth (face mesh
    over the frames), prepared once by ``avatar prepare``'s code; returns the folder."""
    folder = faces_dir / name
    if not (folder / "avatar.json").exists():
        photo = faces_dir / f"{name}.png"
        save_rgb(photo, _most_closed_frame(video))
        prepare_avatar(photo, folder, name=name, size=512)
    return str(folder)


def _most_closed_frame(video: Path) -> np.ndarray:
    best: tuple[float, np.ndarray | None] = (np.inf, None)
    with av.open(str(video)) as container, mesh.FaceMesh(max_faces=1, static=True) as fm:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 5:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            faces = fm.detect(rgb)
            if faces and mesh.mouth_opening(faces[0]) < best[0]:
                best = (mesh.mouth_opening(faces[0]), rgb)
    if best[1] is None:
        raise ValueError(f"{video}: no face in any frame")
    return best[1]
