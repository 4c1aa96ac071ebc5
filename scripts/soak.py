"""Soak: N concurrent live sessions against one ``avatar serve`` process for many minutes.

    python scripts/soak.py --sessions 4 --minutes 30 [--interval 60] [--out docs/soak.json]

The server runs in a child process (loopback ICE, sync marker on); this process holds N aiortc
client peers, each sending the 10 s loop of ``session_metrics`` (speech, then two tone bursts)
as its microphone, over and over. Every interval it prints one line: the server's resident
memory (VmRSS), CPU (utime + stime over wall time; 100 % = one core) and bytes waiting in its
UDP sockets (rx kB), the worst wake-up delay of this client's event loop (lag ms), and per
session the received video fps, late frames in the interval (from the server's cumulative
``late`` counter in its stats messages) and the mean A/V offset at the client (marked video
frame arriving minus the tone burst's onset arriving; positive = video later). A burst counts
in the interval in which its audio onset is 0.5 s old, so its video has had time to arrive.

The summary: late and skipped frames as a share of frames per session, server RSS before the
sessions, at the first and last interval, its maximum and least-squares slope (MB per 10 min,
over the run and over its second half), A/V offset mean and drift (ms per minute) per session,
server latency (median of the per-second p50s and p95s). A session fails when its connection
fails or closes, or no video or audio arrives for 3 s; the exit status is 1 then. Received
frames are reduced to arrival time and a marker flag, counted each second and dropped, so a long
run does not grow this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from session_metrics import (
    AudioOnsets,
    VideoOnsets,
    marker,
    mic_loop,
    offset_totals,
    pair,
    window_summary,
)

from avatar.clock import Clock
from avatar.config import ServerConfig
from avatar.server.aiortc_hooks import configure_ice
from avatar.tasks import cancel, spawn
from avatar.testing.browser import ServerProcess, server_process
from avatar.testing.peer import AvatarPeer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BROKEN = ("failed", "closed")
STALL_S = 3.0  # no video or no audio for this long at a sample = the session has stopped


@contextlib.contextmanager
def server_child(*overrides: str) -> Iterator[ServerProcess]:
    """``avatar serve`` on loopback in a child process with ``--set`` overrides (its output is
    read all along: over 30 minutes an unread pipe would fill and stall the server)."""
    with server_process(*(a for o in overrides for a in ("--set", o))) as server:
        yield server


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def udp_backlog(pid: int) -> tuple[int, int]:
    """Bytes waiting in a process's UDP sockets and datagrams they dropped (since opened).

    asyncio reads one datagram per socket per loop iteration: a server whose loop falls
    behind queues its peers' packets here, and an ICE consent reply stuck in the queue for
    0.5 s counts as a missed reply."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    queued = drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()  # sl local remote st tx:rx tr:when retr uid timeout inode .. drops
                if f[9] in inodes:
                    queued += int(f[4].split(":")[1], 16)
                    drops += int(f[-1])
    return queued, drops


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (user + system, all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


class SoakSession:
    """One client peer and what it has measured. Received frames are digested every second
    (onsets, counts) and dropped; ``take`` closes an interval."""

    def __init__(self, index: int, url: str, loop: np.ndarray, token: str | None) -> None:
        self.index = index
        self.peer = AvatarPeer(url, loop, summarize=marker, token=token, loop=True)
        self.audio_on, self.video_on = AudioOnsets(), VideoOnsets()
        self.offsets: list[tuple[float, float]] = []  # (audio onset s, video - audio s)
        self.p50: list[float] = []  # every stats message's latency, for the summary
        self.p95: list[float] = []
        self.counters = {"frames": 0, "late": 0, "skipped": 0}  # the server's, cumulative
        self.start_s = 0.0  # when the run started (client clock, s)
        self.last_arrival = {"video": 0.0, "audio": 0.0}
        self.error: str | None = None
        self._new_interval()

    def _new_interval(self) -> None:
        self.n_video = self.n_audio = 0
        self.stats: list[dict[str, Any]] = []
        self.late_before = self.counters["late"]

    def begin(self, start_s: float) -> None:
        self.start_s = start_s
        self.last_arrival = {"video": start_s, "audio": start_s}

    def digest(self, now_s: float) -> None:
        """Counts and drops what arrived since the last call; checks the session is alive."""
        rec = self.peer.received
        video, rec.video = rec.video, []
        audio, rec.audio = rec.audio, []
        messages, rec.messages = rec.messages, []
        self.video_on.feed(video)
        self.audio_on.feed(audio)
        self.n_video += len(video)
        self.n_audio += len(audio)
        for kind, frames in (("video", video), ("audio", audio)):
            if frames:
                self.last_arrival[kind] = frames[-1][0] / 1e9
        stats = [m for m in messages if m.get("type") == "stats"]
        self.stats += stats
        self.p50 += [s["latency_ms"]["p50"] for s in stats if s["latency_ms"]["p50"]]
        self.p95 += [s["latency_ms"]["p95"] for s in stats if s["latency_ms"]["p95"]]
        if stats:
            self.counters = {k: int(stats[-1][k]) for k in self.counters}
        self._check(now_s)

    def _check(self, now_s: float) -> None:
        """Records the first sign that the session broke: its connection, or a stalled track."""
        state = self.peer.pc.connectionState
        stalled = [k for k, t in self.last_arrival.items() if now_s - t > STALL_S]
        if self.error is None and (state in BROKEN or stalled):
            gone = " and ".join(stalled)
            self.error = f"connection {state}" if state in BROKEN else f"no {gone} for {STALL_S} s"
            self.error += f" at {now_s - self.start_s:.0f} s"

    def take(self, now_s: float, seconds: float) -> dict[str, Any]:
        """This interval's numbers. A burst counts once its audio onset is 0.5 s old (its
        marked video frame has had time to arrive)."""
        self.digest(now_s)
        new = self._pair(now_s - 0.5)
        row = {
            "session": self.index, "state": self.peer.pc.connectionState,
            "video_frames": self.n_video, "audio_frames": self.n_audio,
            "stats_messages": len(self.stats),
            **window_summary(self.stats, [o * 1000 for _, o in new], self.n_video, seconds),
            "late": self.counters["late"] - self.late_before,
            **{f"{k}_total": v for k, v in self.counters.items()},
        }  # fmt: skip
        self._new_interval()
        return row

    def _pair(self, until_s: float) -> list[tuple[float, float]]:
        """Pairs bursts whose audio onset is before ``until_s`` and forgets the onsets used."""
        ready = [a for a in self.audio_on.onsets if a < until_s]
        new = pair(ready, self.video_on.onsets)
        self.offsets += new
        self.audio_on.onsets = [a for a in self.audio_on.onsets if a >= until_s]
        self.video_on.onsets = [v for v in self.video_on.onsets if v >= until_s - 0.5]
        return new

    def summary(self) -> dict[str, Any]:
        frames = max(self.counters["frames"], 1)
        return {
            "session": self.index, "error": self.error, "frames": self.counters["frames"],
            "late_pct": round(100 * self.counters["late"] / frames, 2),
            "skipped_pct": round(100 * self.counters["skipped"] / frames, 2),
            "av_offset_ms": offset_totals(self.offsets, self.start_s),
            "server_latency_ms": {
                "p50": round(float(np.median(self.p50)), 1) if self.p50 else None,
                "p95": round(float(np.median(self.p95)), 1) if self.p95 else None,
                "p95_max": round(float(np.max(self.p95)), 1) if self.p95 else None,
            },
        }  # fmt: skip


class LoopLag:
    """How late this process's event loop wakes up: a client that cannot answer in time (ICE
    consent checks time out after 0.5 s) looks like a vanished peer to the server."""

    def __init__(self, clock: Clock, step_s: float = 0.05) -> None:
        self.clock, self.step_ns = clock, round(step_s * 1e9)
        self.max_ms = 0.0
        self.over_half_s = 0  # wake-ups more than 0.5 s late

    async def run(self) -> None:
        t = self.clock.now_ns()
        while True:
            t += self.step_ns
            await self.clock.sleep_until(t)
            now = self.clock.now_ns()
            lag = (now - t) / 1e6
            self.max_ms = max(self.max_ms, lag)
            self.over_half_s += lag > 500
            t = max(t, now)

    def take(self) -> dict[str, Any]:
        out = {"max_ms": round(self.max_ms, 1), "over_500ms": self.over_half_s}
        self.max_ms, self.over_half_s = 0.0, 0
        return out


async def soak(
    url: str, server: subprocess.Popen[str], sessions: int, minutes: float, interval_s: float,
    token: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Runs the sessions for ``minutes``; returns every interval's numbers and the summary."""
    loop = mic_loop()
    idle_rss = rss_mb(server.pid)
    peers = [SoakSession(i, url, loop, token) for i in range(sessions)]
    results = await asyncio.gather(*(s.peer.connect(60.0) for s in peers), return_exceptions=True)
    for s, r in zip(peers, results, strict=True):
        if isinstance(r, BaseException):
            s.error = f"connect: {type(r).__name__}: {r}"
    clock = peers[0].peer.clock
    lag = LoopLag(clock)
    lag_task = spawn(lag.run(), "soak-loop-lag")
    start = clock.now_ns() / 1e9
    for s in peers:
        s.begin(start)
    cpu_prev, t_prev = cpu_seconds(server.pid), start
    intervals: list[dict[str, Any]] = []
    print_header(sessions)
    n = max(round(minutes * 60 / interval_s), 1)
    for k in range(1, n + 1):
        end = start + k * interval_s
        while (now := clock.now_ns() / 1e9) < end - 1.0:  # digest each second: bounded memory
            await clock.sleep_until(round(min(now + 1.0, end) * 1e9))
            for s in peers:
                s.digest(clock.now_ns() / 1e9)
        await clock.sleep_until(round(end * 1e9))
        if server.poll() is not None:
            for s in peers:
                s.error = s.error or f"server exited ({server.returncode})"
            break
        now = clock.now_ns() / 1e9
        cpu = cpu_seconds(server.pid)
        queued, drops = udp_backlog(server.pid)
        row = {"t_s": round(now - start, 1), "rss_mb": round(rss_mb(server.pid), 1),
               "cpu_pct": round(100 * (cpu - cpu_prev) / (now - t_prev), 1),
               "udp_rx_queue_kb": round(queued / 1024, 1), "udp_drops": drops,
               "client_loop_lag": lag.take(),
               "sessions": [s.take(now, now - t_prev) for s in peers]}  # fmt: skip
        cpu_prev, t_prev = cpu, now
        intervals.append(row)
        print_row(row)
    await cancel(lag_task)
    await asyncio.gather(*(s.peer.close() for s in peers))
    return {
        "sessions": sessions, "minutes": minutes, "interval_s": interval_s,
        "server": summarize_server(intervals, idle_rss),
        "per_session": [s.summary() for s in peers],
        "failures": [f"session {s.index}: {s.error}" for s in peers if s.error],
        "intervals": intervals,
    }  # fmt: skip


def summarize_server(intervals: list[dict[str, Any]], idle_rss: float) -> dict[str, Any]:
    """RSS before the sessions, at the first and last interval, max; its slope over the run and
    over the second half (after buffers have filled: the steady state); mean CPU."""
    if not intervals:
        return {"rss_idle_mb": round(idle_rss, 1)}
    t = np.array([r["t_s"] for r in intervals]) / 60
    rss = np.array([r["rss_mb"] for r in intervals])
    half = len(t) // 2
    return {
        "rss_idle_mb": round(idle_rss, 1), "rss_start_mb": float(rss[0]),
        "rss_end_mb": float(rss[-1]), "rss_max_mb": float(rss.max()),
        "rss_slope_mb_per_10min": _slope_per_10min(t, rss),
        "rss_slope_second_half_mb_per_10min": _slope_per_10min(t[half:], rss[half:]),
        "cpu_pct_mean": round(float(np.mean([r["cpu_pct"] for r in intervals])), 1),
        "udp_drops": intervals[-1]["udp_drops"],
    }  # fmt: skip


def _slope_per_10min(t_min: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.polyfit(t_min, y, 1)[0]) * 10, 1) if len(t_min) > 1 else float("nan")


def print_header(sessions: int) -> None:
    cells = "".join(f" {f'#{i} fps/late/A-V ms':>22}" for i in range(sessions))
    print(f"{'t s':>6} {'RSS MB':>7} {'CPU %':>6} {'rx kB':>6} {'lag ms':>6}{cells}", flush=True)


def print_row(row: dict[str, Any]) -> None:
    cells = ""
    for s in row["sessions"]:
        off = s["av_offset_mean_ms"]
        cell = f"{s['received_fps']:.1f}/{s['late']}/{'-' if off is None else f'{off:+.0f}'}"
        cells += f" {cell:>22}"
    head = f"{row['t_s']:>6.0f} {row['rss_mb']:>7.1f} {row['cpu_pct']:>6.1f}"
    lag = row["client_loop_lag"]["max_ms"]
    print(f"{head} {row['udp_rx_queue_kb']:>6.0f} {lag:>6.0f}{cells}", flush=True)


def print_summary(result: dict[str, Any]) -> None:
    srv = result["server"]
    print(f"server RSS: idle {srv['rss_idle_mb']} MB, start {srv.get('rss_start_mb')} MB, "
          f"end {srv.get('rss_end_mb')} MB, max {srv.get('rss_max_mb')} MB, "
          f"slope {srv.get('rss_slope_mb_per_10min')} MB/10 min "
          f"({srv.get('rss_slope_second_half_mb_per_10min')} over the second half); "
          f"CPU {srv.get('cpu_pct_mean')} % of a core")  # fmt: skip
    for s in result["per_session"]:
        av, lat = s["av_offset_ms"], s["server_latency_ms"]
        print(f"session {s['session']}: {s['frames']} frames, late {s['late_pct']} %, "
              f"skipped {s['skipped_pct']} %; A/V offset mean {av['mean']} ms (sd {av['sd']}, "
              f"{av['bursts']} bursts), drift {av['drift_ms_per_min']} ms/min; "
              f"server latency p50 {lat['p50']} ms, p95 {lat['p95']} ms")  # fmt: skip
    for f in result["failures"]:
        print(f"FAILED {f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--token", help="bearer token sent with each offer (`avatar token`)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="server config override, e.g. render.size=256 (repeatable)")  # fmt: skip
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the server child
    configure_ice(ServerConfig(ice_hosts=["127.0.0.1"]))  # this client offers loopback too
    overrides = ["engine.sync_marker=true", f"server.max_sessions={max(args.sessions, 1)}",
                 *args.set]  # fmt: skip
    with server_child(*overrides) as server:
        job = soak(server.url, server.proc, args.sessions, args.minutes, args.interval, args.token)
        result = asyncio.run(job)
        result["server_log_tail"] = list(server.log)[-40:]
        if result["failures"]:
            print("server log (last lines):\n" + "\n".join(list(server.log)[-40:]))
    print_summary(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
