"""A real server with a real model (fitted here, with its drift profile), a webhook receiver,
and promtool."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.settings import Settings

from ..auth import admin_headers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target


@pytest.fixture(scope="session")
def cancer_model(cancer: tuple[np.ndarray, np.ndarray]) -> object:
    x, y = cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)


class Receiver:
    """A webhook receiver (an outside service in production): records JSON bodies; answers
    500 to the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        self.fail_first = fail_first
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                owner.attempts += 1
                if owner.attempts <= owner.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=1) as r:
        yield r


def monitoring_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "port": 0,
        "reconcile_interval_s": 0.2,
        "monitor_interval_s": 0.2,
        "drift_interval_s": 0.2,
        "drift_window": "rows",
        "drift_window_size": 2000.0,
        "drift_window_slots": 4,
        "alert_webhook_backoff_s": 0.05,
    }
    values.update(overrides)
    return Settings.from_env({"SLIPWAY_HOME": str(home)}, **values)


@pytest.fixture
def settings(tmp_path: Path, receiver: Receiver, fake_nvml: str) -> Settings:
    """A monitored server's settings; its GPU metrics come from the stand-in NVML library."""
    return monitoring_settings(
        tmp_path / "home", alert_webhooks=receiver.url, nvml_library=fake_nvml
    )


@pytest.fixture
def registry(settings: Settings, cancer, cancer_model) -> Iterator[Registry]:
    x, _ = cancer
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_model, x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        yield registry


@pytest.fixture
def server(settings: Settings, registry: Registry) -> Iterator[BackgroundServer]:
    with BackgroundServer(settings) as server:
        yield server


@pytest.fixture
def http(server: BackgroundServer, settings: Settings) -> Iterator[httpx.Client]:
    """A client of the server with an admin token (auth is on, as by default)."""
    with httpx.Client(base_url=server.url, timeout=10, headers=admin_headers(settings)) as client:
        yield client


def v2_body(rows: np.ndarray) -> dict:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from PATH or installed by scripts/promtool.sh (never assumed)."""
    found = subprocess.run(
        ["bash", str(REPO / "scripts" / "promtool.sh")], capture_output=True, text=True, timeout=600
    )
    if found.returncode != 0:
        pytest.fail(f"promtool is required: {found.stderr.strip()}")
    return found.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A shared library with NVML's C ABI and two made-up GPUs (``fake_nvml.c``), built with
    the compiler scripts/cc.sh finds or installs: the GPU metrics' real ctypes path, run on a
    machine without a GPU."""
    found = subprocess.run(
        ["bash", str(REPO / "scripts" / "cc.sh")], capture_output=True, text=True, timeout=600
    )
    if found.returncode != 0:
        pytest.fail(f"a C compiler is required to test GPU metrics: {found.stderr.strip()}")
    compiler = found.stdout.strip().splitlines()[-1]
    library = tmp_path_factory.mktemp("nvml") / "libfake-nvml.so"
    source = Path(__file__).with_name("fake_nvml.c")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)],
        check=True,
        timeout=120,
    )
    return str(library)
