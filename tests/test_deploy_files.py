"""The deployment files (deploy/): valid against their schemas, offline, and holding the invariants operators
rely on: every long-running pod probed and sized, images pinned, no secret value written down, every queue served
and Celery beat in exactly one worker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from archipel.platform.jobs import QUEUES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
BIN = Path(sys.executable).parent


def _kubernetes_version() -> str:
    found = re.search(r"^KUBERNETES_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile pins KUBERNETES_VERSION"
    return found.group(1)


def _manifests() -> Iterator[dict[str, Any]]:
    for path in MANIFESTS:
        yield from (doc for doc in yaml.safe_load_all(path.read_text()) if doc)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _manifests():
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_the_compose_file_passes_the_compose_spec_schema() -> None:
    run = _run(
        str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_manifests_pass_the_kubernetes_schemas_of_the_pinned_version(tmp_path: Path) -> None:
    validate = (str(BIN / "kubernetes-validate"), "--quiet", "--strict", "-k", _kubernetes_version())
    run = _run(*validate, *map(str, MANIFESTS))
    assert run.returncode == 0, run.stdout + run.stderr
    # The validator does fail on a broken manifest (a field of the wrong type).
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (DEPLOY / "kubernetes" / "api.yaml").read_text().replace("replicas: 2", "replicas: two", 1)
    )
    assert _run(*validate, str(broken)).returncode != 0


def test_the_load_balancer_config_is_accepted_by_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (make system installs it)")
    run = _run(haproxy, "-q", "-c", "-f", str(DEPLOY / "haproxy.cfg"))
    assert run.returncode == 0, run.stdout + run.stderr
    broken = tmp_path / "haproxy.cfg"
    broken.write_text((DEPLOY / "haproxy.cfg").read_text().replace("balance leastconn", "balance fastest", 1))
    assert _run(haproxy, "-q", "-c", "-f", str(broken)).returncode != 0


def test_every_pod_requests_resources_and_every_deployment_has_both_probes() -> None:
    seen = 0
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{name}: no cpu/memory request"
            if name.startswith("Deployment/"):
                assert "livenessProbe" in container and "readinessProbe" in container, (
                    f"{name}: a probe is missing"
                )
                seen += 1
    assert seen >= 5  # api, dicom and three workers


def test_every_worker_has_an_autoscaler_or_is_the_single_beat_worker_and_every_deployment_a_budget() -> None:
    docs = list(_manifests())
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert all(d["apiVersion"] == "autoscaling/v2" for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    for name, deployment in deployments.items():
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] in budgets
        if args[0] == "worker":
            beat = "--beat" in args
            assert beat or name in scaled, f"{name}: a worker without an autoscaler"
            if beat:
                assert (
                    deployment["spec"]["replicas"] == 1
                    and deployment["spec"]["strategy"]["type"] == "Recreate"
                )
    dicom = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "archipel-dicom")
    assert dicom["spec"]["type"] == "LoadBalancer" and dicom["spec"]["ports"][0]["port"] == 11112


def _images() -> Iterator[tuple[str, str]]:
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            yield name, container["image"]
    for service, body in _compose()["services"].items():
        image = body.get("image") or ""
        if image.startswith("${ARCHIPEL_IMAGE"):
            env = dict(
                line.split("=", 1)
                for line in (DEPLOY / ".env.example").read_text().splitlines()
                if "=" in line
            )
            image = env["ARCHIPEL_IMAGE"]
        yield f"compose/{service}", image
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            yield "Dockerfile", line.split()[1]


def test_every_image_is_pinned_to_a_version() -> None:
    images = list(_images())
    assert len(images) >= 10
    for where, image in images:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert "@sha256:" in image or (tag and tag != "latest" and re.search(r"\d", tag)), f"{where}: {image}"


SECRETISH = re.compile(r"PASSWORD|SECRET|_KEY$|ACCESS_KEY", re.I)


def test_no_secret_value_is_written_in_the_deployment_files() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "PRIVATE KEY-----" not in path.read_text(errors="replace"), path.name
    for doc in _manifests():
        if doc["kind"] == "Secret":
            for key, value in doc.get("stringData", {}).items():
                assert "CHANGE-ME" in value, f"Secret {doc['metadata']['name']}.{key} holds a value"
            assert "data" not in doc
        if doc["kind"] == "ConfigMap":
            # Keys there are paths to mounted Secrets, never values.
            assert not [k for k, v in doc["data"].items() if SECRETISH.search(k) and not v.startswith("/")]
    for service, body in _compose()["services"].items():
        env = body.get("environment", {})
        for key, value in env.items() if isinstance(env, dict) else []:
            if SECRETISH.search(key) or "@" in str(value):
                # Only references: a ${VAR} from deploy/.env, or a path to a mounted secret.
                assert "${" in str(value) or str(value).startswith("/run/secrets/"), f"{service}.{key}"
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if SECRETISH.search(key) and not line.startswith("#"):
            assert value == "change-me", key


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_every_queue_is_served_and_celery_beat_runs_in_exactly_one_worker(where: str) -> None:
    if where == "compose":
        commands = [
            b["command"] for b in _compose()["services"].values() if b.get("command", [""])[0] == "worker"
        ]
    else:
        commands = [
            d["spec"]["template"]["spec"]["containers"][0]["args"]
            for d in _manifests()
            if d["kind"] == "Deployment"
            and d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
        ]
    served = {q for args in commands for q in args[args.index("--queues") + 1].split(",")}
    assert served >= {*QUEUES, "wsi-urgent"}
    assert sum("--beat" in args for args in commands) == 1
