"""The open-loop load generator against a tiny HTTP server with a known injected delay."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from slipway.validation.loadgen import run_load
from slipway.validation.performance import performance_checks
from slipway.validation.policy import Sla

DELAY_S = 0.05


def make_app(serialize: bool):
    lock = asyncio.Lock()

    async def app(scope, receive, send):  # a raw ASGI app: answers after DELAY_S
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        if serialize:  # one request at a time: capacity 1 / DELAY_S requests per second
            async with lock:
                await asyncio.sleep(DELAY_S)
        else:
            await asyncio.sleep(DELAY_S)
        status = 500 if scope["path"] == "/fail" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


@contextmanager
def serving(serialize: bool) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app(serialize), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def delayed() -> Iterator[str]:
    """A server that answers every request after DELAY_S, many at a time."""
    with serving(serialize=False) as url:
        yield url


def test_an_overloaded_server_shows_its_queue_in_the_percentiles() -> None:
    # 40/s offered to a server that does 20/s: an open loop must show the queue growing (the
    # last request waits for about 2 s of backlog), never hide it by slowing down.
    with serving(serialize=True) as url:
        result = run_load(f"{url}/x", rate=40, duration_s=2.0)
    assert result.sent == 80 and result.errors == 0
    assert result.p50_ms > 500
    assert result.p99_ms > 1500
    assert result.throughput < 25


def test_percentiles_match_the_injected_delay(delayed: str) -> None:
    url = delayed
    result = run_load(f"{url}/x", rate=40, duration_s=2.0)
    assert result.sent == 80 and result.errors == 0
    # Generous above: the machine is shared; the serialized case shows what queueing adds.
    assert DELAY_S * 1000 <= result.p50_ms < DELAY_S * 1000 + 150
    assert result.p50_ms <= result.p95_ms <= result.p99_ms <= result.max_ms
    assert min(result.latencies_ms) >= DELAY_S * 1000
    assert 30 < result.throughput <= 41
    verdicts = [c.verdict for c in performance_checks(result, Sla(p50_ms=45, error_rate=0))]
    assert verdicts[0] == "fail" and verdicts[3] == "pass"


def test_throughput_never_exceeds_the_offered_rate(delayed: str) -> None:
    # 5 requests offered over 0.5 s, each answered in 50 ms: 10 per second, not the 11 that
    # dividing by "first send to last answer" (0.45 s) gives.
    result = run_load(f"{delayed}/x", rate=10, duration_s=0.5)
    assert result.ok == 5
    assert 0 < result.throughput <= result.rate


def test_error_responses_are_counted(delayed: str) -> None:
    result = run_load(f"{delayed}/fail", rate=20, duration_s=0.5)
    assert result.errors == result.sent == 10 and result.error_rate == 1.0


def test_the_loadtest_command_reports_percentiles(delayed: str, tmp_path) -> None:
    from ..test_cli import slipway

    url = delayed
    body = tmp_path / "body.json"
    body.write_text('{"instances": [[1, 2]]}')
    done = slipway(
        tmp_path / "home", "loadtest", f"{url}/x", "--rate", "20", "--duration", "1",
        "--body", str(body),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "p99 ms" in done.stdout and "20" in done.stdout
    [row] = [line for line in done.stdout.splitlines() if line.strip().startswith("│ ")][-1:]
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[:4] == ["20", "20", "20", "0"]
    assert float(cells[4]) >= DELAY_S * 1000  # p50 is at least the injected delay


@pytest.mark.parametrize(
    "rate, duration_s, timeout_s, message",
    [
        pytest.param(float("inf"), 1.0, 5.0, "finite", id="endless-rate"),
        pytest.param(10.0, float("inf"), 5.0, "finite", id="endless-duration"),
        pytest.param(float("nan"), 1.0, 5.0, "greater than 0", id="nan-rate"),
        pytest.param(1e6, 3600.0, 5.0, "at most 1000000 requests", id="too-many-requests"),
        pytest.param(10.0, 1.0, 0.0, "timeout", id="no-timeout"),
        pytest.param(10.0, 1.0, float("nan"), "timeout", id="nan-timeout"),
    ],
)
def test_a_load_it_cannot_send_is_refused_before_any_request(
    rate: float, duration_s: float, timeout_s: float, message: str
) -> None:
    from slipway.errors import InvalidInput

    with pytest.raises(InvalidInput, match=message):
        run_load("http://127.0.0.1:9/x", rate=rate, duration_s=duration_s, timeout_s=timeout_s)


def test_the_loadtest_command_refuses_an_endless_rate_in_one_line(tmp_path) -> None:
    from ..test_cli import assert_one_line_error, slipway

    done = slipway(tmp_path / "home", "loadtest", "http://127.0.0.1:9/x", "--rate", "inf")
    assert "finite" in assert_one_line_error(done, 2)


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:8000/v2", "ftp://host/x", "http:///x"])
def test_the_loadtest_command_refuses_an_address_that_is_no_url(tmp_path, url: str) -> None:
    from ..test_cli import assert_one_line_error, slipway

    done = slipway(tmp_path / "home", "loadtest", url, "--duration", "1")
    assert "is not an http:// or https:// URL" in assert_one_line_error(done, 2)
