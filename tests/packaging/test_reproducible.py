"""The reproducibility check: a fresh virtual environment built from the bundle's lock alone
serves the bundle, and its predictions are identical to the registry's for the same inputs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_iris

from slipway.local import Registry
from slipway.packaging.lock import canonical
from slipway.packaging.manifest import BundleManifest
from slipway.server import BackgroundServer
from tests.packaging.conftest import settings_for

pytestmark = pytest.mark.slow

RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def fresh_venv(
    bundle: tuple[Path, BundleManifest], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A new venv holding exactly the lock (hash-checked) and the bundle's slipway wheel."""
    path, manifest = bundle
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    run([*pip, "--require-hashes", "-r", str(path / "requirements.lock")])
    run([*pip, str(path / manifest.wheel.path)])
    return venv


@contextlib.contextmanager
def serving(
    bundle: Path, venv: Path, home: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``slipway serve --bundle`` from ``venv`` on 127.0.0.1, a port the OS picks."""
    log = home.parent / f"{home.name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "PYTHON"))}
    env["SLIPWAY_HOME"] = str(home)
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(venv / "bin" / "slipway"), "serve", "--bundle", str(bundle),
             "--host", "127.0.0.1", "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, env=env, text=True,
        )  # fmt: skip
    try:
        url = _wait_until_ready(process, log)
        yield url, process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture
def bundle_server(
    bundle: tuple[Path, BundleManifest], fresh_venv: Path, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    with serving(bundle[0], fresh_venv, tmp_path / "replica") as server:
        yield server


def _wait_until_ready(process: subprocess.Popen[str], log: Path) -> str:
    deadline = time.monotonic() + 90
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"slipway serve --bundle exited {process.returncode}:\n{log.read_text()}")
        if url is None and (found := RUNNING.search(log.read_text())):
            url = f"http://127.0.0.1:{found[1]}"
        if url is not None:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"slipway serve --bundle was not ready within 90s:\n{log.read_text()}")


def test_the_fresh_venv_holds_only_the_lock(
    bundle: tuple[Path, BundleManifest], fresh_venv: Path
) -> None:
    python = str(fresh_venv / "bin" / "python")
    listed = json.loads(run([python, "-m", "pip", "list", "--format=json"]).stdout)
    # pip and setuptools come with every new venv; everything else must be the lock's.
    installed = {
        f"{canonical(p['name'])}=={p['version']}"
        for p in listed
        if p["name"] not in ("pip", "setuptools")
    }
    lock = (bundle[0] / "requirements.lock").read_text()
    locked = {f"{canonical(m[1])}=={m[2]}" for m in re.finditer(r"^(\S+)==(\S+)", lock, re.M)}
    assert installed == locked | {"slipway==" + bundle[1].wheel.path.split("-")[1]}
    no_training = subprocess.run([python, "-c", "import sklearn"], capture_output=True)
    assert no_training.returncode != 0


def test_predictions_from_the_bundle_equal_the_registry(
    bundle: tuple[Path, BundleManifest],
    bundle_server: tuple[str, subprocess.Popen[str], Path],
    source_home: Path,
    tmp_path: Path,
) -> None:
    url, process, log = bundle_server
    rows = load_iris().data.tolist()
    v2_request = {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32",
                    "data": sum(rows, [])}]
    }  # fmt: skip
    settings = settings_for(source_home)
    with Registry(settings) as registry:
        if "iris-registry" not in {d.name for d in registry.store.list_deployments()}:
            registry.store.create_deployment("iris-registry", "iris", 2)
    with BackgroundServer(settings) as reference, httpx.Client(timeout=30) as client:
        expected_v2 = client.post(f"{reference.url}/v2/models/iris-registry/infer", json=v2_request)
        expected = client.post(f"{reference.url}/predict/iris-registry", json={"instances": rows})
        got_v2 = client.post(f"{url}/v2/models/iris/infer", json=v2_request)
        got = client.post(f"{url}/predict/iris", json={"instances": rows})
    assert got.status_code == expected.status_code == 200, got.text
    assert got_v2.status_code == expected_v2.status_code == 200, got_v2.text
    assert got_v2.json()["outputs"] == expected_v2.json()["outputs"]
    assert got_v2.json()["model_version"] == "2"
    body, reference_body = got.json(), expected.json()
    assert body["predictions"] == reference_body["predictions"]
    assert body["outputs"] == reference_body["outputs"]
    assert (body["model"], body["version"]) == ("iris", 2)
    assert len(set(body["predictions"])) == 3  # a real model: every class appears

    # SIGTERM drains and shuts down cleanly; uvicorn then re-raises the signal it caught.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()


def test_the_bundled_handler_runs_in_the_served_bundle(
    handler_bundle: tuple[Path, BundleManifest],
    fresh_venv: Path,
    bundle_server: tuple[str, subprocess.Popen[str], Path],
    tmp_path: Path,
) -> None:
    # The same venv serves the handler bundle: hooks need nothing beyond the lock.
    plain_url, _, _ = bundle_server
    rows = load_iris().data[::10].tolist()
    with serving(handler_bundle[0], fresh_venv, tmp_path / "hooked") as (url, _, _):
        millimetres = [[v * 10 for v in row] for row in rows]
        hooked = httpx.post(f"{url}/predict/iris-mm", json={"instances": millimetres}, timeout=30)
    plain = httpx.post(f"{plain_url}/predict/iris", json={"instances": rows}, timeout=30)
    assert hooked.status_code == plain.status_code == 200, hooked.text
    labels = plain.json()["predictions"]
    assert hooked.json()["predictions"] == labels
    names = ["setosa", "versicolor", "virginica"]
    assert hooked.json()["outputs"]["species"] == [names[label] for label in labels]
