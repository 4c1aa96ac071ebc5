"""The mouth judged on real talkers, read sentences and isolated words, on several faces.

Renders every clip on every face in two modes (buffered: the mouth leads its sound by
``engine.lead_ms``; live: no lead), reads every frame back with face mesh
(``scripts/mouth_traces.py``, two worker processes) and prints three markdown tables: the avatar's
mouth against the real talker's own mouth for the same sound, against the pocketsphinx alignment
of read sentences, and of isolated words. Writes the numbers to ``--output`` under ``--tag`` and a
contact sheet per face (open vowels, P/B/M closures and pauses in sentences).

``--code DIR`` renders with another checkout's package (e.g. a git worktree of an older commit)
through the same worker and judges it with this checkout's measuring code: before/after in one
script. Media are fetched into ``--media-dir`` on first use (``avatar/data/media.py``).
Usage: python scripts/eval_mouth.py [--tag after] [--split dev|test|all] [--faces a,b]
                                    [--code DIR] [--sets talkers,sentences,words]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avatar.compose import contact
from avatar.compose.mouth_eval import (
    FACE_BY_NAME,
    FACES,
    AlignedResult,
    Face,
    aligned_result,
    avatar_spec,
    talker_clips,
    talker_result,
)
from avatar.compose.talker_eval import TalkerResult
from avatar.config import Config, load_config
from avatar.data.media import DEFAULT_MEDIA_DIR
from avatar.data.sentences import sentence_set
from avatar.data.talkers import TalkerClip
from avatar.data.types import AlignedUtterance
from avatar.face.image import load_rgb, save_rgb
from avatar.face.store import load_avatar
from avatar.train.pipeline import human_sets

SHEET_EXAMPLES = 3
WORKER = Path(__file__).with_name("mouth_traces.py")


def stem(kind: str, name: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def write_clips(folder: Path, talkers: list[TalkerClip], utts: dict[str, list[AlignedUtterance]],
                sheet_times: dict[str, list[float]]) -> None:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    for c in talkers:
        np.savez(folder / f"{stem('t', c.name)}.npz", audio=c.audio, rate=c.sample_rate,
                 times=np.zeros(0))  # fmt: skip
    for kind, group in utts.items():
        for u in group:
            key = stem(kind, u.source)
            np.savez(folder / f"{key}.npz", audio=u.audio, rate=u.sample_rate,
                     times=np.asarray(sheet_times.get(key, []), np.float64))  # fmt: skip


def run_workers(job: Mapping[str, Any], out: Path, code: Path | None, processes: int) -> None:
    """The faces split over ``processes`` workers, each with ``code`` first on its path."""
    faces = list(job["faces"])
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(processes):
        part = {**job, "faces": faces[k::processes]}
        if not part["faces"]:
            continue
        path = out / f"job-{k}.json"
        path.write_text(json.dumps(part))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(path), str(out)], env=env))
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a render worker failed (see above)")


def load_traces(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.stem: dict(np.load(p)) for p in folder.glob("*.npz")}


def sheet_examples(utts: list[AlignedUtterance]) -> list[tuple[str, AlignedUtterance, float]]:
    """(kind, utterance, time) for the contact sheets: the same clips in every run."""
    return [(kind, u, t) for kind, visemes in contact.KINDS
            for u, t in contact.pick_examples(utts, visemes, SHEET_EXAMPLES)]  # fmt: skip


def contact_sheet(face: Face, spec: str, folder: Path, examples: list[tuple[str, AlignedUtterance,
                  float]], lead_s: float, title: str) -> np.ndarray:  # fmt: skip
    """Rows of (whole frame, mouth close-up) pairs at open vowels, closures and pauses."""
    assets = load_avatar(spec)
    rows: dict[str, list[np.ndarray]] = {}
    for kind, utt, t in examples:
        shown = round(t - lead_s, 3)  # the frame that shows that sound
        img = load_rgb(folder / f"{stem('s', utt.source)}@{shown:.3f}.png")
        label = f"'{utt.text[:14]}' {t:.2f}s"
        rows.setdefault(kind, []).extend(
            [contact.label(contact.whole_tile(img), label),
             contact.label(contact.mouth_closeup(img, assets), kind)]
        )  # fmt: skip
    width = 2 * SHEET_EXAMPLES * contact.TILE
    blank = np.zeros((contact.TILE, contact.TILE, 3), np.uint8)
    grid = np.vstack(
        [np.hstack(r + [blank] * (2 * SHEET_EXAMPLES - len(r))) for r in rows.values()]
    )
    return np.vstack([contact.title_strip(title, width), grid])


def talker_table(rows: dict[tuple[str, str], TalkerResult]) -> str:
    out = ["| face | mode | clips | r at best lag (mean of clips) | pooled r | r at 0 lag "
           "| lag ms | opening p90 avatar / real | ratio |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (face, mode), r in rows.items():
        out.append(f"| {face} | {mode} | {r.clips} | **{np.mean(r.clip_r):.3f}** | {r.r:.3f} "
                   f"| {r.r0:.3f} | {1000 * r.lag_s:+.0f} | {r.avatar_p90:.3f} / "
                   f"{r.real_p90:.3f} | **{r.p90_ratio:.2f}** |")  # fmt: skip
    return "\n".join(out)


def aligned_table(rows: dict[tuple[str, str], AlignedResult]) -> str:
    out = ["| face | mode | frames | r (where a talker shows it) | r (where the phones sound) "
           "| model r | P/B/M closed | silence gap | opening p90 (speech) |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (face, mode), res in rows.items():
        a, t, b = res.own, res.talker, res.acoustic
        out.append(f"| {face} | {mode} | {a.frames} | **{t.gap_r:.3f}** | {b.gap_r:.3f} "
                   f"| {t.model_r:.3f} | **{a.pbm_closed:.2f}** | {a.silence_gap:.3f} "
                   f"| {a.speech_open_p90:.3f} |")  # fmt: skip
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tag", default="current", help="top-level JSON key, e.g. before/after")
    p.add_argument("--faces", default=",".join(f.name for f in FACES))
    p.add_argument("--sets", default="talkers,sentences,words")
    p.add_argument("--split", default="dev", choices=("dev", "test", "all"))
    p.add_argument("--code", type=Path, help="render with this checkout's package instead")
    p.add_argument("--modes", default="buffered,live")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override of every render, e.g. motion.weights=PATH")  # fmt: skip
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    p.add_argument("--faces-dir", type=Path, default=Path("data/faces"))
    p.add_argument("--work", type=Path, help="keep the renders here (default: a temp folder)")
    p.add_argument("--report-only", action="store_true",
                   help="no rendering: the tables from the renders kept in --work")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, default=Path("docs/mouth_eval.json"))
    p.add_argument("--img-dir", type=Path, default=Path("docs/img/faces"))
    return p.parse_args()


def modes_for(args: argparse.Namespace, cfg: Config) -> dict[str, tuple[list[str], float]]:
    """Mode -> (worker overrides, the mouth's lead in s). An older checkout knows no lead: it
    runs once and its result stands for both modes."""
    wanted = [m for m in args.modes.split(",") if m]
    if args.code is not None:
        return {m: (list(args.set), 0.0) for m in wanted}
    live = ["engine.lead_ms=0", f"motion.buffered_weights={cfg.motion.weights}"]  # a microphone
    table = {"buffered": (list(args.set), cfg.engine.lead_ms / 1000),
             "live": ([*args.set, *live], 0.0)}  # fmt: skip
    return {m: table[m] for m in wanted}


def main() -> None:
    args = parse_args()
    faces = [FACE_BY_NAME[n] for n in args.faces.split(",") if n]
    sets = set(args.sets.split(","))
    cfg = load_config(None, args.set)
    fps, lead_ms = cfg.motion.fps, cfg.engine.lead_ms
    talkers = talker_clips(args.split, args.media_dir) if "talkers" in sets else []
    utts: dict[str, list[AlignedUtterance]] = {}
    if "sentences" in sets:
        utts["s"] = sentence_set(None if args.split == "all" else args.split, args.media_dir)
    if "words" in sets:
        utts["w"] = human_sets()["human-opus"]
    examples = sheet_examples(utts["s"]) if "s" in utts else []
    times: dict[str, list[float]] = {}
    for _, u, t in examples:
        times.setdefault(stem("s", u.source), []).extend(
            [round(t, 3), round(t - lead_ms / 1000, 3)]
        )
    specs = {f.name: avatar_spec(f, args.faces_dir, args.media_dir) for f in faces}
    modes = modes_for(args, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        if not args.report_only:
            write_clips(work / "clips", talkers, utts, times)
            job = {"clips": str(work / "clips"), "modes": {m: o for m, (o, _) in modes.items()},
                   "faces": [{"name": f.name, "avatar": specs[f.name], "renderer": f.renderer,
                              "size": f.size} for f in faces]}  # fmt: skip
            run_workers(job, work / "out", args.code, args.processes)
        report(args, faces, specs, modes, talkers, utts, examples, work / "out", fps)


def report(args: argparse.Namespace, faces: list[Face], specs: dict[str, str],
           modes: dict[str, tuple[list[str], float]], talkers: list[TalkerClip],
           utts: dict[str, list[AlignedUtterance]], examples: list[tuple[str, AlignedUtterance,
           float]], out: Path, fps: float) -> None:  # fmt: skip
    talk_rows: dict[tuple[str, str], TalkerResult] = {}
    aligned: dict[str, dict[tuple[str, str], AlignedResult]] = {k: {} for k in utts}
    for face in faces:
        for mode, (_, lead_s) in modes.items():
            traces = load_traces(out / face.name / mode)
            if talkers:
                t = {c.name: traces[stem("t", c.name)] for c in talkers}
                talk_rows[(face.name, mode)] = talker_result(face.name, talkers, t, fps)
            for kind, group in utts.items():
                by_source = {u.source: traces[stem(kind, u.source)] for u in group}
                aligned[kind][(face.name, mode)] = aligned_result(face.name, group, by_source,
                                                                  fps, lead_s)  # fmt: skip
        if examples:
            mode, (_, lead_s) = next(iter(modes.items()))
            title = (f"{face.name} ({face.renderer} {face.size}), {args.tag}, {mode}: read "
                     "sentences; whole frame and mouth close-up")  # fmt: skip
            img = contact_sheet(face, specs[face.name], out / face.name / mode, examples,
                                lead_s, title)  # fmt: skip
            args.img_dir.mkdir(parents=True, exist_ok=True)
            save_rgb(args.img_dir / f"{face.name}-{args.tag}.png", img)
    text = []
    if talk_rows:
        text += [f"### Real talkers ({len(talkers)} clips, {args.split})", talker_table(talk_rows)]
    names = {"s": "Read sentences", "w": "Isolated words (Debian recordings)"}
    for kind, rows in aligned.items():
        text += [f"### {names[kind]} ({len(utts[kind])} utterances)", aligned_table(rows)]
    print("\n\n".join(text))
    save(args, talk_rows, aligned)


def _clean(d: Mapping[str, object]) -> dict[str, object]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def save(args: argparse.Namespace, talk_rows: dict[tuple[str, str], TalkerResult],
         aligned: dict[str, dict[tuple[str, str], AlignedResult]]) -> None:  # fmt: skip
    data = json.loads(args.output.read_text()) if args.output.exists() else {}
    run = data.setdefault(args.tag, {}).setdefault(args.split, {})
    for (face, mode), r in talk_rows.items():
        row = {**_clean(r.as_dict()), "mean_clip_r": round(float(np.mean(r.clip_r)), 4)}
        run.setdefault("talkers", {}).setdefault(face, {})[mode] = row
    for kind, rows in aligned.items():
        for (face, mode), res in rows.items():
            row = {"own": _clean(res.own.as_dict()), "talker": _clean(res.talker.as_dict()),
                   "acoustic": _clean(res.acoustic.as_dict())}  # fmt: skip
            run.setdefault({"s": "sentences", "w": "words"}[kind], {}).setdefault(face, {})[
                mode
            ] = row
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.output} [{args.tag}/{args.split}]")


if __name__ == "__main__":
    main()
