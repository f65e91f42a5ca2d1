"""Stage 4, performance: the load generator's figures held to the policy's SLA."""

from __future__ import annotations

from slipway.validation.checks import Check, at_least, at_most
from slipway.validation.loadgen import LoadResult
from slipway.validation.policy import Sla


def performance_checks(result: LoadResult, sla: Sla) -> list[Check]:
    """p50/p95/p99 latency, error rate and throughput at one rate against ``sla``."""
    at = f"@{result.rate:g}/s"
    checks = [
        at_most(f"p50 latency ms {at}", result.p50_ms, sla.p50_ms),
        at_most(f"p95 latency ms {at}", result.p95_ms, sla.p95_ms),
        at_most(f"p99 latency ms {at}", result.p99_ms, sla.p99_ms),
        at_most(
            f"error rate {at}",
            result.error_rate,
            sla.error_rate,
            f"{result.errors} of {result.sent}",
        ),
    ]
    want = None if sla.min_throughput is None else sla.min_throughput * result.rate
    checks.append(at_least(f"throughput /s {at}", result.throughput, want))
    return checks
