"""Hypothesis strategies for every input surface of ``avatar serve``.

Pure data: nothing here touches a server. :mod:`tests.fuzz_surfaces` sends what these draw, for
``tests/test_fuzz.py`` and ``scripts/fuzz_server.py``. SDP mutations start from a real offer made
by aiortc (``base_sdp``) and edit it as a list of small operations, so hypothesis can shrink a
failing offer to the one operation that matters.

Candidate addresses come from a fixed pool (loopback, documentation ranges, special and malformed
ones): a remote candidate makes the server send STUN checks to it, and a test must not send
packets to real hosts.
"""

from __future__ import annotations

import json
import string
from typing import Any, NamedTuple

from hypothesis import strategies as st

OVERSIZE_MESSAGE = 16 * 1024 + 1  # server.limits.max_message_kb (default) + 1 byte
OVERSIZE_AUDIO = 64 * 1024 + 1  # server.limits.max_audio_message_kb (default) + 1 byte
OVERSIZE_BODY = 64 * 1024 + 1  # server.limits.max_body_kb (default) + 1 byte


class Message(NamedTuple):
    """One socket or data channel message: ``text``, ``bytes``, or ``badtext`` (a text frame
    whose payload is not UTF-8)."""

    kind: str
    data: str | bytes


def mostly(
    common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], one_in: int = 4
) -> st.SearchStrategy[Any]:
    """``rare`` for about one draw in ``one_in``, else ``common`` (``one_of`` would split evenly
    by branch)."""
    return st.tuples(st.integers(0, one_in - 1), common, rare).map(
        lambda t: t[2] if t[0] == 0 else t[1]
    )


# -- JSON -----------------------------------------------------------------------------------

ODD_NUMBERS = [1.0, True, False, "1", None, 0, -1, 10**30, -(2**63), 2**64, 1e308, 0.5, [], {}]
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(ODD_NUMBERS)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def big_text(min_len: int, max_len: int) -> st.SearchStrategy[str]:
    """A long string that costs hypothesis a few choices, not ``max_len`` of them."""
    return st.builds(
        lambda piece, n: (piece * n)[:n],
        st.text(min_size=1, max_size=3),
        st.integers(min_len, max_len),
    )


def deep_json() -> st.SearchStrategy[str]:
    """Nesting far past Python's recursion limit, within the body limit or past it."""
    return st.builds(
        lambda n, brackets: brackets[0] * n + "1" + brackets[1] * n,
        st.integers(500, 40_000),
        st.sampled_from([("[", "]"), ('{"a":', "}")]),
    )


# -- POST /offer ----------------------------------------------------------------------------

CONTENT_TYPES = [
    None, "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
    "text/plain", "", "application/JSON", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json, text/plain", "application/json;;;",
]  # fmt: skip
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
AUDIO_CHOICES = ["mic", "none", "MIC", "", "both"]


