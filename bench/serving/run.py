"""Serving benchmark: Slipway's V2 and /predict endpoints against a bare endpoint, in one run.

    .venv/bin/python bench/serving/run.py [--duration S] [--quick]

Everything is measured in one run on one machine, and the figures that matter are ratios
within the run (machines are noisy; absolute req/s move from run to run):

1. fits a LogisticRegression (in a StandardScaler pipeline) and a 100-tree RandomForest on the
   breast-cancer data and registers them in a temporary SLIPWAY_HOME as ``lr`` and ``rf``;
2. starts ``slipway serve`` with only the ``lr`` deployment three times: time from process start
   to ``GET /v2/health/ready`` = 200, and RSS once ready;
3. calls onnxruntime in-process on one row (no HTTP): the ceiling for any server;
4. starts ``slipway serve`` (deployments ``lr`` and ``rf``) and ``bare_app.py`` (same uvicorn
   stack, constant answer) as separate processes, and drives each target with ``wrk -t1``
   at 1, 16 and 64 connections;
5. prints the tables, the ratios against the targets (README.md), a markdown block for
   RESULTS.md, and writes ``bench/serving/out/results-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "out"
LUA = HERE / "post.lua"
BARE_APP = HERE / "bare_app.py"
REFERENCE_APP = HERE / "starlette_app.py"  # the obvious endpoint (requirements-bench.lock)
BIN = Path(sys.executable).parent  # .venv/bin, where the `slipway` script lives

CONNECTIONS = (1, 16, 64)
READY_TIMEOUT_S = 60.0
MEMORY_STARTS = 3
IN_PROCESS_CALLS = 20_000
# Load before the recorded runs, long enough to pass the server's first monitoring tick (5 s
# after start), which imports the drift tests' scipy.special and runs the first evaluation:
# start-up work, once per process, not the steady state the runs measure.
WARMUP_S = 7.0

# The targets README.md states; evaluated on every run.
TARGET_THROUGHPUT_RATIO = 0.70  # Slipway lr V2 req/s at 64 conns ≥ 70% of bare
TARGET_P99_RATIO = 3.0  # Slipway lr V2 p99 at 64 conns ≤ 3× bare p99
TARGET_P50_GAP_MS = 0.15  # Slipway lr V2 p50 at 1 conn ≤ bare p50 + 0.15 ms
TARGET_RSS_MIB = 150.0  # one model loaded, once ready
TARGET_READY_S = 1.5  # process start → ready


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to do."""


# -- helpers -----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError(
            "wrk is not installed and this is not root; install it (Debian/Ubuntu:"
            " `sudo apt-get install -y wrk`) and run the benchmark again"
        )
    log("wrk not found; installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return found


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    import numpy
    import onnxruntime
    import sklearn
    import uvicorn

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version.split("[")[0].strip(),
        "uvicorn": uvicorn.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
    }


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def http_request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request over a fresh connection; raises OSError if nothing listens."""
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
        response = client.request(
            method, path, content=body or None, headers={"content-type": "application/json"}
        )
        return response.status_code, response.content


class Child:
    """A server in its own process; stderr goes to a file we print if it fails."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path):
        self.name = name
        self.port = port
        self.stderr_path = workdir / f"{name}-{port}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop())
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr, cwd=ROOT
        )
        self.ready_s: float | None = None

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        deadline = self.started + timeout
        last = "no answer"
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready."
                    f" Its stderr:\n{self.stderr()}"
                )
            try:
                status, body = http_request(self.port, "GET", "/v2/health/ready")
            except OSError:
                time.sleep(0.005)
                continue
            except Exception as exc:  # httpx errors: connection refused/reset while starting
                last = f"{type(exc).__name__}"
                time.sleep(0.005)
                continue
            if status == 200:
                self.ready_s = time.perf_counter() - self.started
                return self.ready_s
            last = f"{status} {body[:300]!r}"
            time.sleep(0.01)
        raise BenchError(
            f"{self.name} was not ready within {timeout:g}s (last answer: {last})."
            f" Its stderr:\n{self.stderr()}"
        )

    def rss_mib(self) -> float | None:
        kib = proc_status_kib(self.proc.pid, "VmRSS")
        return None if kib is None else kib / 1024

    def peak_rss_mib(self) -> float | None:
        kib = proc_status_kib(self.proc.pid, "VmHWM")
        return None if kib is None else kib / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._stderr.close()


