"""The Dockerfile passes hadolint and the Kubernetes manifests validate against the schemas."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from slipway.packaging.docker import render_dockerfile
from slipway.packaging.kubernetes import (
    KubernetesOptions,
    quantity,
    render_manifests,
    termination_grace_s,
)
from slipway.packaging.manifest import BundleManifest

HADOLINT = Path(sys.executable).parent / "hadolint"
K8S_VERSION = "1.30.0"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def load(bundle: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((bundle / "kubernetes" / name).read_text())
    return data


@pytest.mark.parametrize("which", ["bundle", "handler_bundle"])
def test_dockerfile_passes_hadolint(which: str, request: pytest.FixtureRequest) -> None:
    path, _ = request.getfixturevalue(which)
    result = hadolint(path / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above can fail: unpinned base image and unpinned pip install are flagged.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout


def test_dockerfile_is_multi_stage_non_root_and_checks_readiness(
    bundle: tuple[Path, BundleManifest],
) -> None:
    path, manifest = bundle
    text = (path / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == [
        f"FROM python:{manifest.python}-slim AS builder",
        f"FROM python:{manifest.python}-slim AS runtime",
    ]
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "--require-hashes -r requirements.lock" in text
    assert "USER 10001" in runtime
    assert "EXPOSE 8000" in runtime
    assert "/v2/health/ready" in runtime.split("HEALTHCHECK", 1)[1]
    assert "DATABASE_URL" not in text and "TOKEN" not in text.upper()
    # The runtime stage copies what serving reads, not the lock or wheel build context.
    assert "COPY requirements.lock" not in runtime


def test_dockerignore_admits_only_what_the_image_copies(
    bundle: tuple[Path, BundleManifest], handler_bundle: tuple[Path, BundleManifest]
) -> None:
    plain = (bundle[0] / ".dockerignore").read_text().splitlines()
    assert plain[1] == "*" and "!bundle.json" in plain and "!handler/handler.py" not in plain
    assert "!handler/handler.py" in (handler_bundle[0] / ".dockerignore").read_text()


def healthcheck(dockerfile: str) -> list[str]:
    """The HEALTHCHECK's command as Docker runs it: exec form as is, shell form through sh."""
    lines = dockerfile.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
    instruction = lines[start]
    while instruction.endswith("\\"):
        start += 1
        instruction = instruction[:-1] + lines[start]
    command = instruction.split(" CMD ", 1)[1].strip()
    if command.startswith("["):
        argv: list[str] = json.loads(command)
        return argv
    return ["/bin/sh", "-c", command]


def test_the_healthcheck_probes_the_port_the_server_listens_on(tmp_path: Path) -> None:
    """``docker run -e SLIPWAY_PORT=...`` moves the server; the health check must follow it."""
    from slipway.server import BackgroundServer

    from ..serving.conftest import make_settings

    bin_dir = tmp_path / "bin"  # the image's `python` is its virtual environment's
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nothing = closed.getsockname()[1]
    with BackgroundServer(make_settings(tmp_path / "home")) as server:
        listening = server.port

        def probe(built_for: int, **env: str) -> int:
            text = render_dockerfile(
                python="3.11", wheel="w/x.whl", port=built_for, hashed=True, handler=False,
                drain_s=15,
            )  # fmt: skip
            environ = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
            done = subprocess.run(healthcheck(text), env=environ, capture_output=True, timeout=30)
            return done.returncode

        assert probe(8000, SLIPWAY_PORT=str(listening)) == 0  # moved at docker run
        assert probe(listening) == 0  # the port the image was built with
        assert probe(listening, SLIPWAY_PORT=str(nothing)) != 0  # it can fail
    server.app.store.close()


def test_handler_is_copied_into_the_image() -> None:
    text = render_dockerfile(
        python="3.11", wheel="wheels/x.whl", port=9000, hashed=False, handler=True, drain_s=15
    )
    assert "COPY handler/handler.py /srv/bundle/handler/handler.py" in text
    assert "--require-hashes" not in text and "EXPOSE 9000" in text


