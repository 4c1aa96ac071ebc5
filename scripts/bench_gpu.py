"""Both models on a GPU in fp32, fp16 and int8: ms per call and per session-frame, and parity.

    python scripts/bench_gpu.py [--quick] [--device cuda|cpu] [--batches 1,8,32] [--seconds S]
                                [--avatar carphone] [--int8-motion PATH] [--int8-gan PATH]
                                [--triton]

For the motion model (``avatar/weights/motion.onnx`` / ``motion.pt``: streaming calls of 40 ms
of real speech, one video frame per session, the state fed back, batch = sessions in one call)
and the GAN generator (the avatar's ``gan.onnx`` / ``gan.pt``: one mouth crop per session-frame)
it times, at each batch:

- ``torch-fp32``: the checkpoint on the device, eager;
- ``torch-fp16``: the server's ``torch-cuda`` backend (half weights, fp16 autocast, CUDA graphs);
- ``torch-int8``: not run: torch has no int8 inference on CUDA without extra libraries;
- ``ort-fp32``: onnxruntime on the CUDA provider (the CPU one with ``--device cpu`` or where
  onnxruntime-gpu is not installed: the backend column says ``onnxruntime``, not ``-cuda``);
- ``ort-fp16``: the ONNX graph converted to fp16 (float32 inputs and outputs kept) with
  ``onnxconverter_common`` or the copy of its converter in ``onnxruntime.transformers``;
- ``triton-ort-fp32`` (with ``--triton``; needs ``pip install nvidia-pytriton``): the ONNX model
  behind a Triton server that this script starts (PyTriton; onnxruntime with ``ort-fp32``'s
  providers inside it, Triton's dynamic batcher on), called through
  :class:`avatar.backends.triton.TritonBackend`: ``ort-fp32``'s time plus the server's round
  trip (gRPC, the Python-backend stub, the state of the motion model both ways);
- ``ort-int8``: a QDQ model made here by ``onnxruntime.quantization.quantize_static`` (symmetric
  int8, per-channel weights; calibrated on real speech for the motion model, on random crops for
  the GAN), or the file given by ``--int8-motion`` / ``--int8-gan``; on the TensorRT provider
  when onnxruntime has it (real int8 kernels), else on CUDA (which runs QDQ as dequantize + float
  kernels: a correctness check, not an int8 speed).

The reference for every variant's max abs difference is onnxruntime CPU fp32 on the same inputs
(for the motion model over a run of streaming calls, so drift in the fed-back state counts). A
variant that cannot run prints why and the script goes on (exit 0). ``--device cpu`` is a dry run
with few calls, to check the script where there is no GPU; ``--quick`` keeps a GPU run to about a
minute. Prints markdown tables and writes JSON to ``--out`` (default ``$OUT/bench_gpu.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar.audio.features import log_mel
from avatar.audio.io import iter_audio
from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.backends.torch import TorchCudaBackend
from avatar.config import PACKAGE_DIR, FeatureConfig
from avatar.face.store import load_avatar
from avatar.motion.channels import BATCH_AXES, OUTPUT_NAMES, STATE_NAMES
from avatar.motion.stream import initial_state

MEL_PER_CALL = 4  # 40 ms of audio at 100 mel frames/s: one 25 fps video frame
TORCH_INT8 = "torch has no int8 inference on CUDA without extra libraries (e.g. torchao/TensorRT)"


@dataclass(slots=True)
class Model:
    """One network under test: its files, names, and how a session's calls look."""

    name: str
    onnx: Path
    pt: Path
    module: Callable[[], Any]  # a fresh fp32 torch module on the CPU
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    meta: dict[str, Any]
    calls: Callable[[int, int], list[dict[str, np.ndarray]]]  # (batch, n) -> n calls' inputs
    feedback: dict[str, str] = field(default_factory=dict)  # output -> the input it feeds
    compared: tuple[str, ...] = ()


# -- the two models ------------------------------------------------------------------------------


