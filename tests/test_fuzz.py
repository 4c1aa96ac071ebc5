"""Property-based fuzzing of every input surface of ``avatar serve`` while a real session streams.

One server for the module (:mod:`tests.fuzz_harness` explains the driver). Each surface gets its
budget of hypothesis inputs; any 5xx fails the input and hypothesis shrinks it. After each
surface: no traceback was logged while it ran, and the healthy session is still connected. The
last test checks the healthy session's video over the whole fuzz. ``scripts/fuzz_server.py`` runs
the same surfaces with a bigger budget and prints the counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz_harness import FuzzHarness, describe, running_harness
from tests.fuzz_surfaces import SURFACES, fuzz
from tests.timeline import assert_accounted

pytestmark = pytest.mark.slow
MAX_HOLE_S = 3.0
EXAMPLES = {  # about 50 s of fuzzing on two cores when the server passes every input
    "offer_body": 600,
    "offer_sdp": 600,
    "offer_avatar": 200,
    "ws_events": 400,
    "ws_audio": 400,
    "datachannel": 300,
    "ws_query": 600,
    "http": 600,
}


@pytest.fixture(scope="module")
def harness() -> Iterator[FuzzHarness]:
    with running_harness(healthy_s=240.0) as h:
        yield h


@pytest.mark.parametrize("surface", list(SURFACES))
def test_fuzzed_surface_answers_4xx_and_logs_no_traceback(
    harness: FuzzHarness, surface: str
) -> None:
    fuzz(harness, surface, EXAMPLES[surface], strict=True)
    tally = harness.tally
    assert tally.examples[surface] >= EXAMPLES[surface] // 2  # hypothesis ran the inputs
    errors = [f for f in tally.server_errors if f.surface == surface]
    assert not errors, describe(errors)
    tracebacks = harness.faults.tracebacks(surface)
    assert not tracebacks, describe(tracebacks)
    lost = [f for f in tally.lost if f.surface == surface]  # died, left open, stopped answering
    assert not lost, describe(lost)
    assert harness.healthy_alive()


def test_the_healthy_session_streamed_through_the_fuzz(harness: FuzzHarness) -> None:
    stream = harness.healthy_stream()
    assert stream.connected
    healthy = harness.healthy.received
    t = assert_accounted(healthy.video, healthy.messages)  # each frame received or counted
    # never stalled, to the end: a hole this long in the media timeline would mean the server
    # stopped serving it (the fuzzing client shares its process and GIL, so sub-second holes
    # say little; the script reports the real ones)
    assert t.largest_gap_s < MAX_HOLE_S, t
    assert t.span_s > stream.seconds - MAX_HOLE_S, (t, stream)
    assert not harness.tally.server_errors, describe(harness.tally.server_errors)
    assert not harness.faults.tracebacks(), describe(harness.faults.tracebacks())
