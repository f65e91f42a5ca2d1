"""Two server processes sharing one PostgreSQL registry: a change made through one is in force
on both within seconds, with no failed request while it happens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slipway.local import Registry
from slipway.settings import Settings

from .conftest import wait_for

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    def __init__(self, home: Path, url: str) -> None:
        self.env = {
            **os.environ,
            "SLIPWAY_HOME": str(home),
            "SLIPWAY_DATABASE_URL": url,
            "SLIPWAY_RECONCILE_INTERVAL_S": "0.2",
            "SLIPWAY_EVIDENCE_FLUSH_INTERVAL_S": "0.5",
            "SLIPWAY_ROLLOUT_INTERVAL_S": "0.5",
            "SLIPWAY_AUTH": "0",
        }
        self._start()

    def _start(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slipway.cli", "serve", "--port", str(self.port),
             "--log-level", "warning"],
            env=self.env,
        )  # fmt: skip

    def ready(self) -> bool:
        if self.process.poll() is not None:
            # The free port was taken between our probe and the server's bind: another one.
            self._start()
            return False
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def replicas(tmp_path: Path, pg_fresh_url: str, cancer, cancer_models) -> Iterator[list[Replica]]:
    home = tmp_path / "home"
    x, _ = cancer
    with Registry(Settings.from_env({"SLIPWAY_HOME": str(home)}, database_url=pg_fresh_url)) as r:
        for estimator in cancer_models:
            r.register_sklearn("cancer", estimator, x)
        r.store.create_deployment("cancer-prod", "cancer", 1)
    started = [Replica(home, pg_fresh_url), Replica(home, pg_fresh_url)]
    try:
        for replica in started:
            wait_for(replica.ready, timeout=60, what=f"replica on {replica.port}")
        yield started
    finally:
        for replica in started:
            replica.stop()


def test_changes_through_one_replica_are_in_force_on_both(replicas: list[Replica], cancer) -> None:
    a, b = replicas
    x = cancer[0][:1].tolist()
    seen: list[tuple[float, str, int, int | None]] = []  # (time, replica, status, version)
    stop = threading.Event()

    def load() -> None:
        clients = [httpx.Client(base_url=r.url, timeout=10) for r in replicas]
        try:
            while not stop.is_set():
                for name, client in zip("ab", clients, strict=True):
                    response = client.post("/predict/cancer-prod", json={"instances": x})
                    version = (
                        response.json().get("version") if response.status_code == 200 else None
                    )
                    seen.append((time.monotonic(), name, response.status_code, version))
        finally:
            for client in clients:
                client.close()

    def versions_on(name: str, since: float) -> set[int | None]:
        return {v for t, n, _, v in seen if n == name and t > since}

    thread = threading.Thread(target=load)
    thread.start()
    try:
        changed = time.monotonic()
        with httpx.Client(base_url=a.url, timeout=30) as http:
            body = {"version": 2, "steps": [50], "interval_s": 3600}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
        wait_for(lambda: versions_on("b", changed) >= {1, 2}, timeout=10, what="split on b")
        canary_s = max(t for t, n, _, v in seen if n == "b" and v == 2) - changed
        changed = time.monotonic()
        with httpx.Client(base_url=a.url, timeout=30) as http:
            response = http.post("/api/deployments/cancer-prod/rollout/promote", json={})
            assert response.status_code == 200, response.text
        time.sleep(0.1)
        wait_for(
            lambda: (m := time.monotonic()) and versions_on("b", m - 0.5) == {2} and
            versions_on("a", m - 0.5) == {2},
            timeout=10,
            what="promotion on both",
        )  # fmt: skip
        changed = time.monotonic()
        with httpx.Client(base_url=b.url, timeout=30) as http:
            assert (
                http.post("/api/deployments/cancer-prod/rollback", json={}).json()["version"] == 1
            )
        wait_for(
            lambda: (m := time.monotonic()) and versions_on("a", m - 0.5) == {1},
            timeout=10,
            what="rollback on a",
        )
        rollback_s = time.monotonic() - changed
    finally:
        stop.set()
        thread.join()
    assert [s for _, _, s, _ in seen if s != 200] == []
    assert len(seen) > 50
    assert canary_s < 5 and rollback_s < 5
