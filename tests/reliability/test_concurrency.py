"""Concurrency through the real HTTP API, on SQLite and PostgreSQL: 50 registrations at once
all succeed with unique, gap-free numbers (no "database is locked" 500s), and 50 conflicting
promotions resolve to exactly one success while the rest get 409. A SQLite file that another
process keeps locked past the busy timeout is a 503 to try again, not a 500.

tests/registry/test_concurrency.py proves the store alone (20 threads); this adds the server,
its thread pool and the uploads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slipway.local import Registry
from slipway.registry.store import SqlStore
from slipway.server import BackgroundServer
from slipway.serving.app import SlipwayApp

from ..auth import admin_headers
from .conftest import make_settings

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

N = 50


def _tiny_onnx(shift: float) -> bytes:
    constant = numpy_helper.from_array(np.array([shift], dtype=np.float32), name="shift")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "shift"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[constant],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def api(tmp_path: Path, store_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    settings = make_settings(tmp_path / "home", database_url=store_url)
    store = SqlStore(store_url)  # closed here, before the database is dropped
    try:
        with BackgroundServer(settings, app=SlipwayApp(settings, store=store)) as server:
            yield server.url, admin_headers(settings)
    finally:
        store.close()


async def _all_at_once(url: str, headers: dict[str, str], call: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=httpx.Limits(max_connections=N)
    ) as client:
        return list(await asyncio.gather(*[call(client, i) for i in range(N)]))


def test_50_registrations_then_50_conflicting_promotions(api) -> None:
    url, headers = api

    async def register(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            "/api/models/churn/versions",
            content=_tiny_onnx(float(i)),
            headers={"content-type": "application/octet-stream"},
        )

    responses = asyncio.run(_all_at_once(url, headers, register))
    assert Counter(r.status_code for r in responses) == {201: N}, [
        r.text for r in responses if r.status_code != 201
    ][:3]
    assert sorted(r.json()["number"] for r in responses) == list(range(1, N + 1))

    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        listed = client.get("/api/models/churn/versions").json()
        assert [v["number"] for v in listed] == list(range(1, N + 1))
        assert len({v["digest"] for v in listed}) == N
        created = client.post("/api/deployments", json={"name": "churn-prod", "model": "churn",
                                                         "version": 1})  # fmt: skip
        assert created.status_code == 201, created.text

    # 49 candidates race to start a rollout on one deployment: one wins, the rest are told
    # another rollout is active (409).
    async def start(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"version": 2 + i % (N - 1), "steps": [10, 50], "interval_s": 3600}
        return await client.post("/api/deployments/churn-prod/rollout", json=body)

    started = asyncio.run(_all_at_once(url, headers, start))
    assert Counter(r.status_code for r in started) == {201: 1, 409: N - 1}, Counter(
        r.status_code for r in started
    )
    winner = next(r.json() for r in started if r.status_code == 201)

    # 50 operators promote that rollout at once: one promotion, the rest 409.
    async def promote(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/api/deployments/churn-prod/rollout/promote", json={})

    promoted = asyncio.run(_all_at_once(url, headers, promote))
    assert Counter(r.status_code for r in promoted) == {200: 1, 409: N - 1}, [
        (r.status_code, r.text) for r in promoted if r.status_code != 409
    ]
    assert all("error" in r.json() for r in promoted if r.status_code == 409)

    # 50 version changes at once: all applied one after another, none lost.
    async def point(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.patch("/api/deployments/churn-prod", json={"version": 1 + i})

    pointed = asyncio.run(_all_at_once(url, headers, point))
    assert Counter(r.status_code for r in pointed) == {200: N}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        final = client.get("/api/deployments/churn-prod").json()
        assert final["traffic"] is None
        events = client.get(
            "/api/events", params={"subject": "deployment:churn-prod", "limit": 1000}
        ).json()
    changes = [e for e in events if e["kind"] == "deployment.version_changed"]
    # the promotion, then every PATCH that changed the version (one may have matched it)
    assert len(changes) in (N, N + 1)
    assert changes[0]["data"]["after"]["version"] == final["version"]  # newest first
    assert winner["candidate"] in {c["data"]["after"]["version"] for c in changes}


def test_a_sqlite_registry_locked_by_another_writer_is_a_503(
    tmp_path: Path, cancer, cancer_models
) -> None:
    x, _ = cancer
    path = tmp_path / "registry.db"
    settings = make_settings(tmp_path / "home", database_url=f"sqlite:///{path}?timeout=0.5")
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    rows = {"instances": x[:1].tolist()}
    with (
        BackgroundServer(settings) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=admin_headers(settings)) as http,
    ):
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process's write transaction, held
        try:
            answer = http.patch("/api/deployments/cancer-prod", json={"version": 1})
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert "registry database" in answer.json()["error"]
            assert http.post("/predict/cancer-prod", json=rows).status_code == 200
            assert http.get("/v2/health/ready").status_code == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        answer = http.patch("/api/deployments/cancer-prod", json={"version": 1})
        assert answer.status_code == 200, answer.text
    server.app.store.close()
