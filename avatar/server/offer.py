"""``POST /offer`` checked before anything is built: the JSON body, then the SDP.

Nothing here allocates more than the body it reads. An offer that passes is one aiortc can take
(its own parser ran on it) and that a session can answer: media sections within the limit, each
with a mid, a DTLS fingerprint and ICE credentials, candidates counted and well formed. The
server builds an engine only after this.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from aiortc.sdp import SessionDescription, candidate_from_sdp
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from avatar.config import LimitsConfig
from avatar.errors import RequestError


class OfferBody(BaseModel):
    """The JSON of ``POST /offer``; unknown keys are ignored (newer clients)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    sdp: StrictStr
    type: Literal["offer"]
    avatar: StrictStr | None = None
    audio: Literal["mic", "none"] = "mic"
    pool: StrictStr | None = None  # many machines: the node pool to place on (gateways)


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    avatar: str | None
    mic: bool
    pool: str | None = None


_MID = re.compile(r"^[\x21-\x7e]{1,32}$")
_MEDIA = re.compile(r"^m=(audio|video|application) (\d{1,5}) (\S+)( \S+)+$")
_FINGERPRINT = re.compile(r"^a=fingerprint:(sha-1|sha-224|sha-256|sha-384|sha-512) [0-9A-Fa-f:]+$")
_LINE = re.compile(r"^[a-z]=")
_DIRECTIONS = {"a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"}


def parse_offer(raw: bytes) -> Offer:
    """The body's bytes -> the offer's fields, or :class:`RequestError` (400) saying what is
    wrong. The SDP is checked by :func:`check_sdp`."""
    body = parse_json(raw, 'the body must be JSON: {"sdp": "v=0...", "type": "offer"}')
    if not isinstance(body, dict):
        raise RequestError('the body must be a JSON object: {"sdp": "v=0...", "type": "offer"}')
    try:
        offer = OfferBody.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(f"{where}: {first['msg']}") from None
    return Offer(offer.sdp, offer.avatar, offer.audio == "mic", offer.pool)


def parse_json(raw: bytes | str, message: str) -> Any:
    """JSON or :class:`RequestError`; deep nesting and bad UTF-8 are refused too."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise RequestError(message) from None


def check_sdp(sdp: str, limits: LimitsConfig) -> None:
    """Refuse an SDP offer that no session could answer; see the module docstring."""
    if "\x00" in sdp or any(c < " " and c not in "\r\n\t" for c in sdp):
        raise RequestError("malformed SDP offer: control characters")
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        raise RequestError('malformed SDP offer: it must start with "v=0"')
    bad = next((line for line in lines if not _LINE.match(line)), None)
    if bad is not None:
        raise RequestError(f"malformed SDP offer: line {bad[:40]!r}")
    session, sections = _split(lines)
    if not sections:
        raise RequestError("malformed SDP offer: it has no media (m=) sections")
    if len(sections) > limits.max_media_sections:
        raise RequestError(
            f"SDP offer has {len(sections)} media sections (at most {limits.max_media_sections})"
        )
    _check_sections(session, sections)
    _check_candidates(lines, limits.max_candidates)
    try:
        SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises ValueError, KeyError, IndexError...
        raise RequestError(f"malformed SDP offer: {_short(exc)}") from None


def _split(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _check_sections(session: list[str], sections: list[list[str]]) -> None:
    shared_fp = any(_FINGERPRINT.match(line) for line in session)
    shared_ice = {line.split(":", 1)[0] for line in session if line.startswith("a=ice-")}
    mids: set[str] = set()
    for i, section in enumerate(sections):
        m = _MEDIA.match(section[0])
        if m is None or int(m.group(2)) > 65535:
            raise RequestError(f"malformed SDP offer: media line {section[0][:60]!r}")
        bundle_only = "a=bundle-only" in section  # port 0, on the BUNDLE group's transport
        if int(m.group(2)) == 0 and not bundle_only:
            continue  # a rejected section carries nothing more
        mid = [line[6:] for line in section if line.startswith("a=mid:")]
        if len(mid) != 1 or not _MID.match(mid[0]) or mid[0] in mids:
            raise RequestError(f"SDP media section {i} needs one unique a=mid (1-32 characters)")
        mids.add(mid[0])
        if not bundle_only:
            _check_transport(i, section, shared_fp, shared_ice)
        if m.group(1) != "application" and not _DIRECTIONS & set(section):
            raise RequestError(f"SDP media section {i} has no direction (a=sendrecv, ...)")
    for line in session:
        if line.startswith("a=group:BUNDLE"):
            missing = set(line.split()[1:]) - mids
            if missing:
                raise RequestError(f"SDP BUNDLE group names no media section: "
                                   f"{sorted(missing)[0][:32]!r}")  # fmt: skip


def _check_transport(i: int, section: list[str], shared_fp: bool, shared_ice: set[str]) -> None:
    if not shared_fp and not any(_FINGERPRINT.match(line) for line in section):
        raise RequestError(f"SDP media section {i} has no DTLS fingerprint (a=fingerprint)")
    ice = shared_ice | {line.split(":", 1)[0] for line in section if line.startswith("a=ice-")}
    if not {"a=ice-ufrag", "a=ice-pwd"} <= ice:
        raise RequestError(f"SDP media section {i} has no ICE credentials (a=ice-ufrag/pwd)")


def _check_candidates(lines: list[str], limit: int) -> None:
    found = [line[len("a=candidate:") :] for line in lines if line.startswith("a=candidate:")]
    if len(found) > limit:
        raise RequestError(f"SDP offer has {len(found)} ICE candidates (at most {limit})")
    for text in found:
        check_candidate(text)


def check_candidate(text: str) -> None:
    """One candidate line (without ``a=candidate:``): aiortc can parse it and its port is real."""
    try:
        cand = candidate_from_sdp(text)
    except Exception as exc:  # ValueError, IndexError from aioice's parser
        raise RequestError(f"bad ICE candidate {text[:60]!r}: {_short(exc)}") from None
    if not 0 <= cand.port <= 65535 or not 1 <= cand.component <= 256:
        raise RequestError(f"bad ICE candidate {text[:60]!r}: port or component out of range")
    if cand.protocol.lower() not in ("udp", "tcp"):
        raise RequestError(f"bad ICE candidate {text[:60]!r}: protocol {cand.protocol[:8]!r}")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