@pytest.mark.parametrize("name", ["deployment.yaml", "service.yaml", "hpa.yaml", "configmap.yaml"])
def test_manifests_validate_against_kubernetes_schemas(
    bundle: tuple[Path, BundleManifest], name: str
) -> None:
    document = load(bundle[0], name)
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_schema_validation_can_fail(bundle: tuple[Path, BundleManifest]) -> None:
    document = load(bundle[0], "deployment.yaml")
    container = document["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["periodSeconds"] = "often"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    container["readinessProbe"]["periodSeconds"] = 5
    container["readinesProbe"] = {}  # a typo: strict mode refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_deployment_probes_resources_and_shutdown(bundle: tuple[Path, BundleManifest]) -> None:
    path, manifest = bundle
    deployment = load(path, "deployment.yaml")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/v2/health/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert set(container["resources"]) == {"requests", "limits"}
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert grace > pre_stop + manifest.serving.drain_s
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    (database,) = [e for e in container["env"] if e["name"] == "SLIPWAY_DATABASE_URL"]
    assert database["valueFrom"]["secretKeyRef"] == {"name": "iris-registry", "key": "database-url"}
    assert container["envFrom"] == [{"configMapRef": {"name": "iris-config"}}]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["command"] == ["slipway", "serve", "--bundle", "/srv/bundle"]


def test_service_autoscaler_and_configmap_fit_the_deployment(
    bundle: tuple[Path, BundleManifest],
) -> None:
    path, manifest = bundle
    deployment = load(path, "deployment.yaml")
    service = load(path, "service.yaml")
    hpa = load(path, "hpa.yaml")
    config = load(path, "configmap.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert config["data"]["SLIPWAY_REQUEST_TIMEOUT_S"] == "10.0"
    assert config["data"] == {
        "SLIPWAY_HOST": "0.0.0.0",
        "SLIPWAY_PORT": "8000",
        **manifest.serving.environment,
    }
    # Only allow-listed limits travel: nothing that could be a secret.
    assert not any("TOKEN" in k or "URL" in k for k in config["data"])


def test_grace_period_follows_the_drain_time() -> None:
    short = KubernetesOptions(name="a", image="a:1", drain_s=5)
    long = KubernetesOptions(name="a", image="a:1", drain_s=65)
    assert termination_grace_s(long) - termination_grace_s(short) == 60
    spec = render_manifests(long)["deployment.yaml"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == termination_grace_s(long) > 65


def test_names_become_kubernetes_labels() -> None:
    manifests = render_manifests(KubernetesOptions(name="Churn_Model.v2", image="c:1"))
    assert manifests["deployment.yaml"]["metadata"]["name"] == "churn-model-v2"
    for document in manifests.values():
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "name, expected",
    [
        pytest.param("churn", "churn", id="plain"),
        pytest.param("3d", "slipway-3d", id="leading-digit"),
        pytest.param("7" + "a" * 63, "slipway-7" + "a" * 54, id="leading-digit-long"),
        pytest.param("x" * 62 + "_", "x" * 62, id="trailing-underscore"),
    ],
)
def test_object_names_are_ones_a_service_may_have(name: str, expected: str) -> None:
    # A Service's name is a DNS-1035 label (it starts with a letter); the API server refuses
    # a Service named "3d", though a model may be.
    manifests = render_manifests(KubernetesOptions(name=name, image="c:1"))
    names = {document["metadata"]["name"] for document in manifests.values()}
    assert names == {expected, f"{expected}-config"}
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", expected)
    container = manifests["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == f"{expected}-registry"


@pytest.mark.parametrize(
    "text, value",
    [
        pytest.param("500m", Decimal("0.5"), id="milli"),
        pytest.param("2", Decimal(2), id="plain"),
        pytest.param(".5", Decimal("0.5"), id="fraction"),
        pytest.param("512Mi", Decimal(512 * 2**20), id="binary"),
        pytest.param("3G", Decimal(3 * 10**9), id="decimal"),
        pytest.param("1e3", Decimal(1000), id="exponent"),
        pytest.param("2E", Decimal(2 * 10**18), id="exa"),
        pytest.param("1 GB", None, id="not-a-quantity"),
        pytest.param("-2Gi", None, id="negative"),
    ],
)
def test_kubernetes_quantities_are_read_as_numbers(text: str, value: Decimal | None) -> None:
    assert quantity(text) == value
