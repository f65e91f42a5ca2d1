"""Three `slipway serve` processes sharing one PostgreSQL registry behind a small round-robin
proxy (written here, as a load balancer would: a refused connection goes to the next replica).
One replica is killed with SIGKILL under load: the others keep serving, and state changes made
through any replica reach the others.

tests/rollout/test_replicas.py proves two replicas converge on rollouts; this adds the third,
the proxy and the kill."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.settings import Settings

from ..auth import admin_headers
from .conftest import ServeProcess, make_settings, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.postgres]

LOAD_THREADS = 4


class RoundRobinProxy:
    """TCP round-robin over ``ports``; a connection that an upstream refuses tries the next."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._next = itertools.cycle(range(len(ports)))
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        # Cancel the connections still piping and let them close their transports here, on
        # their own loop, rather than leaving them to the garbage collector of a later test.
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in self.ports:
            port = self.ports[next(self._next)]
            with contextlib.suppress(OSError):
                upstream = await asyncio.open_connection("127.0.0.1", port)
                # The killed replica's port is free and in the ephemeral range: the kernel may
                # give this very connection that port as its source, and a TCP "simultaneous
                # open" then connects the socket to itself (the request comes back as its own
                # answer). Nobody listens there: treat it as refused.
                sock = upstream[1].get_extra_info("socket")
                if sock is not None and sock.getsockname() == sock.getpeername():
                    upstream[1].close()
                    upstream = None
                    continue
                break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()
            up_writer.close()

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def replicas(
    tmp_path: Path, pg_fresh_url: str, cancer, cancer_models
) -> Iterator[list[ServeProcess]]:
    home = tmp_path / "home"
    x, _ = cancer
    settings = Settings.from_env({"SLIPWAY_HOME": str(home)}, database_url=pg_fresh_url)
    with Registry(settings) as registry:
        for estimator in cancer_models:
            registry.register_sklearn("cancer", estimator, x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    started = [ServeProcess(home, pg_fresh_url) for _ in range(3)]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


def _version(client: httpx.Client, rows: list[list[float]]) -> int:
    response = client.post("/predict/cancer-prod", json={"instances": rows})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_kill_one_of_three_under_load(replicas: list[ServeProcess], cancer) -> None:
    rows = cancer[0][:1].tolist()
    seen: list[tuple[float, float, int | str]] = []  # (sent, answered, status)
    stop = threading.Event()
    with RoundRobinProxy([r.port for r in replicas]) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"

        def load() -> None:
            # a new connection per request, so the proxy spreads them over the replicas
            with httpx.Client(base_url=url, timeout=10, headers={"connection": "close"}) as c:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        status: int | str = c.post(
                            "/predict/cancer-prod", json={"instances": rows}
                        ).status_code
                    except httpx.TransportError as exc:
                        status = f"{type(exc).__name__}: {exc}"
                    seen.append((sent, time.monotonic(), status))

        threads = [threading.Thread(target=load) for _ in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(seen) > 60, what="load through the proxy")
            killed = time.monotonic()
            replicas[0].kill()
            wait_for(lambda: sum(t > killed + 1 for t, _, _ in seen) > 60, what="load after kill")

            # A change made through the proxy (some live replica) reaches both survivors.
            with httpx.Client(base_url=url, timeout=30, headers={"connection": "close"}) as c:
                assert c.patch("/api/deployments/cancer-prod", json={"version": 2}).is_success
            survivors = [httpx.Client(base_url=r.url, timeout=10) for r in replicas[1:]]
            try:
                wait_for(
                    lambda: all(_version(s, rows) == 2 for s in survivors),
                    timeout=10,
                    what="version 2 on both survivors",
                )
                # And one made on a given replica reaches the other.
                assert (
                    survivors[0]
                    .post("/api/deployments/cancer-prod/rollback", json={})
                    .json()["version"]
                    == 1
                )
                wait_for(lambda: _version(survivors[1], rows) == 1, timeout=10, what="rollback")
            finally:
                for client in survivors:
                    client.close()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    # Only requests in flight on the killed replica at that instant can fail: every one answered
    # before it, and every one sent a second after it (the proxy has seen the refusals by
    # then), must succeed. Sent, not answered: on a busy machine the proxy may take more
    # than that second to pass on the reset of a request that was in flight at the kill.
    before = [s for _, answered, s in seen if answered < killed]
    after = [s for sent, _, s in seen if sent > killed + 1]
    assert set(before) == {200}
    during = [s for sent, answered, s in seen if answered >= killed >= sent - 1 and s != 200]
    print(
        f"replicas: {len(before)} before the kill, {len(during)} failed at it, {len(after)} after"
    )
    assert len(during) <= LOAD_THREADS, during
    failed_after = [  # when each was sent after the kill, how long it took, what it got
        (round(sent - killed, 3), round(answered - sent, 3), s)
        for sent, answered, s in seen
        if sent > killed + 1 and s != 200
    ]
    assert set(after) == {200}, failed_after


def test_a_registry_outage_is_a_503_while_inference_goes_on(
    tmp_path: Path, pg_fresh_url: str, pg_outage: Callable[[bool], None], cancer, cancer_models
) -> None:
    x, _ = cancer
    settings = make_settings(tmp_path / "home", database_url=pg_fresh_url)
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    rows = {"instances": x[:1].tolist()}
    with (
        BackgroundServer(settings) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=admin_headers(settings)) as http,
    ):
        assert http.get("/api/models").status_code == 200
        pg_outage(True)
        for method, path in [("GET", "/api/models"), ("GET", "/api/events"),
                             ("PATCH", "/api/deployments/cancer-prod")]:  # fmt: skip
            answer = http.request(method, path, json={"version": 1} if method == "PATCH" else None)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["retry-after"] == "1"
            error = answer.json()["error"]
            assert "registry database" in error and "127.0.0.1" not in error
        # The data plane serves from what it loaded: the outage is not the models' problem.
        assert http.post("/predict/cancer-prod", json=rows).status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        pg_outage(False)
        wait_for(lambda: http.get("/api/models").status_code == 200, what="the registry back")
        assert http.patch("/api/deployments/cancer-prod", json={"version": 1}).status_code == 200
    server.app.store.close()


