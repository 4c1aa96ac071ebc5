"""Real faces to judge renderers on, besides the bundled avatars."""

from __future__ import annotations

from pathlib import Path


def hopper_avatar(faces_dir: Path = Path("data/faces")) -> str:
    """Grace Hopper's portrait (matplotlib's sample data: a real photograph with a closed mouth)
    as an avatar folder, prepared once by ``avatar prepare``'s code; returns the folder."""
    folder = faces_dir / "hopper"
    if not (folder / "avatar.json").exists():
        from matplotlib import cbook

        from avatar.face.prepare import prepare_portrait

        photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        prepare_portrait(photo, folder, name="hopper", size=512)
    return str(folder)
