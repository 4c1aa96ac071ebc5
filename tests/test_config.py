"""Config: defaults load, overrides apply, mistakes give one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar.config import load_config
from avatar.errors import ConfigError


def test_default_file_loads() -> None:
    cfg = load_config()
    assert cfg.motion.fps == 25
    assert cfg.vad.frame_ms in (10, 20, 30)


def test_overrides_are_typed() -> None:
    cfg = load_config(overrides=["motion.fps=30", "vad.aggressiveness=3"])
    assert cfg.motion.fps == 30.0
    assert cfg.vad.aggressiveness == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("motion.fps=0", "motion.fps"),
        ("vad.aggressiveness=9", "vad.aggressiveness"),
        ("motion.nonsense=1", "motion.nonsense"),
        ("novalue", "section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides=[override])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
