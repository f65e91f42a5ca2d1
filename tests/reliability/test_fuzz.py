"""Schemathesis against a real server: the management API (``/api/openapi.json``) and the
inference routes (``/v2/openapi.json``). No 5xx, and every answer matches its schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from slipway.local import Registry
from slipway.server import BackgroundServer

from ..auth import admin_headers
from .conftest import make_settings

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live(tmp_path_factory, cancer, cancer_models) -> Iterator[tuple[str, dict[str, str]]]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    config = make_settings(home, reconcile_interval_s=0.2)
    x, _ = cancer
    with Registry(config) as registry:
        for estimator in cancer_models:
            registry.register_sklearn("cancer", estimator, x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    with BackgroundServer(config) as server:
        yield server.url, admin_headers(config)


@pytest.fixture(scope="module")
def management_schema(live) -> Any:
    url, headers = live
    return schemathesis.openapi.from_url(f"{url}/api/openapi.json", headers=headers)


@pytest.fixture(scope="module")
def inference_schema(live) -> Any:
    url, _ = live
    return schemathesis.openapi.from_url(f"{url}/v2/openapi.json")


def _fuzz(schema: Any, call: Any) -> None:
    """Every operation of ``schema``, each with its own Hypothesis run; failures collected so
    one run names every broken operation. (Schemathesis's pytest plugin does not run on this
    pytest, so the loop is written out.)"""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            call(case)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 (reported below, per operation)
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_management_api(management_schema, live) -> None:
    url, headers = live
    _fuzz(
        management_schema,
        lambda case: case.call_and_validate(
            base_url=url, headers=headers, checks=CHECKS, timeout=30
        ),
    )


def test_inference_api(inference_schema, live) -> None:
    url, _ = live

    def call(case: Any) -> None:
        if case.path_parameters and "name" in case.path_parameters:
            # Random names only reach the 404 (test_hostile sends 10,000 of them); the real
            # deployment makes the generated bodies reach the codec and the model.
            case.path_parameters["name"] = "cancer-prod"
        case.call_and_validate(base_url=url, checks=CHECKS, timeout=30)

    _fuzz(inference_schema, call)
