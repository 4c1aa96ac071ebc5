"""The Triton backend: the package imports and says why without PyTriton; with it (skipped where
``nvidia-pytriton`` is not installed) a real ``tritonserver`` on CPU serves the motion model
(batched, its caches' batch axis moved) and the GAN (unbatched), and the backend's outputs equal
onnxruntime's in-process ones, the motion state fed back over a stream of calls."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avatar.backends.onnxruntime import OrtBackend
from avatar.backends.protocol import InferenceBackend
from avatar.backends.triton import TritonBackend, fix_python_backend_env, triton_backend
from avatar.errors import BackendUnavailable
from avatar.motion.channels import BATCH_AXES
from avatar.motion.stream import initial_state
from tests.conftest import WEIGHTS

MOTION = WEIGHTS / "motion.onnx"
GAN = Path(__file__).resolve().parents[1] / "avatar/avatars/carphone/gan.onnx"
HAS_PYTRITON = importlib.util.find_spec("pytriton") is not None


def test_without_pytriton_it_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytriton", None)
    monkeypatch.setitem(sys.modules, "pytriton.client", None)
    with pytest.raises(BackendUnavailable, match="pip install nvidia-pytriton"):
        TritonBackend("grpc://localhost:1", "motion", {})


def test_python_backend_env_puts_this_libpython_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/somewhere")
    fix_python_backend_env()
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    paths = os.environ["LD_LIBRARY_PATH"].split(":")
    if soname and (Path(libdir) / soname).exists():
        assert paths == [libdir, "/somewhere"]
        fix_python_backend_env()  # once only
        assert os.environ["LD_LIBRARY_PATH"].split(":") == [libdir, "/somewhere"]
    else:
        assert paths == ["/somewhere"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if not HAS_PYTRITON:
        pytest.skip("nvidia-pytriton is not installed")
    from pytriton.triton import Triton, TritonConfig

    from avatar.backends.triton import bind_onnx

    fix_python_backend_env()
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    config = TritonConfig(http_port=http, grpc_port=grpc, metrics_port=metrics)
    with Triton(config=config) as triton:
        bind_onnx(triton, "motion", MOTION, batch_axes=BATCH_AXES, max_batch=8,
                  max_queue_delay_us=1000)  # fmt: skip
        bind_onnx(triton, "gan", GAN, max_batch=0)
        triton.run()
        yield f"grpc://127.0.0.1:{grpc}"


@pytest.mark.slow
def test_motion_stream_through_triton_equals_in_process(server: str) -> None:
    local = OrtBackend(MOTION)
    remote = triton_backend(server, "motion", MOTION, batch_axes=BATCH_AXES)
    try:
        assert isinstance(remote, InferenceBackend)
        assert remote.name == "triton" and remote.meta == local.meta
        assert set(remote.input_names) == set(local.input_names)
        assert set(remote.output_names) == set(local.output_names)
        rng = np.random.default_rng(0)
        state_l = state_r = initial_state(local.meta)
        for _ in range(4):
            mel = rng.standard_normal((1, 4, 80)).astype(np.float32)
            want = {k: v.copy() for k, v in local.run({"mel": mel, **state_l}).items()}
            got = remote.run({"mel": mel, **state_r})
            for name, value in want.items():
                assert got[name].shape == value.shape, name
                np.testing.assert_allclose(got[name], value, atol=1e-5, err_msg=name)
            state_l = {n: want[f"{n}_out"] for n in state_l}
            state_r = {n: got[f"{n}_out"] for n in state_r}
    finally:
        remote.close()


@pytest.mark.slow
def test_concurrent_sessions_batched_by_triton_get_their_own_rows(server: str) -> None:
    local = OrtBackend(MOTION)
    rng = np.random.default_rng(1)
    mels = [rng.standard_normal((1, 4, 80)).astype(np.float32) for _ in range(4)]
    state = initial_state(local.meta)
    want = [local.run({"mel": m, **state})["blendshapes"].copy() for m in mels]
    got: list[Any] = [None] * 4

    def session(i: int) -> None:
        backend = triton_backend(server, "motion", MOTION, batch_axes=BATCH_AXES)
        try:
            for _ in range(5):
                got[i] = backend.run({"mel": mels[i], **state})["blendshapes"]
        finally:
            backend.close()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


@pytest.mark.slow
def test_unbatched_gan_through_triton_equals_in_process(server: str) -> None:
    local = OrtBackend(GAN)
    remote = triton_backend(server, "gan", GAN)
    try:
        rng = np.random.default_rng(2)
        feed = {
            "warped": rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32),
            "sketch": rng.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32),
            "code": rng.uniform(0, 1, (2, 17)).astype(np.float32),
        }
        np.testing.assert_allclose(remote.run(feed)["mouth"], local.run(feed)["mouth"], atol=1e-5)
    finally:
        remote.close()


def test_an_unreachable_server_is_unavailable() -> None:
    if not HAS_PYTRITON:
        pytest.skip("nvidia-pytriton is not installed")
    with pytest.raises(BackendUnavailable, match="Triton model 'motion'"):
        TritonBackend(f"grpc://127.0.0.1:{_free_port()}", "motion", {}, init_timeout_s=1.0)
