"""deploy/k8s: kustomize renders it, kubeconform validates it against the Kubernetes schemas
(from the kubernetes-validate wheel, extracted by `make tools`), and it covers what the stack needs."""

import os
import subprocess

import yaml

from helpers import ROOT
from tools import run, tool

K8S_VERSION = "1.33.0"
SCHEMAS = os.path.join(ROOT, ".cache", "k8s-schemas")
SCHEMA_LOCATION = (
    SCHEMAS + "/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
)
SERVICES = {"gateway": 50050, "collect": 50051, "process": 50052, "train": 50053, "serve": 50054}


def kubeconform(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-kubernetes-version",
            K8S_VERSION,
            "-schema-location",
            SCHEMA_LOCATION,
            path,
        ],
        capture_output=True,
        text=True,
    )


def rendered(tmp_path) -> tuple[str, list[dict]]:
    text = run([tool("kustomize"), "build", os.path.join(ROOT, "deploy", "k8s")]).stdout
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    return str(path), [d for d in yaml.safe_load_all(text) if d]


def test_kubeconform_accepts_every_rendered_resource(tmp_path):
    path, docs = rendered(tmp_path)
    proc = kubeconform(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        f"{len(docs)} resources found in 1 file - Valid: {len(docs)}, Invalid: 0, Errors: 0, Skipped: 0" in proc.stdout
    )


def test_kubeconform_rejects_an_unknown_field(tmp_path):
    """Proves the schemas are really loaded: a typo in a probe is an error, not a skip."""
    path, _ = rendered(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(path).read().replace("readinessProbe:", "readinesProbe:", 1))
    proc = kubeconform(str(bad))
    assert proc.returncode == 1 and "additional properties 'readinesProbe' not allowed" in proc.stdout, proc.stdout


def _workloads(docs) -> dict[str, dict]:
    kinds = ("Deployment", "StatefulSet")
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in kinds and d["metadata"]["name"] in SERVICES}


def test_each_service_has_a_workload_with_grpc_probes_and_resource_requests(tmp_path):
    _, docs = rendered(tmp_path)
    workloads = _workloads(docs)
    assert set(workloads) == set(SERVICES)
    assert {n for n, d in workloads.items() if d["kind"] == "StatefulSet"} == {"train"}
    for name, port in SERVICES.items():
        (container,) = workloads[name]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [name]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (name, probe)
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name


def test_serve_and_process_scale_behind_headless_services_and_minio_keeps_its_data(tmp_path):
    _, docs = rendered(tmp_path)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    workloads = _workloads(docs)
    for name in ("serve", "process"):
        assert services[name]["spec"]["clusterIP"] == "None", name
        assert workloads[name]["spec"]["replicas"] >= 2, name
    assert all(services[s]["spec"].get("clusterIP") != "None" for s in SERVICES if s not in ("serve", "process"))
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["COOKLINE_PROCESS_ADDR"] == "dns:///process:50052"  # every replica, round robin
    (minio,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "minio"]
    assert minio["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert all(d["metadata"].get("namespace") == "cookline" for d in docs if d["kind"] != "Namespace")


def test_train_is_a_parallel_statefulset_with_worker_addresses_and_a_chief_service(tmp_path):
    _, docs = rendered(tmp_path)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    train = _workloads(docs)["train"]
    assert train["spec"]["podManagementPolicy"] == "Parallel"
    workers = services[train["spec"]["serviceName"]]["spec"]
    assert workers["clusterIP"] == "None" and workers["publishNotReadyAddresses"] is True
    assert {p["port"] for p in workers["ports"]} == {50053, 51053}  # gRPC and the collectives (port + 1000)
    labels = train["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in workers["selector"].items())
    chief = services["train"]["spec"]
    assert chief["selector"]["statefulset.kubernetes.io/pod-name"] == "train-0"
    (container,) = train["spec"]["template"]["spec"]["containers"]
    assert {p["containerPort"] for p in container["ports"]} == {50053, 51053}
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    peers = config["COOKLINE_TRAIN_PEERS"].split(",")
    service = train["spec"]["serviceName"]
    assert peers == [f"train-{k}.{service}:50053" for k in range(train["spec"]["replicas"])]


def test_the_platform_restarts_every_service_and_keeps_replicas_through_disruptions(tmp_path):
    """The supervisor story (docs/deploy.md "Restarts"): pods restart, probes decide when, and
    voluntary disruptions leave a process and a serve replica answering."""
    _, docs = rendered(tmp_path)
    workloads = _workloads(docs)
    for name, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod.get("restartPolicy", "Always") == "Always", name
        (container,) = pod["containers"]
        start, live = container["startupProbe"], container["livenessProbe"]
        assert start["periodSeconds"] * start["failureThreshold"] >= 120, name  # TensorFlow's import on a busy node
        assert live.get("timeoutSeconds", 1) >= 5, name  # a replica busy training answers late
        assert live["periodSeconds"] * live.get("failureThreshold", 3) >= 60, name
    (minio,) = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "minio"]
    (container,) = minio["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/minio/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
    budgets = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {"process", "serve"}
    for name, budget in budgets.items():
        assert budget["minAvailable"] == 1 and workloads[name]["spec"]["replicas"] > 1, name
        assert budget["selector"]["matchLabels"] == workloads[name]["spec"]["selector"]["matchLabels"], name
