"""The real-time engine: push audio in, iterate synchronized video+audio frames out.

The stages, one per file, in the order a pushed block meets them: ``front.py`` (any rate -> the
output timeline + the analysis branch), ``avatar/audio/vad.py`` (the speech gate), ``motion.py``
(pre-roll + streaming audio-to-motion), ``assembly.py`` (one job per frame), ``budget.py`` (ticks
and the late-frame policy), ``render.py`` (idle animation + renderer); ``engine.py`` joins them
with bounded queues and two tasks.
"""

from avatar.engine.assembly import FrameJob
from avatar.engine.budget import EngineStats
from avatar.engine.engine import AvatarEngine

__all__ = ["AvatarEngine", "EngineStats", "FrameJob"]
