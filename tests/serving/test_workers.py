"""`slipway serve --workers N`: real worker processes on one port, one metrics page, a dead
worker replaced, a clean drain, a crash loop stopped, alerts fired once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from slipway.local import Registry

from .conftest import make_settings

SLIPWAY = str(Path(sys.executable).with_name("slipway"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ok_requests(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "slipway_requests_total" and sample.labels["outcome"] == "ok"
    )


class Served:
    """``slipway serve --workers N`` as its own process group, stopped at the end."""

    def __init__(self, home: Path, workers: int, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"serve-{self.port}.log"
        with self.log.open("wb") as log:  # a file, not a pipe nobody drains
            self.proc = subprocess.Popen(
                [SLIPWAY, "serve", "--port", str(self.port), "--workers", str(workers),
                 "--log-level", "warning"],
                env={**os.environ, "SLIPWAY_HOME": str(home), "SLIPWAY_AUTH": "0", **env},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server was not ready in time")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def home(tmp_path: Path, cancer, cancer_models) -> Path:
    x, _ = cancer
    with Registry(make_settings(tmp_path / "home")) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    return tmp_path / "home"


@pytest.fixture
def served(home: Path, tmp_path: Path) -> Iterator[Served]:
    server = Served(home, 2, SLIPWAY_METRICS_MULTIPROCESS_DIR=str(tmp_path / "prom"))
    try:
        yield server
    finally:
        server.stop()


def _predict(url: str, rows: np.ndarray) -> int:
    # A new connection each time, so the kernel may hand it to either worker.
    body = {"instances": rows.tolist()}
    return httpx.post(f"{url}/predict/cancer-prod", json=body, timeout=10).status_code


def test_workers_share_the_port_and_one_metrics_page_and_a_dead_one_is_replaced(
    served: Served, tmp_path: Path, cancer
) -> None:
    x, _ = cancer
    served.wait_ready()
    prom = tmp_path / "prom"
    workers = _children(served.proc.pid)
    assert len(workers) == 2
    sent = 0
    deadline = time.monotonic() + 60
    # Until both workers have answered (each writes its own counter file)
    while {p.name for p in prom.glob("counter_*.db")} != {f"counter_{w}.db" for w in workers}:
        assert time.monotonic() < deadline, sorted(p.name for p in prom.iterdir())
        assert _predict(served.url, x[sent % 500 : sent % 500 + 1]) == 200
        sent += 1
    for _ in range(3):  # whichever worker answers the scrape counts every worker's requests
        assert _ok_requests(httpx.get(f"{served.url}/metrics").text) == sent

    victim = workers.pop()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(_children(served.proc.pid) - {victim}) < 2:
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.1)
    assert victim not in _children(served.proc.pid)
    for i in range(20):  # the survivor serves meanwhile; the new worker joins when ready
        assert _predict(served.url, x[i : i + 2]) == 200
    sent += 20
    # The dead worker's counts stay in the sum; its gauges leave (every gauge aggregates over
    # live processes only, so a dead worker's last drift score or alert state cannot linger).
    assert _ok_requests(httpx.get(f"{served.url}/metrics").text) == sent
    gauges = sorted(p.name for p in prom.glob("gauge_*.db"))
    assert gauges and all(name.startswith("gauge_live") for name in gauges), gauges
    assert not [name for name in gauges if name.endswith(f"_{victim}.db")], gauges

    assert served.stop() == 0
    assert not any(_alive(pid) for pid in workers)
    assert f"(pid {victim}) exited with code -9; starting another" in served.output()


def test_a_worker_that_keeps_failing_at_start_stops_the_server(home: Path) -> None:
    # The supervisor does not build the app; each worker does, and fails reading this file.
    served = Served(home, 2, SLIPWAY_ALERT_RULES_FILE=str(home / "no-such-rules.toml"))
    code = served.proc.wait(timeout=120)
    output = served.output()
    assert code == 1, output
    assert "times within 10s of starting; stopping" in output


def test_worker_counts_out_of_range_and_bundles_are_refused(home: Path) -> None:
    env = {**os.environ, "SLIPWAY_HOME": str(home), "SLIPWAY_AUTH": "0", "COLUMNS": "200"}
    done = subprocess.run(
        [SLIPWAY, "serve", "--port", str(_free_port()), "--workers", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "--workers must be between 1 and 64; it is 0" in done.stderr
    done = subprocess.run(
        [SLIPWAY, "serve", "--bundle", str(home), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "leave out --workers" in done.stderr


@pytest.fixture
def alerting(home: Path, tmp_path: Path) -> Iterator[Served]:
    """Two workers and a rule that fires on any request (p99 latency over 0)."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "any"\nkind = "latency_p99"\nthreshold = 0\nfor_s = 0\n')
    served = Served(home, 2, SLIPWAY_ALERT_RULES_FILE=str(rules), SLIPWAY_MONITOR_INTERVAL_S="0.2")
    try:
        served.wait_ready()
        yield served
    finally:
        assert served.stop() == 0


