"""Build the package as a user gets it, install it into a fresh venv, and use it from elsewhere.

    python scripts/check_wheel.py [--keep]        (make test runs it; needs `build`, dev extra)

1. ``python -m build``: the sdist, then the wheel built *from that sdist*, so a file the sdist
   leaves out is missing from the wheel too; it must equal, file for file and hash for hash, the
   wheel built straight from the checkout. Every tracked file under ``avatar/`` must be in it (the
   web client, the configs, the weights, the avatars, the sample), bar the JS type check's own.
2. A fresh venv in a temporary folder (``python -m venv``, no system site-packages, nothing from
   this checkout's venv) and ``pip install`` of the wheel alone: its dependencies come from PyPI
   or pip's cache, so a dependency missing from pyproject fails here (scipy did, when this check
   was new). This is the slow step: ~30 s on the 2-core build VM, whose pip reads a local wheel
   mirror; from PyPI with a cold cache it downloads ~200 MB (OpenCV, scipy, av, onnxruntime,
   numpy, matplotlib), no torch. An install with ``--no-deps`` into a venv made with
   ``--system-site-packages`` over the dev venv would take seconds, but it would see the dev
   venv's packages and so could not catch a missing dependency: half of what this check is for.
3. From a temporary working directory, with ``PYTHONPATH`` cleared so the checkout cannot leak
   in: ``avatar --version`` says the source's version; ``avatar serve`` on a free port serves
   ``/`` (the demo page), the JS client, ``/api/avatars`` and the render page; a text render
   job through that server ends with its mp4 (where festival is installed); ``avatar render`` of
   the bundled sample (read from the installed package) writes an mp4 whose video and audio
   decode.

Exits non-zero with the reason on the first failure; prints each command, its output's tail
and the time every step took.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# In the checkout for the JS type check (scripts/check_js.sh), not for the page or the package.
NOT_IN_WHEEL = {"avatar/web/tsconfig.json", "avatar/web/package-lock.json"}
SERVE_TIMEOUT_S = 60.0


class CheckFailed(Exception):
    """One step did not do what the package promises."""


def run(cmd: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``, print it and the tail of its output; its output, or CheckFailed."""
    print(f"$ {' '.join(str(c) for c in cmd)}    (in {cwd})", flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, text=True, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    out = done.stdout
    tail = out.strip().splitlines()[-6:]
    print("".join(f"  | {line}\n" for line in tail), end="", flush=True)
    if done.returncode != 0:
        raise CheckFailed(f"exit status {done.returncode}: {' '.join(str(c) for c in cmd)}")
    return out


@contextmanager
def step(name: str) -> Iterator[None]:
    print(f"\n== {name}", flush=True)
    t0 = time.monotonic()
    yield
    print(f"== {name}: ok ({time.monotonic() - t0:.1f} s)", flush=True)


def source_version() -> str:
    """``avatar.__version__`` as the source says it (pyproject reads it from there)."""
    tree = ast.parse((ROOT / "avatar" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
            return str(ast.literal_eval(node.value))
    raise CheckFailed("avatar/__init__.py defines no __version__")


def build(dist: Path) -> tuple[Path, Path]:
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=ROOT)
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    print(f"  sdist {sdist.name} {sdist.stat().st_size / 1e6:.1f} MB, "
          f"wheel {wheel.name} {wheel.stat().st_size / 1e6:.1f} MB")  # fmt: skip
    return sdist, wheel


def record(wheel: Path) -> set[str]:
    """The wheel's RECORD: every file with its hash and size."""
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        return {line for line in z.read(name).decode().splitlines() if not line.startswith(name)}


def check_same_as_from_checkout(wheel: Path, dist: Path) -> None:
    # setuptools stages the files in the checkout's build/ and never prunes it: a stale file
    # there would end up in this wheel (and differ from the sdist's), so a new build/ goes again.
    ours = not (ROOT / "build").exists()
    try:
        run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT], cwd=ROOT)
    finally:
        if ours:
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    (direct,) = dist.glob("*.whl")
    differ = sorted(record(wheel) ^ record(direct))
    if differ:
        raise CheckFailed(f"the wheels from the sdist and from the checkout differ: {differ[:6]}")
    print(f"  the same {len(record(wheel))} files, byte for byte")


