"""Fill a media folder from local bare-git mirrors, for machines that cannot reach GitHub.

Each file of :data:`avatar.data.media.SENTENCE_AUDIO` and :data:`TALKER_CLIPS` is read with
``git show <commit>:<path>`` from ``<mirrors>/<owner>+<name>/repo``, checked against its sha256
and written where :func:`avatar.data.media.media_path` looks for it. Example::

    python scripts/media_from_mirror.py /work/.mirror --media-dir data/media
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from avatar.data.media import (
    DEFAULT_MEDIA_DIR,
    SENTENCE_AUDIO,
    TALKER_CLIPS,
    MediaFile,
    cached_path,
    store,
)
from avatar.errors import MediaError


def git_show(mirrors: Path, item: MediaFile) -> bytes:
    """The bytes of ``item.path`` at ``item.commit`` in the item's mirror."""
    repo = mirrors / item.repo.replace("/", "+") / "repo"
    run = subprocess.run(
        ["git", "-C", str(repo), "show", f"{item.commit}:{item.path}"], capture_output=True
    )
    if run.returncode != 0:
        raise MediaError(f"git show {item.commit}:{item.path} in {repo}: {run.stderr.decode()}")
    return run.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mirrors", type=Path, help="folder holding <owner>+<name>/repo bare mirrors")
    p.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    args = p.parse_args()
    for item in (*SENTENCE_AUDIO, *TALKER_CLIPS):
        if cached_path(item, args.media_dir).exists():
            continue
        path = store(item, git_show(args.mirrors, item), args.media_dir)
        print(f"{item.name:28s} {path}")


if __name__ == "__main__":
    main()
