"""Giving memory back to the operating system after a session (glibc only; a no-op elsewhere).

glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps freed
blocks in them; a server whose executor threads build and drop engines holds on to the peak. At
start :func:`limit_arenas` caps the arenas at 2; after a session closes :func:`give_back_memory`
asks glibc to return free pages (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8  # from glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def limit_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before the executor's threads start)."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, n))


def give_back_memory() -> bool:
    """Return freed heap pages to the system; True if glibc released something."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))
