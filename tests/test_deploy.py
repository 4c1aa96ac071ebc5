"""The deployment files, checked offline: Dockerfile, deploy/docker-compose.yml, deploy/k8s/, and
deploy/k8s-pool/ (the node pool: an overlay on deploy/k8s).

Kubernetes manifests are validated against the official schemas that kubernetes-validate ships
(strict: an unknown field fails too), the compose file against compose-spec's schema as vendored
by check-jsonschema, and the Dockerfile by parsing it. Then what the files must agree on is
compared across them: the HTTP port, the UDP range, probe paths, the autoscaling metrics, secret
names, the drain times, Redis' persistence, the network paths of render jobs, and every `avatar
serve` and `avatar worker` command goes through the real argument parser and config loader.
For the pool: the gateways' and nodes' commands, host networking, the per-pool HPAs on the
adapter's utilisation metric, and the network paths of gateways, nodes and Redis.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from argparse import Namespace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from avatar.cli import build_parser
from avatar.config import Config, load_config
from avatar.resources import default_config, web_root

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
# The oldest Kubernetes the manifests claim, and the newest the pinned kubernetes-validate ships.
K8S_VERSIONS = ("1.30", "1.37")
HTTP_PORT = 8080
UDP_RANGE = (40000, 40099)
PROBES = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
METRIC = "avatar_sessions_active"
QUEUE_METRIC = "avatar_render_queue_jobs"
WORKER = "avatar-render-worker"
REDIS = "avatar-redis"
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
SECRET_KEYS = {"AVATAR_SECRET", "AVATAR_TURN_SECRET", "AVATAR_WEBHOOK_SECRET", *S3_KEYS}
DEPLOYMENTS = ("avatar", "avatar-turn", WORKER)
# In deploy/k8s but applied another way (each file says how).
NOT_KUSTOMIZED = {"secret.example.yaml", "prometheus-adapter-rules.yaml"}
SAMPLE_VALUE = "203.0.113.10"  # stands for ${VAR} (compose) and $(VAR) (Kubernetes)

Doc = dict[str, Any]


# -- loading --------------------------------------------------------------------------------------


@cache
def k8s_docs() -> tuple[tuple[str, Doc], ...]:
    """(file name, document) for every manifest except kustomization.yaml."""
    return tuple(
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def k8s(kind: str, name: str) -> Doc:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind}/{name} in deploy/k8s"
    return found[0]


def avatar_pod() -> Doc:
    return k8s("Deployment", "avatar")["spec"]["template"]


def avatar_container() -> Doc:
    (container,) = avatar_pod()["spec"]["containers"]
    return container


def worker_pod() -> Doc:
    return k8s("Deployment", WORKER)["spec"]["template"]


def worker_container() -> Doc:
    (container,) = worker_pod()["spec"]["containers"]
    return container


def redis_container() -> Doc:
    (container,) = k8s("StatefulSet", REDIS)["spec"]["template"]["spec"]["containers"]
    return container


def resolved(container: Doc) -> list[str]:
    """The container's args with each $(VAR) that comes from the ConfigMap replaced by its value
    there, as the kubelet does (the rest, secrets, are left to fill())."""
    config = k8s("ConfigMap", "avatar-config")["data"]
    values = {
        env["name"]: config[ref["key"]]
        for env in container.get("env", [])
        if (ref := env.get("valueFrom", {}).get("configMapKeyRef"))
    }
    return [re.sub(r"\$\((\w+)\)", lambda m: values.get(m[1], m[0]), a) for a in container["args"]]


@cache
def compose() -> Doc:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def dockerfile() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", text)
    parts = (line.strip().partition(" ") for line in text.splitlines())
    return tuple((ins.upper(), rest.strip()) for ins, _, rest in parts if ins)


def instructions(name: str) -> list[str]:
    return [rest for ins, rest in dockerfile() if ins == name]


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"exec (JSON) form expected: {rest}"
    return value


def fill(arg: str) -> str:
    """Replace compose's ${VAR...} and Kubernetes' $(VAR) with a sample value; compose's
    ${VAR:-default} with its default, as when the variable is not set."""
    arg = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", arg)
    return re.sub(r"\$\{\w+[^}]*\}|\$\(\w+\)", SAMPLE_VALUE, arg)


def serve(argv: list[str]) -> tuple[Namespace, Config]:
    """An `avatar serve` command line parsed by the CLI, and the config it gives."""
    args = build_parser().parse_args([fill(a) for a in argv])
    assert args.command == "serve"
    overrides = [*args.set, f"server.host={args.host}", f"server.port={args.port}"]
    return args, load_config(None, overrides)  # the image's --config is checked separately


def commands() -> dict[str, list[str]]:
    """Every `avatar serve` command line in the deployment files."""
    return {
        "Dockerfile CMD": exec_form(instructions("CMD")[-1]),
        "compose avatar": compose()["services"]["avatar"]["command"],
        "k8s Deployment": resolved(avatar_container()),
    }


def worker(argv: list[str]) -> tuple[Namespace, Config]:
    """An `avatar worker` command line through the CLI's own handler, up to the config it would
    run with (run_worker is replaced)."""
    args = build_parser().parse_args([fill(a) for a in argv])
    assert args.command == "worker"
    seen: list[Config] = []
    with mock.patch("avatar.compose.renders.run_worker", lambda cfg, *_: seen.append(cfg)):
        assert args.func(args) == 0
    return args, seen[0]


def workers() -> dict[str, list[str]]:
    """Every `avatar worker` command line in the deployment files."""
    return {
        "compose worker": compose()["services"]["worker"]["command"],
        "k8s Deployment": resolved(worker_container()),
    }


def redis_commands() -> dict[str, list[str]]:
    return {
        "compose redis": compose()["services"]["redis"]["command"],
        "k8s StatefulSet": redis_container()["command"],
    }


def option(argv: list[str], flag: str) -> str:
    """The value after `flag` (redis-server's --name value form)."""
    assert argv.count(flag) == 1, f"{flag} once in {argv}"
    return argv[argv.index(flag) + 1]


def adapter_rules(kind: str) -> list[Doc]:
    """The prometheus-adapter rules of one kind: "rules" (Pods metrics) or "externalRules"."""
    adapter = yaml.safe_load(k8s("ConfigMap", "prometheus-adapter")["data"]["config.yaml"])
    rules: list[Doc] = adapter[kind]
    return rules


# -- schemas --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted({n for n, _ in k8s_docs()}))
def test_k8s_manifest_matches_the_official_schema(name: str, version: str) -> None:
    for doc in (d for n, d in k8s_docs() if n == name):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.update(readinesProbe=c.pop("readinessProbe")),  # unknown field
        lambda c: c["ports"][0].update(containerPort=str(HTTP_PORT)),  # wrong type
        lambda c: c["env"][0]["valueFrom"]["secretKeyRef"].pop("key"),  # required field
    ],
    ids=["unknown field", "wrong type", "missing field"],
)
def test_a_broken_manifest_fails_the_schema(breakage: Any) -> None:
    deployment = copy.deepcopy(k8s("Deployment", "avatar"))
    breakage(deployment["spec"]["template"]["spec"]["containers"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def compose_validator() -> jsonschema.protocols.Validator:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_compose_file_matches_compose_spec() -> None:
    errors = [f"{e.json_path}: {e.message}" for e in compose_validator().iter_errors(compose())]
    assert not errors


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("avatar", "stop_grace_period", 45),  # a duration is a string
        ("turn", "restart_policy", "always"),  # no such key
        ("avatar", "command", ["serve", "--port", 8080]),  # arguments are strings
    ],
)
def test_a_broken_compose_file_fails_compose_spec(service: str, key: str, value: Any) -> None:
    broken = copy.deepcopy(compose())
    broken["services"][service][key] = value
    assert not compose_validator().is_valid(broken)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {n for n, _ in k8s_docs()} - NOT_KUSTOMIZED
    assert {i["name"] for i in kustomization["images"]} == {avatar_container()["image"]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_output_matches_the_schema() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert len(docs) == sum(1 for n, _ in k8s_docs() if n not in NOT_KUSTOMIZED)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# -- the image ------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def _glob(pattern: str) -> re.Pattern[str]:
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(t, re.escape(t)) for t in tokens))


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in dockerignore_patterns():
        rx = _glob(pattern.removeprefix("!"))
        if any(rx.fullmatch(p) for p in prefixes):
            verdict = not pattern.startswith("!")
    return verdict


