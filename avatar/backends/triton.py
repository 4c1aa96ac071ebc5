"""A model behind a Triton Inference Server, reached through PyTriton's client, as an
:class:`~avatar.backends.protocol.InferenceBackend`; and the server side: an ONNX model bound
into PyTriton with Triton's dynamic batcher.

PyTriton (``pip install nvidia-pytriton``, not a core dependency) is imported only when one of
these is used. Its wheel carries ``tritonserver`` with only the Python backend: a bound model
runs in the Python process that called ``Triton.bind`` (here: onnxruntime), and each request
travels client -> server (gRPC/HTTP) -> Python-backend stub -> the binding process and back.
PyTriton offers the dynamic batcher only (no sequence batcher), so the motion model's state
travels with every call, as it does in-process.

Triton batches along axis 0; where a tensor's batch axis is elsewhere (the motion model's
attention caches, :data:`avatar.motion.channels.BATCH_AXES`) both sides move it: the server's
tensors are batch-first.

Measured on 2 shared CPU cores (onnxruntime CPU, gRPC, p50): an empty model costs 1.6 ms a call;
the motion model 3.6 ms against 0.2 ms in-process (its 0.9 MB of state goes both ways), the GAN
6.3 ms against 3.7 ms. Dynamic batching of 4 concurrent clients formed batches of 2-3.4.

PyTriton needs a venv of its own, like the agents' one: it pins numpy < 2 (this project's OpenCV
5.1 wants numpy >= 2), tritonclient's generated code needs protobuf >= 6.33 (the ``face`` extra's
mediapipe needs < 5), and the Python-backend stub takes its ``sys.path`` from the venv PyTriton is
installed in (PYTHONPATH is ignored there). See :func:`fix_python_backend_env` for the libpython
it needs.
"""

from __future__ import annotations

import os
import sysconfig
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avatar.errors import BackendUnavailable, ModelError

DEFAULT_URL = "grpc://localhost:8001"


def import_pytriton() -> Any:
    """``pytriton``, or :class:`BackendUnavailable` saying how to get it."""
    try:
        import pytriton.client
        import pytriton.triton
    except Exception as e:  # ImportError; tritonclient raises RuntimeError for a missing extra
        raise BackendUnavailable(
            f"PyTriton cannot be imported ({e}): pip install nvidia-pytriton"
        ) from None
    return pytriton


class TritonBackend:
    """One model of a Triton server, called through a PyTriton ``ModelClient``.

    Names come from the server's model config; ``meta`` is the model's ``avatar.meta`` (Triton
    does not carry it: :func:`triton_backend` reads it from the ONNX file). ``batch_axes`` as in
    :class:`~avatar.backends.batching.BatchingBackend`. A client holds one connection and is not
    thread-safe: one backend per session (as :class:`~avatar.backends.onnxruntime.OrtBackend`
    keeps its IO bindings per backend). Outputs are the caller's own arrays.
    """

    name = "triton"

    def __init__(
        self,
        url: str,
        model: str,
        meta: Mapping[str, Any],
        *,
        batch_axes: Mapping[str, int] | None = None,
        init_timeout_s: float = 30.0,
        inference_timeout_s: float = 10.0,
    ) -> None:
        client_mod = import_pytriton().client
        self.url, self.model = url, model
        self.meta = dict(meta)
        self._axes = {k: v for k, v in (batch_axes or {}).items() if v != 0}
        try:
            with warnings.catch_warnings():  # gRPC: "timeout only for infer", said every time
                warnings.simplefilter("ignore")
                self._client = client_mod.ModelClient(
                    url, model, init_timeout_s=init_timeout_s,
                    inference_timeout_s=inference_timeout_s, lazy_init=False,
                )  # fmt: skip
                config = self._client.model_config
        except Exception as e:  # PyTriton's own exceptions (timeouts, model not found...)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BackendUnavailable(f"Triton model {model!r} at {url}: {first}") from None
        self.input_names = tuple(spec.name for spec in config.inputs)
        self.output_names = tuple(spec.name for spec in config.outputs)
        self._batching = bool(config.batching)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: self._to_server(n, inputs[n]) for n in self.input_names}
        try:
            if self._batching:
                out = self._client.infer_batch(**feeds)
            else:
                out = self._client.infer_sample(**feeds)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelError(f"Triton model {self.model!r} failed: {first}") from None
        return {n: self._from_server(n, out[n]) for n in self.output_names}

    def close(self) -> None:
        self._client.close()

    def _to_server(self, name: str, value: np.ndarray) -> np.ndarray:
        axis = self._axes.get(name) if self._batching else None
        if axis is not None:
            value = np.moveaxis(value, axis, 0)
        return np.ascontiguousarray(value, np.float32)

    def _from_server(self, name: str, value: np.ndarray) -> np.ndarray:
        axis = self._axes.get(name) if self._batching else None
        return np.moveaxis(value, 0, axis) if axis is not None else value


