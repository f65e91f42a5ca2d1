"""Monitoring benchmark: the whole monitoring on vs off in one run, and drift evaluation of a
1,000,000-row window over 30 features from the bounded sketches.

    .venv/bin/python bench/monitoring/run.py            # 16 on/off pairs of 3 s runs
    .venv/bin/python bench/monitoring/run.py --quick    # one pair of 3 s runs

See README.md here for what is measured and RESULTS.md for recorded figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POST_LUA = REPO / "bench" / "serving" / "post.lua"
LIMIT = 0.10  # monitoring may cost at most 10% of throughput and of p99


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(home: Path) -> tuple[np.ndarray, str]:
    """Register the breast-cancer LogisticRegression with its profile; add alert rules."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from slipway.governance.identities import bootstrap_admin
    from slipway.local import Registry
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import AlertRule
    from slipway.settings import Settings

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, data.target)
    with Registry(Settings.from_env({"SLIPWAY_HOME": str(home)})) as registry:
        registry.register_sklearn("lr", model, x)
        registry.store.create_deployment("lr", "lr", 1)
        admin = bootstrap_admin(registry.store)
        assert admin is not None
        alerts = AlertStore(registry.store)
        for rule in (
            AlertRule(name="p99", kind="latency_p99", threshold=0.5, for_s=60),
            AlertRule(name="errors", kind="error_rate", threshold=0.05, for_s=60),
            AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=60),
            AlertRule(name="queue", kind="queue_depth", threshold=1000, for_s=60),
        ):
            alerts.add_rule(rule)
    return x, admin.token


