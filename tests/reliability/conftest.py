"""Fixtures of the reliability suite: the serving fixtures (a registry of two breast-cancer
classifiers, an in-process server), `slipway serve` subprocesses, and /proc readings."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.waiting import wait_for  # re-exported to the tests here

from ..serving.conftest import (  # noqa: F401  (fixtures, re-exported for this directory)
    cancer,
    cancer_models,
    http,
    iris_model,
    make_settings,
    registry,
    server,
    settings,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fd_count(pid: int) -> int:
    """Open file descriptors of a process (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_count(pid: int) -> int:
    """Open sockets of a process: its listening socket, clients' connections, database ones."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class ServeProcess:
    """A real `slipway serve` in its own process, on a free port of 127.0.0.1."""

    def __init__(self, home: Path, database_url: str | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {
            **os.environ,
            "SLIPWAY_HOME": str(home),
            "SLIPWAY_RECONCILE_INTERVAL_S": "0.2",
            "SLIPWAY_AUTH": "0",
            **env,
        }
        if database_url:
            environ["SLIPWAY_DATABASE_URL"] = database_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slipway.cli", "serve", "--port", str(self.port),
             "--log-level", "warning"],
            env=environ,
        )  # fmt: skip
        self.pid = self.process.pid

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> ServeProcess:
        def check() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}")
            return self.ready()

        wait_for(check, timeout=timeout, what=f"server on port {self.port}")
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
