"""Command line: ``avatar motion|render|prepare``, ``avatar train motion|renderer``, ``eval``.

Every user mistake (bad file, bad option) ends as one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from avatar.backends.protocol import BACKEND_CHOICES
from avatar.config import Config, load_config
from avatar.errors import AvatarError
from avatar.resources import installed_version

log = logging.getLogger("avatar")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.set)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (default: avatar/configs/default.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set motion.fps=30",
    )


def cmd_motion(args: argparse.Namespace) -> int:
    from avatar.motion.offline import motion_file

    overrides = list(args.set)
    if args.fps:
        overrides.append(f"motion.fps={args.fps}")
    if args.backend:
        overrides.append(f"motion.backend={args.backend}")
    cfg = load_config(args.config, overrides)
    summary = motion_file(args.audio, args.output, cfg, plot=args.plot, progress=not args.quiet)
    print(summary)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from avatar.compose.offline import render_file

    overrides = list(args.set)
    for key, value in (
        ("motion.fps", args.fps),
        ("render.avatar", args.avatar),
        ("render.renderer", args.renderer),
        ("render.size", args.size),
        ("render.backend", args.backend),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(args.config, overrides)
    if (args.audio is None) == (args.text is None):
        raise SystemExit("avatar render: give a speech file or --text, not both")
    if args.text is None:
        print(render_file(args.audio, args.output, cfg, args.frames, progress=not args.quiet))
        return 0
    import tempfile

    from avatar.data.tts import speak, write_wave

    speech = speak(args.text, args.voice or "slt")
    with tempfile.TemporaryDirectory(prefix="avatar-tts-") as tmp:
        wav = Path(tmp) / "speech.wav"
        write_wave(wav, speech.audio, speech.rate)
        print(render_file(wav, args.output, cfg, args.frames, progress=not args.quiet))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from avatar.compose.renders import run_worker
    from avatar.server.logs import setup_logging

    overrides = list(args.set)
    for key, value in (("renders.redis", args.redis), ("renders.store", args.store),
                       ("renders.s3_endpoint", args.s3_endpoint)):  # fmt: skip
        if value:  # "" = the configured (or default) value
            overrides.append(f"{key}={value}")
    cfg = load_config(args.config, overrides)
    setup_logging(cfg.server.log_format, args.verbose)
    logging.getLogger("avatar.renders").setLevel(logging.INFO)  # one line per job
    run_worker(cfg, args.metrics_port, args.drain_s)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from avatar.compose.faces import prepare_avatar

    assets = prepare_avatar(args.image, args.output, args.name, args.size)
    print(
        f"{args.output}: avatar {assets.name!r}, {assets.size}x{assets.size}, "
        f"preview {args.output / 'preview.png'}"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from avatar.compose.calibrate import calibrate_avatar
    from avatar.face.store import load_avatar

    assets = calibrate_avatar(load_avatar(args.avatar))
    m = assets.info["jaw_map"]
    at = dict(zip(m["jaw"], m["weight"], strict=True))
    print(f"{assets.folder}: jaw_map written (jawOpen 0.3 -> jaw weight {at.get(0.3, '?')})")
    return 0


def cmd_train_renderer(args: argparse.Namespace) -> int:
    from avatar.compose.calibrate import calibrate_avatar
    from avatar.compose.offline import speech_blendshapes
    from avatar.face.store import load_avatar
    from avatar.gan.train import RendererTrainOptions, train_renderer

    opts = RendererTrainOptions(steps=args.steps, minutes=args.minutes, seed=args.seed,
                                width=args.width, distill_from=args.distill_from or "")  # fmt: skip
    report = train_renderer(args.video, args.out, opts, args.name, progress=not args.quiet,
                            speech_motion=speech_blendshapes)  # fmt: skip
    calibrate_avatar(load_avatar(str(args.out)))  # the new avatar's mouth, as `avatar prepare`
    m = report["held_out_mouth_l1"]
    print(
        f"{args.out}: GAN renderer trained ({report['steps']} steps, {report['minutes']} min); "
        f"held-out mouth L1 {m['generator']:.2f} vs warp alone {m['warp_alone']:.2f} vs "
        f"nearest-motion frame "
        f"{m['nearest_motion_frame']:.2f} vs reference copy {m['copy_reference']:.2f} (0-255)"
    )
    return 0


def cmd_train_motion(args: argparse.Namespace) -> int:
    from avatar.train.options import TrainOptions
    from avatar.train.pipeline import train_motion_pipeline

    opts = TrainOptions(
        corpus=args.corpus,
        out=args.out,
        hours=args.hours,
        copies=args.copies,
        minutes=args.minutes,
        seed=args.seed,
        quick=args.quick,
        rebuild=args.rebuild,
        processes=args.processes,
        dropout=args.dropout,
        spec_augment=args.spec_augment,
        vtlp=args.vtlp,
        lookahead_ms=args.lookahead_ms,
        closure_weight=args.closure_weight,
        time_masks=args.time_masks,
        talkers=args.talkers,
        talker_weight=args.talker_weight,
        init=args.init,
    )
    train_motion_pipeline(opts, _config(args))
    return 0


def cmd_eval_motion(args: argparse.Namespace) -> int:
    from avatar.train.pipeline import evaluate_weights

    evaluate_weights(_config(args), args.eval_dir, args.output)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from avatar.compose.serve import serve, serve_worker

    overrides = list(args.set)
    if args.host:
        overrides.append(f"server.host={args.host}")
    if args.port is not None:
        overrides.append(f"server.port={args.port}")
    if args.avatar:
        overrides.append(f"render.avatar={args.avatar}")
    if args.ice_host:
        overrides.append(f"server.ice_hosts={args.ice_host}")
    if args.redis:
        overrides.append(f"renders.redis={args.redis}")
        if args.role in ("node", "gateway"):
            overrides.append(f"server.cluster.redis={args.redis}")
    for flag, key in (("role", "role"), ("pool", "pool"), ("advertise", "advertise")):
        if getattr(args, flag):
            overrides.append(f"server.cluster.{key}={getattr(args, flag)}")
    if args.store:
        overrides.append(f"renders.store={args.store}")
    if args.ice_public_ip:
        overrides.append(f"server.ice_public_ip={args.ice_public_ip}")
    if args.profile:
        overrides += ["server.profile=true", "engine.sync_marker=true"]
    if args.udp_ports:
        lo, _, hi = args.udp_ports.partition("-")
        overrides.append(f"server.udp_ports=[{lo}, {hi or lo}]")
    if args.workers:
        overrides.append(f"server.workers={args.workers}")
    cfg = load_config(args.config, overrides)
    from avatar.server.logs import setup_logging

    setup_logging(cfg.server.log_format, args.verbose)
    if args.worker_of is not None:  # started by a front (avatar.server.workers)
        asyncio.run(serve_worker(cfg, args.worker_index, args.worker_socket, args.worker_of))
        return 0
    try:
        asyncio.run(serve(cfg))
    except OSError as e:  # port in use, address not available
        raise AvatarError(f"cannot serve on {cfg.server.host}:{cfg.server.port}: {e}") from None
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from avatar.clock import unix_time
    from avatar.server.auth import SECRET_ENV, load_secret, mint_token

    cfg = _config(args)
    secret = load_secret(cfg.server.auth)
    if secret is None:
        raise AvatarError(f"no secret: set {SECRET_ENV} (or server.auth.secret_file) to the "
                          "server's token secret")  # fmt: skip
    ttl = args.ttl if args.ttl is not None else cfg.server.auth.token_ttl_s
    print(mint_token(secret, ttl, unix_time(), args.subject))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from avatar.compose.profile import profile_file, profile_sessions

    overrides = list(args.set)
    if args.avatar:
        overrides.append(f"render.avatar={args.avatar}")
    if args.size:
        overrides.append(f"render.size={args.size}")
    cfg = load_config(args.config, overrides)
    if args.sessions:
        summary = profile_sessions(args.sessions, args.seconds, args.output, cfg)
    elif args.input:
        if not args.input.exists():
            raise AvatarError(f"input not found: {args.input}")
        summary = profile_file(args.input, args.output, cfg)
    else:
        raise AvatarError("give an INPUT audio file, or --sessions N for live sessions")
    lat = summary["latency_ms"]
    print(
        f"{args.output}/index.html: {summary['frames']} frames, {summary['sessions']} session(s), "
        f"server latency p50 {lat.get('p50')} / p95 {lat.get('p95')} ms, "
        f"budget use {100 * (summary['budget_use'] or 0):.0f} %, late {summary['late']}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from avatar.train.options import TrainOptions

    parser = argparse.ArgumentParser(prog="avatar", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"avatar {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("motion", help="speech audio -> motion.json (ARKit blendshapes + visemes)")
    p.add_argument("audio", type=Path, help="wav, flac, mp3, ogg/opus... any rate, mono or stereo")
    p.add_argument("-o", "--output", type=Path, default=Path("motion.json"))
    p.add_argument("--plot", type=Path, help="also write a PNG of the main channels")
    p.add_argument("--fps", type=float, help="video frame rate (default from config: 25)")
    p.add_argument("--backend", choices=BACKEND_CHOICES)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_motion)

    r = sub.add_parser("render", help="speech audio -> talking-avatar mp4 (audio muxed in sync)")
    r.add_argument("audio", type=Path, nargs="?",
                   help="wav, flac, mp3, ogg/opus... any rate, mono or stereo")  # fmt: skip
    r.add_argument("--text", help="speak this text instead (local TTS: festival)")
    r.add_argument("--voice", choices=["slt", "kal", "ked"], help="TTS voice (default slt)")
    r.add_argument("-o", "--output", type=Path, default=Path("out.mp4"))
    r.add_argument("--avatar", help="bundled avatar name or a folder from `avatar prepare`")
    r.add_argument("--renderer", choices=["warp", "gan"])
    r.add_argument("--fps", type=float, help="video frame rate (default 25)")
    r.add_argument("--size", type=int, help="video side in pixels (default 512)")
    r.add_argument("--backend", choices=BACKEND_CHOICES, help="inference backend for the GAN")
    r.add_argument("--frames", type=Path, help="also write every frame as PNG into this folder")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _common(r)
    r.set_defaults(func=cmd_render)

    sv = sub.add_parser("serve", help="the real-time server: browser microphone in, avatar out")
    sv.add_argument("--host", help="HTTP address (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="HTTP port (default 8080)")
    sv.add_argument("--avatar", help="default avatar for sessions that do not choose one")
    sv.add_argument(
        "--ice-host", action="append", metavar="ADDR",
        help="address to gather and offer in ICE candidates (repeat; 127.0.0.1 = loopback only)",
    )  # fmt: skip
    sv.add_argument("--ice-public-ip", help="public address written into candidates (1:1 NAT)")
    sv.add_argument("--udp-ports", metavar="LOW-HIGH", help="UDP port range for ICE sockets")
    sv.add_argument(
        "--workers", metavar="N|auto",
        help="session processes behind one front (default 1: this process; auto = one per CPU)",
    )  # fmt: skip
    for flag, kind in (("--worker-of", int), ("--worker-index", int), ("--worker-socket", Path)):
        sv.add_argument(flag, type=kind, help=argparse.SUPPRESS)  # a front starts its workers
    sv.add_argument(
        "--profile", action="store_true",
        help="latency profiling: per-frame stage times to the page (overlay), sync marker on",
    )  # fmt: skip
    sv.add_argument("--redis", help="queue render jobs for `avatar worker`s (renders.redis); "
                    "with --role, the node pool's Redis too (server.cluster.redis)")  # fmt: skip
    sv.add_argument("--store", help="render results: a folder or s3://bucket[/prefix]")
    sv.add_argument("--role", choices=("single", "node", "gateway"),
                    help="many machines (docs/deploy.md): a node of a pool registered in "
                    "Redis, or a gateway placing offers on them (server.cluster.role)")  # fmt: skip
    sv.add_argument("--pool", help="the node pool: this node's, or a gateway's default (cpu)")
    sv.add_argument("--advertise", help="how gateways reach this node's HTTP, e.g. "
                    "http://10.0.0.5:8080 (default: http://host:port)")  # fmt: skip
    _common(sv)
    sv.set_defaults(func=cmd_serve)

    wk = sub.add_parser("worker", help="run queued render jobs (POST /v1/renders) from Redis")
    wk.add_argument("--redis", help="the queue, e.g. redis://127.0.0.1:6379/0 (renders.redis)")
    wk.add_argument("--store", help="results: a folder or s3://bucket[/prefix] (renders.store)")
    wk.add_argument("--s3-endpoint", help="an S3-compatible server's URL (renders.s3_endpoint)")
    wk.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    wk.add_argument("--drain-s", type=float, default=30.0,
                    help="on SIGTERM a running job may finish this long")  # fmt: skip
    _common(wk)
    wk.set_defaults(func=cmd_worker)

    tk = sub.add_parser("token", help="mint a session token for a server that requires them")
    tk.add_argument("--ttl", type=int, help="lifetime in seconds (default server.auth.token_ttl_s)")
    tk.add_argument("--subject", default="", help="who the token is for (logged by the server)")
    _common(tk)
    tk.set_defaults(func=cmd_token)

    pf = sub.add_parser(
        "profile", help="latency report: a file through the live engine, or N sessions"
    )
    pf.add_argument("input", type=Path, nargs="?", help="speech audio, streamed at real time")
    pf.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    pf.add_argument("--sessions", type=int, help="N live aiortc sessions on loopback instead")
    pf.add_argument("--seconds", type=float, default=20.0, help="length of the live sessions")
    pf.add_argument("--avatar", help="avatar (default from config)")
    pf.add_argument("--size", type=int, help="video side (default 512)")
    _common(pf)
    pf.set_defaults(func=cmd_profile)

    pp = sub.add_parser("prepare", help="portrait photo -> avatar folder (face found and aligned)")
    pp.add_argument("image", type=Path, help="a photo with one face (jpg, png, webp...)")
    pp.add_argument("-o", "--output", type=Path, required=True, help="avatar folder to write")
    pp.add_argument("--name", help="avatar name (default: the folder name)")
    pp.add_argument("--size", type=int, default=512, help="portrait side in pixels")
    pp.set_defaults(func=cmd_prepare)

    pc = sub.add_parser("calibrate", help="measure an avatar's mouth again (its jaw_map)")
    pc.add_argument("avatar", help="an avatar folder (e.g. one prepared by an older version)")
    pc.set_defaults(func=cmd_calibrate)

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="what", required=True)
    tr = train.add_parser("renderer", help="learn a person's mouth from a talking-head video (GAN)")
    tr.add_argument("video", type=Path, help="a video of one person talking, face visible")
    tr.add_argument("-o", "--out", type=Path, required=True, help="avatar folder to write")
    tr.add_argument("--name", help="avatar name (default: the folder name)")
    tr.add_argument("--steps", type=int, default=2400)
    tr.add_argument("--minutes", type=float, default=22.0, help="training time budget")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--width", type=int, default=24, help="generator channels (a multiple of 8)")
    tr.add_argument("--distill-from", metavar="GAN.pt", help="also match this trained "
                    "generator's outputs (a smaller student learns from it)")  # fmt: skip
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=cmd_train_renderer)

    t = train.add_parser("motion", help="build the synthetic corpus and train audio-to-motion")
    t.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    t.add_argument("-o", "--out", type=Path, default=Path("runs/motion"))
    t.add_argument("--hours", type=float, default=4.0, help="hours of raw synthetic speech")
    t.add_argument("--copies", type=int, default=2, help="augmented copies per utterance")
    t.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--processes", type=int, default=2)
    t.add_argument("--quick", action="store_true", help="tiny corpus and model (tests, < 1 min)")
    t.add_argument("--rebuild", action="store_true", help="rebuild the corpus even if present")
    d = TrainOptions(Path(), Path())
    t.add_argument("--dropout", type=float, default=d.dropout, help="dropout in the blocks")
    t.add_argument(
        "--spec-augment",
        action=argparse.BooleanOptionalAction,
        default=d.spec_augment,
        help="mask random mel bands",
    )
    t.add_argument(
        "--time-masks",
        action=argparse.BooleanOptionalAction,
        default=d.time_masks,
        help="SpecAugment also masks short stretches of time",
    )
    t.add_argument("--vtlp", type=float, default=d.vtlp, help="max frequency warp")
    t.add_argument(
        "--lookahead-ms",
        type=int,
        default=d.lookahead_ms,
        help="audio heard beyond each frame (multiple of 20, at most 80)",
    )
    t.add_argument(
        "--closure-weight", type=float, default=d.closure_weight, help="loss weight of P/B/M frames"
    )
    t.add_argument("--talkers", type=Path, help="real talkers' shards (build_talker_corpus.py)")
    t.add_argument("--talker-weight", type=float, default=d.talker_weight,
                   help="loss weight of the real talkers' jaw")  # fmt: skip
    t.add_argument("--init", type=Path, help="a motion.pt to go on from (fine-tuning)")
    _common(t)
    t.set_defaults(func=cmd_train_motion)

    ev = sub.add_parser("eval", help="evaluate a model").add_subparsers(dest="what", required=True)
    e = ev.add_parser("motion", help="metrics on held-out voices and real human speech")
    e.add_argument("--eval-dir", type=Path, default=Path("data/corpus/eval"))
    e.add_argument("-o", "--output", type=Path, help="write the metrics as JSON")
    _common(e)
    e.set_defaults(func=cmd_eval_motion)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