def _serve(home: Path, port: int, monitoring: bool, interval: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_MONITORING": "1" if monitoring else "0",
        "SLIPWAY_MONITOR_INTERVAL_S": str(interval),
        "SLIPWAY_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway.cli", "serve", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not become ready")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, connections: int, seconds: float, body: Path, token: str) -> dict:
    env = {**os.environ, "BENCH_BODY_FILE": str(body)}
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
        "-H", f"Authorization: Bearer {token}", "-s", str(POST_LUA), url,
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))
    result = json.loads(line[len("BENCH_JSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def load(seconds: float, rounds: int, interval: float) -> dict:
    """Monitoring on vs off: two servers on one registry, runs interleaved."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    home = Path(tempfile.mkdtemp(prefix="slipway-bench-monitoring-"))
    x, token = _prepare(home)
    body = home / "body.json"
    row = x[0:1]
    body.write_text(
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 30],
                        "datatype": "FP32",
                        "data": row.ravel().tolist(),
                    }
                ]
            }
        )
    )
    ports = {"on": _free_port(), "off": _free_port()}
    servers = {k: _serve(home, p, k == "on", interval) for k, p in ports.items()}
    results: dict[str, dict[int, list[dict]]] = {"on": {}, "off": {}}
    try:
        for connections in (1, 16, 64):
            # Warm-up, not recorded; the first one past the monitored server's first tick (5 s
            # after start: scipy.special imported, first drift evaluation), start-up work.
            warmup = 1 if connections > 1 else 7
            for port in ports.values():
                url = f"http://127.0.0.1:{port}/v2/models/lr/infer"
                _wrk(url, connections, warmup, body, token)
            for round_ in range(rounds):
                # ABBA order (on, off, off, on, ...): a machine that slows down or speeds up
                # over the run weighs on both servers alike, not on whichever always goes first.
                order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
                for name in order:
                    port = ports[name]
                    url = f"http://127.0.0.1:{port}/v2/models/lr/infer"
                    cpu = _cpu_s(servers[name].pid)
                    run = _wrk(url, connections, seconds, body, token)
                    run["cpu_us_per_request"] = (
                        (_cpu_s(servers[name].pid) - cpu) / run["requests"] * 1e6
                    )
                    if run["errors"]["http"] or run["errors"]["timeout"]:
                        raise SystemExit(f"errors under load: {run['errors']} {run['first_error']}")
                    results[name].setdefault(connections, []).append(run)
        metrics = httpx.get(f"http://127.0.0.1:{ports['on']}/metrics").text
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    table = {}
    for connections in (1, 16, 64):
        on, off = results["on"][connections], results["off"][connections]
        row_: dict[str, Any] = {
            "rps_on": statistics.median(r["rps"] for r in on),
            "rps_off": statistics.median(r["rps"] for r in off),
            "p99_us_on": statistics.median(r["latency_us"]["p99"] for r in on),
            "p99_us_off": statistics.median(r["latency_us"]["p99"] for r in off),
            "cpu_us_on": statistics.median(r["cpu_us_per_request"] for r in on),
            "cpu_us_off": statistics.median(r["cpu_us_per_request"] for r in off),
        }
        # Costs from each round's pair of runs, seconds apart, then the median over rounds: a
        # slow patch of a shared machine lasting a few seconds moves one pair, not the verdict.
        pairs = list(zip(on, off, strict=True))
        costs = {
            "throughput_cost": [1 - a["rps"] / b["rps"] for a, b in pairs],
            "p99_cost": [a["latency_us"]["p99"] / b["latency_us"]["p99"] - 1 for a, b in pairs],
            "cpu_cost": [a["cpu_us_per_request"] / b["cpu_us_per_request"] - 1 for a, b in pairs],
        }
        for name, values in costs.items():
            row_[name] = statistics.median(values)
            row_[name + "_range"] = [min(values), max(values)]
        table[connections] = row_
    captured = [
        line for line in metrics.splitlines() if line.startswith("slipway_drift_window_rows{")
    ]
    return {"load": table, "drift_window_on": captured}


def drift_at_scale(rows: int = 1_000_000, features: int = 30, chunk: int = 10_000) -> dict:
    """Fold a 1M x 30 window as the server does (chunks), evaluate from the sketches only."""
    from scipy import stats

    from slipway.monitoring import drift
    from slipway.monitoring.windows import VersionWindow
    from slipway.registry.profile import build_profile

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(100_000, features))
    profile = build_profile(reference)
    live = rng.normal(size=(rows, features))
    live[:, :3] += 0.5  # three shifted features
    window = VersionWindow(profile, kind="rows", size=rows, slots=10)
    started = time.perf_counter()
    for start in range(0, rows, chunk):
        part = live[start : start + chunk]
        window.fold([part[:, i] for i in range(features)], {}, len(part), now=0.0)
    fold_s = time.perf_counter() - started
    started = time.perf_counter()
    n, windows, _ = window.snapshot(now=0.0)
    report = drift.evaluate(profile, windows)
    evaluate_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(features):  # what raw samples would cost: scipy on every row
        stats.ks_2samp(reference[:, i], live[:, i])
    raw_s = time.perf_counter() - started
    return {
        "rows": n,
        "features": features,
        "fold_s": fold_s,
        "fold_rows_per_s": rows / fold_s,
        "evaluate_from_sketches_s": evaluate_s,
        "raw_ks_2samp_s": raw_s,
        "drifted": report.drifted,
        "sketch_numbers": sum(w.counts.size for w in windows.values()),  # type: ignore[union-attr]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per load run, one round")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=16, help="on/off pairs per concurrency")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="SLIPWAY_MONITOR_INTERVAL_S (default 5)"
    )
    args = parser.parse_args()
    seconds, rounds = (3.0, 1) if args.quick else (args.duration, args.rounds)
    result: dict = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    result["drift"] = drift_at_scale()
    d = result["drift"]
    print(
        f"drift, {d['rows']:,} rows x {d['features']} features: fold {d['fold_s']:.2f} s "
        f"({d['fold_rows_per_s']:,.0f} rows/s), evaluate from sketches "
        f"{d['evaluate_from_sketches_s'] * 1000:.1f} ms, raw ks_2samp {d['raw_ks_2samp_s']:.2f} s; "
        f"drifted {d['drifted']}"
    )
    ok = True
    if not args.skip_load:
        result["monitor_interval_s"] = args.interval
        result.update(load(seconds, rounds, args.interval))
        print(
            "connections  rps off   rps on   cost   p99 off µs  p99 on µs  cost"
            "   CPU µs/req off  on   cost"
        )
        for c, r in result["load"].items():
            print(
                f"{c:>11}  {r['rps_off']:7.0f}  {r['rps_on']:7.0f}  {r['throughput_cost']:+5.1%}"
                f"  {r['p99_us_off']:10.0f}  {r['p99_us_on']:9.0f}  {r['p99_cost']:+5.1%}"
                f"  {r['cpu_us_off']:14.0f}  {r['cpu_us_on']:4.0f}  {r['cpu_cost']:+5.1%}"
            )
            ok = ok and r["throughput_cost"] <= LIMIT and r["p99_cost"] <= LIMIT
        print("cost per round (min … max over the on/off pairs):")
        for c, r in result["load"].items():
            spread = "  ".join(
                f"{name} {r[key + '_range'][0]:+.1%} … {r[key + '_range'][1]:+.1%}"
                for name, key in (
                    ("throughput", "throughput_cost"),
                    ("p99", "p99_cost"),
                    ("CPU", "cpu_cost"),
                )
            )
            print(f"{c:>11}  {spread}")
        print("drift window on the monitored server:", *result["drift_window_on"])
        print("targets (<= 10% throughput and p99):", "pass" if ok else "FAIL")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"results-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
