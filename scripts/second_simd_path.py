"""Run a command with numpy's and OpenCV's widest SIMD paths switched off (CI's second pass).

    python scripts/second_simd_path.py -- pytest -q -m numeric

Float results from vectorised maths differ between dispatch paths: numpy's AVX-512 float32
``log10(1e-5)`` is -5.0000005 where AVX2 gives -5.0. Running the numeric tests on a second path
makes a comparison that only holds on one CPU fail on every machine. The path is chosen from what
this machine has: with AVX-512 (numpy's ``X86_V4`` group) the AVX2 path, with only AVX2 the
SSE4.2 baseline; elsewhere numpy's baseline. OpenCV drops its AVX-512 (or AVX2) dispatch the same
way. onnxruntime has no such switch: its kernels take the machine's best path in both passes.
"""

from __future__ import annotations

import os
import sys

from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

X86_V4_GROUP = ("X86_V4", "AVX512_ICL", "AVX512_SPR")  # numpy 2.4's names (older ones ignored)


def numpy_disabled() -> list[str]:
    """numpy dispatch targets to switch off: the widest tier this machine uses."""
    on = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    if any(t in on for t in X86_V4_GROUP):
        return [t for t in X86_V4_GROUP if t in __cpu_dispatch__]
    return on  # X86_V3 alone, or another architecture's targets: down to the baseline


def opencv_disabled() -> list[str]:
    """OpenCV dispatch features to switch off (its names, from ``getCPUFeaturesLine``)."""
    import cv2

    dispatched = [f[1:] for f in cv2.getCPUFeaturesLine().split() if f.startswith("*")]
    wide = [f for f in dispatched if f.startswith("AVX512")]
    return wide or [f for f in dispatched if f in ("AVX2", "FP16", "AVX_VNNI")]


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    env = dict(os.environ)
    numpy_off, cv_off = numpy_disabled(), opencv_disabled()
    if numpy_off:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(numpy_off)
    if cv_off:
        env["OPENCV_CPU_DISABLE"] = ",".join(cv_off)
    if not numpy_off and not cv_off:
        print("second SIMD path: this CPU has a single path; running on it again", flush=True)
    else:
        print(f"second SIMD path: numpy without {' '.join(numpy_off) or '-'}, "
              f"OpenCV without {','.join(cv_off) or '-'}", flush=True)  # fmt: skip
    os.execvpe(args[0], args, env)


if __name__ == "__main__":
    sys.exit(main())
