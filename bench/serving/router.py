"""Router benchmark: what a canary at 5% and a shadow at 100% cost, against a plain deployment.

    .venv/bin/python bench/serving/router.py [--rounds R] [--duration S] [--connections N] [--quick]

One ``slipway serve`` process holds three deployments of the same LogisticRegression, each its
own model with two identical versions: ``plain`` (no rollout), ``canary`` (version 2 at 5%,
router on, evidence collected) and ``shadow`` (every request mirrored to version 2 off the
request path and compared). ``wrk`` drives each in turn for ``rounds`` rounds (default 8 of
3 s), forward then backward (plain, canary, shadow, shadow, canary, plain, ...) so a machine that
drifts over the run weighs on all three alike; each target is the median over rounds of that
round's ratio to plain. Targets (docs/rollouts.md): canary ≥ 90% of plain's req/s; shadow
≥ 50% of plain's req/s; shadow p99 ≤ 1.2 × plain p99. Prints a table and a markdown block for
RESULTS.md; exit 0 when every target passes, 1 when one fails, 2 when the benchmark could not
run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402  (the sibling benchmark's helpers)
    WARMUP_S,
    BenchError,
    ensure_wrk,
    fit_models,
    log,
    machine,
    run_wrk,
    slipway_child,
    to_run,
)

TARGET_CANARY_RPS = 0.90
TARGET_SHADOW_RPS = 0.50
TARGET_SHADOW_P99 = 1.20
DEPLOYMENTS = ("plain", "canary", "shadow")


def prepare(home: Path) -> None:
    from slipway.local import Registry
    from slipway.rollout import actions
    from slipway.rollout.policy import RolloutConfig
    from slipway.settings import Settings

    models, x_train, _ = fit_models()
    with Registry(Settings.from_env({"SLIPWAY_HOME": str(home)})) as registry:
        for name in DEPLOYMENTS:
            for _ in range(2):
                registry.register_sklearn(name, models["lr"], x_train)
            registry.store.create_deployment(name, name, 1)
        # interval 1 h: the canary stays at 5% for the whole run.
        actions.start(registry.store, "canary", 2, RolloutConfig(steps=[5], interval_s=3600))
        actions.start(registry.store, "shadow", 2, RolloutConfig(strategy="shadow"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=8, help="runs of each deployment")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args(argv)
    duration, rounds = args.duration, (2 if args.quick else max(1, args.rounds))
    try:
        wrk = ensure_wrk()
        with tempfile.TemporaryDirectory(prefix="slipway-router-bench-") as tmp:
            work = Path(tmp)
            home = work / "home"
            log("fitting and registering models, starting rollouts")
            prepare(home)
            _, _, row = fit_models()
            body = work / "body.json"
            body.write_text(json.dumps({"instances": row.tolist()}))
            server = slipway_child(home, work)
            try:
                server.wait_ready()
                for name in DEPLOYMENTS:  # warm-up, not recorded: past the first monitor tick
                    url = f"http://127.0.0.1:{server.port}/predict/{name}"
                    run_wrk(wrk, url, body, args.connections, -(-WARMUP_S // len(DEPLOYMENTS)))
                runs: dict[str, list[Any]] = {name: [] for name in DEPLOYMENTS}
                # Rounds forward then backward (plain, canary, shadow, shadow, canary, plain,
                # ...): a machine that speeds up or slows down over the run weighs on all three
                # alike, and each round's runs, seconds apart, are compared with each other.
                for round_ in range(rounds):
                    order = DEPLOYMENTS if round_ % 2 == 0 else DEPLOYMENTS[::-1]
                    for name in order:
                        url = f"http://127.0.0.1:{server.port}/predict/{name}"
                        log(f"wrk {name} c={args.connections} {duration:g}s")
                        raw = run_wrk(wrk, url, body, args.connections, duration)
                        runs[name].append(to_run(name, args.connections, raw))
                status = _shadow_status(server.port)
            finally:
                server.stop()
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    return report(runs, status, duration, args.connections)


def _shadow_status(port: int) -> dict[str, Any]:
    import httpx

    response = httpx.get(f"http://127.0.0.1:{port}/api/deployments/shadow/rollout", timeout=10)
    return response.json().get("shadow", {}) if response.status_code == 200 else {}


def _ratios(runs: dict[str, list[Any]], name: str, field: str) -> list[float]:
    """``name`` over plain, round by round (the two runs seconds apart)."""
    return [
        getattr(a, field) / getattr(b, field)
        for a, b in zip(runs[name], runs["plain"], strict=True)
    ]


def report(runs: dict[str, list[Any]], shadow: dict[str, Any], duration: float, conns: int) -> int:
    rps = {n: statistics.median(r.rps for r in rs) for n, rs in runs.items()}
    p99 = {n: statistics.median(r.p99_ms for r in rs) for n, rs in runs.items()}
    errors = sum(r.errors for rs in runs.values() for r in rs)
    # Each check is the median over rounds of that round's ratio: a slow patch of the machine
    # lasting a few seconds moves one round, not the verdict.
    ratios = [
        ("canary req/s / plain", _ratios(runs, "canary", "rps"), TARGET_CANARY_RPS, ">="),
        ("shadow req/s / plain", _ratios(runs, "shadow", "rps"), TARGET_SHADOW_RPS, ">="),
        ("shadow p99 / plain p99", _ratios(runs, "shadow", "p99_ms"), TARGET_SHADOW_P99, "<="),
    ]
    rounds = len(runs["plain"])
    lines = [
        f"router benchmark: {conns} connections, {duration:g} s per run, {rounds} rounds",
        "| deployment | req/s (median; min-max) | p50 ms | p99 ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, rs in runs.items():
        low, high = min(r.rps for r in rs), max(r.rps for r in rs)
        lines.append(
            f"| {name} | {rps[name]:.0f} ({low:.0f}-{high:.0f})"
            f" | {statistics.median(r.p50_ms for r in rs):.2f} | {p99[name]:.2f} |"
        )
    lines += [
        "",
        "| check | median of rounds (min-max) | target | result |",
        "| --- | --- | --- | --- |",
    ]
    failed = False
    for label, values, target, op in ratios:
        value = statistics.median(values)
        ok = value >= target if op == ">=" else value <= target
        failed |= not ok
        lines.append(
            f"| {label} | {value:.3f} ({min(values):.3f}-{max(values):.3f}) | {op} {target:g}"
            f" | {'pass' if ok else 'FAIL'} |"
        )
    failed |= errors > 0
    lines.append(f"| HTTP errors | {errors} | 0 | {'pass' if errors == 0 else 'FAIL'} |")
    if shadow:
        lines.append("")
        lines.append(
            f"shadow: mirrored {shadow.get('mirrored')}, dropped {shadow.get('dropped')},"
            f" agreement {shadow.get('agreement')}, shadow errors {shadow.get('shadow_errors')}"
        )
    lines.append(f"machine: {json.dumps(machine())}")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
