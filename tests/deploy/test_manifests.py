"""deploy/'s manifests, validated offline against the official models of Kubernetes and KServe.

No cluster is reachable here: the Kubernetes Python client and the KServe SDK (both generated from
the projects' OpenAPI schemas) give every field, its type and what is required; the validator walks
each document against them (tests/fixtures/validate_manifests.py, run in .venv-clients).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.serve.compat.conftest import clients_python

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests" / "fixtures" / "validate_manifests.py"
MANIFESTS = sorted((ROOT / "deploy").rglob("*.yaml"))


def validate(*paths: Path) -> dict:
    result = subprocess.run([str(clients_python()), str(VALIDATOR), *map(str, paths)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_every_manifest_is_valid():
    assert len(MANIFESTS) >= 3
    report = validate(*MANIFESTS)
    assert report["errors"] == [] and report["documents"] == 5


def test_the_validator_catches_typos_wrong_types_and_missing_fields(tmp_path):
    deployment = next(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "launchkit-serve.yaml").read_text()))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")  # a typo
    deployment["spec"]["replicas"] = "two"  # a wrong type
    del container["name"]  # a required field
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    errors = "\n".join(validate(bad)["errors"])
    assert "readinesProbe: unknown field of V1Container" in errors
    assert "spec.replicas: expected int" in errors
    assert "containers[0].name: field required (V1Container)" in errors


def test_the_runtime_probes_health_and_does_not_take_torchserves_place():
    runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / "cluster-serving-runtime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live" and "startupProbe" in container
    assert set(runtime["spec"]["protocolVersions"]) == {"v1", "v2"}
    formats = runtime["spec"]["supportedModelFormats"]
    assert all(not entry["autoSelect"] and entry["priority"] < 2 for entry in formats)  # kserve-torchserve: 2
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["LAUNCHKIT_INFERENCE_ADDRESS"].endswith(":8080") and "LAUNCHKIT_MANAGEMENT_ADDRESS" not in env


def test_the_autoscaler_scales_on_a_metric_launchkit_exports():
    documents = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "launchkit-serve.yaml").read_text()))
    autoscaler = next(doc for doc in documents if doc["kind"] == "HorizontalPodAutoscaler")
    metric = autoscaler["spec"]["metrics"][0]["pods"]["metric"]["name"]
    metrics_source = (ROOT / "launchkit" / "serve" / "api" / "metrics.py").read_text()
    assert metric == "launchkit_queue_depth" and f'"{metric}"' in metrics_source
