"""Portrait loading and `avatar prepare`: real images, real face mesh, one clear error each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar.errors import FaceError, ImageInputError
from avatar.face import mesh
from avatar.face.image import load_rgb, save_rgb
from avatar.face.prepare import prepare_portrait

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(path, quality=92)
    return path


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_text("hello")
    with pytest.raises(ImageInputError, match="not an image"):
        load_rgb(path)


def test_truncated_image(tmp_path: Path, astronaut: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(astronaut.read_bytes()[:4000])
    with pytest.raises(ImageInputError, match=r"truncated|complete"):
        load_rgb(path)


def test_huge_image_is_refused_before_decoding(astronaut: Path) -> None:
    with pytest.raises(ImageInputError, match="limit"):
        load_rgb(astronaut, max_pixels=100_000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="no such file"):
        load_rgb(tmp_path / "nope.png")


def test_prepare_writes_an_aligned_avatar(tmp_path: Path, astronaut: Path) -> None:
    out = tmp_path / "eileen"
    assets = prepare_portrait(astronaut, out)
    assert assets.portrait.shape == (512, 512, 3)
    for name in ("avatar.json", "portrait.png", "landmarks.npy", "preview.png"):
        assert (out / name).exists(), name
    info = json.loads((out / "avatar.json").read_text())
    assert info["name"] == "eileen" and info["size"] == 512
    left, right = mesh.eye_centers(assets.landmarks)
    assert abs(left[1] - right[1]) < 2.0  # eyes levelled
    assert 100 < mesh.interocular(assets.landmarks) < 160  # framed at ~1/4 of the side
    x0, y0, x1, y1 = info["mouth_box"]
    assert 0 < x0 < x1 < 512 and left[1] < y0 < y1 < 512


def test_no_face(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    save_rgb(path, np.full((300, 300, 3), 128, np.uint8))
    with pytest.raises(FaceError, match="no face"):
        prepare_portrait(path, tmp_path / "x")


def test_two_faces(tmp_path: Path) -> None:
    face = skimage_data.astronaut()[20:320, 100:400]
    path = tmp_path / "two.png"
    save_rgb(path, np.hstack([face, face]))
    with pytest.raises(FaceError, match="2 faces"):
        prepare_portrait(path, tmp_path / "x")


def test_face_too_small(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.fromarray(skimage_data.astronaut()).resize((96, 96)).save(path)
    with pytest.raises(FaceError, match="too small"):
        prepare_portrait(path, tmp_path / "x")