def copy_sources() -> list[str]:
    """Sources of the COPY instructions that read the build context (not --from a stage)."""
    sources = []
    for rest in instructions("COPY"):
        words = shlex.split(rest)
        if not any(w.startswith("--from") for w in words):
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def tracked(path: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", path], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_every_copy_source_is_in_the_build_context() -> None:
    assert copy_sources()
    for source in copy_sources():
        assert (ROOT / source).exists(), source
        files = tracked(source) or [source]
        assert [f for f in files if ignored(f)] == [], f"{source}: left out by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/x",
        "out/x",
        ".git/HEAD",
        "deploy/.env",
        "runs/x",
        "avatar/web/node_modules/typescript/package.json",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    assert ignored(path)


def test_dockerignore_matches_like_docker() -> None:
    assert not ignored("avatar/weights/motion.onnx")
    assert ignored("avatar/server/__pycache__/app.cpython-311.pyc")
    assert ignored("docs/img/x.png")


def test_image_runs_the_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["avatar"] == "avatar.cli:main"
    assert exec_form(instructions("ENTRYPOINT")[-1]) == ["avatar"]
    for container in (avatar_container(), worker_container()):
        assert "command" not in container, "Kubernetes must keep the image's ENTRYPOINT"
    assert worker_container()["image"] == avatar_container()["image"]
    assert compose()["services"]["worker"]["image"] == compose()["services"]["avatar"]["image"]


@pytest.mark.parametrize("where", ["Dockerfile CMD", "compose avatar", "k8s Deployment"])
def test_serve_command_parses_and_uses_the_packaged_config_and_pages(where: str) -> None:
    """The runtime stage copies only the build stage's venv: the config and the pages the server
    uses are the installed package's own (avatar/configs, avatar/web), so a command that named a
    file would name one the image does not have."""
    args, cfg = serve(commands()[where])
    assert args.host == "0.0.0.0"
    assert args.config is None and cfg.server.web_dir == ""
    assert [s for s in copy_sources() if s not in ("pyproject.toml", "README.md")] == ["avatar"]
    assert default_config().is_relative_to(ROOT / "avatar") and default_config().is_file()
    assert web_root().is_relative_to(ROOT / "avatar") and (web_root() / "index.html").is_file()


def test_image_runs_as_the_pods_user() -> None:
    user, _, group = instructions("USER")[-1].partition(":")
    for pod in (avatar_pod()["spec"]["securityContext"], worker_pod()["spec"]["securityContext"]):
        assert int(user) == pod["runAsUser"] != 0
        assert int(group) == pod["runAsGroup"]


# -- what the files share -------------------------------------------------------------------------


def test_one_http_port_everywhere() -> None:
    assert f"{HTTP_PORT}/tcp" in instructions("EXPOSE")
    for where, argv in commands().items():
        assert serve(argv)[1].server.port == HTTP_PORT, where
    (health_url,) = re.findall(r"http://[^'\"]+", instructions("HEALTHCHECK")[-1])
    assert urlsplit(health_url).port == HTTP_PORT
    container_ports = {p["name"]: p["containerPort"] for p in avatar_container()["ports"]}
    assert container_ports == {"http": HTTP_PORT}
    assert avatar_pod()["metadata"]["annotations"]["prometheus.io/port"] == str(HTTP_PORT)
    (http_rule, _) = k8s("NetworkPolicy", "avatar")["spec"]["ingress"]
    assert http_rule["ports"] == [{"protocol": "TCP", "port": HTTP_PORT}]


def test_one_udp_range_everywhere() -> None:
    low, high = UDP_RANGE
    assert f"{low}-{high}/udp" in instructions("EXPOSE")
    for where, argv in commands().items():
        assert serve(argv)[1].server.udp_ports == UDP_RANGE, where
    (_, media_rule) = k8s("NetworkPolicy", "avatar")["spec"]["ingress"]
    assert media_rule["ports"] == [{"protocol": "UDP", "port": low, "endPort": high}]
    assert (
        media_rule["from"][0]["podSelector"] == k8s("Deployment", "avatar-turn")["spec"]["selector"]
    )


def test_probes_use_the_server_paths() -> None:
    container = avatar_container()
    assert {p: container[p]["httpGet"]["path"] for p in PROBES} == PROBES
    assert all(container[p]["httpGet"]["port"] == "http" for p in PROBES)
    (health_url,) = re.findall(r"http://[^'\"]+", instructions("HEALTHCHECK")[-1])
    assert urlsplit(health_url).path == "/healthz"
    assert avatar_pod()["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_hpa_scales_on_the_adapter_rule_metric() -> None:
    spec = k8s("HorizontalPodAutoscaler", "avatar")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "avatar",
    }
    (metric,) = spec["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == METRIC
    (rule,) = adapter_rules("rules")
    assert rule["seriesQuery"].startswith(METRIC + "{") and rule["name"]["as"] == METRIC
    # with --workers N a pod exports one series per worker: its load is their sum, not the max
    assert rule["metricsQuery"].startswith("sum(<<.Series>>{<<.LabelMatchers>>})")
    max_sessions = serve(avatar_container()["args"])[1].server.max_sessions
    assert 0 < float(metric["pods"]["target"]["averageValue"]) < max_sessions


def test_grace_periods_cover_the_drain() -> None:
    pod = avatar_pod()["spec"]
    drain_s = serve(avatar_container()["args"])[1].server.drain_s
    pre_stop = avatar_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain_s
    service = compose()["services"]["avatar"]
    assert (
        float(service["stop_grace_period"].removesuffix("s"))
        > serve(service["command"])[1].server.drain_s
    )


def test_selectors_match_the_pods() -> None:
    for name in ("avatar", "avatar-turn"):
        deployment = k8s("Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert k8s("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == labels
        assert k8s("Service", name)["spec"]["selector"] == labels
    deployment = k8s("Deployment", WORKER)
    assert deployment["spec"]["selector"]["matchLabels"] == worker_pod()["metadata"]["labels"]
    redis = k8s("StatefulSet", REDIS)["spec"]
    labels = redis["template"]["metadata"]["labels"]
    assert redis["selector"]["matchLabels"] == labels == k8s("Service", REDIS)["spec"]["selector"]
    assert redis["serviceName"] == REDIS
    # each component's own pods: the server's selectors must not take in workers or Redis
    components = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                  for _, d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet")}  # fmt: skip
    assert components == {"server", "turn", "render-worker", "redis"}


def env_refs(kind: str, pods: list[Doc] | None = None) -> set[tuple[str, str]]:
    """(name, key) of the Secret or ConfigMap values the pods' containers read (by default the
    single-machine Deployments')."""
    key = {"Secret": "secretKeyRef", "ConfigMap": "configMapKeyRef"}[kind]
    if pods is None:
        pods = [k8s("Deployment", name)["spec"]["template"] for name in DEPLOYMENTS]
    return {
        (ref["name"], ref["key"])
        for pod in pods
        for c in pod["spec"]["containers"]
        for env in c.get("env", [])
        if (ref := env.get("valueFrom", {}).get(key))
    }


def test_secrets_and_settings_come_from_the_example_secret_and_config() -> None:
    secret = k8s("Secret", "avatar-secrets")
    assert {k for _, k in env_refs("Secret")} == set(secret["stringData"]) == SECRET_KEYS
    assert {n for n, _ in env_refs("Secret")} == {"avatar-secrets"}
    config = k8s("ConfigMap", "avatar-config")["data"]
    # every setting is read by the single-machine pods or the pool's (POOL_REDIS), none unknown
    used = env_refs("ConfigMap") | env_refs("ConfigMap", pool_pods())
    assert used == {("avatar-config", k) for k in config}
    assert set(compose()["services"]["avatar"]["environment"]) == SECRET_KEYS | {"AWS_REGION"}
    # the worker: the store's keys and the webhook key, not the session or TURN keys
    worker_secrets = {"AVATAR_WEBHOOK_SECRET", *S3_KEYS}
    for env in worker_container()["env"]:
        if ref := env["valueFrom"].get("secretKeyRef"):
            assert env["name"] == ref["key"] in worker_secrets
    assert set(compose()["services"]["worker"]["environment"]) == worker_secrets | {"AWS_REGION"}
    turn = " ".join(compose()["services"]["turn"]["command"])
    assert "--use-auth-secret" in turn and "${AVATAR_TURN_SECRET" in turn


def test_pods_run_non_root_on_a_read_only_root() -> None:
    redis = k8s("StatefulSet", REDIS)["spec"]["template"]["spec"]
    assert redis["securityContext"]["runAsNonRoot"] is True
    assert redis["automountServiceAccountToken"] is False
    sc = redis_container()["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for name in DEPLOYMENTS:
        pod = k8s("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]


# -- render jobs: server -> Redis <- workers -> S3 ------------------------------------------------


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A podSelector (matchLabels only, as these manifests write them) that takes these pods."""
    assert set(selector) == {"matchLabels"}
    return bool(selector["matchLabels"].items() <= labels.items())


def pod_labels(kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = k8s(kind, name)["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("where", ["compose worker", "k8s Deployment"])
def test_worker_command_parses_and_shares_the_servers_queue_and_store(where: str) -> None:
    args, cfg = worker(workers()[where])
    server = serve(commands()["compose avatar" if where.startswith("compose") else where])[1]
    assert cfg.renders.redis.startswith("redis://") and cfg.renders.store.startswith("s3://")
    for key in ("redis", "store", "s3_endpoint"):
        assert getattr(cfg.renders, key) == getattr(server.renders, key), key
    assert args.metrics_port is not None


def test_k8s_render_settings_point_at_the_cluster_redis_and_s3() -> None:
    config = k8s("ConfigMap", "avatar-config")["data"]
    url = urlsplit(config["RENDERS_REDIS"])
    (port,) = k8s("Service", REDIS)["spec"]["ports"]
    assert (url.scheme, url.hostname, url.port) == ("redis", REDIS, port["port"])
    assert port["targetPort"] == redis_container()["ports"][0]["name"]
    assert config["RENDERS_STORE"].startswith("s3://")
    # "" (AWS) must reach the config as "", not null: the quotes in the --set survive
    assert config["RENDERS_S3_ENDPOINT"] == ""
    assert worker(resolved(worker_container()))[1].renders.s3_endpoint == ""


def test_worker_grace_period_covers_its_drain() -> None:
    """SIGTERM lets the running job finish for --drain-s; the kubelet (docker stop) must wait
    longer, and --drain-s covers one try's limit, so a scale-down never cuts a job that could
    still finish."""
    args, cfg = worker(resolved(worker_container()))
    assert worker_pod()["spec"]["terminationGracePeriodSeconds"] > args.drain_s
    assert args.drain_s >= cfg.renders.job_timeout_s
    service = compose()["services"]["worker"]
    drain_s = worker(service["command"])[0].drain_s
    assert float(service["stop_grace_period"].removesuffix("s")) > drain_s


def test_worker_hpa_scales_on_the_queue_metric_of_the_adapter_rules() -> None:
    spec = k8s("HorizontalPodAutoscaler", WORKER)["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER}
    assert "replicas" not in k8s("Deployment", WORKER)["spec"], "the HPA owns the count"
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == QUEUE_METRIC
    # one job per worker: a worker runs one job at a time
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    (rule,) = [r for r in adapter_rules("externalRules") if r["name"]["as"] == QUEUE_METRIC]
    assert rule["seriesQuery"].startswith(QUEUE_METRIC + "{")
    # every server pod exports the whole queue: max, since a sum would count it once per pod
    assert rule["metricsQuery"].startswith("max(<<.Series>>{<<.LabelMatchers>>})")
    # and the server does export it under that name
    assert f'"{QUEUE_METRIC}"' in (ROOT / "avatar" / "renders" / "api.py").read_text()


def test_worker_metrics_are_scraped_like_the_servers() -> None:
    args = worker(resolved(worker_container()))[0]
    annotations = worker_pod()["metadata"]["annotations"]
    server = avatar_pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == server["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == server["prometheus.io/path"]
    assert annotations["prometheus.io/port"] == str(args.metrics_port)
    assert worker_container()["ports"] == [
        {"name": "metrics", "containerPort": args.metrics_port, "protocol": "TCP"}
    ]
    (rule,) = k8s("NetworkPolicy", WORKER)["spec"]["ingress"]
    assert rule == {"ports": [{"protocol": "TCP", "port": args.metrics_port}]}


@pytest.mark.parametrize("where", ["compose redis", "k8s StatefulSet"])
def test_redis_keeps_jobs_across_a_restart(where: str) -> None:
    argv = redis_commands()[where]
    assert argv[0] == "redis-server"
    assert option(argv, "--appendonly") == "yes"
    assert option(argv, "--appendfsync") in ("always", "everysec")
    assert option(argv, "--dir") == "/data"
    # evicting a job record or the queue would lose jobs silently
    assert option(argv, "--maxmemory-policy") == "noeviction"
    if where == "compose redis":
        assert "redis-data:/data" in compose()["services"]["redis"]["volumes"]
        assert option(argv, "--bind") == "127.0.0.1"
        assert urlsplit(worker(workers()["compose worker"])[1].renders.redis).hostname == (
            "127.0.0.1"
        )
    else:
        spec = k8s("StatefulSet", REDIS)["spec"]
        assert spec["replicas"] == 1
        (claim,) = spec["volumeClaimTemplates"]
        mounts = {m["mountPath"]: m["name"] for m in redis_container()["volumeMounts"]}
        assert mounts["/data"] == claim["metadata"]["name"]
        assert option(argv, "--port") == str(redis_container()["ports"][0]["containerPort"])


def test_network_policies_admit_the_render_paths_and_no_more() -> None:
    server, worker_pods = pod_labels("Deployment", "avatar"), pod_labels("Deployment", WORKER)
    redis_pods = pod_labels("StatefulSet", REDIS)
    redis_port = redis_container()["ports"][0]["containerPort"]
    tcp_redis = [{"protocol": "TCP", "port": redis_port}]

    # Redis: in from the server and the workers only; out nothing
    policy = k8s("NetworkPolicy", REDIS)["spec"]
    assert selects(policy["podSelector"], redis_pods)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["ports"] == tcp_redis
    peers = rule["from"]
    assert all(set(p) == {"podSelector"} for p in peers)
    assert any(selects(p["podSelector"], server) for p in peers)
    assert any(selects(p["podSelector"], worker_pods) for p in peers)
    turn = pod_labels("Deployment", "avatar-turn")
    assert not any(selects(p["podSelector"], turn) for p in peers)
    # the server's own policy limits ingress only, so its egress reaches Redis
    assert k8s("NetworkPolicy", "avatar")["spec"]["policyTypes"] == ["Ingress"]

    # workers: out to DNS, Redis, and public addresses on HTTP(S) (S3, webhooks)
    policy = k8s("NetworkPolicy", WORKER)["spec"]
    assert selects(policy["podSelector"], worker_pods)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    rules = policy["egress"]
    assert all(rule.get("to") and rule.get("ports") for rule in rules), "no rule open to all"
    (dns,) = [r for r in rules if {p["port"] for p in r["ports"]} == {53}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    (to_redis,) = [r for r in rules if r["ports"] == tcp_redis]
    assert [selects(p["podSelector"], redis_pods) for p in to_redis["to"]] == [True]
    (public,) = [r for r in rules if any("ipBlock" in p for p in r["to"])]
    assert sorted(p["port"] for p in public["ports"]) == [80, 443]
    assert {p["protocol"] for p in public["ports"]} == {"TCP"}
    v4 = next(p["ipBlock"] for p in public["to"] if p["ipBlock"]["cidr"] == "0.0.0.0/0")
    # the pod network, the VPC and the cloud metadata endpoint stay out of reach
    private = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"}
    assert private <= set(v4["except"])


# -- the node pool (deploy/k8s-pool): gateways -> nodes on the host network, Redis -------------

POOL = ROOT / "deploy" / "k8s-pool"
POOLS = ("cpu", "gpu")
GATEWAY = "avatar-gateway"
POOL_METRIC = "avatar_pool_utilisation"
MACHINE_LABEL = "avatar.example.com/pool"  # the node groups' label (and taint), the pods' too
GPU = "nvidia.com/gpu"
# What the downward API gives the node pods: the field, and a sample value for the commands.
DOWNWARD = {"HOST_IP": ("status.hostIP", "172.31.5.6"), "POD_NAME": ("metadata.name", "node-x")}
# The base's objects the overlay deletes: the single-process server's own.
SINGLE_SERVER = {("Deployment", "avatar"), ("HorizontalPodAutoscaler", "avatar"),
                 ("PodDisruptionBudget", "avatar"), ("NetworkPolicy", "avatar")}  # fmt: skip


def node(pool: str) -> str:
    return f"avatar-node-{pool}"


@cache
def pool_docs() -> tuple[tuple[str, Doc], ...]:
    """(file name, document) for every manifest of deploy/k8s-pool (not its patches)."""
    return tuple(
        (path.name, doc)
        for path in sorted(POOL.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def pool_k8s(kind: str, name: str) -> Doc:
    found = [d for _, d in pool_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind}/{name} in deploy/k8s-pool"
    return found[0]


def pool_kustomization() -> Doc:
    kustomization: Doc = yaml.safe_load((POOL / "kustomization.yaml").read_text())
    return kustomization


def pool_workloads() -> tuple[str, ...]:
    return (GATEWAY, *(node(p) for p in POOLS))


def pool_pods() -> list[Doc]:
    return [pool_k8s("Deployment", name)["spec"]["template"] for name in pool_workloads()]


def pool_labels(name: str) -> dict[str, str]:
    labels: dict[str, str] = pool_k8s("Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return labels


def pool_container(name: str) -> Doc:
    (container,) = pool_k8s("Deployment", name)["spec"]["template"]["spec"]["containers"]
    return container


def pool_resolved(container: Doc) -> list[str]:
    """resolved(), and the downward API's values (sample ones) as the kubelet puts them."""
    fields = {env["name"]: ref["fieldPath"] for env in container.get("env", [])
              if (ref := env.get("valueFrom", {}).get("fieldRef"))}  # fmt: skip
    samples = {name: DOWNWARD[name][1] for name in fields}
    return [
        re.sub(r"\$\((\w+)\)", lambda m: samples.get(m[1], m[0]), a) for a in resolved(container)
    ]


def serve_through_cli(argv: list[str]) -> tuple[Namespace, Config]:
    """An `avatar serve` command line through the CLI's own handler (cmd_serve: every flag,
    --role, --pool, --advertise, --ice-host included), up to the config it would serve with."""
    args = build_parser().parse_args([fill(a) for a in argv])
    assert args.command == "serve"
    seen: list[Config] = []

    async def serve(cfg: Config) -> None:
        seen.append(cfg)

    with (
        mock.patch("avatar.compose.serve.serve", serve),
        mock.patch("avatar.server.logs.setup_logging"),
    ):
        assert args.func(args) == 0
    return args, seen[0]


@cache
def rendered(folder: Path) -> tuple[Doc, ...]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def rendered_one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def redis_policy_in_the_pool() -> Doc:
    """The base's avatar-redis policy with the pool's patch applied (its ingress list replaces
    the base's: a list without merge key)."""
    patch = yaml.safe_load((POOL / "patches" / "redis-policy.yaml").read_text())
    assert set(patch["spec"]) == {"ingress"}
    policy = copy.deepcopy(k8s("NetworkPolicy", REDIS))
    policy["spec"]["ingress"] = patch["spec"]["ingress"]
    return policy


def quantity(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted({n for n, _ in pool_docs()}))
def test_pool_manifest_matches_the_official_schema(name: str, version: str) -> None:
    for doc in (d for n, d in pool_docs() if n == name):
        kubernetes_validate.validate(doc, version, strict=True)


def test_pool_kustomization_is_an_overlay_on_the_single_machine_one() -> None:
    kustomization = pool_kustomization()
    (base, *listed) = kustomization["resources"]
    assert (POOL / base).resolve() == K8S, "the single-machine kustomization, whole"
    assert set(listed) == {n for n, _ in pool_docs()}
    assert (
        kustomization["namespace"]
        == yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    )
    # it deletes exactly the single-process server's own objects, nothing the pool still uses
    deleted = set()
    for entry in kustomization["patches"]:
        patch = yaml.safe_load(
            entry["patch"] if "patch" in entry else (POOL / entry["path"]).read_text()
        )
        if patch.get("$patch") == "delete":
            deleted.add((patch["kind"], patch["metadata"]["name"]))
        else:
            k8s(patch["kind"], patch["metadata"]["name"])  # a patch of something the base has
    assert deleted == SINGLE_SERVER
    assert all(k8s(kind, name) for kind, name in SINGLE_SERVER)
    # every image the pool's pods name is mapped; the server's image is the base's
    images = {i["name"]: i for i in kustomization["images"]}
    assert set(images) == {c["image"] for p in pool_pods() for c in p["spec"]["containers"]}
    base_images = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    assert [images["avatar"]] == [i for i in base_images if i["name"] == "avatar"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_pool_kustomize_output_matches_the_schema() -> None:
    docs = rendered(POOL)
    base = rendered(K8S)
    assert len(docs) == len(base) - len(SINGLE_SERVER) + len(pool_docs())
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    ids = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not ids & SINGLE_SERVER
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"avatar"}
    components = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                  for d in docs if d["kind"] in ("Deployment", "StatefulSet")}  # fmt: skip
    assert components == {"gateway", "node", "turn", "render-worker", "redis"}
    # the HTTP Service now takes the gateways, with no affinity
    service = rendered_one(docs, "Service", "avatar")["spec"]
    assert (
        service["selector"]
        == pool_k8s("Deployment", GATEWAY)["spec"]["template"]["metadata"]["labels"]
    )
    assert service["sessionAffinity"] == "None" and "sessionAffinityConfig" not in service
    # hostNetwork needs the privileged Pod Security level
    labels = rendered_one(docs, "Namespace", "avatar")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert rendered_one(docs, "NetworkPolicy", REDIS) == {
        **redis_policy_in_the_pool(), "metadata": {**k8s("NetworkPolicy", REDIS)["metadata"],
                                                   "namespace": "avatar"}}  # fmt: skip
    # images resolved to the registry's
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] != "avatar-turn":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c["image"].startswith("registry.example.com/"), d["metadata"]["name"]


@pytest.mark.parametrize("name", [GATEWAY, *(node(p) for p in POOLS)])
def test_pool_commands_parse_and_reach_the_pools_redis(name: str) -> None:
    container = pool_container(name)
    args, cfg = serve_through_cli(pool_resolved(container))
    cluster = cfg.server.cluster
    config = k8s("ConfigMap", "avatar-config")["data"]
    assert cluster.redis == config["POOL_REDIS"]
    url = urlsplit(cluster.redis)
    (port,) = k8s("Service", REDIS)["spec"]["ports"]
    assert (url.scheme, url.hostname, url.port) == ("redis", REDIS, port["port"])
    assert cfg.server.port == HTTP_PORT and args.config is None and cfg.server.web_dir == ""
    assert "command" not in container, "Kubernetes must keep the image's ENTRYPOINT"
    single = serve(commands()["k8s Deployment"])[1]
    if name == GATEWAY:
        assert cluster.role == "gateway" and cfg.server.host == "0.0.0.0"
        assert cluster.pool == "cpu"  # offers that name no pool
        # it takes the single server's place for pages, TURN credentials and render jobs
        assert cfg.server.turn_urls == single.server.turn_urls
        for key in ("redis", "store", "s3_endpoint"):
            assert getattr(cfg.renders, key) == getattr(single.renders, key), key
        return
    pool = name.removeprefix("avatar-node-")
    host_ip, pod_name = DOWNWARD["HOST_IP"][1], DOWNWARD["POD_NAME"][1]
    assert cluster.role == "node" and cluster.pool == pool
    # the machine's address: HTTP bound there, advertised to the gateways, the ICE candidates
    assert cfg.server.host == host_ip and cfg.server.ice_hosts == [host_ip]
    assert cluster.advertise == f"http://{host_ip}:{HTTP_PORT}"
    assert cluster.node_id == pod_name
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
              for e in container["env"] if "fieldRef" in e["valueFrom"]}  # fmt: skip
    assert fields == {var: field for var, (field, _) in DOWNWARD.items()}
    # a worker process per CPU on cpu nodes (one process is capped by its GIL); a GPU node's
    # one process feeds its GPU
    assert cfg.server.udp_ports == UDP_RANGE
    assert cfg.server.workers == ("auto" if pool == "cpu" else 1)
    # render jobs are the gateways': the pool's Redis is not the node's render queue
    assert cfg.renders.redis == "" and "--redis" not in container["args"]
    assert cfg.server.turn_urls == []


@pytest.mark.parametrize("pool", POOLS)
def test_node_pods_run_one_per_machine_on_the_host_network(pool: str) -> None:
    deployment = pool_k8s("Deployment", node(pool))
    spec = deployment["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    for other in POOLS:  # whatever its pool: the ports are the machine's
        assert selects(term["labelSelector"], pool_labels(node(other)))
    assert not selects(term["labelSelector"], pool_labels(GATEWAY))
    (container,) = spec["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    # on the pool's own machines, which are tainted for it
    assert spec["nodeSelector"] == {MACHINE_LABEL: pool}
    assert {"key": MACHINE_LABEL, "operator": "Equal", "value": pool,
            "effect": "NoSchedule"} in spec["tolerations"]  # fmt: skip
    assert pool_labels(node(pool))[MACHINE_LABEL] == pool
    # the HPA owns the count; a rollout adds a machine before an old pod drains
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_gpu_pool_takes_a_gpu_on_gpu_machines() -> None:
    gpu = pool_k8s("Deployment", node("gpu"))["spec"]["template"]["spec"]
    resources = pool_container(node("gpu"))["resources"]
    assert int(resources["limits"][GPU]) == int(resources["requests"][GPU]) == 1
    assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    cpu = pool_k8s("Deployment", node("cpu"))["spec"]["template"]["spec"]
    assert GPU not in json.dumps(cpu), "the CPU pool neither takes nor tolerates GPUs"
    # its own image (onnxruntime's CUDA provider), mapped by the kustomization
    assert pool_container(node("gpu"))["image"] != pool_container(node("cpu"))["image"]


def test_pool_probes_use_the_server_paths() -> None:
    container = pool_container(GATEWAY)
    assert {p: container[p]["httpGet"]["path"] for p in PROBES} == PROBES
    # nodes: ready while they answer; full and draining are for the gateways to read in Redis
    # (a 503 when full would count full nodes out of the HPA's ready pods, and a ReplicaSet
    # removes unready pods first on a scale-down)
    nodes = {p: "/healthz" for p in PROBES}
    for pool in POOLS:
        container = pool_container(node(pool))
        assert {p: container[p]["httpGet"]["path"] for p in PROBES} == nodes
    for name in pool_workloads():
        container = pool_container(name)
        assert all(container[p]["httpGet"]["port"] == "http" for p in PROBES)
        annotations = pool_k8s("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(HTTP_PORT)


def pre_stop_s(container: Doc) -> float:
    if "lifecycle" not in container:
        return 0.0
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


def test_pool_grace_periods_cover_the_drain() -> None:
    for pool in POOLS:
        container = pool_container(node(pool))
        drain_s = serve_through_cli(pool_resolved(container))[1].server.drain_s
        grace = pool_k8s("Deployment", node(pool))["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        assert drain_s > 0 and grace > pre_stop_s(container) + drain_s
    # a gateway holds no sessions: its grace covers the endpoint removal and offers in flight
    gateway = pool_k8s("Deployment", GATEWAY)["spec"]["template"]["spec"]
    assert gateway["terminationGracePeriodSeconds"] > pre_stop_s(pool_container(GATEWAY)) > 0


def test_pool_selectors_match_the_pods() -> None:
    pods = {name: pool_labels(name) for name in pool_workloads()}
    pods |= {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
             for _, d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet")
             and (d["kind"], d["metadata"]["name"]) not in SINGLE_SERVER}  # fmt: skip
    for name in pool_workloads():
        deployment = pool_k8s("Deployment", name)
        # each selector takes its own pods and no other workload's
        taken = {n for n, labels in pods.items() if selects(deployment["spec"]["selector"], labels)}
        assert taken == {name}
        assert (
            pool_k8s("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == pods[name]
        )
    assert {pods[n]["app.kubernetes.io/component"] for n in pool_workloads()} == {"gateway", "node"}
    patch = yaml.safe_load((POOL / "patches" / "service-http.yaml").read_text())
    service = {**k8s("Service", "avatar")["spec"]["selector"], **patch["spec"]["selector"]}
    assert service == pods[GATEWAY]


@pytest.mark.parametrize("pool", POOLS)
def test_pool_hpa_scales_its_deployment_on_the_adapters_utilisation(pool: str) -> None:
    spec = pool_k8s("HorizontalPodAutoscaler", node(pool))["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": node(pool)}  # fmt: skip
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == POOL_METRIC
    # this pool's series: the pool its nodes register in
    cfg = serve_through_cli(pool_resolved(pool_container(node(pool))))[1]
    selector = metric["external"]["metric"]["selector"]
    assert selector == {"matchLabels": {"pool": cfg.server.cluster.pool}}
    target = metric["external"]["target"]
    assert target["type"] == "Value" and quantity(target["value"]) == 0.7
    assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    # one node at a time: each removal may cut the sessions it could not drain
    (policy,) = spec["behavior"]["scaleDown"]["policies"]
    assert (policy["type"], policy["value"]) == ("Pods", 1)


def test_adapter_serves_the_pools_utilisation_from_the_gateways_gauges() -> None:
    (rule,) = [r for r in adapter_rules("externalRules") if r["name"]["as"] == POOL_METRIC]
    assert rule["seriesQuery"].startswith("avatar_pool_sessions{")
    assert re.fullmatch(r"\^avatar_pool_sessions\$", rule["name"]["matches"])
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}}}

    # every gateway exports the whole pool: max over them (a sum would count it per gateway),
    # per namespace and pool, sessions over capacity
    def part(what: str) -> str:
        series = f'<<.Series>>{{<<.LabelMatchers>>,what="{what}"}}'
        return re.escape(f"max({series}) by (namespace, pool)")

    query = " ".join(rule["metricsQuery"].split())
    between = re.escape(" / on (namespace, pool) ")
    assert re.fullmatch(part("sessions") + between + part("capacity"), query), query
    # and the gateway exports those gauges under those names and labels
    source = (ROOT / "avatar" / "cluster" / "gateway.py").read_text()
    assert re.search(r'Gauge\("avatar_pool_sessions",[^)]*\["pool", "what"\]', source)
    assert 'labels(n.pool, "sessions")' in source and 'labels(n.pool, "capacity")' in source


def test_pool_secrets_and_settings_come_from_the_example_secret_and_config() -> None:
    secret = k8s("Secret", "avatar-secrets")
    config = k8s("ConfigMap", "avatar-config")["data"]
    gateway = pool_k8s("Deployment", GATEWAY)["spec"]["template"]
    # the gateway takes the single server's place: the same secrets
    assert env_refs("Secret", [gateway]) == env_refs("Secret", [avatar_pod()])
    assert {k for _, k in env_refs("Secret", [gateway])} <= set(secret["stringData"])
    assert env_refs("ConfigMap", [gateway]) <= {("avatar-config", k) for k in config}
    assert ("avatar-config", "POOL_REDIS") in env_refs("ConfigMap", [gateway])
    for pool in POOLS:
        pod = pool_k8s("Deployment", node(pool))["spec"]["template"]
        # the token key only (offers carry tokens); no TURN, S3 or webhook keys
        assert env_refs("Secret", [pod]) == {("avatar-secrets", "AVATAR_SECRET")}
        assert env_refs("ConfigMap", [pod]) == {("avatar-config", "POOL_REDIS")}


def test_pool_pods_run_non_root_on_a_read_only_root() -> None:
    user, _, group = instructions("USER")[-1].partition(":")
    for name in pool_workloads():
        pod = pool_k8s("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user) != 0
        assert pod["securityContext"]["runAsGroup"] == int(group)
        # nodes mount a token that may patch pods only (their deletion cost); gateways none
        node = name.startswith("avatar-node")
        assert pod["automountServiceAccountToken"] is node
        assert pod.get("serviceAccountName") == ("avatar-node" if node else None)
        (container,) = pod["containers"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        # host networking is the nodes' only exception, nothing else of the host
        assert not {"hostPID", "hostIPC"} & set(pod)
        assert pod.get("hostNetwork", False) is name.startswith("avatar-node-")
        assert all("hostPath" not in v for v in pod["volumes"])


def test_pool_network_policies_admit_the_pool_paths_and_no_more() -> None:
    gateway = pool_labels(GATEWAY)
    nodes = [pool_labels(node(p)) for p in POOLS]
    redis_pods, worker_pods = pod_labels("StatefulSet", REDIS), pod_labels("Deployment", WORKER)
    others = [pod_labels("Deployment", "avatar-turn"), *nodes]
    redis_port = redis_container()["ports"][0]["containerPort"]
    tcp_redis = [{"protocol": "TCP", "port": redis_port}]
    advertised = urlsplit(serve_through_cli(pool_resolved(pool_container(node("cpu"))))[1]
                          .server.cluster.advertise)  # fmt: skip

    # gateways: HTTP in from the cluster; out to DNS, Redis, the nodes' HTTP, public HTTP(S)
    policy = pool_k8s("NetworkPolicy", GATEWAY)["spec"]
    assert selects(policy["podSelector"], gateway)
    assert not any(selects(policy["podSelector"], labels) for labels in [*others, redis_pods])
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": HTTP_PORT}]}]
    rules = policy["egress"]
    assert len(rules) == 4
    assert all(rule.get("to") and rule.get("ports") for rule in rules), "no rule open to all"
    (dns,) = [r for r in rules if {p["port"] for p in r["ports"]} == {53}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    (to_redis,) = [r for r in rules if r["ports"] == tcp_redis]
    assert [selects(p["podSelector"], redis_pods) for p in to_redis["to"]] == [True]
    # the nodes are host-network pods: their machines' subnet, on the port they advertise
    (to_nodes,) = [r for r in rules if r["ports"] == [{"protocol": "TCP", "port": advertised.port}]]
    (machines,) = to_nodes["to"]
    assert set(machines) == {"ipBlock"} and "except" not in machines["ipBlock"]
    (public,) = [r for r in rules if r not in (dns, to_redis, to_nodes)]
    assert sorted(p["port"] for p in public["ports"]) == [80, 443]
    v4 = next(p["ipBlock"] for p in public["to"] if p["ipBlock"]["cidr"] == "0.0.0.0/0")
    private = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8"}
    assert private <= set(v4["except"])

    # Redis: in from the gateways, the render workers and the nodes' machines; out nothing
    policy = redis_policy_in_the_pool()["spec"]
    assert selects(policy["podSelector"], redis_pods) and policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["ports"] == tcp_redis
    pods = [p["podSelector"] for p in rule["from"] if "podSelector" in p]
    assert all(set(p) <= {"podSelector", "ipBlock"} and len(p) == 1 for p in rule["from"])
    assert all(any(selects(s, labels) for s in pods) for labels in (gateway, worker_pods))
    assert not any(selects(s, labels) for s in pods for labels in others)
    assert [p["ipBlock"] for p in rule["from"] if "ipBlock" in p] == [machines["ipBlock"]]

    # no policy claims the node pods: NetworkPolicy does not govern host-network pods (their
    # machines' firewall does, docs/deploy.md)
    policies = [d for _, d in [*k8s_docs(), *pool_docs()] if d["kind"] == "NetworkPolicy"
                and (d["kind"], d["metadata"]["name"]) not in SINGLE_SERVER]  # fmt: skip
    assert not any(selects(p["spec"]["podSelector"], labels) for p in policies for labels in nodes)


def test_node_pods_may_patch_pods_and_nothing_else() -> None:
    """Their deletion cost (avatar/cluster/deletion_cost.py): a Role with one rule, bound to
    the nodes' ServiceAccount, and the pod name the node patches from the downward API."""
    role = pool_k8s("Role", "avatar-node-deletion-cost")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    binding = pool_k8s("RoleBinding", "avatar-node-deletion-cost")
    assert binding["roleRef"]["name"] == "avatar-node-deletion-cost"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "avatar-node",
                                    "namespace": "avatar"}]  # fmt: skip
    assert pool_k8s("ServiceAccount", "avatar-node")
    for name in ("avatar-node-cpu", "avatar-node-gpu"):
        (container,) = pool_k8s("Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("valueFrom", {}) for e in container["env"]}
        assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
