"""Files that ship inside the package, found through :mod:`importlib.resources`.

The web client (``avatar/web/``) and the configs (``avatar/configs/``) are package data, like the
weights and the bundled avatars: a checkout, an editable install and ``pip install`` of the wheel
all find them in the same place, whatever the working directory is.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

import avatar
from avatar.errors import AvatarError

DEFAULT_CONFIG_NAME = "default.yaml"


def package_root() -> Path:
    """The installed ``avatar`` package's folder, as a real path (the server hands its files to
    ``sendfile``; the models are memory-mapped by onnxruntime)."""
    found = files("avatar")
    if not isinstance(found, Path):  # a zip import: nothing here can be served or mapped from it
        raise AvatarError(f"the avatar package is not a folder on disk ({found}): install it "
                          "from its wheel or a checkout, not as a zip archive")  # fmt: skip
    return found


def package_dir(name: str) -> Path:
    """The folder ``name`` of the package (``web``, ``configs``, ``weights``...)."""
    return package_root() / name


def web_root() -> Path:
    """The web client and its pages: ``avatar-client.js`` (+ ``.d.ts``), ``index.html``, ..."""
    return package_dir("web")


def config_dir() -> Path:
    """The bundled configs: ``default.yaml`` and ``turn.example.yaml``."""
    return package_dir("configs")


def default_config() -> Path:
    """The config every command starts from when ``--config`` is not given."""
    return config_dir() / DEFAULT_CONFIG_NAME


def installed_version() -> str:
    """The version pip installed (the distribution's metadata); in a checkout that was never
    installed, the one the source says (``avatar.__version__``, which pyproject reads)."""
    try:
        return version("avatar")
    except PackageNotFoundError:
        return avatar.__version__