# -- models ------------------------------------------------------------------------------------


def fit_models() -> tuple[dict[str, Any], Any, Any]:
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x_train, x_test, y_train, _ = train_test_split(
        x, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    models = {
        "lr": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "rf": RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
    }
    for estimator in models.values():
        estimator.fit(x_train, y_train)
    return models, x_train, x_test[:1]


def slipway_settings(home: Path) -> Any:
    from slipway.settings import Settings

    return Settings.from_env({"SLIPWAY_HOME": str(home)})


def register(
    home: Path, name: str, estimator: Any, x_train: Any, batch_delay_ms: float | None = None
) -> Any:
    """Register ``estimator`` as model ``name`` and deploy its version as deployment ``name``.

    ``batch_delay_ms`` overrides the deployment's default ``max_batch_delay_ms`` (diagnostics).
    """
    from slipway.local import Registry
    from slipway.registry.records import BatchingConfig

    with Registry(slipway_settings(home)) as registry:
        record = registry.register_sklearn(name, estimator, x_train)
        if batch_delay_ms is None:
            registry.store.create_deployment(name, name, record.number)
        else:
            batching = BatchingConfig(max_batch_delay_ms=batch_delay_ms)
            registry.store.create_deployment(name, name, record.number, batching=batching)
        return record, registry.artifacts.verified_path(record.digest)


# -- measurements ------------------------------------------------------------------------------


def slipway_child(home: Path, workdir: Path, name: str = "slipway") -> Child:
    exe = BIN / "slipway"
    if not exe.exists():
        found = shutil.which("slipway")
        if not found:
            raise BenchError(f"no `slipway` command next to {sys.executable} or on PATH")
        exe = Path(found)
    port = free_port()
    env = {**os.environ, "SLIPWAY_HOME": str(home)}
    env.pop("SLIPWAY_DATABASE_URL", None)  # the registry the benchmark filled is in home
    argv = [str(exe), "serve", "--port", str(port), "--log-level", "warning"]
    return Child(name, argv, env, port, workdir)


def bare_child(workdir: Path) -> Child:
    port = free_port()
    argv = [sys.executable, str(BARE_APP), "--port", str(port)]
    return Child("bare", argv, dict(os.environ), port, workdir)


def reference_child(workdir: Path, model: Path) -> Child | None:
    """The hand-written Starlette endpoint on the lr model, or None (said) without Starlette."""
    try:
        import starlette  # noqa: F401
    except ImportError:
        log("starlette is not installed (`make bench` installs it): no reference endpoint")
        return None
    port = free_port()
    argv = [sys.executable, str(REFERENCE_APP), "--model", str(model), "--port", str(port)]
    return Child("starlette", argv, dict(os.environ), port, workdir)


def measure_startup(home: Path, workdir: Path, body: bytes) -> dict[str, Any]:
    """Start the server with one deployment a few times: start → ready, and RSS."""
    starts = []
    for i in range(MEMORY_STARTS):
        child = slipway_child(home, workdir, name=f"slipway-lr-only-{i}")
        try:
            ready_s = child.wait_ready()
            rss_ready = child.rss_mib()
            for _ in range(200):
                status, answer = http_request(child.port, "POST", "/v2/models/lr/infer", body)
                if status != 200:
                    raise BenchError(f"lr-only server answered {status}: {answer[:300]!r}")
            starts.append(
                {
                    "ready_s": round(ready_s, 3),
                    "rss_ready_mib": round(rss_ready or 0, 1),
                    "rss_after_200_requests_mib": round(child.rss_mib() or 0, 1),
                }
            )
        finally:
            child.stop()
        log(f"lr-only start {i + 1}: ready in {ready_s:.2f}s, RSS {rss_ready:.0f} MiB")
    return {
        "starts": starts,
        "ready_s_median": statistics.median(s["ready_s"] for s in starts),
        "rss_ready_mib_median": statistics.median(s["rss_ready_mib"] for s in starts),
        "rss_warm_mib_median": statistics.median(s["rss_after_200_requests_mib"] for s in starts),
    }


def in_process(paths: dict[str, Path], row: Any, calls: int) -> dict[str, Any]:
    """onnxruntime on one row, no HTTP; also through Slipway's OnnxRuntime wrapper."""
    import onnxruntime as ort

    from slipway.runtimes.onnx import OnnxRuntime

    results: dict[str, Any] = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as the server runs it (Settings.onnx_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: row}
        runtime = OnnxRuntime.load(path, threads=1)
        entry = {}
        for label, call in (
            ("onnxruntime", lambda s=session, f=feed: s.run(None, f)),
            ("slipway_runtime", lambda r=runtime, f=feed: r.predict(f)),
        ):
            for _ in range(500):
                call()
            started = time.perf_counter()
            for _ in range(calls):
                call()
            elapsed = time.perf_counter() - started
            entry[label] = {
                "calls": calls,
                "us_per_call": round(elapsed / calls * 1e6, 2),
                "calls_per_s": round(calls / elapsed),
            }
        runtime.unload()
        results[name] = entry
        log(
            f"in-process {name}: {entry['onnxruntime']['us_per_call']} µs/call onnxruntime,"
            f" {entry['slipway_runtime']['us_per_call']} µs/call through OnnxRuntime.predict"
        )
    return results


@dataclass
class Target:
    name: str
    server: str  # "slipway" or "bare"
    path: str
    body_file: Path


@dataclass
class Run:
    target: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    server_cpu: float = 0.0  # cores the server process used during the run (1.0 = one core)
    error_detail: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None


def run_wrk(wrk: str, url: str, body_file: Path, connections: int, duration: float) -> dict:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON ") :])
    raise BenchError(
        f"wrk printed no summary (exit {done.returncode}): {' '.join(argv)}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )


def to_run(target: str, connections: int, raw: dict) -> Run:
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    err = raw["errors"]
    socket_errors = err["connect"] + err["read"] + err["write"] + err["timeout"]
    # wrk counts status ≥ 400 in errors.status; post.lua's response() counts them again as a
    # cross-check. Take the larger, so neither can hide the other.
    errors = socket_errors + max(err["status"], err["http"])
    return Run(
        target=target,
        connections=connections,
        duration_s=round(seconds, 2),
        requests=raw["requests"],
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=lat["p50"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        errors=errors,
        error_detail=err,
        first_error=raw.get("first_error"),
    )


def check_target(port: int, target: Target) -> None:
    status, body = http_request(port, "POST", target.path, target.body_file.read_bytes())
    if status != 200:
        raise BenchError(f"{target.name}: POST {target.path} answered {status}: {body[:500]!r}")


# -- report ------------------------------------------------------------------------------------


def find(runs: list[Run], target: str, connections: int) -> Run:
    return next(r for r in runs if r.target == target and r.connections == connections)


def evaluate(runs: list[Run], startup: dict[str, Any]) -> list[dict[str, Any]]:
    lr64, bare64 = find(runs, "slipway-v2-lr", 64), find(runs, "bare", 64)
    lr1, bare1 = find(runs, "slipway-v2-lr", 1), find(runs, "bare", 1)
    total_errors = sum(r.errors for r in runs)
    checks = [
        (
            "V2 lr throughput @64 / bare @64",
            lr64.rps / bare64.rps if bare64.rps else 0.0,
            f">= {TARGET_THROUGHPUT_RATIO:.2f}",
            lambda v: v >= TARGET_THROUGHPUT_RATIO,
            "{:.2f}",
        ),
        (
            "V2 lr p99 @64 / bare p99 @64",
            lr64.p99_ms / bare64.p99_ms if bare64.p99_ms else float("inf"),
            f"<= {TARGET_P99_RATIO:.1f}",
            lambda v: v <= TARGET_P99_RATIO,
            "{:.2f}",
        ),
        (
            "V2 lr p50 @1 - bare p50 @1 (ms)",
            lr1.p50_ms - bare1.p50_ms,
            f"<= {TARGET_P50_GAP_MS:.2f}",
            lambda v: v <= TARGET_P50_GAP_MS,
            "{:.3f}",
        ),
        ("errors, all runs", total_errors, "== 0", lambda v: v == 0, "{}"),
        (
            "RSS, one model, ready (MiB)",
            startup["rss_ready_mib_median"],
            f"<= {TARGET_RSS_MIB:.0f}",
            lambda v: v <= TARGET_RSS_MIB,
            "{:.1f}",
        ),
        (
            "start -> ready, one model (s)",
            startup["ready_s_median"],
            f"<= {TARGET_READY_S}",
            lambda v: v <= TARGET_READY_S,
            "{:.2f}",
        ),
    ]
    return [
        {
            "check": name,
            "value": value,
            "text": fmt.format(value),
            "target": target,
            "pass": ok(value),
        }
        for name, value, target, ok, fmt in checks
    ]


def extra_ratios(runs: list[Run]) -> dict[str, Any]:
    """The same ratios for every Slipway target and the reference endpoint, for the record;
    and Slipway's V2 lr throughput at 64 connections as a multiple of the reference's."""
    out: dict[str, Any] = {}
    names = {r.target for r in runs}
    for target in ("slipway-v2-lr", "slipway-v2-rf", "slipway-predict-lr", "starlette-lr"):
        if target not in names:
            continue
        b64, t64 = find(runs, "bare", 64), find(runs, target, 64)
        b1, t1 = find(runs, "bare", 1), find(runs, target, 1)
        out[target] = {
            "throughput_ratio_64": round(t64.rps / b64.rps, 3) if b64.rps else None,
            "p99_ratio_64": round(t64.p99_ms / b64.p99_ms, 3) if b64.p99_ms else None,
            "p50_gap_1_ms": round(t1.p50_ms - b1.p50_ms, 3),
        }
    if "starlette-lr" in names:
        ref64 = find(runs, "starlette-lr", 64)
        lr64 = find(runs, "slipway-v2-lr", 64)
        out["slipway_v2_lr_over_reference_64"] = (
            round(lr64.rps / ref64.rps, 3) if ref64.rps else None
        )
    return out


def reference_line(ratios: dict[str, Any]) -> str | None:
    if "starlette-lr" not in ratios:
        return None
    return (
        "Reference, a hand-written Starlette endpoint (stdlib JSON, onnxruntime inline):"
        f" {ratios['starlette-lr']['throughput_ratio_64']:.2f} of bare at 64 connections;"
        f" Slipway's V2 lr {ratios['slipway_v2_lr_over_reference_64']:.2f}× the reference."
    )


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"### {result['date']} — {m['nproc']} CPU ({m['cpu']}), {m['ram_gib']} GiB RAM",
        "",
        f"`{result['command']}` — {result['duration_s']:g} s per run, wrk -t1;"
        f" Python {m['python']}, uvicorn {m['uvicorn']}, onnxruntime {m['onnxruntime']},"
        f" {m['wrk']}.",
        "",
        "| target | conns | req/s | p50 ms | p95 ms | p99 ms | server CPU | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['target']} | {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} |"
            f" {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu']:.2f} | {r['errors']} |"
        )
    lines += [
        "",
        "In-process ceiling (one row, no HTTP, 1 onnxruntime thread):",
        "",
        "| model | onnxruntime µs/call | calls/s | via OnnxRuntime.predict µs/call | calls/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in result["in_process"].items():
        o, s = entry["onnxruntime"], entry["slipway_runtime"]
        lines.append(
            f"| {name} | {o['us_per_call']:.1f} | {o['calls_per_s']:,} |"
            f" {s['us_per_call']:.1f} | {s['calls_per_s']:,} |"
        )
    st = result["startup"]
    lines += [
        "",
        f"Server with one model (`lr`), median of {len(st['starts'])} starts: ready"
        f" {st['ready_s_median']:.2f} s after process start, RSS {st['rss_ready_mib_median']:.0f}"
        f" MiB when ready, {st['rss_warm_mib_median']:.0f} MiB after 200 requests."
        f" Server with `lr` and `rf` after the load runs: RSS {result['rss_after_load_mib']:.0f}"
        f" MiB (peak {result['peak_rss_after_load_mib']:.0f} MiB).",
        "",
        "| check | value | target | |",
        "| --- | ---: | --- | --- |",
    ]
    for c in result["checks"]:
        lines.append(
            f"| {c['check']} | {c['text']} | {c['target']} | {'pass' if c['pass'] else 'FAIL'} |"
        )
    if (line := reference_line(result["ratios"])) is not None:
        lines += ["", line]
    return "\n".join(lines)


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the tables to 80 columns
        console = Console(width=120)
    table = Table(title=f"wrk -t1, {result['duration_s']:g} s per run")
    columns = ("target", "conns", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "srv CPU")
    for col in (*columns, "errors"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in result["runs"]:
        table.add_row(
            r["target"],
            str(r["connections"]),
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['max_ms']:.1f}",
            f"{r['server_cpu']:.2f}",
            str(r["errors"]) if not r["errors"] else f"[red]{r['errors']}[/]",
        )
    console.print(table)
    checks = Table(title="targets")
    for col in ("check", "value", "target", "result"):
        checks.add_column(col)
    for c in result["checks"]:
        checks.add_row(
            c["check"], c["text"], c["target"], "[green]pass[/]" if c["pass"] else "[red]FAIL[/]"
        )
    console.print(checks)
    if (line := reference_line(result["ratios"])) is not None:
        console.print(line)


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slipway serving benchmark (see README.md).")
    parser.add_argument("--duration", type=float, default=None, help="seconds per wrk run (10)")
    parser.add_argument("--quick", action="store_true", help="3-second runs, for smoke checks")
    parser.add_argument(
        "--batch-delay-ms",
        type=float,
        default=None,
        help="deploy with this max_batch_delay_ms instead of the default (diagnostics)",
    )
    args = parser.parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 10.0)
    command = "bench/serving/run.py" + (" --quick" if args.quick else "")
    if args.duration:
        command += f" --duration {args.duration:g}"
    if args.batch_delay_ms is not None:
        command += f" --batch-delay-ms {args.batch_delay_ms:g}"
    # Server settings given through the environment (e.g. SLIPWAY_AUDIT_PREDICTIONS=off) reach
    # the `slipway serve` children; name them in the command so the record says what ran.
    overrides = sorted(
        f"{k}={v}"
        for k, v in os.environ.items()
        if k.startswith("SLIPWAY_") and k not in ("SLIPWAY_HOME", "SLIPWAY_DATABASE_URL")
    )
    command = " ".join([*overrides, command])

    wrk = ensure_wrk()
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        workdir = Path(tmp)
        home = workdir / "home"
        try:
            log("fitting lr and rf on the breast-cancer data")
            models, x_train, row = fit_models()
            # Shortest text that reads back as the same float32, as a real client would send.
            features = [float(str(v)) for v in row[0]]
            v2_body = json.dumps(
                {
                    "inputs": [
                        {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": features}
                    ]
                }
            ).encode()
            bodies = {"v2": workdir / "v2.json", "predict": workdir / "predict.json"}
            bodies["v2"].write_bytes(v2_body)
            bodies["predict"].write_bytes(json.dumps({"instances": [features]}).encode())

            log("registering lr and deploying it")
            _, lr_path = register(home, "lr", models["lr"], x_train, args.batch_delay_ms)
            log("starting slipway with only the lr deployment: ready time and RSS")
            startup = measure_startup(home, workdir, v2_body)
            log("registering rf and deploying it")
            _, rf_path = register(home, "rf", models["rf"], x_train, args.batch_delay_ms)

            calls = IN_PROCESS_CALLS
            log(f"in-process ceiling: {calls:,} onnxruntime calls per model")
            inproc = in_process({"lr": lr_path, "rf": rf_path}, row, calls)

            log("starting slipway (lr, rf) and the bare app")
            slipway = slipway_child(home, workdir)
            children.append(slipway)
            bare = bare_child(workdir)
            children.append(bare)
            reference = reference_child(workdir, lr_path)
            if reference is not None:
                children.append(reference)
            for child in children:
                child.wait_ready()
            targets = [
                Target("bare", "bare", "/v2/models/bare/infer", bodies["v2"]),
                Target("slipway-v2-lr", "slipway", "/v2/models/lr/infer", bodies["v2"]),
                Target("slipway-v2-rf", "slipway", "/v2/models/rf/infer", bodies["v2"]),
                Target("slipway-predict-lr", "slipway", "/predict/lr", bodies["predict"]),
            ]
            servers = {"slipway": slipway, "bare": bare}
            if reference is not None:
                targets.append(
                    Target("starlette-lr", "starlette", "/v2/models/lr/infer", bodies["v2"])
                )
                servers["starlette"] = reference
            ports = {name: child.port for name, child in servers.items()}
            for target in targets:
                check_target(ports[target.server], target)
                url = f"http://127.0.0.1:{ports[target.server]}{target.path}"
                run_wrk(wrk, url, target.body_file, 16, 1.0)  # warm-up, not recorded
            lr_url = f"http://127.0.0.1:{slipway.port}/v2/models/lr/infer"
            run_wrk(wrk, lr_url, bodies["v2"], 16, WARMUP_S)

            runs: list[Run] = []
            # Interleaved, so a slow patch of the machine hits every target alike.
            for connections in CONNECTIONS:
                for target in targets:
                    url = f"http://127.0.0.1:{ports[target.server]}{target.path}"
                    server = servers[target.server]
                    cpu_before = server.cpu_seconds()
                    raw = run_wrk(wrk, url, target.body_file, connections, duration)
                    run = to_run(target.name, connections, raw)
                    if run.duration_s:
                        cpu = (server.cpu_seconds() - cpu_before) / run.duration_s
                        run.server_cpu = round(cpu, 2)
                    runs.append(run)
                    log(
                        f"{target.name:>19} c={connections:<3} {run.rps:>8,.0f} req/s"
                        f"  p50 {run.p50_ms:6.2f}  p95 {run.p95_ms:6.2f}  p99 {run.p99_ms:6.2f} ms"
                        f"  server CPU {run.server_cpu:.2f}  errors {run.errors}"
                        + (f"  first: {run.first_error}" if run.first_error else "")
                    )
                    for child in children:
                        if child.proc.poll() is not None:
                            raise BenchError(
                                f"{child.name} died during the load runs"
                                f" (exit {child.proc.returncode}). Its stderr:\n{child.stderr()}"
                            )

            server_log = slipway.stderr()
            result: dict[str, Any] = {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "command": command,
                "duration_s": duration,
                "machine": machine(),
                "startup": startup,
                "rss_after_load_mib": round(slipway.rss_mib() or 0, 1),
                "peak_rss_after_load_mib": round(slipway.peak_rss_mib() or 0, 1),
                "in_process": inproc,
                "runs": [asdict(r) for r in runs],
            }
            result["checks"] = evaluate(runs, startup)
            result["ratios"] = extra_ratios(runs)
            result["server_stderr"] = server_log[-5000:]
        finally:
            for child in reversed(children):
                child.stop()

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT / f"results-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")

    print_tables(result)
    noisy = [line for line in server_log.splitlines() if line.strip() and "serving on" not in line]
    if noisy:
        print(f"\nThe server wrote {len(noisy)} line(s) to stderr during the run; the last ones:")
        print("\n".join(noisy[-20:]))
    print("\n<!-- paste into bench/serving/RESULTS.md -->")
    print(markdown(result))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0 if all(c["pass"] for c in result["checks"]) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