def motion_model() -> Model:
    import torch

    from avatar.motion.model import MotionTransformer

    onnx, pt = PACKAGE_DIR / "weights/motion.onnx", PACKAGE_DIR / "weights/motion.pt"
    meta = OrtBackend(onnx).meta
    mel = log_mel(speech_16k(), FeatureConfig(**meta["features"]))  # (T, n_mels)

    def calls(batch: int, n: int) -> list[dict[str, np.ndarray]]:
        state = {k: np.concatenate([v] * batch, axis=BATCH_AXES.get(k, 0))
                 for k, v in initial_state(meta).items()}  # fmt: skip
        out = []
        for i in range(n):  # session b is 37 frames further into the speech than session b-1
            rows = [(i * MEL_PER_CALL + 37 * b) % (len(mel) - MEL_PER_CALL) for b in range(batch)]
            out.append({"mel": np.stack([mel[r : r + MEL_PER_CALL] for r in rows]), **state})
        return out

    def module() -> Any:
        ckpt = torch.load(pt, map_location="cpu", weights_only=False)
        return MotionTransformer.from_checkpoint(ckpt).eval()

    outputs = (*OUTPUT_NAMES, *(f"{n}_out" for n in STATE_NAMES))
    feedback = {f"{n}_out": n for n in STATE_NAMES}
    return Model("motion", onnx, pt, module, ("mel", *STATE_NAMES), outputs, meta, calls,
                 feedback, OUTPUT_NAMES)  # fmt: skip


def gan_model(avatar: str) -> Model:
    import torch

    from avatar.face.sketch import INPUT_NAMES, OUTPUT_NAMES
    from avatar.gan.generator import MouthGenerator

    assets = load_avatar(avatar)
    onnx, pt = assets.file("gan.onnx"), assets.file("gan.pt")
    if onnx is None or pt is None:
        raise SystemExit(f"avatar {avatar!r} has no gan.onnx and gan.pt")
    meta = OrtBackend(onnx).meta
    size, code = meta["dims"]["size"], meta["dims"]["code"]

    def calls(batch: int, n: int) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(batch)
        return [{
            "warped": rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32),
            "sketch": rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32),
            "code": rng.uniform(0, 1, (batch, code)).astype(np.float32),
        } for _ in range(n)]  # fmt: skip

    def module() -> Any:
        ckpt = torch.load(pt, map_location="cpu", weights_only=False)
        return MouthGenerator.from_checkpoint(ckpt)

    return Model("gan", onnx, pt, module, INPUT_NAMES, OUTPUT_NAMES, meta, calls,
                 compared=OUTPUT_NAMES)  # fmt: skip


def speech_16k() -> np.ndarray:
    return np.concatenate(list(iter_audio(PACKAGE_DIR / "assets/sample.ogg", rate=16000)))


# -- variants: each makes a backend or raises with the reason it cannot ------------------------


class TorchEager:
    """A torch module in fp32 on ``device`` behind the backend protocol (no graphs)."""

    name = "torch"

    def __init__(self, model: Model, device: str) -> None:
        import torch

        self._torch, self._device = torch, device
        self._module = model.module().to(device)
        self.input_names, self.output_names = model.input_names, model.output_names
        self.meta: dict[str, Any] = model.meta

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self._device)
                    for n in self.input_names]  # fmt: skip
            outs = self._module(*args)
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            pairs = zip(self.output_names, outs, strict=True)
            return {n: o.float().cpu().numpy() for n, o in pairs}


def torch_fp16(model: Model, device: str) -> InferenceBackend:
    return TorchCudaBackend(model.module(), model.input_names, model.output_names, model.meta,
                            cuda_graphs=device == "cuda", device=device)  # fmt: skip


def ort_providers(device: str, tensorrt: bool = False) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:  # parity still comes; backend "onnxruntime" says CPU
        return ["CPUExecutionProvider"]
    trt = ["TensorrtExecutionProvider"] if tensorrt and "TensorrtExecutionProvider" in have else []
    return [*trt, "CUDAExecutionProvider"]


def to_fp16(src: Path, dst: Path) -> Path:
    """The graph in fp16 with float32 inputs and outputs (casts at the edges)."""
    import onnx

    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxruntime.transformers.float16 import convert_float_to_float16
        except ImportError:
            raise RuntimeError("no fp16 converter: pip install onnxconverter-common") from None
    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    return dst


