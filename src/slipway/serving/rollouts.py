"""Rollouts in the server: routing, evidence, shadow mirroring, the controller loop, and the
rollout routes of the management API.

The app calls :meth:`RolloutPlane.route` for deployments with a traffic policy and
:meth:`RolloutPlane.observe` after each request; both are a few dictionary operations. The
flush and controller loops and the shadow workers run as background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
import socket
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from slipway.errors import InvalidInput, ModelNotReady
from slipway.registry.records import DeploymentRecord, RoutingRule
from slipway.registry.store import SqlStore
from slipway.rollout import actions
from slipway.rollout.analysis import GateConfig
from slipway.rollout.controller import RolloutController
from slipway.rollout.evidence import EvidenceCollector
from slipway.rollout.policy import RolloutConfig, RolloutRecord
from slipway.rollout.reports import experiment_summary, rollout_status
from slipway.rollout.router import choose_version, field_names, position_of, request_fields
from slipway.rollout.shadow import ShadowMirror
from slipway.rollout.state import RolloutStore
from slipway.serving.failure_log import FailureLog
from slipway.serving.http import Scope, query
from slipway.settings import Settings

if TYPE_CHECKING:
    from slipway.serving.management import ManagementApi, Request
    from slipway.serving.repository import ModelRepository

log = logging.getLogger("slipway.serving")

Arrays = dict[str, np.ndarray]
_ERRORS = frozenset({"server_error", "timeout"})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


class RolloutPlane:
    """The per-replica side of rollouts."""

    def __init__(
        self,
        store: SqlStore,
        repository: ModelRepository,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        replica: str | None = None,
    ) -> None:
        self.store = store
        self.repository = repository
        self.settings = settings
        self.rng = rng or random.Random()
        # At most 40 + 1 + 7 + 1 + 6 characters: rollout_windows.replica holds 64, and a host
        # name (a Kubernetes pod's) may hold 63 alone.
        self.replica = replica or (
            f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.rollouts = RolloutStore(store)
        self.collector = EvidenceCollector(
            max_samples=settings.evidence_max_samples,
            max_request_ids=settings.evidence_max_request_ids,
            rng=self.rng,
        )
        self.mirror = ShadowMirror(
            self._shadow_infer,
            self.collector.shadow_stats,
            max_queue=settings.shadow_queue_size,
            workers=settings.shadow_workers,
            timeout_s=settings.shadow_timeout_s,
            rng=self.rng,
        )
        self.controller = RolloutController(
            store, holder=self.replica, lease_s=settings.rollout_lease_s
        )
        self._tasks: list[asyncio.Task[None]] = []

    # -- request path --------------------------------------------------------------------------

    def route(
        self, record: DeploymentRecord, scope: Scope | None, body: bytes | None = None
    ) -> int:
        """The version that serves this request; the stable one when the chosen one is not
        loaded on this replica (yet). ``body``: the JSON request, for field-based routing."""
        policy = record.traffic
        if policy is None:
            return record.version
        headers = None
        if scope is not None and (policy.routing_key is not None or policy.rules):
            headers = _headers(scope)
        fields = None
        if body and (policy.routing_field is not None or policy.rules):
            names = field_names(policy)
            fields = request_fields(body, names) if names else None
        if policy.routing_field is not None:
            key = fields.get(policy.routing_field) if fields else None
        else:
            key = headers.get(policy.routing_key) if headers and policy.routing_key else None
        position = position_of(key, policy.rollout_id) if key is not None else self.rng.random()
        chosen = choose_version(record, position, headers, fields)
        if chosen != record.version and (record.model, chosen) not in self.repository.loaded:
            return record.version
        return chosen

    def observe(
        self,
        scope: Scope,
        deployment: str,
        version: int,
        outcome: str,
        latency_s: float,
        inputs: Arrays | None,
        outputs: Arrays | None,
        request_id: str | None = None,
        trace: Any = None,
    ) -> None:
        """Collect evidence for a request served by ``version``; mirror it to the shadow
        (``trace``: the request's, when traced, for the shadow's span)."""
        record = self.repository.deployments.get(deployment)
        if record is None or record.traffic is None:
            return
        policy = record.traffic
        wanted = policy.segment_header
        segment = None
        if request_id is None or wanted is not None:
            for name, value in scope["headers"]:
                if name == b"x-request-id" and request_id is None:
                    request_id = value.decode("latin-1")
                elif wanted is not None and name.decode("latin-1") == wanted:
                    segment = value.decode("latin-1")[:64]
        profile = None
        if policy.sample_inputs:  # only a rollout that checks input drift pays for samples
            loaded = self.repository.loaded.get((record.model, version))
            profile = None if loaded is None else loaded.record.profile
        self.collector.observe(
            policy.rollout_id, version, outcome in _ERRORS, latency_s, outputs, request_id,
            inputs if profile is not None else None, profile,
        )  # fmt: skip
        if policy.shadow is not None and outputs is not None and inputs is not None:
            self.mirror.offer(
                deployment,
                policy.rollout_id,
                policy.shadow,
                policy.shadow_fraction,
                inputs,
                outputs,
                latency_s,
                segment,
                trace,
            )

    async def _shadow_infer(
        self, deployment: str, version: int, inputs: Arrays, timeout_s: float
    ) -> Arrays:
        record = self.repository.deployments.get(deployment)
        loaded = None if record is None else self.repository.loaded.get((record.model, version))
        if loaded is None:
            raise ModelNotReady(f"shadow version {version} is not loaded")
        arrays, rows = loaded.conform(inputs)
        # The queue's deadline bounds the wait (DeadlineExceeded): asyncio.wait_for made a task
        # and a timer per mirrored request, ~10% of the CPU of a 100% shadow.
        return await loaded.queue.submit(arrays, rows, timeout_s)

    # -- background ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.mirror.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                self._every(
                    self.settings.evidence_flush_interval_s, self.flush, "rollout evidence flush"
                )
            ),
            loop.create_task(
                self._every(self.settings.rollout_interval_s, self._control, "rollout control")
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.mirror.stop()
        with contextlib.suppress(Exception):
            await self.flush()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.controller.release)

    async def flush(self) -> None:
        """Write the evidence collected since the last flush to the database."""
        windows, served = self.collector.drain()
        if windows or served:
            await asyncio.to_thread(self.rollouts.add_windows, self.replica, windows, served)

    async def _control(self) -> None:
        decisions = await asyncio.to_thread(self.controller.tick)
        if any(
            d.action != "wait" for _, d in decisions
        ):  # applied here at once, not next reconcile
            await self._apply_now()

    @staticmethod
    async def _every(interval: float, job: Any, name: str) -> None:
        failures = FailureLog(log, name, "trying again next time")
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception as exc:  # the registry may be briefly unreachable; try next time
                failures.failed(exc)
            else:
                failures.succeeded()

    # -- management API ------------------------------------------------------------------------

    def add_routes(self, api: ManagementApi) -> None:
        """Add the rollout, rollback, history, experiment and feedback routes to ``api``."""
        api._add(
            "POST",
            "/api/deployments/{deployment}/rollout",
            lambda r: self._start(api, r),
            "Start a rollout (canary, bluegreen, ab, shadow) of a version on a deployment",
            RolloutStart,
            RolloutRecord,
        )
        api._add(
            "GET",
            "/api/deployments/{deployment}/rollout",
            self._status,
            "The current or last rollout: weights, step, analysis, evidence, events",
            None,
            dict,
        )
        api._add(
            "POST",
            "/api/deployments/{deployment}/rollout/{action}",
            self._action,
            "pause, resume, promote or abort the active rollout",
            None,
            RolloutRecord,
        )
        api._add(
            "POST",
            "/api/deployments/{deployment}/rollback",
            self._rollback,
            "Roll back in one step: end the active rollout, or return to the previous version",
            None,
            DeploymentRecord,
        )
        api._add(
            "GET",
            "/api/deployments/{deployment}/history",
            self._history,
            "The version the deployment served at time ?at= (ISO 8601)",
            None,
            dict,
        )
        api._add(
            "GET",
            "/api/deployments/{deployment}/experiment",
            self._experiment,
            "Per-arm business metrics with intervals and significance tests",
            None,
            dict,
        )
        api._add(
            "POST",
            "/api/feedback",
            lambda r: self._feedback(api, r),
            "Record business outcomes (named values) for a request id",
            Feedback,
            dict,
        )

    async def _start(self, api: ManagementApi, request: Request) -> tuple[int, Any]:
        spec: RolloutStart = await api._json(request, RolloutStart)
        config = RolloutConfig(
            **{f: getattr(spec, f) for f in spec.__struct_fields__ if f != "version"}
        )
        name = request.params["deployment"]
        record = await asyncio.to_thread(
            lambda: actions.start(self.store, name, spec.version, config, actor=request.actor)
        )
        await self._apply_now()
        return 201, record

    async def _apply_now(self) -> None:
        # The replica that took the change switches at once; others within their reconcile
        # interval. Versions are already warm, so this loads nothing.
        try:
            await self.repository.reconcile()
        except Exception:  # the periodic reconcile will retry
            log.exception("reconcile after a rollout change failed")

    async def _status(self, request: Request) -> tuple[int, Any]:
        name = request.params["deployment"]
        return 200, await asyncio.to_thread(rollout_status, self.store, name)

    async def _action(self, request: Request) -> tuple[int, Any]:
        name, action = request.params["deployment"], request.params["action"]
        run = actions.operator_action(action)
        record = await asyncio.to_thread(lambda: run(self.store, name, actor=request.actor))
        await self._apply_now()
        return 200, record

    async def _rollback(self, request: Request) -> tuple[int, Any]:
        name = request.params["deployment"]
        record = await asyncio.to_thread(
            lambda: actions.rollback(self.store, name, actor=request.actor)
        )
        await self._apply_now()
        return 200, record

    async def _history(self, request: Request) -> tuple[int, Any]:
        name = request.params["deployment"]
        raw = query(request.scope).get("at")
        if raw is None:
            raise InvalidInput("give the time as ?at=2026-01-31T12:00:00Z")
        try:
            at = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"at must be an ISO 8601 time, got {raw!r}") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        version = await asyncio.to_thread(self.store.deployment_version_at, name, at)
        return 200, {"deployment": name, "at": at.isoformat(), "version": version}

    async def _experiment(self, request: Request) -> tuple[int, Any]:
        name = request.params["deployment"]
        raw = query(request.scope).get("alpha", "0.05")
        try:
            alpha = float(raw)
        except ValueError:
            raise InvalidInput(f"alpha must be a number, got {raw!r}") from None
        if not 0 < alpha < 1:
            raise InvalidInput("alpha must be between 0 and 1")
        return 200, await asyncio.to_thread(
            lambda: experiment_summary(self.store, name, alpha=alpha)
        )

    async def _feedback(self, api: ManagementApi, request: Request) -> tuple[int, Any]:
        spec: Feedback = await api._json(request, Feedback)
        if not spec.values:
            raise InvalidInput('feedback needs at least one named value, e.g. {"converted": 1}')
        for key, value in spec.values.items():
            if not np.isfinite(value) or not key or len(key) > 64:
                raise InvalidInput(f"feedback value {key!r} must be a finite number")
        await asyncio.to_thread(
            lambda: self.rollouts.add_feedback(spec.request_id, spec.values, actor=request.actor)
        )
        return 201, {"recorded": spec.request_id}


class RolloutStart(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/deployments/{deployment}/rollout``: the candidate and its config."""

    version: int
    strategy: str = "canary"
    steps: list[float] = msgspec.field(default_factory=lambda: [5.0, 25.0, 50.0])
    interval_s: float = 60.0
    gates: GateConfig = GateConfig()
    weight: float = 50.0
    routing_key: str | None = None
    routing_field: str | None = None
    rules: list[RoutingRule] = []
    shadow_fraction: float = 1.0
    segment_header: str | None = None
    require_validation: bool = False
    min_shadow_agreement: float | None = None
    min_shadow_samples: int = 100
    hold_s: float = 0.0


class Feedback(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/feedback``: outcomes of one request, e.g. ``{"converted": 1}``."""

    request_id: str
    values: dict[str, float]