def check_wheel_contents(wheel: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "avatar"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = sorted(set(tracked) - names - NOT_IN_WHEEL)
    if missing:
        raise CheckFailed(f"tracked files missing from the wheel: {missing}")
    stray = sorted(n for n in names if "node_modules" in n or "__pycache__" in n)
    if stray:
        raise CheckFailed(f"the wheel carries build leftovers: {stray[:5]}")
    kinds = ("web/index.html", "web/avatar-client.js", "configs/default.yaml",
             "weights/motion.onnx", "avatars/default/avatar.json", "assets/sample.ogg")  # fmt: skip
    print(f"  {len(names)} files; all {len(tracked) - len(NOT_IN_WHEEL)} tracked files of "
          f"avatar/ among them ({', '.join(kinds)}, ...)")  # fmt: skip


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user's shell with only the fresh venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["MPLCONFIGDIR"] = str(venv / "mplconfig")  # matplotlib caches fonts; keep it in here
    return env


def install(wheel: Path, venv: Path, work: Path) -> dict[str, str]:
    run([sys.executable, "-m", "venv", venv], cwd=work)
    env = clean_env(venv)
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--progress-bar", "off", wheel], cwd=work, env=env)
    where = run([venv / "bin" / "python", "-c", "import avatar; print(avatar.__file__)"],
                cwd=work, env=env).strip()  # fmt: skip
    if not Path(where).is_relative_to(venv):
        raise CheckFailed(f"`import avatar` found {where}, not the venv's copy")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get_content_type(), r.read()


@contextmanager
def serving(venv: Path, work: Path, env: dict[str, str]) -> Iterator[str]:
    """``avatar serve`` of the venv, started from ``work``; yields its URL."""
    port = free_port()
    cmd = [str(venv / "bin" / "avatar"), "serve", "--port", str(port)]
    print(f"$ {' '.join(cmd)}    (in {work})", flush=True)
    log = work / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise CheckFailed(f"avatar serve exited ({proc.returncode}): {log.read_text()}")
            try:
                http_get(f"{url}/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise CheckFailed(f"avatar serve: no answer in {SERVE_TIMEOUT_S} s") from None
                time.sleep(0.25)
        print("".join(f"  | {line}\n" for line in log.read_text().splitlines()[-3:]), end="")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_server(url: str) -> None:
    status, kind, body = http_get(f"{url}/")
    if status != 200 or kind != "text/html" or b'src="demo.js"' not in body:
        raise CheckFailed(f"GET / gave {status} {kind}, not the demo page")
    print(f"  GET /                  {status} {kind}, {len(body)} bytes: the demo page")
    modules = {
        "avatar-client.js": b"export class AvatarClient",
        "emitter.js": b"export class Emitter",
        "latency-probe.js": b"export class LatencyProbe",
        "demo.js": b"AvatarClient.connect",
    }
    for path, text in modules.items():
        status, kind, body = http_get(f"{url}/{path}")
        if status != 200 or "javascript" not in kind or text not in body:
            raise CheckFailed(f"GET /{path} gave {status} {kind}, {len(body)} bytes")
        print(f"  GET /{path:<20} {status} {kind}, {len(body)} bytes")
    status, kind, body = http_get(f"{url}/api/avatars")
    listing = json.loads(body)
    if status != 200 or "default" not in listing.get("avatars", []):
        raise CheckFailed(f"GET /api/avatars gave {status}: {body[:200]!r}")
    print(f"  GET /api/avatars       {status} {json.dumps(listing)}")
    status, kind, body = http_get(f"{url}/renders.html")
    if status != 200 or b'src="renders.js"' not in body:
        raise CheckFailed(f"GET /renders.html gave {status} {kind}, not the render page")
    print(f"  GET /renders.html      {status} {kind}, {len(body)} bytes: the render page")


def check_render_job(url: str) -> None:
    """A render job through the installed server: submitted, rendered, its mp4 fetched."""
    body = json.dumps({"text": "Hello from the wheel."}).encode()
    request = urllib.request.Request(f"{url}/v1/renders", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as r:
        job = json.loads(r.read())["id"]
    deadline = time.monotonic() + 120
    while (state := json.loads(http_get(f"{url}/v1/renders/{job}")[2]))["status"] in (
        "queued", "running"):  # fmt: skip
        if time.monotonic() > deadline:
            raise CheckFailed(f"render job {job} did not end: {state}")
        time.sleep(0.25)
    if state["status"] != "done":
        raise CheckFailed(f"render job {job}: {state['status']}: {state['error']}")
    status, kind, video = http_get(url + state["result_url"])
    if status != 200 or video[4:8] != b"ftyp":
        raise CheckFailed(f"GET {state['result_url']} gave {status} {kind}, not an mp4")
    frames = state["progress"]["frames"]
    print(f"  POST /v1/renders (text): done, {frames} frames, {len(video) / 1e3:.0f} kB mp4")


def check_render(venv: Path, work: Path, env: dict[str, str]) -> None:
    python = venv / "bin" / "python"
    where = "from importlib.resources import files; print(files('avatar') / 'assets/sample.ogg')"
    sample = run([python, "-c", where], cwd=work, env=env).strip()  # the installed copy
    out = work / "x.mp4"
    run([venv / "bin" / "avatar", "render", sample, "-o", out, "--quiet"], cwd=work, env=env)
    if not out.is_file() or out.stat().st_size == 0:
        raise CheckFailed(f"avatar render wrote no {out}")
    probe = (
        "import av, sys; c = av.open(sys.argv[1]); v = c.streams.video[0]; "
        "a = len(c.streams.audio); n = sum(1 for _ in c.decode(video=0)); "
        "print(f'{n} frames {v.codec_context.width}x{v.codec_context.height}, '"
        "f'{a} audio stream(s), {float(c.duration or 0) / 1e6:.2f} s')"
    )
    summary = run([python, "-c", probe, out], cwd=work, env=env).strip()
    frames = int(summary.split()[0])
    if frames < 25 or " 0 audio" in summary:
        raise CheckFailed(f"{out}: {summary}")
    print(f"  {out.name}: {out.stat().st_size / 1e3:.0f} kB, {summary}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="avatar-wheel-"))
    work = top / "elsewhere"  # the user's working directory: not the checkout
    work.mkdir()
    t0 = time.monotonic()
    try:
        version = source_version()
        with step("build the sdist, then the wheel from it"):
            _, wheel = build(top / "dist")
        with step("the same wheel straight from the checkout"):
            check_same_as_from_checkout(wheel, top / "direct")
        with step("the wheel's contents"):
            check_wheel_contents(wheel)
        with step("a fresh venv: pip install of the wheel and its dependencies"):
            env = install(wheel, top / "venv", work)
        with step("avatar --version"):
            said = run([top / "venv" / "bin" / "avatar", "--version"], cwd=work, env=env).strip()
            if said != f"avatar {version}":
                raise CheckFailed(f"avatar --version said {said!r}, the source {version!r}")
        with (
            step("avatar serve: the pages, the JS client, the API, a render job"),
            serving(top / "venv", work, env) as url,
        ):
            check_server(url)
            if shutil.which("festival"):  # text jobs speak with festival (setup_system.sh)
                check_render_job(url)
        with step("avatar render of the bundled sample"):
            check_render(top / "venv", work, env)
    except (CheckFailed, ValueError) as e:
        print(f"\nwheel check FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    print(f"\nwheel check passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