def to_int8(model: Model, dst: Path, calibration: list[dict[str, np.ndarray]]) -> Path:
    """A QDQ int8 model (symmetric, per-channel weights, as TensorRT takes it), calibrated on
    ``calibration`` (min/max of the activations); the metadata is carried over. Only the inputs
    of convolutions and matrix products are quantized: an attention mask's large negative bias
    or a residual sum in int8 would lose everything else."""
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about every 1-D weight
    quantize_static(str(model.onnx), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, extra_options={"ActivationSymmetric": True,
                                                     "WeightSymmetric": True})  # fmt: skip
    proto, src = onnx.load(str(dst)), onnx.load(str(model.onnx), load_external_data=False)
    if not proto.metadata_props:
        proto.metadata_props.extend(src.metadata_props)
        onnx.save(proto, str(dst))
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def triton_ort(model: Model, device: str, max_batch: int, stack: contextlib.ExitStack) -> Any:
    """``model.onnx`` served by a Triton server started here (stopped with ``stack``)."""
    from avatar.backends.triton import (
        TritonBackend,
        bind_onnx,
        fix_python_backend_env,
        import_pytriton,
    )

    import_pytriton()  # says why it cannot run before anything starts
    from pytriton.triton import Triton, TritonConfig

    fix_python_backend_env()
    grpc = free_port()
    config = TritonConfig(http_port=free_port(), grpc_port=grpc, metrics_port=free_port())
    triton = stack.enter_context(Triton(config=config))
    bind_onnx(triton, model.name, model.onnx, providers=ort_providers(device),
              batch_axes=BATCH_AXES, max_batch=max_batch)  # fmt: skip
    triton.run()
    backend = TritonBackend(f"grpc://127.0.0.1:{grpc}", model.name, model.meta,
                            batch_axes=BATCH_AXES)  # fmt: skip
    stack.callback(backend.close)
    return backend


def variants(model: Model, device: str, args: argparse.Namespace, tmp: Path,
             calibration: list[dict[str, np.ndarray]],
             stack: contextlib.ExitStack) -> dict[str, Callable[[], Any]]:  # fmt: skip
    def ort(path: Path, tensorrt: bool = False) -> InferenceBackend:
        return OrtBackend(path, providers=ort_providers(device, tensorrt))

    def int8() -> InferenceBackend:
        given: Path | None = getattr(args, f"int8_{model.name}")
        path = given or to_int8(model, tmp / f"{model.name}.int8.onnx", calibration)
        return ort(path, tensorrt=args.tensorrt)

    def torch_int8() -> InferenceBackend:
        raise RuntimeError(TORCH_INT8)

    made: dict[str, Callable[[], Any]] = {
        "torch-fp32": lambda: TorchEager(model, device),
        "torch-fp16": lambda: torch_fp16(model, device),
        "torch-int8": torch_int8,
        "ort-fp32": lambda: ort(model.onnx),
        "ort-fp16": lambda: ort(to_fp16(model.onnx, tmp / f"{model.name}.fp16.onnx")),
        "ort-int8": int8,
    }
    if args.triton:
        made["triton-ort-fp32"] = lambda: triton_ort(model, device, max(args.batches), stack)
    return made


# -- running a variant: a session's calls in order, the state fed back ---------------------------


