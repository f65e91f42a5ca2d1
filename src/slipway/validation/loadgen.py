"""An open-loop load generator: requests leave at a fixed arrival rate whatever the server
does, and each latency is measured from the request's *intended* send time, so a server that
falls behind shows its queueing in the percentiles instead of slowing the generator down
(the coordinated-omission mistake of closed-loop tools)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import msgspec
import numpy as np

from slipway.errors import InvalidInput

Clock = Callable[[], float]
MAX_REQUESTS = 1_000_000  # per run: each request's latency is kept, and its task until the end


class LoadResult(msgspec.Struct, frozen=True):
    """What one run at one rate measured; latencies in milliseconds."""

    url: str
    rate: float
    duration_s: float
    sent: int
    ok: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput: float  # successful responses per second of the run
    latencies_ms: list[float]  # every request's, for the plot (errors count their time too)

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Request:
    """One request: ``body`` JSON bytes (POST) or None (GET)."""

    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


def run_load(
    url: str,
    *,
    rate: float,
    duration_s: float,
    requests: Sequence[Request] = (Request(),),
    timeout_s: float = 5.0,
    max_connections: int = 512,
    clock: Clock = time.perf_counter,
) -> LoadResult:
    """Send ``rate`` requests per second to ``url`` for ``duration_s`` seconds, cycling through
    ``requests``; a request counts as an error on a transport failure, a timeout or a status
    of 400 and above."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest.split("/", 1)[0]:
        # Refused here: an address with no scheme or host failed every request for the
        # whole duration and was reported as a server that answered none.
        raise InvalidInput(f"{url!r} is not an http:// or https:// URL with a host")
    if not rate > 0 or not duration_s > 0:
        raise InvalidInput("rate and duration must be greater than 0")
    if not math.isfinite(rate * duration_s):
        raise InvalidInput("rate and duration must be finite numbers")
    if rate * duration_s > MAX_REQUESTS:
        raise InvalidInput(
            f"rate times duration is {rate * duration_s:.0f} requests; a run sends at most"
            f" {MAX_REQUESTS} requests (every latency is kept): lower the rate or the duration"
        )
    if not 0 < timeout_s < math.inf:
        raise InvalidInput("the timeout must be a finite number of seconds greater than 0")
    if not requests:
        raise InvalidInput("at least one request is needed")
    return asyncio.run(
        _run(url, rate, duration_s, list(requests), timeout_s, max_connections, clock)
    )


async def _run(
    url: str,
    rate: float,
    duration_s: float,
    requests: list[Request],
    timeout_s: float,
    max_connections: int,
    clock: Clock,
) -> LoadResult:
    total = max(1, int(rate * duration_s))
    latencies = np.zeros(total)
    failed = np.zeros(total, dtype=bool)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def send(i: int, intended: float) -> None:
            request = requests[i % len(requests)]
            try:
                if request.body is None:
                    response = await client.get(url, headers=dict(request.headers))
                else:
                    response = await client.post(
                        url, content=request.body, headers=dict(request.headers)
                    )
                await response.aread()
                failed[i] = response.status_code >= 400
            except httpx.HTTPError:
                failed[i] = True
            latencies[i] = clock() - intended

        tasks = []
        start = clock() + 0.01
        for i in range(total):
            intended = start + i / rate
            delay = intended - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i, intended)))
        await asyncio.gather(*tasks)
        # At least the offered window: n requests over n / rate seconds, not from the first
        # send to the last answer ((n - 1) / rate plus one latency), which overstates it.
        elapsed = max(clock() - start, total / rate)
    ms = latencies * 1000.0
    ok = int((~failed).sum())
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99))
    return LoadResult(
        url=url,
        rate=rate,
        duration_s=duration_s,
        sent=total,
        ok=ok,
        errors=total - ok,
        p50_ms=round(p50, 3),
        p95_ms=round(p95, 3),
        p99_ms=round(p99, 3),
        max_ms=round(float(ms.max()), 3),
        throughput=round(ok / elapsed, 3),
        latencies_ms=[round(float(v), 3) for v in ms],
    )
