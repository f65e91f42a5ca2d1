"""Soak benchmark: one `slipway serve` with the full feature set on, a steady request rate for
minutes, and a record of the server's RSS over time, errors and latency percentiles per minute.

    .venv/bin/python bench/soak/run.py --minutes 10 --rate 40

See README.md here for what is measured and the recorded figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
WARMUP_S = 60.0  # RSS growth is measured from the end of the first minute
RSS_EVERY_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _prepare(home: Path) -> tuple[np.ndarray, str]:
    """Two versions of the breast-cancer classifier with profiles, a deployment, a canary of
    version 2 at 20%, alert rules, and an admin token (auth stays on)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from slipway.governance.identities import bootstrap_admin
    from slipway.local import Registry
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import AlertRule
    from slipway.rollout import actions
    from slipway.rollout.policy import RolloutConfig
    from slipway.settings import Settings

    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    with Registry(Settings.from_env({"SLIPWAY_HOME": str(home)})) as registry:
        for c in (1.0, 0.1):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
            registry.register_sklearn("cancer", model.fit(x, data.target), x)
        registry.store.create_deployment("cancer", "cancer", 1)
        # An hour per step: the canary stays at 20% for the whole soak, so both versions,
        # the router and the rollout evidence are in play throughout.
        config = RolloutConfig(strategy="canary", steps=[20.0, 50.0], interval_s=3600.0)
        actions.start(registry.store, "cancer", 2, config, actor="soak")
        admin = bootstrap_admin(registry.store)
        assert admin is not None
        alerts = AlertStore(registry.store)
        for rule in (
            AlertRule(name="p99", kind="latency_p99", threshold=0.5, for_s=60),
            AlertRule(name="errors", kind="error_rate", threshold=0.05, for_s=60),
            AlertRule(name="drift", kind="drift_score", threshold=0.2, for_s=60),
        ):
            alerts.add_rule(rule)
    return x, admin.token


def _serve(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_PORT": str(port),
        "SLIPWAY_MONITORING": "1",
        "SLIPWAY_AUDIT_PREDICTIONS": "fail-open",  # every prediction gets an audit record
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "slipway.cli", "serve", "--log-level", "warning"], env=env
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
    raise SystemExit("the server did not become ready")


async def _drive(
    url: str, token: str, x: np.ndarray, seconds: float, rate: float, pid: int
) -> tuple[list[tuple[float, float, int]], list[dict[str, float]]]:
    """Open loop: request i is sent at start + i/rate whatever came before, and its latency
    counts from that intended time (no coordinated omission)."""
    samples: list[tuple[float, float, int]] = []  # (intended offset, latency s, status)
    rss: list[dict[str, float]] = []
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=limits
    ) as client:
        start = time.perf_counter()

        async def one(i: int, at: float) -> None:
            row = x[i % len(x)]
            try:
                if i % 3 == 0:  # plain JSON, five rows
                    rows = x[i % (len(x) - 5) : i % (len(x) - 5) + 5].tolist()
                    r = await client.post("/predict/cancer", json={"instances": rows})
                else:  # V2, one row, a request id for the audit record
                    body = {
                        "id": f"soak-{i}",
                        "inputs": [
                            {"name": "input", "shape": [1, 30], "datatype": "FP32",
                             "data": row.tolist()}
                        ],
                    }  # fmt: skip
                    r = await client.post("/v2/models/cancer/infer", json=body)
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            samples.append((at, time.perf_counter() - start - at, status))

        async def scrape() -> None:  # what Prometheus would do, and the RSS record
            while True:
                offset = time.perf_counter() - start
                await client.get("/metrics")
                rss.append({"t_s": round(offset, 1), "rss_mib": _rss_mib(pid), "fds": _fds(pid)})
                await asyncio.sleep(RSS_EVERY_S)

        scraper = asyncio.create_task(scrape())
        tasks: set[asyncio.Task[None]] = set()
        total = int(seconds * rate)
        for i in range(total):
            at = i / rate
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        scraper.cancel()
        rss.append(
            {
                "t_s": round(time.perf_counter() - start, 1),
                "rss_mib": _rss_mib(pid),
                "fds": _fds(pid),
            }
        )
    return samples, rss


def _per_minute(samples: list[tuple[float, float, int]]) -> list[dict[str, float]]:
    rows = []
    for minute in range(int(max(s[0] for s in samples) // 60) + 1):
        chunk = [s for s in samples if minute * 60 <= s[0] < (minute + 1) * 60]
        ok = np.array([s[1] for s in chunk if s[2] == 200]) * 1000
        rows.append(
            {
                "minute": minute + 1,
                "requests": len(chunk),
                "errors": sum(1 for s in chunk if s[2] != 200),
                "p50_ms": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
                "p90_ms": float(np.percentile(ok, 90)) if len(ok) else float("nan"),
                "p99_ms": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
                "max_ms": float(ok.max()) if len(ok) else float("nan"),
            }
        )
    return rows


def _audit_verify(home: Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "audit", "verify"],
        env={**os.environ, "SLIPWAY_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    return done.returncode, (done.stdout + done.stderr).strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--max-growth", type=float, default=0.05, help="RSS growth after warm-up")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="slipway-soak-"))
    x, token = _prepare(home)
    port = _free_port()
    server = _serve(home, port)
    try:
        samples, rss = asyncio.run(
            _drive(f"http://127.0.0.1:{port}", token, x, args.minutes * 60, args.rate, server.pid)
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    verify_rc, verify_line = _audit_verify(home)
    minutes = _per_minute(samples)
    after_warmup = [r for r in rss if r["t_s"] >= WARMUP_S] or rss
    base, last = after_warmup[0]["rss_mib"], rss[-1]["rss_mib"]
    growth = (last - base) / base
    errors = sum(1 for s in samples if s[2] != 200)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}",
        "minutes": args.minutes,
        "rate": args.rate,
        "requests": len(samples),
        "errors": errors,
        "server_exit_code": server.returncode,
        "audit_verify": {"exit_code": verify_rc, "line": verify_line},
        "rss_after_warmup_mib": base,
        "rss_final_mib": last,
        "rss_growth": growth,
        "per_minute": minutes,
        "rss": rss,
    }
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    path = out / f"soak-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print("| minute | requests | errors | p50 ms | p90 ms | p99 ms | max ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in minutes:
        print(
            f"| {r['minute']} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} |"
            f" {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |"
        )
    print()
    print("| t (s) | RSS MiB | fds |")
    print("| ---: | ---: | ---: |")
    for r in rss:
        print(f"| {r['t_s']:.0f} | {r['rss_mib']:.1f} | {r['fds']} |")
    print()
    print(
        f"requests {len(samples)}, errors {errors}, RSS {base:.1f} → {last:.1f} MiB after"
        f" warm-up ({growth:+.2%}), server exit {server.returncode},"
        f" audit verify exit {verify_rc}: {verify_line}"
    )
    print(f"written to {path}")
    ok = errors == 0 and growth < args.max_growth and verify_rc == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