def _events(served: Served) -> list[dict]:
    return httpx.get(f"{served.url}/api/alerts").json()["events"]


def test_alert_rules_are_evaluated_by_one_worker_so_each_firing_is_stored_once(
    alerting: Served, cancer
) -> None:
    x, _ = cancer
    deadline = time.monotonic() + 60
    while True:
        for i in range(20):
            assert _predict(alerting.url, x[i : i + 1]) == 200
        if _events(alerting):
            break
        assert time.monotonic() < deadline, "no alert fired"
    for i in range(40):  # both workers busy for several more evaluation intervals
        assert _predict(alerting.url, x[i : i + 1]) == 200
    time.sleep(1.0)
    events = _events(alerting)
    firing = [e for e in events if e["rule"] == "any" and e["state"] == "firing"]
    assert len(firing) == 1, events


def test_the_worker_evaluating_alerts_sees_the_traffic_the_others_served(
    alerting: Served, cancer
) -> None:
    x, _ = cancer
    evaluating = [
        pid
        for pid in _children(alerting.proc.pid)
        if b"SLIPWAY_ALERT_EVALUATION=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    ]
    assert len(evaluating) == 1
    os.kill(evaluating[0], signal.SIGSTOP)  # every request now goes to the other worker
    try:
        for i in range(20):
            assert _predict(alerting.url, x[i : i + 1]) == 200
    finally:
        os.kill(evaluating[0], signal.SIGCONT)
    deadline = time.monotonic() + 20
    while not _events(alerting):
        assert time.monotonic() < deadline, "the rule never saw the other worker's requests"
        time.sleep(0.2)


def test_workers_share_the_grpc_port_too(home: Path) -> None:
    import grpc

    from slipway.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
    from slipway.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc

    grpc_port = _free_port()
    served = Served(home, 2, SLIPWAY_GRPC_PORT=str(grpc_port))
    try:
        served.wait_ready()
        for _ in range(3):  # a new channel each time: either worker may take it
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        time.sleep(1.0)
        assert "exited" not in served.output()
        assert len(_children(served.proc.pid)) == 2
    finally:
        assert served.stop() == 0
    env = {**os.environ, "SLIPWAY_HOME": str(home), "SLIPWAY_AUTH": "0", "COLUMNS": "200"}
    env["SLIPWAY_GRPC_PORT"] = "0"
    done = subprocess.run(
        [SLIPWAY, "serve", "--port", str(_free_port()), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "needs a fixed SLIPWAY_GRPC_PORT" in done.stderr


def test_workers_stop_when_their_supervisor_is_killed(served: Served) -> None:
    served.wait_ready()
    workers = _children(served.proc.pid)
    assert len(workers) == 2
    served.proc.kill()
    served.proc.wait(timeout=10)
    deadline = time.monotonic() + 30  # they drain (SIGTERM from the kernel), then exit
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.1)


def test_a_port_in_use_is_refused_with_the_setting_to_change(home: Path) -> None:
    env = {**os.environ, "SLIPWAY_HOME": str(home), "SLIPWAY_AUTH": "0", "COLUMNS": "200"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for argv, extra, hint in (
            (["--port", str(port)], {}, "choose another with --port"),
            (["--port", str(_free_port())], {"SLIPWAY_GRPC_PORT": str(port)},
             "choose another with SLIPWAY_GRPC_PORT"),
        ):  # fmt: skip
            done = subprocess.run(
                [SLIPWAY, "serve", "--workers", "2", *argv],
                env={**env, **extra}, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode != 0 and hint in done.stderr, done.stderr
