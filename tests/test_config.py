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


def test_buffered_input_can_have_its_own_motion_model(tmp_path: Path) -> None:
    from avatar.config import MotionConfig
    from avatar.errors import ModelError
    from avatar.motion.runtime import BUILTIN_DIR, resolve_weights

    cfg = MotionConfig(weights="builtin", buffered_weights=str(tmp_path / "far.onnx"))
    assert cfg.for_input(live=True).weights == "builtin"
    assert cfg.for_input(live=False).weights == str(tmp_path / "far.onnx")
    assert resolve_weights("builtin", ".onnx") == BUILTIN_DIR / "motion.onnx"
    assert resolve_weights("builtin:motion", ".pt") == BUILTIN_DIR / "motion.pt"
    with pytest.raises(ModelError, match="not found"):
        resolve_weights("builtin:nothing", ".onnx")
