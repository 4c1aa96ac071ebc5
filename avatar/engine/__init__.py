"""The real-time engine: push audio in, iterate synchronized video+audio frames out."""

from avatar.engine.analyzer import Analyzer, FrameJob
from avatar.engine.engine import AvatarEngine, EngineStats

__all__ = ["Analyzer", "AvatarEngine", "EngineStats", "FrameJob"]
