"""``GET /api/readiness/...`` on a real server: a token is needed, a viewer's is enough."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slipway.governance.identities import create_user, issue_token
from slipway.local import Registry
from slipway.readiness.items import NAMES
from slipway.server import BackgroundServer

from .conftest import DEPLOYMENT, settings_for


@pytest.fixture
def server(home: Path) -> Iterator[tuple[str, str]]:
    """A server on the registry (auth on, as in production) and a viewer's token."""
    settings = settings_for(home, alert_webhooks="https://hooks.example.com/x")
    with Registry(settings) as registry:
        create_user(registry.store, "watcher", "viewer", actor="tests")
        token = issue_token(registry.store, "watcher", actor="tests").token
    with BackgroundServer(settings) as running:
        yield running.url, token
    running.app.store.close()


def test_readiness_routes_need_a_token_and_a_viewer_is_enough(server: tuple[str, str]) -> None:
    url, token = server
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        assert anonymous.get("/api/readiness/iris/2").status_code == 401
        assert anonymous.get(f"/api/readiness/deployments/{DEPLOYMENT}").status_code == 401
    viewer = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=30, headers=viewer) as http:
        answer = http.get("/api/readiness/iris/2")
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert (report["ref"], report["deployment"], report["ready"]) == (
            "iris@2",
            DEPLOYMENT,
            False,
        )
        assert [i["name"] for i in report["items"]] == list(NAMES)
        items = {i["name"]: i for i in report["items"]}
        # the server's own settings are judged: its webhook is set
        assert items["alert_destinations"]["status"] == "pass"
        assert items["packaged"]["fix"] == "slipway package iris@2 --out iris-2-bundle"

        served = http.get(f"/api/readiness/deployments/{DEPLOYMENT}").json()
        assert (served["ref"], served["deployment"]) == ("iris@1", DEPLOYMENT)
        latest = http.get("/api/readiness/iris/latest", params={"deployment": DEPLOYMENT})
        assert latest.json()["ref"] == "iris@2"

        assert http.get("/api/readiness/iris/9").status_code == 404
        assert http.get("/api/readiness/deployments/nope").status_code == 404
        bad = http.get("/api/readiness/iris/two")
        assert bad.status_code == 400 and "version must be a number" in bad.json()["error"]
        other = http.get("/api/readiness/iris/2", params={"deployment": "nope"})
        assert other.status_code == 404
        document = http.get("/api/openapi.json").json()
        assert "/api/readiness/{model}/{version}" in document["paths"]
