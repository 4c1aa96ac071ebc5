"""Prepare the bundled default avatar from scikit-image's astronaut photo (public domain, NASA).

The result is committed under avatar/avatars/default/; re-run this after changing `avatar prepare`
(or `avatar calibrate avatar/avatars/default` after changing only the rig or the mouth's curve).
Usage: python scripts/make_default_avatar.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from skimage import data

from avatar.compose.faces import prepare_avatar
from avatar.face.image import save_rgb
from avatar.face.store import BUILTIN_AVATARS


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "astronaut.png"
        save_rgb(src, data.astronaut())
        assets = prepare_avatar(src, BUILTIN_AVATARS / "default", name="default")
    print(f"default avatar: {assets.size}x{assets.size}, {assets.info}")


if __name__ == "__main__":
    main()
