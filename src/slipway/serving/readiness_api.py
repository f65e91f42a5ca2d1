"""The readiness routes of the management API: the production readiness checklist of a version
or of a deployment's version. Thin HTTP shells over :mod:`slipway.readiness` (viewer role)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from slipway.governance.roles import Role
from slipway.readiness import evaluate_deployment, evaluate_version
from slipway.serving.http import query
from slipway.serving.management import _int

if TYPE_CHECKING:
    from slipway.serving.management import ManagementApi, Request


class ReadinessApi:
    """Adds ``GET /api/readiness/...`` to a :class:`ManagementApi`."""

    def __init__(self, api: ManagementApi) -> None:
        self.api = api
        # The deployments route comes first: routes match in order, and the version route's
        # pattern would also match /api/readiness/deployments/NAME.
        api._add(
            "GET",
            "/api/readiness/deployments/{deployment}",
            self.deployment,
            "The readiness checklist of the version a deployment serves",
            None,
            dict,
            Role.VIEWER,
        )
        api._add(
            "GET",
            "/api/readiness/{model}/{version}",
            self.version,
            "The readiness checklist of a version (?deployment= judges deployment items there)",
            None,
            dict,
            Role.VIEWER,
        )

    async def version(self, request: Request) -> tuple[int, Any]:
        raw = request.params["version"]
        number = None if raw == "latest" else _int(raw, "version")
        deployment = query(request.scope).get("deployment") or None
        api = self.api
        report = await asyncio.to_thread(
            lambda: evaluate_version(
                api.store,
                api.artifacts,
                api.settings,
                request.params["model"],
                number,
                deployment=deployment,
            )
        )
        return 200, report.to_builtins()

    async def deployment(self, request: Request) -> tuple[int, Any]:
        api = self.api
        report = await asyncio.to_thread(
            lambda: evaluate_deployment(
                api.store, api.artifacts, api.settings, request.params["deployment"]
            )
        )
        return 200, report.to_builtins()