def stream(
    backend: InferenceBackend, model: Model, calls: list[dict[str, np.ndarray]]
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The compared outputs of ``calls`` run in order (each call's state from the one before)
    and the inputs that were fed."""
    outs: list[dict[str, np.ndarray]] = []
    fed: list[dict[str, np.ndarray]] = []
    state: dict[str, np.ndarray] = {}
    for call in calls:
        feed = {**call, **state}
        out = backend.run(feed)
        fed.append(feed)
        outs.append({n: out[n].copy() for n in model.compared})
        state = {model.feedback[o]: out[o].copy() for o in model.feedback}
    return outs, fed


def max_diff(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> float:
    return max(float(np.abs(g[n] - w[n]).max()) for g, w in zip(got, want, strict=True) for n in g)


def ms_per_call(
    backend: InferenceBackend, model: Model, calls: list[dict[str, np.ndarray]],
    seconds: float, min_calls: int,
) -> float:  # fmt: skip
    state: dict[str, np.ndarray] = {}
    n, t0 = -3, 0.0  # three warm-up calls (CUDA graphs are captured on the first)
    while n < min_calls or time.perf_counter() - t0 < seconds:
        if n == 0:
            t0 = time.perf_counter()
        out = backend.run({**calls[n % len(calls)], **state})
        state = {model.feedback[o]: out[o] for o in model.feedback}
        n += 1
    return (time.perf_counter() - t0) * 1000 / n


def bench_model(model: Model, device: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    reference = OrtBackend(model.onnx)  # onnxruntime CPU fp32
    want = {b: stream(reference, model, model.calls(b, args.steps)) for b in args.batches}
    # 2.5 s of one session's speech: the attention caches fill as they do in a call
    calibration = stream(reference, model, model.calls(1, 64))[1]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        for name, make in variants(model, device, args, Path(tmp), calibration, stack).items():
            try:
                backend = make()
                for b in args.batches:
                    got, _ = stream(backend, model, model.calls(b, args.steps))
                    ms = ms_per_call(backend, model, model.calls(b, 4), args.seconds, args.calls)
                    rows.append({"model": model.name, "variant": name, "batch": b,
                                 "backend": backend.name, "ms_per_call": ms,
                                 "ms_per_session_frame": ms / b,
                                 "max_abs_diff": max_diff(got, want[b][0])})  # fmt: skip
            except Exception as e:  # report what could not run, keep going
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                rows.append({"model": model.name, "variant": name, "error": reason})
            print(f"  {model.name} {name}: done", flush=True)
    return rows


# -- report --------------------------------------------------------------------------------------


def show(model: str, rows: list[dict[str, Any]], batches: list[int]) -> None:
    what = ("streaming call: 40 ms of speech per session, state fed back" if model == "motion"
            else "one mouth crop per session")  # fmt: skip
    print(f"\n## {model} ({what})\n")
    print("| variant | backend | batch | ms/call | ms/session-frame | max abs diff vs fp32 |")
    print("|---|---|---|---|---|---|")
    done = [r for r in rows if "error" not in r]
    for r in done:
        print(f"| {r['variant']} | {r['backend']} | {r['batch']} | {r['ms_per_call']:.3f} | "
              f"{r['ms_per_session_frame']:.4f} | {r['max_abs_diff']:.2e} |")  # fmt: skip
    base = {r["batch"]: r["ms_per_call"] for r in done if r["variant"] == "torch-fp32"}
    print("\nspeed-up over torch-fp32 at the same batch (its ms / the variant's ms)\n")
    print("| variant | backend | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for variant, backend in dict.fromkeys((r["variant"], r["backend"]) for r in done):
        ms = {r["batch"]: r["ms_per_call"] for r in done if r["variant"] == variant}
        cells = [f"x{base[b] / ms[b]:.2f}" if b in ms and b in base else "-" for b in batches]
        print(f"| {variant} | {backend} | " + " | ".join(cells) + " |")
    for r in rows:
        if "error" in r:
            print(f"- {r['variant']}: not run: {r['error']}")


def describe(device: str) -> str:
    import onnxruntime as ort
    import torch

    on_gpu = device == "cuda" and torch.cuda.is_available()
    gpu = f" {torch.cuda.get_device_name()}" if on_gpu else ""
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    note = "" if cuda or device == "cpu" else "; onnxruntime has no CUDA provider: ort-* on CPU"
    return (f"{platform.machine()} {os.cpu_count()} CPUs; device {device}{gpu}{note}; "
            f"torch {torch.__version__}; onnxruntime {ort.__version__} "
            f"({', '.join(ort.get_available_providers())})")  # fmt: skip


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="short timings (a GPU run of ~1 min)")
    ap.add_argument("--batches", help="sessions per call (default 1,8,32; 1,2 on cpu)")
    ap.add_argument("--seconds", type=float, help="timing per variant and batch")
    ap.add_argument("--calls", type=int, default=3, help="timed calls at least")
    ap.add_argument("--steps", type=int, help="calls compared with the reference")
    ap.add_argument("--models", default="motion,gan")
    ap.add_argument("--avatar", default="carphone")
    ap.add_argument("--int8-motion", type=Path, help="an int8 motion.onnx to use as it is")
    ap.add_argument("--int8-gan", type=Path, help="an int8 gan.onnx to use as it is")
    ap.add_argument("--tensorrt", action="store_true", help="int8 on onnxruntime's TensorRT "
                    "provider where it has one (builds engines: slow)")  # fmt: skip
    ap.add_argument("--triton", action="store_true", help="also time the ONNX models behind a "
                    "Triton server started here (pip install nvidia-pytriton)")  # fmt: skip
    ap.add_argument("--out", type=Path, help="JSON (default $OUT/bench_gpu.json)")
    args = ap.parse_args()
    cpu = args.device == "cpu"
    args.batches = [int(b) for b in (args.batches or ("1,2" if cpu else "1,8,32")).split(",")]
    if args.seconds is None:
        args.seconds = 0.05 if cpu else 0.3 if args.quick else 1.0
    if args.steps is None:
        args.steps = 3 if cpu else 4 if args.quick else 8
    return args


def main() -> int:
    args = parse()
    if args.device == "cpu":
        import torch

        torch.set_num_threads(1)  # a dry run beside onnxruntime's threads: no oversubscription
    print(describe(args.device), flush=True)
    makers = {"motion": motion_model, "gan": lambda: gan_model(args.avatar)}
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        rows += bench_model(makers[name](), args.device, args)
    for name in args.models.split(","):
        show(name, [r for r in rows if r["model"] == name], args.batches)
    out = args.out or Path(os.environ.get("OUT", "out")) / "bench_gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": describe(args.device), "rows": rows}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
