"""deploy/kustomize and deploy/compose: the properties the deployment relies on.

Every YAML file is parsed as written, and what matters is asserted: kustomization
references exist, workloads are locked down (non-root, read-only root, no
capabilities, requests and limits), Conveyor servers have native gRPC probes on
the port named `grpc` with readiness naming the service's full proto name, the
termination grace outlasts the shutdown grace, Services expose `grpc`. When
`kubectl` (or `kustomize`) is on PATH, both overlays are also rendered and the
rendered output is checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
BASE = KUSTOMIZE / "base"
OVERLAYS = sorted(p for p in (KUSTOMIZE / "overlays").iterdir() if p.is_dir())
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"

KUSTOMIZATION_NAMES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
IMAGE_PLACEHOLDER = "conveyor"  # set by the `images:` entry of base/kustomization.yaml
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10.0
SHUTDOWN_GRACE = "CONVEYOR_SHUTDOWN_GRACE_SECONDS"
#: Where every Conveyor container serves Prometheus /metrics (CONVEYOR_METRICS_PORT).
METRICS_PORT = 9464

Doc = dict[str, Any]


# ---- loading -------------------------------------------------------------------


def yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in {".yaml", ".yml"})


def load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization_files() -> list[Path]:
    return [p for p in yaml_files(KUSTOMIZE) if p.name in KUSTOMIZATION_NAMES]


def resource_docs(folder: Path = KUSTOMIZE) -> list[tuple[Path, Doc]]:
    """Kubernetes objects (not kustomizations, not patches) under `folder`."""
    patches = patch_files()
    return [
        (path, doc)
        for path in yaml_files(folder)
        if path.name not in KUSTOMIZATION_NAMES and path not in patches
        for doc in load_all(path)
    ]


def patch_files() -> set[Path]:
    found = set()
    for path in kustomization_files():
        k = load_all(path)[0]
        for patch in k.get("patches", []) + k.get("patchesStrategicMerge", []):
            target = patch.get("path") if isinstance(patch, dict) else patch
            if isinstance(target, str):
                found.add((path.parent / target).resolve())
    return found


def pod_spec(doc: Doc) -> Doc:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def workloads(docs: list[tuple[Path, Doc]]) -> list[tuple[Path, Doc]]:
    return [(path, doc) for path, doc in docs if doc.get("kind") in WORKLOAD_KINDS]


def containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec["containers"]


def image_name(image: str) -> str:
    """`registry:5000/team/conveyor:1.2@sha256:...` -> `conveyor`."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def is_conveyor(doc: Doc, placeholder_only: bool = True) -> bool:
    """A workload running the Conveyor image (the placeholder name before kustomize)."""
    images = [c["image"] for c in containers(doc)]
    if placeholder_only:
        return IMAGE_PLACEHOLDER in images
    return any(image_name(i) == IMAGE_PLACEHOLDER for i in images)


CONSOLE = "conveyor-console"  # the web console: HTTP, not a gRPC server


def conveyor_servers(docs: list[tuple[Path, Doc]], placeholder_only: bool = True) -> list[Doc]:
    """The gRPC servers (the console is checked on its own)."""
    return [
        doc
        for _, doc in docs
        if doc.get("kind") == "Deployment"
        and is_conveyor(doc, placeholder_only)
        and doc["metadata"]["name"] != CONSOLE
    ]


def proto_services() -> set[str]:
    """Full names (`package.Service`) of every gRPC service declared under protos/."""
    names = set()
    for proto in (ROOT / "protos").rglob("*.proto"):
        text = proto.read_text()
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        for service in re.findall(r"^service\s+(\w+)", text, re.M):
            assert package, proto
            names.add(f"{package.group(1)}.{service}")
    return names


def literals(kustomization: Doc) -> Iterator[tuple[str, str]]:
    for generator in kustomization.get("configMapGenerator", []):
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            yield key, value


