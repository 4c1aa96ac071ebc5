"""The HTTP side of WHIP and WHEP resources: trickle-ICE SDP fragments, ``If-Match``, ``Link``.

- :func:`parse_sdpfrag`: an ``application/trickle-ice-sdpfrag`` body (RFC 8840): the ICE
  credentials it names and its candidates, each with the media section it belongs to.
- :func:`check_if_match`: RFC 9110 section 13.1.1 as RFC 9725 uses it: a PATCH must name the ICE
  session's entity-tag (428 when it names none, 412 when it names another one).
- :func:`ice_server_links`: the ICE servers as ``Link: <url>; rel="ice-server"`` values (RFC 9725
  section 4.6).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from avatar.config import IceServer
from avatar.errors import RequestError

TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
_LINE = re.compile(r"^[a-z]=\S")
_MEDIA = re.compile(r"^m=(audio|video|application) \d{1,5} ")


@dataclass(frozen=True, slots=True)
class TrickledCandidate:
    text: str  # "candidate:..." as a page's RTCIceCandidate.candidate
    mid: str | None
    index: int  # the media section's index in the fragment (0 without one)


@dataclass(slots=True)
class SdpFragment:
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[TrickledCandidate] = field(default_factory=list)
    end: bool = False  # a=end-of-candidates


def parse_sdpfrag(text: str, max_candidates: int) -> SdpFragment:
    """A trickle-ICE fragment, or :class:`RequestError` (400) saying what is wrong. Attributes
    other than ICE credentials, mids and candidates are ignored (``a=group``, ``a=ice-options``);
    candidates themselves are checked where they are added (:mod:`avatar.server.ice`)."""
    if any(c < " " and c not in "\r\n\t" for c in text):
        raise RequestError("malformed SDP fragment: control characters")
    frag, mid, index = SdpFragment(), None, -1
    for line in (x.strip() for x in text.splitlines()):
        if not line:
            continue
        if not _LINE.match(line):
            raise RequestError(f"malformed SDP fragment: line {line[:40]!r}")
        if line.startswith("m="):
            if not _MEDIA.match(line):
                raise RequestError(f"malformed SDP fragment: media line {line[:60]!r}")
            mid, index = None, index + 1
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=candidate:"):
            frag.candidates.append(TrickledCandidate(line[2:], mid, max(index, 0)))
        _credentials(frag, line)
        frag.end |= line == "a=end-of-candidates"
    if len(frag.candidates) > max_candidates:
        raise RequestError(f"SDP fragment has {len(frag.candidates)} ICE candidates (at most "
                           f"{max_candidates})")  # fmt: skip
    return frag


def _credentials(frag: SdpFragment, line: str) -> None:
    for name in ("ufrag", "pwd"):
        prefix = f"a=ice-{name}:"
        if line.startswith(prefix):
            value = line[len(prefix) :]
            if getattr(frag, name) not in (None, value):
                raise RequestError(f"SDP fragment names two different ICE {name}s")
            setattr(frag, name, value)


def new_etag() -> str:
    """A strong entity-tag for a new ICE session."""
    return f'"{secrets.token_urlsafe(12)}"'


def check_if_match(header: str | None, etag: str) -> None:
    """A PATCH may change the ICE session only if it names it (``*`` names any)."""
    if header is None:
        raise RequestError(f"a PATCH needs If-Match: {etag} (the ETag of the 201 answer)", 428)
    tags = [t.strip() for t in header.split(",")]
    if "*" not in tags and etag not in tags:  # strong comparison: W/"..." never matches
        raise RequestError("If-Match names another ICE session than this resource's", 412)


def ice_server_links(servers: list[IceServer]) -> list[str]:
    """One ``Link`` value per ICE server URL, with its credentials when it has some."""
    links = []
    for s in servers:
        params = ""
        if s.username is not None and s.credential is not None:
            params = (f'; username="{_quoted(s.username)}"; credential="{_quoted(s.credential)}"'
                      '; credential-type="password"')  # fmt: skip
        links += [f'<{url}>; rel="ice-server"{params}' for url in s.urls]
    return links


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
