"""``slipway serve --workers N``: N server processes on one listening socket.

One Python process serves on one core (the GIL); a machine with more cores serves more with
more processes. The supervisor (this module, in the ``serve`` process) binds the socket once
and starts N workers, each a fresh interpreter (``python -m slipway.workers``) that inherits
the socket and runs the whole server on it; the kernel hands each new connection to one of
them. The supervisor then only watches: a worker that dies is replaced, one that keeps dying
at start stops the server, and SIGTERM/SIGINT drains every worker (their usual graceful
shutdown) before it exits.

Workers share one metrics page through prometheus_client's multiprocess mode: the supervisor
gives them ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory, or ``SLIPWAY_METRICS_MULTIPROCESS_DIR``
emptied) before they import the client, and marks a dead worker's live gauges gone. Registry,
audit chain, rollout controller and evidence already work across processes (replicas do the
same); with gRPC on, the workers share its port too (SO_REUSEPORT). Drift windows stay per
worker; alert rules are evaluated by the first worker only
(``SLIPWAY_ALERT_EVALUATION=0`` for the others), so each firing is stored and sent once, on the
request and queue figures of every worker (``ServingMetrics.server_wide``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from slipway.errors import SlipwayError
from slipway.settings import Settings

FAST_EXIT_S = 10.0  # a worker that exits this soon after it started counts towards a crash loop
MAX_FAST_EXITS = 3
POLL_S = 0.2


def listen(settings: Settings) -> socket.socket:
    """The listening socket every worker inherits."""
    from slipway.server import bind_socket

    sock = bind_socket(settings.host, settings.port)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _metrics_dir(settings: Settings) -> tuple[Path, bool]:
    """The multiprocess metrics directory, emptied, and whether this run made it (and removes
    it). Files left by an earlier run would be summed into this one's counters."""
    if not settings.metrics_multiprocess_dir:
        return Path(tempfile.mkdtemp(prefix="slipway-metrics-")), True
    path = Path(settings.metrics_multiprocess_dir)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path, False


class Supervisor:
    """Starts, replaces and stops the worker processes of one server."""

    def __init__(self, settings: Settings, *, log_level: str = "info") -> None:
        workers = settings.workers  # 1 to MAX_WORKERS, as Settings checks
        if settings.grpc_port == 0:
            raise SlipwayError(
                "--workers needs a fixed SLIPWAY_GRPC_PORT (0 would give each worker its own)"
            )
        self.settings = settings
        self.count = workers
        self.log_level = log_level
        if settings.grpc_port > 0:
            from slipway.server import check_port_free

            check_port_free(settings.host, settings.grpc_port, "SLIPWAY_GRPC_PORT")
        self.sock = listen(settings)
        self.port = int(self.sock.getsockname()[1])
        self.metrics_dir, self._made_dir = _metrics_dir(settings)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self._started = [0.0] * workers
        self._fast_exits = [0] * workers
        self._stopping = False

    def _env(self, index: int) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "SLIPWAY_METRICS_MULTIPROCESS_DIR": str(self.metrics_dir),
            "SLIPWAY_HOME": str(s.home),
            "SLIPWAY_DATABASE_URL": s.database_url,
            "SLIPWAY_HOST": s.host,
            "SLIPWAY_PORT": str(self.port),
            "SLIPWAY_WORKERS": "1",
            "SLIPWAY_GRPC_REUSE_PORT": "1",
            "SLIPWAY_ALERT_EVALUATION": str(int(bool(s.alert_evaluation) and index == 0)),
        }

    def _spawn(self, index: int) -> None:
        fd = self.sock.fileno()
        argv = [sys.executable, "-m", "slipway.workers", "--fd", str(fd)]
        argv += ["--log-level", self.log_level, "--supervisor", str(os.getpid())]
        # Its own session: a terminal's Ctrl-C reaches the supervisor only, which then stops
        # each worker once (a second SIGINT would make uvicorn skip the drain).
        self.procs[index] = subprocess.Popen(
            argv, env=self._env(index), pass_fds=(fd,), start_new_session=True
        )
        self._started[index] = time.monotonic()

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Serve until SIGINT/SIGTERM; 0 after a clean stop, 1 when a worker keeps crashing."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        code = 0
        try:
            self.start()
            while not self._stopping:
                time.sleep(POLL_S)
                if not self._replace_dead():
                    code = 1
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _replace_dead(self) -> bool:
        """Replace each worker that exited; False when one keeps dying right after it starts."""
        from prometheus_client import multiprocess

        for index, proc in enumerate(self.procs):
            if proc is None or proc.poll() is None or self._stopping:
                continue
            multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))
            lived = time.monotonic() - self._started[index]
            self._fast_exits[index] = self._fast_exits[index] + 1 if lived < FAST_EXIT_S else 0
            if self._fast_exits[index] >= MAX_FAST_EXITS:
                print(
                    f"slipway: worker {index} exited with code {proc.returncode}"
                    f" {MAX_FAST_EXITS} times within {FAST_EXIT_S:g}s of starting; stopping"
                    " (its output is above)",
                    file=sys.stderr,
                )
                return False
            print(
                f"slipway: worker {index} (pid {proc.pid}) exited with code {proc.returncode};"
                " starting another",
                file=sys.stderr,
            )
            self._spawn(index)
        return True

    def stop(self) -> None:
        """Ask every worker to drain and stop; kill the ones still there after the drain time."""
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_s + 5
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.sock.close()
        if self._made_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def serve(settings: Settings, *, log_level: str = "info") -> int:
    """Serve with ``settings.workers`` processes until SIGINT/SIGTERM; the exit code."""
    from slipway.server import check_auth_for_host

    check_auth_for_host(settings)
    supervisor = Supervisor(settings, log_level=log_level)
    url = f"http://{settings.host}:{supervisor.port}"
    print(
        f"serving on {url} with {supervisor.count} worker processes  (Ctrl-C to stop)",
        file=sys.stderr,
    )
    return supervisor.run()


def _die_with(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM (a drain) when the supervisor dies, however it
    dies: a killed supervisor must not leave workers holding the port. Linux only."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before the request was in place
        sys.exit(0)


def _worker(fd: int, log_level: str, supervisor: int) -> None:
    """One worker: the whole server on the inherited socket, settings from the environment."""
    _die_with(supervisor)
    import uvicorn

    from slipway import web
    from slipway.server import uvicorn_config
    from slipway.serving.app import SlipwayApp

    settings = Settings.from_env(os.environ)
    sock = socket.socket(fileno=fd)
    app = web.mount(SlipwayApp(settings))
    app.freeze_gc = True  # the process is the server's alone
    uvicorn.Server(uvicorn_config(app, settings, log_level)).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A Slipway worker process (started by serve).")
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--supervisor", type=int, required=True, help="the supervisor's pid")
    args = parser.parse_args(argv)
    _worker(args.fd, args.log_level, args.supervisor)


if __name__ == "__main__":
    main()
