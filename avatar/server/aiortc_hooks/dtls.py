"""Hook on aiortc's DTLS context: accept peers whose certificate is RSA.

aiortc 1.16 builds each DTLS context in ``RTCCertificate._create_ssl_context(srtp_profiles)`` with
ECDHE-ECDSA cipher suites only. Its own certificates are ECDSA, but a peer may sign with RSA:
GStreamer's webrtcbin does. aiortc answers as the DTLS client, so it offers only suites the RSA
server cannot choose, and the handshake fails. :func:`accept_rsa_dtls` sets a cipher list with the
same ECDHE-ECDSA suites first and their ECDHE-RSA counterparts after (what aiortc's open pull
requests 1392 and 1421 do upstream).
"""

from __future__ import annotations

import inspect
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate

CONTEXT_FACTORY = "_create_ssl_context"
ECDSA_SUITES = (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
                b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")  # fmt: skip
RSA_SUITES = (b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
              b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA")  # fmt: skip
DTLS_CIPHERS = ECDSA_SUITES + b":" + RSA_SUITES

_stock_context = getattr(RTCCertificate, CONTEXT_FACTORY, None)


def _check_dtls() -> str | None:
    method = getattr(RTCCertificate, CONTEXT_FACTORY, None)
    if method is None or method not in (_stock_context, _context_with_rsa):
        return f"RTCCertificate.{CONTEXT_FACTORY} is gone or was replaced by someone else"
    assert _stock_context is not None
    if list(inspect.signature(_stock_context).parameters) != ["self", "srtp_profiles"]:
        return f"RTCCertificate.{CONTEXT_FACTORY}(srtp_profiles) changed its parameters"
    src = inspect.getsource(_stock_context)
    if "ctx.set_cipher_list(" not in src or "return ctx" not in src:
        return f"RTCCertificate.{CONTEXT_FACTORY} no longer sets and returns a cipher list"
    return None


def _context_with_rsa(self: RTCCertificate, srtp_profiles: list[Any]) -> Any:
    assert _stock_context is not None
    ctx = _stock_context(self, srtp_profiles)
    ctx.set_cipher_list(DTLS_CIPHERS)
    return ctx


def accept_rsa_dtls() -> None:
    """DTLS contexts made from now on (process-wide) also offer ECDHE-RSA suites."""
    setattr(RTCCertificate, CONTEXT_FACTORY, _context_with_rsa)
