"""A node pod's ``controller.kubernetes.io/pod-deletion-cost``, kept at its session count.

On a scale-down a Deployment's ReplicaSet removes the pods with the lowest deletion cost first;
a node pod whose annotation is its number of sessions makes the emptiest node go first (its
sessions would move, and fewer of them). The node patches its own pod through the Kubernetes API
with the pod's service-account token (``deploy/k8s-pool/nodes.yaml`` gives it a Role that may
patch pods and nothing else), only when the count changed, at most once per heartbeat.

Outside a pod (no ``KUBERNETES_SERVICE_HOST`` or ``POD_NAME``) there is nothing to do:
:meth:`PodDeletionCost.in_cluster` returns None. No Kubernetes API server runs on the machines
this project is built on: the tests use an HTTP server that checks what the API would be sent
(path, verb, content type, token, body).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import aiohttp

log = logging.getLogger("avatar.cluster")
ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT_S = 2.0


class PodDeletionCost:
    """Patches ``pod``'s deletion cost at ``api``; see the module docstring."""

    def __init__(self, api: str, namespace: str, pod: str, token: str,
                 tls: ssl.SSLContext | None = None) -> None:  # fmt: skip
        self.url = f"{api.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}"
        self.token, self.tls = token, tls
        self._last: int | None = None
        self._failing = False

    @classmethod
    def in_cluster(
        cls, env: Mapping[str, str] = os.environ, account: Path = ACCOUNT
    ) -> PodDeletionCost | None:
        """From the pod's environment and its mounted service account; None outside a pod."""
        host, pod = env.get("KUBERNETES_SERVICE_HOST"), env.get("POD_NAME")
        token = account / "token"
        if not host or not pod or not token.exists():
            return None
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        tls = ssl.create_default_context(cafile=str(account / "ca.crt"))
        namespace = (account / "namespace").read_text().strip()
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", namespace, pod, token.read_text().strip(), tls)

    async def set(self, sessions: int) -> None:
        """The annotation at ``sessions`` (a request only when it changed). A refusal or an
        unreachable API is logged once and tried again on the next change or call."""
        if sessions == self._last:
            return
        body = json.dumps({"metadata": {"annotations": {ANNOTATION: str(sessions)}}})
        headers = {"Authorization": f"Bearer {self.token}",
                   "Content-Type": "application/merge-patch+json"}  # fmt: skip
        try:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.patch(
                    self.url, data=body, headers=headers, ssl=self.tls if self.tls else True
                ) as r,
            ):
                if r.status >= 300:
                    raise RuntimeError(f"{r.status}: {(await r.text())[:200]}")
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            if not self._failing:
                log.warning("pod-deletion-cost not set (%s); scale-downs may pick a busy node",
                            exc)  # fmt: skip
            self._failing = True
            return
        self._last, self._failing = sessions, False