def triton_backend(
    url: str, model: str, onnx_path: Path, *, batch_axes: Mapping[str, int] | None = None,
    **kwargs: Any,
) -> TritonBackend:  # fmt: skip
    """A :class:`TritonBackend` whose ``meta`` is the one in ``onnx_path`` (the model the server
    runs; the node has the file)."""
    from avatar.backends.onnxruntime import read_onnx_meta

    return TritonBackend(url, model, read_onnx_meta(onnx_path), batch_axes=batch_axes, **kwargs)


# -- the server side -----------------------------------------------------------------------------


def fix_python_backend_env() -> None:
    """Put this interpreter's ``libpython`` first on ``LD_LIBRARY_PATH`` (PyTriton copies the
    environment into ``tritonserver``'s).

    PyTriton's Python-backend stub is linked against ``libpython3.X.so.1.0`` and runs this
    interpreter's standard library; without this, the loader finds the system's libpython (on
    Debian 12: 3.11.2) while the standard library is a newer patch release's (a pyenv 3.11.7),
    and the stub fails in ``initialize`` with ``AttributeError: '_thread.RLock' object has no
    attribute '_recursion_count'`` (multiprocessing's resource tracker of 3.11.7).
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not libdir or not soname or not (Path(libdir) / soname).exists():
        return  # a static interpreter: the stub can only use the system's libpython
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def bind_onnx(
    triton: Any,
    name: str,
    onnx_path: Path,
    *,
    providers: Sequence[str] | None = None,
    threads: int = 1,
    batch_axes: Mapping[str, int] | None = None,
    max_batch: int = 8,
    max_queue_delay_us: int = 0,
) -> None:
    """Bind ``onnx_path`` (run by onnxruntime in this process) into ``triton`` (a
    ``pytriton.triton.Triton``, before ``run``/``serve``) as model ``name``.

    ``max_batch`` > 0: Triton's dynamic batcher (``max_queue_delay_us`` to wait for more
    requests) with every tensor batch-first on the server (``batch_axes`` moved); 0: no batching,
    tensors as the ONNX model has them. One onnxruntime session; its calls are serialized (one
    model instance)."""
    import_pytriton()
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    from avatar.backends.onnxruntime import OrtBackend

    inner = OrtBackend(onnx_path, threads, list(providers) if providers else None)
    axes = {k: v for k, v in (batch_axes or {}).items() if v != 0} if max_batch else {}
    session = inner._session  # its input and output shapes

    def spec(node: Any) -> Any:
        dims = [d if isinstance(d, int) else -1 for d in node.shape]
        if max_batch:
            dims.pop(axes.get(node.name, 0))  # Triton's batch axis is implicit
        return Tensor(name=node.name, dtype=np.float32, shape=tuple(dims))

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.moveaxis(v, 0, axes[k]) if k in axes else v for k, v in inputs.items()}
        out = inner.run(feeds)  # IO-bound buffers: copied below before the next call
        return {k: np.ascontiguousarray(np.moveaxis(v, axes[k], 0)) if k in axes else v.copy()
                for k, v in out.items()}  # fmt: skip

    if max_batch:
        infer_func = batch(lambda **inputs: call(inputs))
        batcher = DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)
        config = ModelConfig(max_batch_size=max_batch, batcher=batcher)
    else:

        def infer_func(requests: list[Any]) -> list[dict[str, np.ndarray]]:
            return [call(dict(r)) for r in requests]

        config = ModelConfig(batching=False)
    triton.bind(model_name=name, infer_func=infer_func,
                inputs=[spec(i) for i in session.get_inputs()],
                outputs=[spec(o) for o in session.get_outputs()], config=config)  # fmt: skip
