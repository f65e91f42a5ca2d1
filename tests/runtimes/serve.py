"""A real server on 127.0.0.1 serving one registered version, for the format tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from slipway.local import Registry
from slipway.settings import Settings


def make_settings(home: Path, **overrides: Any) -> Settings:
    return Settings.from_env({"SLIPWAY_HOME": str(home)}, port=0, **overrides)


@contextmanager
def serving(registry: Registry, model: str, version: int) -> Iterator[httpx.Client]:
    """Deploy ``model@version`` as ``<model>-prod``, start a server, wait until it is ready."""
    from slipway.server import BackgroundServer

    registry.store.create_deployment(f"{model}-prod", model, version)
    with (
        BackgroundServer(registry.settings) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/v2/health/ready").text
            time.sleep(0.05)
        yield client


def v2_infer(client: httpx.Client, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """POST a V2 infer request; return the outputs keyed by name (data, shape, datatype)."""
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    return {out["name"]: out for out in response.json()["outputs"]}
