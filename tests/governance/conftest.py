"""Governance fixtures: a registry on each backend with users of every role, and a real server.

``users`` maps a role name (and ``approver2``) to a token of a user with that role; the user is
named after the key. ``private`` is a deployment whose inference needs a token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from slipway.governance.identities import create_user, issue_token
from slipway.local import Registry
from slipway.registry.records import InferencePolicy
from slipway.registry.store import SqlStore
from slipway.server import BackgroundServer
from slipway.settings import Settings

from ..serving.conftest import cancer, cancer_models, make_settings

__all__ = ["cancer", "cancer_models"]  # fixtures shared with tests/serving

ROLES = {
    "viewer": "viewer",
    "deployer": "deployer",
    "approver": "approver",
    "approver2": "approver",
    "admin": "admin",
}


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    with SqlStore(store_url) as opened:
        yield opened


@pytest.fixture
def gov_settings(tmp_path: Path, store_url: str) -> Settings:
    return make_settings(
        tmp_path / "home",
        database_url=store_url,
        reconcile_interval_s=0.1,
        token_refresh_s=0.2,
        audit_flush_interval_s=0.05,
        scoring_deployment="private",  # what MLflow's root /invocations serves
    )


@pytest.fixture
def gov_registry(gov_settings: Settings, cancer, cancer_models) -> Iterator[Registry]:
    x, _ = cancer
    with Registry(gov_settings) as registry:
        for estimator in cancer_models:
            registry.register_sklearn(
                "cancer",
                estimator,
                x,
                metrics={"accuracy": 0.95},
                training_data="s3://bucket/cancer.parquet",
            )
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        registry.store.create_deployment("private", "cancer", 1)
        registry.store.update_deployment(
            "private", inference=InferencePolicy(anonymous=False), actor="fixture"
        )
        yield registry


@pytest.fixture
def users(gov_registry: Registry) -> dict[str, str]:
    tokens = {}
    for name, role in ROLES.items():
        create_user(gov_registry.store, name, role, actor="fixture")
        tokens[name] = issue_token(gov_registry.store, name, actor="fixture").token
    return tokens


@pytest.fixture
def gov_server(gov_settings: Settings, gov_registry: Registry, users) -> Iterator[BackgroundServer]:
    with BackgroundServer(gov_settings) as server:
        yield server
    server.app.store.close()  # the app's own engine: no pooled connection outlives the test


@pytest.fixture
def client(gov_server: BackgroundServer, users) -> Iterator[Callable[..., httpx.Client]]:
    """``client("deployer")``: an HTTP client with that user's token; ``client()``: none."""
    opened: list[httpx.Client] = []

    def make(user: str | None = None, **headers: str) -> httpx.Client:
        if user is not None:
            headers["authorization"] = f"Bearer {users[user]}"
        http = httpx.Client(base_url=gov_server.url, timeout=30, headers=headers)
        opened.append(http)
        return http

    yield make
    for http in opened:
        http.close()
