"""The profile report folder: ``index.html``, the same plots as PNG, ``summary.json``, ``trace.json``.

``trace.json`` opens in ui.perfetto.dev or chrome://tracing (one process per session, one lane
per stage). The HTML page embeds nothing from the network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from avatar.profile.log import STAGES, FrameRecord, as_dict, summarize, trace_events

COLOURS = {
    "resample": "#8b949e", "vad": "#d2a8ff", "features": "#a5d6ff", "motion": "#79c0ff",
    "render": "#56d364", "colour": "#e3b341", "encode": "#f0883e", "send": "#ff7b72",
}  # fmt: skip
BG, FG, GRID = "#0d1117", "#e6edf3", "#30363d"


def write_report(
    out: Path, records: list[FrameRecord], fps: float, meta: dict[str, Any],
    browser_e2e_ms: list[float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write the report into ``out``; returns the summary (also ``summary.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {**meta, **summarize(records, fps)}
    if browser_e2e_ms:
        e2e = np.asarray(browser_e2e_ms)
        summary["browser_e2e_ms"] = {
            "p50": round(float(np.percentile(e2e, 50)), 1),
            "p95": round(float(np.percentile(e2e, 95)), 1), "count": len(e2e),
        }  # fmt: skip
    sessions = sorted({r.session for r in records})
    summary["sessions"] = len(sessions)
    plots = {
        "timeline.png": _timeline(records, fps, sessions[0]),
        "latency.png": _latency(records, browser_e2e_ms),
        "budget.png": _budget(records, fps),
        "stages.png": _stages(summary),
    }
    for name, fig in plots.items():
        fig.savefig(out / name, dpi=110, facecolor=BG)
        plt.close(fig)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "frames.json").write_text(json.dumps([as_dict(r) for r in records]))
    trace = {"traceEvents": trace_events(records, fps), "displayTimeUnit": "ms"}
    (out / "trace.json").write_text(json.dumps(trace))
    (out / "index.html").write_text(_html(summary, list(plots)))
    return summary


def _axes(fig_w: float = 10, fig_h: float = 3.4) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    fig.patch.set_facecolor(BG)
    ax.set_facecolor(BG)
    for side in ax.spines.values():
        side.set_color(GRID)
    ax.tick_params(colors=FG)
    ax.xaxis.label.set_color(FG)
    ax.yaxis.label.set_color(FG)
    ax.title.set_color(FG)
    ax.grid(color=GRID, linewidth=0.6, alpha=0.7)
    return fig, ax


def _timeline(records: list[FrameRecord], fps: float, session: str) -> Any:
    """Stacked stage times per frame (first 10 s of one session), budget line, late marks."""
    rs = [r for r in records if r.session == session][: int(10 * fps)]
    fig, ax = _axes(10, 3.8)
    x = np.array([r.index for r in rs])
    bottom = np.zeros(len(rs))
    for stage in STAGES:
        h = np.array([r.stages.get(stage, 0.0) for r in rs])
        ax.bar(x, h, bottom=bottom, width=1.0, color=COLOURS[stage], label=stage, linewidth=0)
        bottom += h
    ax.axhline(1000 / fps, color=FG, linestyle="--", linewidth=1)
    ax.text(x[0] if len(x) else 0, 1000 / fps * 1.02, "frame budget", color=FG, fontsize=8)
    for r in rs:
        if r.late or r.skipped:
            ax.axvline(r.index, color="#ff7b72", linewidth=1.5, alpha=0.8)
    ax.set(xlabel="frame", ylabel="ms of work", title=f"Per-frame stage time ({session})")
    ax.legend(ncol=8, fontsize=7, loc="upper left", facecolor=BG, labelcolor=FG, framealpha=0.6)
    fig.tight_layout()
    return fig


def _latency(records: list[FrameRecord], e2e: list[float] | None) -> Any:
    fig, ax = _axes(6, 3.4)
    lat = [r.latency_ms for r in records if r.latency_ms is not None]
    bins = np.linspace(0, max([*lat, *(e2e or []), 50.0]) * 1.05, 40)
    ax.hist(lat, bins=bins, color="#56d364", alpha=0.8, label="server (audio in -> frame out)")
    if e2e:
        ax.hist(e2e, bins=bins, color="#f0883e", alpha=0.7, label="browser: mic -> screen")
    ax.set(xlabel="ms", ylabel="frames", title="Latency")
    ax.legend(fontsize=8, facecolor=BG, labelcolor=FG)
    fig.tight_layout()
    return fig


def _budget(records: list[FrameRecord], fps: float) -> Any:
    """Share of the frame budget used per frame (1 s rolling mean), with late/skipped frames."""
    fig, ax = _axes(10, 3.0)
    for session in sorted({r.session for r in records}):
        rs = [r for r in records if r.session == session]
        t = np.array([r.due_ms for r in rs]) / 1000
        use = np.array([r.work_ms() for r in rs]) * fps / 1000
        k = max(int(fps), 1)
        smooth = np.convolve(use, np.ones(k) / k, mode="same") if len(use) >= k else use
        ax.plot(t, smooth * 100, linewidth=1.2, label=session)
        bad = [r.due_ms / 1000 for r in rs if r.late or r.skipped]
        ax.plot(bad, [100] * len(bad), "v", color="#ff7b72", markersize=5)
    ax.axhline(100, color=FG, linestyle="--", linewidth=1)
    ax.set(xlabel="s", ylabel="% of frame budget", title="Budget use over time (red: late/skipped)")
    if len({r.session for r in records}) <= 8:
        ax.legend(fontsize=7, facecolor=BG, labelcolor=FG)
    fig.tight_layout()
    return fig


def _stages(summary: dict[str, Any]) -> Any:
    fig, ax = _axes(6, 3.4)
    names = [s for s in STAGES if summary["stages"].get(s)]
    p50 = [summary["stages"][s]["p50"] for s in names]
    p95 = [summary["stages"][s]["p95"] for s in names]
    y = np.arange(len(names))[::-1]
    ax.barh(y, p95, color=[COLOURS[s] for s in names], alpha=0.35, label="p95")
    ax.barh(y, p50, color=[COLOURS[s] for s in names], label="p50")
    ax.set_yticks(y, names)
    ax.set(xlabel="ms per frame", title="Stages (p50 solid, p95 light)")
    fig.tight_layout()
    return fig


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _html(s: dict[str, Any], images: list[str]) -> str:
    lat = s["latency_ms"]
    e2e = s.get("browser_e2e_ms")
    late_pct = 100 * s["late"] / max(s["frames"] + s["late"], 1)
    cards = [
        ("Server latency p50 / p95", f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} ms"),
        ("Mic → screen (browser) p50 / p95",
         f"{_fmt(e2e['p50'])} / {_fmt(e2e['p95'])} ms" if e2e else "not measured"),
        ("Frames / fps", f"{s['frames']} / {_fmt(s['fps'])}"),
        ("Budget use", _fmt(100 * (s["budget_use"] or 0.0), " %")),
        ("Late / skipped / idle", f"{s['late']} ({late_pct:.2f} %) / {s['skipped']} / {s['idle']}"),
        ("Sessions", str(s["sessions"])),
    ]  # fmt: skip
    budget = s["budget_ms"]
    rows = []
    for name in STAGES:
        q = s["stages"].get(name)
        if not q:
            continue
        w50, w95 = (min(100.0, 100 * q[k] / budget) for k in ("p50", "p95"))
        rows.append(
            f"<tr><td><span class=dot style='background:{COLOURS[name]}'></span>{name}</td>"
            f"<td>{q['p50']:.2f}</td><td>{q['p95']:.2f}</td><td>{q['mean']:.2f}</td>"
            f"<td class=bar><div style='width:{w95:.1f}%;background:{COLOURS[name]}55'>"
            f"<div style='width:{100 * w50 / max(w95, 1e-9):.1f}%;background:{COLOURS[name]}'>"
            f"</div></div></td></tr>"
        )
    waits = "".join(
        f"<tr><td>{w}</td><td>{q['p50']:.2f}</td><td>{q['p95']:.2f}</td><td>{q['mean']:.2f}</td></tr>"
        for w, q in s["waits"].items() if q
    )  # fmt: skip
    meta = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
        for k, v in s.items() if k in ("command", "machine", "input", "avatar", "started")
    )  # fmt: skip
    card_html = "".join(f"<div class=card><div class=k>{k}</div><div class=v>{v}</div></div>"
                        for k, v in cards)  # fmt: skip

    def fig(name: str) -> str:
        return f"<figure><img src='{name}' alt='{name}'></figure>"

    wide = [i for i in images if i in ("timeline.png", "budget.png")]
    small = [i for i in images if i not in wide]
    imgs = "".join(fig(i) for i in wide) + "<div class=grid>" + "".join(map(fig, small)) + "</div>"
    return _PAGE.format(cards=card_html, rows="".join(rows), waits=waits, meta=meta, imgs=imgs,
                        budget=f"{budget:.1f}")  # fmt: skip


_PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8>
<title>avatar latency profile</title><style>
body{{margin:0;background:#0d1117;color:#e6edf3;font:14px/1.5 system-ui,sans-serif}}
main{{max-width:1100px;margin:auto;padding:24px}} h1{{font-size:22px;margin:0 0 4px}}
.muted{{color:#8b949e}} .cards{{display:grid;grid-template-columns:repeat(3,1fr);gap:12px;margin:18px 0}}
.card{{background:#161b22;border:1px solid #30363d;border-radius:10px;padding:12px 14px}}
.k{{color:#8b949e;font-size:12px}} .v{{font-size:20px;font-weight:600}}
table{{border-collapse:collapse;width:100%;margin:8px 0 20px}} td,th{{padding:5px 8px;border-bottom:1px solid #21262d;text-align:right}}
td:first-child,th:first-child{{text-align:left}} .bar{{width:40%}} .bar>div{{height:12px;border-radius:6px}}
.bar>div>div{{height:12px;border-radius:6px}} .dot{{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:8px}}
figure{{margin:0 0 16px;background:#0d1117;border:1px solid #30363d;border-radius:10px;overflow:hidden}} img{{width:100%;display:block}}
.grid{{display:grid;grid-template-columns:1fr 1fr;gap:16px}} a{{color:#79c0ff}}
</style></head><body><main>
<h1>Latency profile</h1><div class=muted>Every frame's stages and queue waits on the engine clock.
Files: <a href=summary.json>summary.json</a> · <a href=frames.json>frames.json</a> ·
<a href=trace.json>trace.json</a> (open in ui.perfetto.dev or chrome://tracing)</div>
<div class=cards>{cards}</div>
<h2>Where a frame's time goes <span class=muted>(ms; bar = share of the {budget} ms budget, p50 solid, p95 light)</span></h2>
<table><tr><th>stage</th><th>p50</th><th>p95</th><th>mean</th><th></th></tr>{rows}</table>
<h2>Queues <span class=muted>(ms waited)</span></h2>
<table><tr><th>queue</th><th>p50</th><th>p95</th><th>mean</th></tr>{waits}</table>
{imgs}
<h2>Run</h2><ul class=muted>{meta}</ul>
</main></body></html>
"""
