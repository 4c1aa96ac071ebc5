"""Every use of aiortc's and aioice's private internals, in one place (this package).

aiortc (pinned at 1.16.0) has no settings for what these do; each hook names the internal it
relies on, and :func:`check_hooks` verifies all of them against the installed versions (the server
runs it at start, ``tests/test_aiortc_hooks.py`` in CI), so an upgrade that moves an internal
fails loudly instead of silently measuring or configuring something else. The process-wide ones
are installed once, by the composition root (:func:`install_hooks`).

Each module says which internals its hooks rely on:

- :mod:`.receiver`: aiortc's incoming audio jitter buffer; when the peer last sent anything.
- :mod:`.sender`: encode and send times of the video sender; the playout-delay extension.
- :mod:`.encoders`: our libvpx / libx264 options over aiortc's.
- :mod:`.ice`: the host addresses ICE gathers on, and a UDP port range (aioice).
- :mod:`.dtls`: ECDHE-RSA cipher suites in aiortc's DTLS context (peers with RSA certificates).
"""

from __future__ import annotations

from avatar.config import ServerConfig
from avatar.errors import HookError
from avatar.server.aiortc_hooks.dtls import _check_dtls, accept_rsa_dtls
from avatar.server.aiortc_hooks.encoders import _check_encoders, make_encoder, tune_encoders
from avatar.server.aiortc_hooks.ice import _check_ice, configure_ice
from avatar.server.aiortc_hooks.receiver import (
    JITTER_BUFFER_ATTR,
    _check_inbound,
    _check_receiver,
    shorten_audio_jitter_buffer,
    watch_inbound,
)
from avatar.server.aiortc_hooks.sender import (
    PLAYOUT_DELAY_URI,
    _check_extensions,
    _check_sender,
    negotiate_playout_delay,
    playout_delay_bytes,
    read_playout_delay,
    send_playout_delay,
    time_sender,
)

__all__ = [
    "JITTER_BUFFER_ATTR", "PLAYOUT_DELAY_URI", "HookError", "accept_rsa_dtls", "check_hooks",
    "configure_ice", "install_hooks", "make_encoder", "negotiate_playout_delay",
    "playout_delay_bytes", "read_playout_delay", "send_playout_delay",
    "shorten_audio_jitter_buffer", "time_sender", "tune_encoders", "watch_inbound",
]  # fmt: skip


def check_hooks() -> None:
    """Raise :class:`HookError` if an internal a hook relies on is gone or changed shape."""
    checks = (_check_receiver, _check_sender, _check_ice, _check_inbound, _check_extensions,
              _check_encoders, _check_dtls)  # fmt: skip
    problems = [p for p in (check() for check in checks) if p]
    if problems:
        raise HookError("aiortc/aioice internals changed: " + "; ".join(problems))


def install_hooks(cfg: ServerConfig) -> None:
    """The process-wide hooks a server's peers need (once, before the first peer): checked,
    then ICE addresses and ports, the playout-delay extension, the encoders' options, DTLS
    with RSA peers."""
    check_hooks()
    configure_ice(cfg)
    accept_rsa_dtls()
    negotiate_playout_delay(cfg.playout_delay_ms)
    tune_encoders(cfg.encoder)
