"""A prepared avatar on disk: the aligned portrait, its landmarks and what the renderers need.

Layout of ``avatars/NAME/``::

    avatar.json     name, size, source, regions, renderers available
    portrait.png    the aligned face crop (size x size RGB)
    landmarks.npy   (478, 3) float32 face-mesh landmarks in portrait pixels
    preview.png     the portrait with landmarks and regions drawn (for people)
    gan.onnx        optional: a per-person GAN renderer trained by ``avatar train renderer``
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar.config import PACKAGE_DIR
from avatar.errors import AvatarNotFound
from avatar.face.image import load_rgb

BUILTIN_AVATARS = PACKAGE_DIR / "avatars"
FORMAT_VERSION = 1


@dataclass(slots=True)
class AvatarAssets:
    """Everything a renderer needs about one person."""

    name: str
    portrait: np.ndarray  # (S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (478, 3) float32, portrait pixels
    info: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def size(self) -> int:
        return int(self.portrait.shape[0])

    def file(self, name: str) -> Path | None:
        """A file of this avatar (e.g. ``gan.onnx``) if it exists."""
        if self.folder is None:
            return None
        path = self.folder / name
        return path if path.exists() else None


def builtin_names() -> list[str]:
    if not BUILTIN_AVATARS.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_AVATARS.iterdir() if (p / "avatar.json").exists())


def resolve_avatar(spec: str) -> Path:
    """A folder path, or the name of a bundled avatar."""
    path = Path(spec)
    if (path / "avatar.json").exists():
        return path
    builtin = BUILTIN_AVATARS / spec
    if (builtin / "avatar.json").exists():
        return builtin
    names = ", ".join(builtin_names()) or "none"
    raise AvatarNotFound(
        f"avatar {spec!r} not found: give a folder made by `avatar prepare` or one of: {names}"
    )


def save_avatar(assets: AvatarAssets, folder: Path) -> None:
    from avatar.face.image import save_rgb

    folder.mkdir(parents=True, exist_ok=True)
    save_rgb(folder / "portrait.png", assets.portrait)
    np.save(folder / "landmarks.npy", assets.landmarks.astype(np.float32))
    save_info(assets, folder)


def save_info(assets: AvatarAssets, folder: Path) -> None:
    """Only ``avatar.json`` (the portrait and landmarks stay as they are)."""
    info = {"format": FORMAT_VERSION, "name": assets.name, "size": assets.size, **assets.info}
    (folder / "avatar.json").write_text(json.dumps(info, indent=1) + "\n")


def load_avatar(spec: str) -> AvatarAssets:
    folder = resolve_avatar(spec)
    try:
        info = json.loads((folder / "avatar.json").read_text())
        landmarks = np.load(folder / "landmarks.npy").astype(np.float32)
    except (OSError, ValueError) as e:
        raise AvatarNotFound(f"avatar folder {folder} is incomplete: {e}") from None
    portrait = load_rgb(folder / "portrait.png")
    if landmarks.shape != (478, 3) or portrait.shape[0] != portrait.shape[1]:
        raise AvatarNotFound(f"avatar folder {folder} is inconsistent: re-run `avatar prepare`")
    return AvatarAssets(info.get("name", folder.name), portrait, landmarks, info, folder)