def shutdown_graces() -> list[float]:
    """Every CONVEYOR_SHUTDOWN_GRACE_SECONDS set anywhere under kustomize/, or the default."""
    values = [
        float(value)
        for path in kustomization_files()
        for key, value in literals(load_all(path)[0])
        if key == SHUTDOWN_GRACE
    ]
    for _, doc in workloads(resource_docs()):
        for container in containers(doc):
            env = container.get("env", [])
            values += [float(e["value"]) for e in env if e["name"] == SHUTDOWN_GRACE]
    return values or [DEFAULT_SHUTDOWN_GRACE_SECONDS]


def grpc_port(container: Doc) -> int:
    named = [p for p in container.get("ports", []) if p.get("name") == "grpc"]
    assert len(named) == 1, f"{container['name']}: one container port named grpc"
    return int(named[0]["containerPort"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---- every file ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [*yaml_files(KUSTOMIZE), COMPOSE], ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_yaml_parses_into_named_objects(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} holds no document"
    if path.name in KUSTOMIZATION_NAMES or path == COMPOSE:
        return
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc["metadata"].get("name"), doc


@pytest.mark.parametrize(
    "path", kustomization_files(), ids=lambda p: str(p.parent.relative_to(KUSTOMIZE))
)
def test_kustomization_references_exist(path: Path) -> None:
    k = load_all(path)[0]
    is_component = "components" in path.parent.relative_to(KUSTOMIZE).parts[:1]
    assert k["kind"] == ("Component" if is_component else "Kustomization")
    for entry in k.get("resources", []):
        target = path.parent / entry
        assert target.exists(), f"{path}: resource {entry} does not exist"
        if target.is_dir():
            assert any((target / n).exists() for n in KUSTOMIZATION_NAMES), target
    for entry in k.get("components", []):
        target = path.parent / entry
        kfile = target / "kustomization.yaml"
        assert kfile.exists(), f"{path}: component {entry} has no kustomization.yaml"
        assert load_all(kfile)[0]["kind"] == "Component", entry
    for patch in k.get("patches", []):
        if "path" in patch:
            assert (path.parent / patch["path"]).exists(), patch
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for entry in generator.get("files", []) + generator.get("envs", []):
            assert (path.parent / entry.rpartition("=")[2]).exists(), entry


def test_every_manifest_is_used_by_a_kustomization() -> None:
    used = set()
    for path in kustomization_files():
        k = load_all(path)[0]
        used |= {(path.parent / e).resolve() for e in k.get("resources", [])}
    used |= patch_files()
    orphans = [
        str(p.relative_to(KUSTOMIZE))
        for p in yaml_files(KUSTOMIZE)
        if p.name not in KUSTOMIZATION_NAMES and p.resolve() not in used
    ]
    assert orphans == []


# ---- base --------------------------------------------------------------------------


def test_base_is_namespace_agnostic_and_labelled() -> None:
    k = load_all(BASE / "kustomization.yaml")[0]
    assert "namespace" not in k
    for path, doc in resource_docs(BASE):
        assert "namespace" not in doc["metadata"], path
    labels = [entry["pairs"] for entry in k.get("labels", [])] + [k.get("commonLabels", {})]
    assert any(p.get("app.kubernetes.io/part-of") == "conveyor" for p in labels)


def test_base_sets_the_conveyor_image_with_a_pinned_tag() -> None:
    k = load_all(BASE / "kustomization.yaml")[0]
    entry = next(i for i in k["images"] if i["name"] == IMAGE_PLACEHOLDER)
    assert entry.get("digest") or (entry.get("newTag") and entry["newTag"] != "latest")


def test_base_holds_no_secret() -> None:
    assert not [doc for _, doc in resource_docs(BASE) if doc["kind"] == "Secret"]
    assert "secretGenerator" not in load_all(BASE / "kustomization.yaml")[0]


def test_every_base_service_folder_is_complete() -> None:
    """Each service folder: Deployment, Service, ServiceAccount, PDB and migration Job (the
    console keeps no schema: no Job)."""
    folders = [p for p in BASE.iterdir() if p.is_dir()]
    assert BASE / "queue" in folders and BASE / "console" in folders
    listed = load_all(BASE / "kustomization.yaml")[0]["resources"]
    for folder in folders:
        assert folder.name in listed, f"base/kustomization.yaml must list {folder.name}"
        kinds = {doc["kind"] for _, doc in resource_docs(folder)}
        expected = {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
        assert expected | ({"Job"} if folder.name != "console" else set()) <= kinds
        if folder.name == "console":
            assert "Job" not in kinds


# ---- workloads (base, components) -------------------------------------------------------


ALL_WORKLOADS = workloads(resource_docs())


def _workload_id(item: tuple[Path, Doc]) -> str:
    return f"{item[1]['kind']}/{item[1]['metadata']['name']}"


def assert_locked_down(doc: Doc) -> None:
    spec = pod_spec(doc)
    pod = spec.get("securityContext", {})
    sa_token = spec.get("automountServiceAccountToken")
    assert sa_token is False, f"{doc['metadata']['name']}: automountServiceAccountToken: false"
    for container in containers(doc):
        where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
        sc = container.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod.get("runAsUser", 1)) != 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("privileged", False) is False, where
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
        assert not sc.get("capabilities", {}).get("add"), where
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resources.get(kind, {}).get(resource), f"{where}: {kind}.{resource}"
        image = container["image"]
        tagged = ":" in image.split("@")[0].rsplit("/", 1)[-1]
        assert image == IMAGE_PLACEHOLDER or tagged, f"{where}: pin a tag on {image}"
        assert not image.split("@")[0].endswith(":latest"), where


@pytest.mark.parametrize("item", ALL_WORKLOADS, ids=_workload_id)
def test_workload_is_locked_down(item: tuple[Path, Doc]) -> None:
    assert_locked_down(item[1])


@pytest.mark.parametrize("item", [w for w in ALL_WORKLOADS if is_conveyor(w[1])], ids=_workload_id)
def test_conveyor_workload_settings_and_scratch_space(item: tuple[Path, Doc]) -> None:
    doc = item[1]
    spec = pod_spec(doc)
    # Otherwise Kubernetes injects CONVEYOR_<SERVICE>_PORT=tcp://... and friends.
    assert spec.get("enableServiceLinks") is False
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for container in containers(doc):
        sources = container.get("envFrom", [])
        assert {"configMapRef": {"name": "conveyor-config"}} in sources
        assert {"secretRef": {"name": "conveyor-secrets"}} in sources
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], "read-only root needs a /tmp emptyDir"


def assert_conveyor_server(doc: Doc, services: set[str], probe_port: int = 50051) -> None:
    """`probe_port`: where the probes go; a TLS server serves them on a plaintext health
    port of their own (CONVEYOR_HEALTH_LISTEN_ADDRESS)."""
    name = doc["metadata"]["name"]
    spec = pod_spec(doc)
    (container,) = spec["containers"]
    args = container["args"]
    assert args[0] == "serve" and len(args) == 2, f"{name}: one service per pod, got {args}"
    assert grpc_port(container) == 50051
    port = probe_port
    ports = {int(p["containerPort"]) for p in container["ports"]}
    assert port in ports, f"{name}: the probe port {port} is not a container port"

    liveness = container["livenessProbe"]["grpc"]
    assert int(liveness["port"]) == port
    assert liveness.get("service", "") == "", f"{name}: liveness checks the overall service"
    readiness = container["readinessProbe"]["grpc"]
    assert int(readiness["port"]) == port
    assert readiness.get("service") in services, f"{name}: readiness names a proto service"
    startup = container["startupProbe"]["grpc"]
    assert int(startup["port"]) == port

    grace = spec["terminationGracePeriodSeconds"]
    assert grace > max(shutdown_graces()), f"{name}: termination grace must outlast the drain"


@pytest.mark.parametrize(
    "doc", conveyor_servers(resource_docs(BASE)), ids=lambda d: d["metadata"]["name"]
)
def test_conveyor_server_probes_and_grace(doc: Doc) -> None:
    assert_conveyor_server(doc, proto_services())


def test_queue_deployment() -> None:
    from conveyor_queue.api.servicer import SERVICE_NAME

    (doc,) = [d for _, d in resource_docs(BASE / "queue") if d["kind"] == "Deployment"]
    (container,) = pod_spec(doc)["containers"]
    assert container["args"] == ["serve", "queue"]
    assert doc["spec"]["replicas"] == 2
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    assert SERVICE_NAME == "conveyor.queue.v1.WorkOrderQueueService"


def test_scheduler_deployment_calls_the_queue_and_event_store_in_cluster() -> None:
    from conveyor_scheduler.api.servicer import SERVICE_NAME

    (doc,) = [d for _, d in resource_docs(BASE / "scheduler") if d["kind"] == "Deployment"]
    (container,) = pod_spec(doc)["containers"]
    assert container["args"] == ["serve", "scheduler"]
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CONVEYOR_QUEUE_ADDRESS"] == "conveyor-queue:50051"
    assert env["CONVEYOR_EVENTS_ADDRESS"] == "conveyor-events:50051"


def test_migration_job_per_service() -> None:
    for doc in conveyor_servers(resource_docs(BASE)):
        service = pod_spec(doc)["containers"][0]["args"][1]
        jobs = [
            d
            for _, d in resource_docs(BASE)
            if d["kind"] == "Job" and pod_spec(d)["containers"][0]["args"] == ["migrate", service]
        ]
        assert len(jobs) == 1, f"one `conveyor migrate {service}` Job"
        job_spec = pod_spec(jobs[0])
        assert job_spec["restartPolicy"] in {"Never", "OnFailure"}
        assert job_spec["serviceAccountName"] == pod_spec(doc)["serviceAccountName"]
        # Its pods must not be taken for servers by the Service or the PDB.
        job_labels = jobs[0]["spec"]["template"]["metadata"]["labels"]
        assert not selects(doc["spec"]["selector"]["matchLabels"], job_labels)


def test_services_pdbs_and_service_accounts_match_their_deployments() -> None:
    docs = [doc for _, doc in resource_docs(BASE)]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
        account = accounts[pod_spec(deployment)["serviceAccountName"]]
        assert account.get("automountServiceAccountToken") is False
        services = [
            d for d in docs if d["kind"] == "Service" and selects(d["spec"]["selector"], labels)
        ]
        assert len(services) == 1, deployment["metadata"]["name"]
        pdbs = [
            d
            for d in docs
            if d["kind"] == "PodDisruptionBudget"
            and selects(d["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(pdbs) == 1, deployment["metadata"]["name"]


def test_console_deployment_serves_http_with_probes_and_calls_the_services() -> None:
    docs = resource_docs(BASE / "console")
    (doc,) = [d for _, d in docs if d["kind"] == "Deployment"]
    spec = pod_spec(doc)
    (container,) = spec["containers"]
    assert container["args"] == ["serve", "console"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9464}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CONVEYOR_CONSOLE_LISTEN_ADDRESS"] == "0.0.0.0:8080"
    assert env["CONVEYOR_LISTEN_ADDRESS"].startswith("127.0.0.1:")  # its gRPC: health only
    for peer in ("queue", "events", "scheduler", "executor"):
        assert env[f"CONVEYOR_{peer.upper()}_ADDRESS"] == f"conveyor-{peer}:50051"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert spec["terminationGracePeriodSeconds"] > max(shutdown_graces())
    (service,) = [d for _, d in docs if d["kind"] == "Service"]
    assert service["spec"]["ports"] == [
        {
            "name": "http",
            "port": 80,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {
            "name": "metrics",
            "port": 9464,
            "targetPort": "metrics",
            "protocol": "TCP",
            "appProtocol": "http",
        },
    ]
    for component in ("auth", "tls"):  # both mount what their settings point at
        text = (KUSTOMIZE / "components" / component / "kustomization.yaml").read_text()
        assert "console" in text, component


@pytest.mark.parametrize(
    "doc",
    [
        d
        for _, d in resource_docs(BASE)
        if d["kind"] == "Service" and d["metadata"]["name"] != CONSOLE
    ],
    ids=lambda d: d["metadata"]["name"],
)
def test_conveyor_service_ports_are_grpc_and_metrics(doc: Doc) -> None:
    assert doc["spec"].get("type", "ClusterIP") == "ClusterIP"
    ports = {port["name"]: port for port in doc["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    assert ports["grpc"].get("appProtocol") == "grpc"
    assert ports["grpc"]["targetPort"] in ("grpc", 50051)
    assert ports["metrics"]["targetPort"] == "metrics"
    assert ports["metrics"]["port"] == METRICS_PORT


@pytest.mark.parametrize(
    "doc",
    [d for _, d in resource_docs(BASE) if d["kind"] == "Deployment"],
    ids=lambda d: d["metadata"]["name"],
)
def test_every_deployment_serves_metrics_on_a_port_named_metrics(doc: Doc) -> None:
    [container] = containers(doc)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("CONVEYOR_METRICS_PORT") == str(METRICS_PORT)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_prometheus_operator_component_scrapes_every_conveyor_service() -> None:
    folder = KUSTOMIZE / "components" / "prometheus-operator"
    assert load_all(folder / "kustomization.yaml")[0]["kind"] == "Component"
    [monitor] = [d for _, d in resource_docs(folder) if d["kind"] == "ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    base_labels = {
        key: value
        for entry in load_all(BASE / "kustomization.yaml")[0]["labels"]
        for key, value in entry["pairs"].items()
    }
    services = [d for _, d in resource_docs(BASE) if d["kind"] == "Service"]
    assert len(services) == 5  # the four gRPC services and the console
    for service in services:  # the base's labels transformer puts part-of on each
        assert selects(selector, {**service["metadata"]["labels"], **base_labels})
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


@pytest.mark.parametrize(
    "doc",
    [d for _, d in resource_docs() if d["kind"] == "Service"],
    ids=lambda d: d["metadata"]["name"],
)
def test_every_service_port_is_named(doc: Doc) -> None:
    for port in doc["spec"]["ports"]:
        assert port.get("name"), doc["metadata"]["name"]


# ---- components and overlays --------------------------------------------------------------


def test_jaeger_component_points_conveyor_at_otlp_grpc() -> None:
    k = load_all(KUSTOMIZE / "components" / "jaeger" / "kustomization.yaml")[0]
    generator = next(g for g in k["configMapGenerator"] if g["name"] == "conveyor-config")
    assert generator["behavior"] == "merge"
    endpoint = dict(literals({"configMapGenerator": [generator]}))["CONVEYOR_OTLP_ENDPOINT"]
    host, port = re.fullmatch(r"http://([\w.-]+):(\d+)", endpoint).groups()  # type: ignore[union-attr]
    services = {
        d["metadata"]["name"]: d
        for _, d in resource_docs(KUSTOMIZE / "components" / "jaeger")
        if d["kind"] == "Service"
    }
    ports = {p["port"]: p for p in services[host]["spec"]["ports"]}
    assert int(port) == 4317 and ports[4317].get("appProtocol") == "grpc"
    ui_ports = [p["port"] for s in services.values() for p in s["spec"]["ports"]]
    assert 16686 in ui_ports, "the UI is reachable through a Service"


def test_in_cluster_postgres_is_marked_dev_only() -> None:
    text = (KUSTOMIZE / "components" / "in-cluster-postgres" / "kustomization.yaml").read_text()
    assert "DEVELOPMENT ONLY" in text.upper()
    kinds = {d["kind"] for _, d in resource_docs(KUSTOMIZE / "components" / "in-cluster-postgres")}
    assert "StatefulSet" in kinds


def test_overlays() -> None:
    dev = load_all(KUSTOMIZE / "overlays" / "dev" / "kustomization.yaml")[0]
    assert "../../base" in dev["resources"]
    assert {Path(c).name for c in dev["components"]} == {
        "in-cluster-postgres",
        "in-cluster-redis",
        "jaeger",
    }
    production = load_all(KUSTOMIZE / "overlays" / "production" / "kustomization.yaml")[0]
    assert production["resources"] == ["../../base"]
    assert production["components"] == ["../../components/auth"]
    mtls = load_all(KUSTOMIZE / "overlays" / "production-mtls" / "kustomization.yaml")[0]
    assert mtls["resources"] == ["../production"]
    assert mtls["components"] == ["../../components/tls"]
    assert "secretGenerator" not in production, "production secrets are created out of band"


# ---- compose ---------------------------------------------------------------------------------


def test_compose_file() -> None:
    compose = load_all(COMPOSE)[0]
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "jaeger", "conveyor"}
    assert re.fullmatch(r"postgres:15[\w.-]*", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7[\w.-]*", services["redis"]["image"])
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    for name, service in services.items():
        image = service.get("image", "")
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: pin an image tag"

    conveyor = services["conveyor"]
    build = conveyor["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert conveyor["command"] == ["serve", "queue", "events", "scheduler", "executor"]
    env = conveyor["environment"]
    assert env["CONVEYOR_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["CONVEYOR_DATABASE_URL"]
    assert env["CONVEYOR_REDIS_URL"].startswith("redis://redis:6379")
    assert env["CONVEYOR_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert env["CONVEYOR_LISTEN_ADDRESS"] == "0.0.0.0:50051"
    assert env["CONVEYOR_METRICS_PORT"] == str(METRICS_PORT)
    assert f"{METRICS_PORT}:{METRICS_PORT}" in conveyor["ports"]
    assert len(env["CONVEYOR_PAGE_TOKEN_SECRET"]) >= 16
    for dependency in ("postgres", "redis"):
        assert conveyor["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"]
    check = " ".join(conveyor["healthcheck"]["test"])
    assert any(f"service='{s}'" in check for s in proto_services())
    stop = int(conveyor["stop_grace_period"].rstrip("s"))
    assert stop > float(env.get(SHUTDOWN_GRACE, DEFAULT_SHUTDOWN_GRACE_SECONDS))
    assert conveyor["read_only"] is True and conveyor["cap_drop"] == ["ALL"]

    console = services["console"]
    assert console["image"] == conveyor["image"] and console["command"] == ["serve", "console"]
    env = console["environment"]
    assert (
        env["CONVEYOR_CONSOLE_LISTEN_ADDRESS"] == "0.0.0.0:8080" and "8080:8080" in console["ports"]
    )
    for peer in ("QUEUE", "EVENTS", "SCHEDULER", "EXECUTOR"):
        assert env[f"CONVEYOR_{peer}_ADDRESS"] == "conveyor:50051"
    assert console["depends_on"]["conveyor"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(console["healthcheck"]["test"])
    assert console["read_only"] is True and console["cap_drop"] == ["ALL"]


def assert_principals_mounted(servers: list[Doc], config: Doc, secrets: set[str]) -> None:
    """Every server mounts the conveyor-auth Secret where CONVEYOR_AUTH_TOKENS_FILE points."""
    path = Path(config["data"]["CONVEYOR_AUTH_TOKENS_FILE"])
    assert path.name == "principals.json"
    for doc in servers:
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        auth = [
            v for v in volumes.values() if v.get("secret", {}).get("secretName") == "conveyor-auth"
        ]
        assert len(auth) == 1 and "conveyor-auth" in secrets, doc["metadata"]["name"]
        mounts = [m for m in containers(doc)[0]["volumeMounts"] if m["name"] == auth[0]["name"]]
        assert mounts and mounts[0]["readOnly"] is True
        assert Path(mounts[0]["mountPath"]) == path.parent
        assert "subPath" not in mounts[0], "a subPath mount never sees the Secret change"


# ---- rendered overlays (needs kubectl or kustomize) ----------------------------------------------


def render(overlay: Path) -> list[Doc]:
    if kustomize := shutil.which("kustomize"):
        command = [kustomize, "build", str(overlay)]
    elif kubectl := shutil.which("kubectl"):
        command = [kubectl, "kustomize", str(overlay)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_rendered_overlay(overlay: Path) -> None:
    docs = render(overlay)
    pairs = [(overlay, d) for d in docs]
    by_kind: dict[str, dict[str, Doc]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace"), f"{doc['kind']}/{doc['metadata']['name']}"
    production = overlay.name.startswith("production")
    external_secrets = {"conveyor-secrets", "conveyor-auth"} if production else set()
    if overlay.name == "production-mtls":
        external_secrets.add("conveyor-tls")

    servers = conveyor_servers(pairs, placeholder_only=False)
    assert servers, "the overlay runs Conveyor"
    for _, doc in workloads(pairs):
        assert_locked_down(doc)
        for container in containers(doc):
            assert container["image"] != IMAGE_PLACEHOLDER, "the images: entry must apply"
            for source in container.get("envFrom", []):
                if ref := source.get("configMapRef"):
                    assert ref["name"] in by_kind["ConfigMap"], ref
                if ref := source.get("secretRef"):
                    known = set(by_kind.get("Secret", {})) | external_secrets
                    assert ref["name"] in known, ref
    config = next(c for n, c in by_kind["ConfigMap"].items() if n.startswith("conveyor-config"))
    health = config["data"].get("CONVEYOR_HEALTH_LISTEN_ADDRESS")
    for doc in servers:
        probe_port = int(health.rpartition(":")[2]) if health else 50051
        assert_conveyor_server(doc, proto_services(), probe_port)
    grace = float(config["data"].get(SHUTDOWN_GRACE, DEFAULT_SHUTDOWN_GRACE_SECONDS))
    for doc in servers:
        assert pod_spec(doc)["terminationGracePeriodSeconds"] > grace
    queue = by_kind["Deployment"]["conveyor-queue"]
    if production:
        assert_principals_mounted(servers, config, external_secrets)
        assert queue["spec"]["replicas"] == 3
        assert "StatefulSet" not in by_kind, "production uses a managed PostgreSQL"
    if overlay.name == "dev":
        assert config["data"]["CONVEYOR_OTLP_ENDPOINT"] == "http://jaeger-collector:4317"
        secret = next(s for n, s in by_kind["Secret"].items() if n.startswith("conveyor-secrets"))
        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
        assert keys == {"CONVEYOR_DATABASE_URL", "CONVEYOR_REDIS_URL", "CONVEYOR_PAGE_TOKEN_SECRET"}
    assert "conveyor-queue-migrate" in by_kind["Job"]
    if overlay.name == "production-mtls":
        assert_tls_mounted(servers, config)


def assert_tls_mounted(servers: list[Doc], config: Doc) -> None:
    """Every server mounts conveyor-tls where the TLS settings point and requires client
    certificates; its probes use the plaintext health port (the kubelet cannot do TLS)."""
    data = config["data"]
    files = {data[k] for k in ("CONVEYOR_TLS_CERT_FILE", "CONVEYOR_TLS_KEY_FILE")}
    files |= {data["CONVEYOR_TLS_CLIENT_CA_FILE"], data["CONVEYOR_TLS_CA_FILE"]}
    assert {Path(f).name for f in files} == {"tls.crt", "tls.key", "ca.crt"}
    (directory,) = {Path(f).parent for f in files}
    for doc in servers:
        volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
        (tls,) = [
            n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "conveyor-tls"
        ]
        (mount,) = [m for m in containers(doc)[0]["volumeMounts"] if m["name"] == tls]
        assert Path(mount["mountPath"]) == directory and mount["readOnly"] is True