def offer_fields(base_sdp: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects shaped like an offer, each field right, wrong-typed or odd."""
    sdp = st.just(base_sdp) | json_values | st.text(max_size=60) | big_text(1000, 70_000)
    kind = st.sampled_from(["offer", "answer", "OFFER", "pranswer", ""]) | json_values
    return st.fixed_dictionaries(
        {"sdp": sdp, "type": kind},
        optional={
            "avatar": st.sampled_from(["default", "carphone", "", "../etc"]) | json_values,
            "audio": st.sampled_from(AUDIO_CHOICES) | json_values,
            "extra": json_values,
        },
    )


def _encode(value: Any, encoding: str) -> bytes:
    text = json.dumps(value)
    if encoding == "ascii-escaped":
        return text.encode()
    return json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")


def _corrupt(raw: bytes, at: int, junk: bytes) -> bytes:
    at %= len(raw) + 1
    return raw[:at] + junk + raw[at:]


def offer_bodies(base_sdp: str) -> st.SearchStrategy[tuple[str | None, bytes]]:
    """(Content-Type or None, body bytes) for ``POST /offer``."""
    encodings = st.sampled_from(["ascii-escaped", "utf-8", "utf-16", "utf-32", "utf-16-le"])
    shaped = st.builds(_encode, json_values | offer_fields(base_sdp), encodings)
    invalid_utf8 = st.sampled_from(
        [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]
    )
    bodies = st.one_of(
        shaped,
        st.builds(_corrupt, shaped, st.integers(0, 10**6), invalid_utf8),
        st.builds(str.encode, deep_json()),
        st.builds(
            lambda s: json.dumps({"sdp": s, "type": "offer"}).encode(),
            big_text(OVERSIZE_BODY, 200_000),
        ),
        st.binary(max_size=300),
    )
    content_type = mostly(
        st.just("application/json"), st.sampled_from(CONTENT_TYPES) | header_text, 3
    )
    return st.tuples(content_type, bodies)


# -- ICE candidates -------------------------------------------------------------------------

ADDRESSES = [
    "127.0.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "0.0.0.0", "255.255.255.255",
    "224.0.0.251", "::1", "::", "fe80::1", "fe80::1%lo", "2001:db8::1", "fd00::2", "x.local",
    "5e6b0cdd-9b31-4f7b-9c8e-0d1e6c5b2a11.local", "example.invalid", "999.1.1.1", "1.2.3", "",
    "127.0.0.1.", "[::1]",
]  # fmt: skip
token = st.text(string.ascii_letters + string.digits + "+/-_.:%", max_size=12)


CANDIDATE_TYPES = ["typ host", "typ srflx raddr 0.0.0.0 rport 0", "typ relay raddr ::1 rport x",
                   "typ prflx", "typ bogus", "typ", ""]  # fmt: skip
CANDIDATE_EXTRAS = ["tcptype active", "tcptype", "generation 0", "ufrag x", "network-id 1", "raddr",
                    "x y z"]  # fmt: skip
CANDIDATE_PORTS = ["9", "0", "65535", "65536", "-1", "99999999999", "x", ""]
PRIORITIES = ["2130706431", "0", "-1", "1e9", "x", "99999999999999999999999"]


def candidate_texts() -> st.SearchStrategy[str]:
    """``candidate:...`` attribute values, well formed or broken field by field."""
    port = st.sampled_from(CANDIDATE_PORTS) | st.integers(-10, 70_000).map(str)
    fields = st.tuples(
        st.sampled_from(["1", "abc", ""]) | token,
        st.sampled_from(["1", "2", "0", "256", "257", "-1", "x"]),
        st.sampled_from(["udp", "UDP", "tcp", "sctp", "tls", ""]),
        st.sampled_from(PRIORITIES),
        st.sampled_from(ADDRESSES),
        port,
        st.sampled_from(CANDIDATE_TYPES),
        st.lists(st.sampled_from(CANDIDATE_EXTRAS) | token, max_size=3),
    )
    well_formed = fields.map(lambda f: " ".join([*f[:7], *f[7]]).strip())
    return (well_formed | st.text(max_size=60)).map(lambda text: "candidate:" + text)


# -- SDP offers -----------------------------------------------------------------------------

MEDIA_KINDS = ["audio", "video", "application", "text", "message", "", "AUDIO", "video\x7f"]
PORTS = ["0", "9", "1", "65535", "65536", "99999", "-1", "x", "9/2", ""]
PROTOCOLS = ["UDP/TLS/RTP/SAVPF", "UDP/DTLS/SCTP", "RTP/AVP", "TCP/DTLS/SCTP", "x"]
FORMATS = ["0", "8", "96", "97", "111", "127", "128", "-1", "x", "webrtc-datachannel", "5000"]
FINGERPRINTS = [
    "sha-256 " + ":".join(["AB"] * 32), "sha-1 00", "md5 " + ":".join(["AB"] * 16), "sha-256 ",
    "sha-256 zz:zz", "SHA-256 " + ":".join(["AB"] * 32), "sha-512 " + "F" * 400, "",
]  # fmt: skip
ATTRIBUTES = ["mid", "fingerprint", "ice-ufrag", "ice-pwd", "setup", "sctp-port",
              "max-message-size", "rtpmap", "group", "msid", "ssrc", "extmap", "rtcp", "fmtp",
              "rtcp-fb", "ssrc-group"]  # fmt: skip
ATTRIBUTE_VALUES = [
    "", "0", "1", "active", "passive", "holdconn", "actpass", "BUNDLE 0 1 2", "BUNDLE", "BUNDLE 9",
    "96 VP8/90000", "x/y/z", "-1", "65536", "x" * 300, "é", "0 0 0", *FINGERPRINTS,
]  # fmt: skip
ODD_LINES = [
    "m=", "a=", "=", "v=1", "v=0", "a=mid:", "a=end-of-candidates", "a=inactive", "a=sendonly",
    "a=recvonly", "a=bundle-only", "a=ice-lite", "a=ice-options:trickle", "c=IN IP6 ::",
    "c=IN IP4", "t=x y", "o=- x x IN IP4",
]  # fmt: skip
CONTROL_CHARS = ["\x00", "\x01", "\x1b", "\x7f", "\r", "\x0b", "\u2028"]
attribute_values = st.sampled_from(ATTRIBUTE_VALUES) | token | st.text(max_size=40)
noise_lines = (
    st.text(max_size=80)
    | st.builds(lambda c, t: f"{c}={t}", st.sampled_from("abcimkotvzxrsu"), st.text(max_size=40))
    | st.sampled_from(ODD_LINES)
)
media_lines = st.builds(
    lambda kind, port, proto, fmts: f"m={kind} {port} {proto} {' '.join(fmts)}".rstrip(),
    st.sampled_from(MEDIA_KINDS) | token,
    st.sampled_from(PORTS) | st.integers(-5, 100_000).map(str),
    st.sampled_from(PROTOCOLS),
    st.lists(st.sampled_from(FORMATS), max_size=40),
)
index = st.integers(0, 10**4)  # taken modulo the current number of lines or sections
sdp_ops = st.one_of(
    st.tuples(st.just("delete"), index),
    st.tuples(st.just("duplicate"), index, st.integers(1, 3)),
    st.tuples(st.just("swap"), index, index),
    st.tuples(st.just("replace"), index, noise_lines),
    st.tuples(st.just("insert"), index, noise_lines | media_lines),
    st.tuples(st.just("copy-section"), index, st.integers(1, 8)),
    st.tuples(st.just("delete-section"), index),
    st.tuples(st.just("swap-sections"), index, index),
    st.tuples(st.just("media-line"), index, media_lines),
    st.tuples(st.just("attribute"), st.sampled_from(ATTRIBUTES), index, attribute_values),
    st.tuples(st.just("candidates"), index, st.lists(candidate_texts(), min_size=1, max_size=80)),
    st.tuples(st.just("control"), index, st.sampled_from(CONTROL_CHARS)),
    st.tuples(st.just("truncate"), index),
)


def sdp_offers(base_sdp: str) -> st.SearchStrategy[tuple[list[tuple[Any, ...]], str, str]]:
    """(mutations, line ending, audio mode) to apply to the real offer (:func:`mutate_sdp`)."""
    return st.tuples(
        st.lists(sdp_ops, min_size=1, max_size=4),
        st.sampled_from(["\r\n", "\r\n", "\n", "\r"]),
        st.sampled_from(["mic", "none"]),
    )


def mutate_sdp(base_sdp: str, ops: list[tuple[Any, ...]], eol: str) -> str:
    """The real offer with ``ops`` applied in order (see ``sdp_ops``)."""
    lines = [line for line in base_sdp.replace("\r\n", "\n").split("\n") if line]
    for op in ops:
        lines = _apply(lines, op)
    return eol.join(lines) + eol


def _apply(lines: list[str], op: tuple[Any, ...]) -> list[str]:
    name, *args = op
    n = max(len(lines), 1)
    if name == "delete":
        return [line for i, line in enumerate(lines) if i != args[0] % n]
    if name == "duplicate":
        i = args[0] % n
        return lines[: i + 1] + lines[i : i + 1] * args[1] + lines[i + 1 :]
    if name == "swap" and lines:
        i, j = args[0] % n, args[1] % n
        lines = list(lines)
        lines[i], lines[j] = lines[j], lines[i]
        return lines
    if name == "replace":
        return [args[1] if i == args[0] % n else line for i, line in enumerate(lines)]
    if name == "insert":
        i = args[0] % (n + 1)
        return [*lines[:i], args[1], *lines[i:]]
    if name == "attribute":
        return _set_attribute(lines, *args)
    if name == "control":
        text = "\n".join(lines)
        at = args[0] % (len(text) + 1)
        return (text[:at] + args[1] + text[at:]).split("\n")
    if name == "truncate":
        text = "\n".join(lines)
        return text[: args[0] % (len(text) + 1)].split("\n")
    return _apply_to_sections(lines, name, args)


def _set_attribute(lines: list[str], attr: str, which: int, value: str) -> list[str]:
    hits = [i for i, line in enumerate(lines) if line.startswith(f"a={attr}:")]
    if not hits:
        return lines
    at = hits[which % len(hits)]
    return [f"a={attr}:{value}" if i == at else line for i, line in enumerate(lines)]


def _apply_to_sections(lines: list[str], name: str, args: list[Any]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    if not starts:
        return lines
    head = lines[: starts[0]]
    sections = [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    s = args[0] % len(sections)
    if name == "copy-section":
        sections[s + 1 : s + 1] = [list(sections[s]) for _ in range(args[1])]
    elif name == "delete-section":
        del sections[s]
    elif name == "swap-sections":
        t = args[1] % len(sections)
        sections[s], sections[t] = sections[t], sections[s]
    elif name == "media-line":
        sections[s] = [args[1], *sections[s][1:]]
    elif name == "candidates":
        sections[s] = [*sections[s], *(f"a={c}" for c in args[1])]
    return head + [line for section in sections for line in section]


AVATAR_NAMES = [
    "default", "carphone", "", "/etc", "/etc/passwd", "../default", "default/", "./default",
    "default/../carphone", "~", "..", ".", "C:\\Windows", "default\x00", "%2e%2e", "DEFAULT",
    "avatars/default", "file:///etc/passwd", "\u202edefault", "défault", "默认", "a" * 5000,
]  # fmt: skip


def avatar_names() -> st.SearchStrategy[Any]:
    return (
        st.sampled_from(AVATAR_NAMES) | st.text(max_size=40) | big_text(100, 20_000) | json_values
    )


# -- sockets and the data channel -----------------------------------------------------------

invalid_utf8 = st.builds(
    lambda a, b: a + b"\xff\xfe" + b, st.binary(max_size=20), st.binary(max_size=20)
)


def _json_text(value: Any) -> Message:
    return Message("text", json.dumps(value))


trickle = st.fixed_dictionaries(
    {"candidate": candidate_texts() | json_values},
    optional={
        "sdpMid": st.sampled_from(["0", "1", "2", "", "x" * 33]) | json_values,
        "sdpMLineIndex": st.integers(-5, 100) | json_values,
        "usernameFragment": json_values,
    },
)
control_messages = st.one_of(
    st.fixed_dictionaries({"type": st.just("candidate"), "candidate": trickle | json_values}),
    st.fixed_dictionaries(
        {"type": st.just("subscribe")},
        optional={"blendshapes": json_values, "profile_frames": json_values},
    ),
    st.just({"type": "clear"}),
    st.fixed_dictionaries(
        {"type": json_values | st.sampled_from(["ready", "stats", "error", "end"])}
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


def socket_messages(oversize: int, limit: int) -> st.SearchStrategy[Message]:
    """Messages for ``/ws`` or the data channel: text, JSON of any shape, control messages with
    odd fields, binary, non-UTF-8 text frames, and messages past the size limit."""
    socket_closers = st.one_of(  # rarer: each ends the socket, and the example with it
        invalid_utf8.map(lambda b: Message("badtext", b)),
        big_text(oversize, limit).map(lambda t: Message("text", t)),
        st.integers(oversize, limit).map(lambda n: Message("bytes", b"{" * n)),
    )
    common = st.one_of(
        st.text(max_size=200).map(lambda t: Message("text", t)),
        json_values.map(_json_text),
        control_messages.map(_json_text),
        st.binary(max_size=300).map(lambda b: Message("bytes", b)),
    )
    return mostly(common, socket_closers, 8)


SAMPLE_RATES = [
    8000,
    16000,
    44100,
    48000,
    192000,
    7999,
    192001,
    8001,
    0,
    -16000,
    16000.0,
    *ODD_NUMBERS,
]
CHANNELS = [1, 2, 0, 3, -1, 1.0, 2.0, True, "1", None, 10**30, []]


def audio_messages() -> st.SearchStrategy[Message]:
    """Messages for ``/ws/audio``: formats with odd field types, PCM of odd lengths (small:
    the session plays it out in real time), past the size limit, clear, end, noise."""
    fmt = st.fixed_dictionaries(
        {"type": st.just("format"), "sample_rate": st.sampled_from(SAMPLE_RATES) | json_values},
        optional={"channels": st.sampled_from(CHANNELS) | json_values},
    )
    socket_closers = st.one_of(  # rarer: each ends the socket, and the example with it
        st.integers(OVERSIZE_AUDIO, 90_000).map(lambda n: Message("bytes", bytes(n))),
        invalid_utf8.map(lambda b: Message("badtext", b)),
        st.just(Message("text", '{"type": "end"}')),
    )
    common = st.one_of(
        fmt.map(_json_text),
        st.binary(max_size=3000).map(lambda b: Message("bytes", b)),
        st.integers(0, 3000).map(lambda n: Message("bytes", bytes(n))),
        st.sampled_from([{"type": "clear"}, {"type": "format"}]).map(_json_text),
        json_values.map(_json_text),
        st.text(max_size=80).map(lambda t: Message("text", t)),
    )
    return mostly(common, socket_closers, 8)


# -- query strings, paths, methods ----------------------------------------------------------

query_values = st.sampled_from(["", "x", "%", "%00", "a&b", "é", "\u0000"]) | st.text(max_size=30)
key_choices = st.one_of(
    st.sampled_from(["missing", "empty", "right"]),
    st.tuples(st.sampled_from(["prefix", "suffix", "swapcase", "truncate", "unicode"]), token),
    st.tuples(st.just("value"), query_values),
)
session_choices = st.sampled_from(["missing", "empty", "target", "healthy"]) | st.tuples(
    st.just("value"), query_values
)
ORIGINS = ["null", "http://evil.example", "http://127.0.0.1"]
SOCKET_PATHS = ["/ws", "/ws/audio", "/ws/", "/WS", "/ws/audio/x"]
socket_queries = st.fixed_dictionaries(
    {
        "path": st.sampled_from(SOCKET_PATHS),
        "session": session_choices,
        "key": key_choices,
        "extra": st.lists(
            st.tuples(st.sampled_from(["session", "key", "x"]), query_values), max_size=3
        ),
        "raw": st.sampled_from([False, False, False, True]),  # values unquoted in the request line
        "upgrade": st.booleans(),
        "origin": st.none() | st.sampled_from(ORIGINS) | header_text,
    }
)

KNOWN_PATHS = [
    "/", "/offer", "/ws", "/ws/audio", "/api/avatars", "/api/ice", "/api/health", "/healthz",
    "/readyz", "/metrics", "/index.html", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2fetc%2fpasswd", "//etc/passwd", "/api/", "/api/../offer", "/x/../../pyproject.toml",
    "/\x00", "/%00", "/%ff", "*", "http://127.0.0.1/", "/" + "a" * 9000, "/?" + "q" * 9000,
]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get",
           "BREW"]  # fmt: skip
AUTHORIZATIONS = ["Bearer ", "Bearer x.y", "Basic Zm9vOmJhcg=="]
path_chars = st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="?#")
random_paths = st.lists(st.text(path_chars, max_size=12), max_size=6).map(
    lambda p: "/" + "/".join(p)
)
methods = st.sampled_from(METHODS)
http_requests = st.fixed_dictionaries(
    {
        "method": mostly(methods, st.text(string.ascii_uppercase, min_size=1, max_size=9), 6),
        "path": st.sampled_from(KNOWN_PATHS) | random_paths,
        "raw": st.sampled_from(
            [False, False, False, True]
        ),  # the path unquoted in the request line
        "query": st.none() | st.text(max_size=40),
        "origin": st.none() | st.sampled_from(ORIGINS) | header_text,
        "authorization": st.none() | st.sampled_from(AUTHORIZATIONS) | header_text,
        "body": st.none() | st.binary(max_size=200),
    }
)