def test_an_outage_is_one_traceback_per_job_then_one_line_a_tick_then_recovered(
    tmp_path: Path,
    pg_fresh_url: str,
    pg_outage: Callable[[bool], None],
    cancer,
    cancer_models,
    caplog: pytest.LogCaptureFixture,
) -> None:
    x, _ = cancer
    settings = make_settings(
        tmp_path / "home",
        database_url=pg_fresh_url,
        reconcile_interval_s=0.2,
        monitor_interval_s=0.2,
        token_refresh_s=0.2,
    )
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    jobs = ("reconcile", "monitoring evaluation", "token refresh")
    with caplog.at_level(logging.WARNING, logger="slipway"), BackgroundServer(settings) as server:
        pg_outage(True)
        wait_for(
            lambda: all(
                sum(r.getMessage().startswith(f"{job} failed again") for r in caplog.records) >= 3
                for job in jobs
            ),
            what="three failed ticks of each job",
        )
        pg_outage(False)
        wait_for(
            lambda: all(f"{job} recovered" in caplog.text for job in jobs), what="recovery lines"
        )
    server.app.store.close()
    for job in jobs:
        lines = [r for r in caplog.records if r.getMessage().startswith(f"{job} ")]
        tracebacks = [r for r in lines if r.exc_info]
        assert len(tracebacks) == 1 and lines[0] is tracebacks[0], [r.getMessage() for r in lines]
        again = [r.getMessage() for r in lines if " failed again " in r.getMessage()]
        assert again and all("registry database" in line for line in again), again
        assert sum(" recovered " in r.getMessage() for r in lines) == 1
