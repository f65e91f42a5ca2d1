"""The Slipway ASGI app: V2 inference, plain JSON predict, health, metrics and the management API.

Hot path: decode → authorize → route (the deployment's router picks a version) → the version's
batch queue → runtime → encode. Everything else hangs off it without blocking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np

from slipway import __version__
from slipway.errors import NotFound, RegistryUnavailable, SlipwayError
from slipway.monitoring.metrics import ServingMetrics
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.store import SqlStore
from slipway.rollout.router import choose_version
from slipway.serving import codec, scoring_routes
from slipway.serving.access import ServingAccess
from slipway.serving.errors import status_for
from slipway.serving.events_sink import sink_from_settings
from slipway.serving.failure_log import FailureLog
from slipway.serving.http import (
    JSON_HEADERS,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    method_not_allowed,
    read_body,
    send_bytes,
)
from slipway.serving.management import ManagementApi
from slipway.serving.monitoring_plane import MonitoringPlane
from slipway.serving.repository import LoadedVersion, ModelRepository, runtime_options
from slipway.serving.rollouts import RolloutPlane
from slipway.serving.tracing import RequestTrace, tracing_from_endpoint
from slipway.serving.tracing import current as current_trace
from slipway.settings import Settings

log = logging.getLogger("slipway.serving")
_T = TypeVar("_T")
# New objects between two young-generation collections in a server process (CPython: 700).
GC_YOUNG_THRESHOLD = 20_000

_NOT_FOUND = codec.encode_json({"error": "no such route; see /api/openapi.json and /v2"})
_LIVE = codec.encode_json({"live": True})
_V2_READ_ONLY = frozenset(
    {"/v2/health/live", "/v2/health/ready", "/v2/openapi.json", "/v2", "/v2/"}
)


_CHALLENGE = (b"www-authenticate", b'Bearer realm="slipway"')


def _error_body(exc: SlipwayError) -> bytes:
    return codec.encode_json({"error": exc.message})


class SlipwayApp:
    """The server. Build it with the settings and stores; uvicorn (or a test) calls it."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlStore | None = None,
        artifacts: ArtifactStore | None = None,
        repository: ModelRepository | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.settings = settings
        # Set by the server when the app has the process to itself (server.run): gc.freeze()
        # after start-up. Not for an app inside a test or notebook process.
        self.freeze_gc = False
        self.store = store or SqlStore(settings.database_url)
        self.artifacts = artifacts or ArtifactStore(settings.artifacts_dir)
        self.repository = repository or ModelRepository(
            self.store,
            self.artifacts,
            threads=settings.onnx_threads,
            options=runtime_options(settings),
            inline_budget_s=settings.inline_batch_max_ms / 1000.0,
        )
        self.metrics = metrics or ServingMetrics(
            gpu_library=settings.nvml_library,
            multiprocess_dir=settings.metrics_multiprocess_dir or None,
        )
        self.repository.on_change = self.metrics.refresh_arms
        # Tokens for every /api route and for deployments that require them; prediction audit.
        self.access = ServingAccess(
            self.store, self.repository, settings, registry=self.metrics.registry
        )
        self.management = ManagementApi(self.store, self.artifacts, settings, self.access)
        self.rollouts = RolloutPlane(self.store, self.repository, settings)
        shadow_dropped = self.metrics.shadow_dropped
        self.rollouts.mirror.on_drop = lambda deployment: shadow_dropped.labels(deployment).inc()
        self.rollouts.add_routes(self.management)
        self.monitoring = MonitoringPlane(self.store, self.repository, self.metrics, settings)
        self.monitoring.add_routes(self.management)
        self.monitor = self.monitoring.monitor  # drift capture: LiveMonitor.offer per request
        self.draining = False
        self._reconciler: asyncio.Task[None] | None = None
        self.grpc_server: Any = None  # grpc.aio.Server when grpc_port >= 0
        self.grpc_port: int | None = None
        self.events = sink_from_settings(  # CloudEvents to an HTTP sink, when configured
            settings.events_url,
            settings.events_mode,
            batch_size=settings.events_batch_size,
            queue_size=settings.events_queue_size,
            flush_interval_s=settings.events_flush_interval_s,
            registry=self.metrics.registry,
        )
        self.tracing = tracing_from_endpoint(settings.otlp_endpoint)  # None: tracing off
        # Front ends mounted from above this layer (the dashboard at /ui, by slipway.server).
        self.frontends: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {}

    def mount(
        self, prefix: str, handler: Callable[[Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        """Serve ``prefix`` and every path under ``prefix/`` with ``handler`` (an ASGI app)."""
        self.frontends[prefix.rstrip("/")] = handler

    def _frontend_for(self, path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        for prefix, handler in self.frontends.items():
            if path == prefix or path.startswith(prefix + "/"):
                return handler
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        await self.repository.reconcile(force=True)
        self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_forever())
        await self.access.start()
        if self.tracing is not None:  # mirrored requests add a `shadow` span to their trace
            self.rollouts.mirror.traced = self.tracing.shadow_span
        await self.rollouts.start()
        await self.monitoring.start()
        if self.events is not None:
            self.events.start()
        if self.settings.grpc_port >= 0:  # V2 gRPC beside REST, same loop and data plane
            from slipway.serving.grpc_server import start_grpc_server

            self.grpc_server, self.grpc_port = await start_grpc_server(
                self, self.settings.host, self.settings.grpc_port
            )
        if self.freeze_gc:
            # Modules, models and registry state live as long as the process: moving them out
            # of the collector's sight keeps full collections short (they set the p99).
            gc.freeze()
            # A request's objects die by reference counting, but 64 requests in flight hold
            # more than the default 700 new objects at once, so the young generation was
            # collected ~150 times a second for nothing (3-4% of the CPU, measured under
            # load). Cycles still get collected, in batches of at most this many objects.
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def shutdown(self) -> None:
        self.draining = True
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=self.settings.request_timeout_s)
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await self.rollouts.stop()
        await self.monitoring.stop()
        await self.access.stop()  # writes the queued audit records
        if self.events is not None:
            await self.events.stop()  # delivers what is queued
        if self.tracing is not None:  # export the spans still batched (bounded by its timeout)
            await asyncio.to_thread(self.tracing.flush)
        await self.repository.close()

    async def _reconcile_forever(self) -> None:
        failures = FailureLog(log, "reconcile", "serving the last known state")
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_s)
            try:
                await self.repository.reconcile()
            except Exception as exc:  # the registry may be briefly unreachable; keep serving
                failures.failed(exc)
            else:
                failures.succeeded()

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._dispatch(scope, receive, send)
            except ClientDisconnected:
                return
            except SlipwayError as exc:
                if isinstance(exc, RegistryUnavailable):  # the client is told less than the log
                    log.warning("registry unavailable on %s: %s", scope["path"], exc.reason)
                await self._send_error(send, exc)
            except Exception:
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                await send_bytes(send, 500, codec.encode_json({"error": "internal server error"}))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _send_error(self, send: Send, exc: SlipwayError) -> None:
        status = status_for(exc)
        headers = JSON_HEADERS
        retry = getattr(exc, "retry_after_s", None)
        if retry is not None:
            headers = [*JSON_HEADERS, (b"retry-after", str(max(1, round(retry))).encode())]
        elif status == 401:  # the scheme that would be accepted (RFC 9110)
            headers = [*JSON_HEADERS, _CHALLENGE]
        await send_bytes(send, status, _error_body(exc), headers)

    # _dispatch, _v2, _infer and _predict are plain functions that return the handler's
    # coroutine: each request then suspends and resumes (a batch wait) through two coroutine
    # frames, not six.

    def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v2"):
            return self._v2(path, method, scope, receive, send)
        if path.startswith("/predict/"):
            if method != "POST":
                return method_not_allowed(send, method, "POST")
            return self._predict(path[len("/predict/") :], scope, receive, send)
        if path.startswith("/api/"):
            return self.management.handle(scope, receive, send)
        if scoring_routes.handles(path):
            return scoring_routes.handle(self, scope, receive, send)
        if path in ("/metrics", "/") and method not in ("GET", "HEAD"):
            return method_not_allowed(send, method, "GET")
        if path == "/metrics":
            body, content_type = self.metrics.render(self.repository)
            return send_bytes(send, 200, body, [(b"content-type", content_type.encode())])
        if path == "/":
            return send_bytes(
                send,
                200,
                codec.encode_json(
                    {"name": "slipway", "version": __version__, "api": "/api/openapi.json"}
                ),
            )
        if (frontend := self._frontend_for(path)) is not None:
            return frontend(scope, receive, send)
        return send_bytes(send, 404, _NOT_FOUND)

    # -- Open Inference Protocol V2 --------------------------------------------------------

    def _v2(
        self, path: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        if path in _V2_READ_ONLY and method not in ("GET", "HEAD"):
            return method_not_allowed(send, method, "GET")
        if path == "/v2/health/live":
            return send_bytes(send, 200, _LIVE)
        if path == "/v2/health/ready":
            ready = self.repository.ready and not self.draining
            body: dict[str, Any] = {"ready": ready}
            # Ready with reasons: a new version failed to load and the old one still serves.
            reasons = ["draining"] if self.draining else self.repository.not_ready_reasons()
            if reasons:
                body["reasons"] = reasons
            return send_bytes(send, 200 if ready else 503, codec.encode_json(body))
        if path == "/v2/openapi.json":
            from slipway.serving.inference_openapi import DOCUMENT

            return send_bytes(send, 200, DOCUMENT)
        if path in ("/v2", "/v2/"):
            return send_bytes(
                send,
                200,
                codec.encode_json({"name": "slipway", "version": __version__, "extensions": []}),
            )
        parts = path.split("/")  # ['', 'v2', 'models', name, ...]
        if len(parts) < 4 or parts[1] != "v2" or parts[2] != "models" or not parts[3]:
            return send_bytes(send, 404, _NOT_FOUND)
        name = parts[3]
        rest = parts[4:]
        version: int | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version = codec.decode_version(rest[1])
            rest = rest[2:]
        action = rest[0] if rest else ""
        if action == "infer" and len(rest) == 1:
            if method != "POST":
                return method_not_allowed(send, method, "POST")
            return self._infer(name, version, scope, receive, send)
        ready = action == "ready" and len(rest) == 1
        if (ready or action == "") and method not in ("GET", "HEAD"):  # HEAD: headers only
            return method_not_allowed(send, method, "GET")
        if ready:
            try:
                _, loaded = self.repository.resolve(name, version)
                ok = True
            except NotFound:
                raise
            except SlipwayError:
                ok = False
            return send_bytes(
                send, 200 if ok else 400, codec.encode_json({"name": name, "ready": ok})
            )
        if action == "":
            self.access.authorize_inference(scope, name)
            return send_bytes(send, 200, self._model_metadata(name, version))
        return send_bytes(send, 404, _NOT_FOUND)

    def _model_metadata(self, name: str, version: int | None) -> bytes:
        deployment, loaded = self.repository.resolve(name, version)
        record = loaded.record
        served = self.repository.deployments[deployment]
        versions = [str(served.version)]
        if served.previous_version is not None:
            versions.append(str(served.previous_version))
        return codec.encode_json(
            {
                "name": name,
                "versions": versions,
                "platform": f"{record.format}",
                "inputs": [msgspec_to_dict(s) for s in record.signature.inputs],
                "outputs": [msgspec_to_dict(s) for s in record.signature.outputs],
                "parameters": {
                    "model": record.model,
                    "version": record.number,
                    "digest": record.digest,
                },
            }
        )

    async def _run(
        self, deployment: str, loaded: LoadedVersion, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        hooks = loaded.hooks  # a bundle's preprocess/postprocess; without them, one check
        if hooks is not None:
            inputs = hooks.preprocess(inputs)
        arrays, rows = loaded.conform(inputs)
        # The queue enforces the deadline (one timer per queue, not one per request).
        trace = None if self.tracing is None else current_trace()
        timing = None if trace is None else trace.batch
        with self.metrics.in_flight_gauge(deployment, loaded).track_inprogress():
            # Alone and cheap: run now; else queue for the next batch.
            queue = loaded.queue
            outputs = await queue.run_now(arrays, rows, timing) if queue.may_run_now(rows) else None
            if outputs is None:
                outputs = await queue.submit(arrays, rows, self.settings.request_timeout_s, timing)
        self.monitor.offer(deployment, loaded, arrays, outputs)  # a deque append; drift off-path
        return outputs if hooks is None else hooks.postprocess(outputs)

    async def run_inference(
        self,
        name: str,
        version: int | None,
        decode: Callable[[LoadedVersion], dict[str, np.ndarray]],
        encode: Callable[[str, LoadedVersion, dict[str, np.ndarray]], _T],
        scope: Scope,
        request_id: str | None = None,
        body: bytes | None = None,
    ) -> _T:
        """The data plane every other protocol (MLflow, KServe V1, gRPC) shares with V2 REST.

        Route → ``decode`` (for the chosen version) → batch queue → ``encode``, with metrics,
        rollout evidence, prediction events and (when on) tracing. ``scope`` carries the
        request headers (gRPC: its metadata). ``body``: the JSON request as sent, which the
        audit record then keeps (with the encoded answer) so the deployment's payload policy
        sees the client's field and column names; without it, the decoded arrays.
        """
        if self.tracing is None:
            return await self._serve_inference(
                name, version, decode, encode, scope, request_id, body
            )
        with self.tracing.request(name, scope, str(scope.get("type", "http"))):
            return await self._serve_inference(
                name, version, decode, encode, scope, request_id, body
            )

    async def _serve_inference(
        self,
        name: str,
        version: int | None,
        decode: Callable[[LoadedVersion], dict[str, np.ndarray]],
        encode: Callable[[str, LoadedVersion, dict[str, np.ndarray]], _T],
        scope: Scope,
        request_id: str | None,
        body: bytes | None,
    ) -> _T:
        started = time.perf_counter()
        outcome = "ok"
        deployment, loaded = name, None
        inputs = outputs = actor = None
        answer: Any = None
        trace = None if self.tracing is None else current_trace()
        try:
            deployment, loaded = self._route(name, version, scope)
            actor = self.access.authorize_inference(scope, deployment)
            if trace is not None:
                trace.mark("decode")
            inputs = decode(loaded)
            if trace is not None:
                trace.mark("decoded")
            outputs = await self._run(deployment, loaded, inputs)
            if trace is not None:
                trace.mark("encode")
            result = encode(deployment, loaded, outputs)
            if trace is not None:
                trace.mark("encoded")
            answer = result
            self._emit(scope, request_id, deployment, loaded, inputs, outputs)
            return result
        except SlipwayError as exc:
            outcome = self.metrics.outcome_of(status_for(exc))
            raise
        finally:
            audited = (inputs, outputs) if body is None else (body, answer)
            self._observe(
                scope, deployment, loaded, outcome, started, inputs, outputs, request_id, actor,
                *audited,
            )  # fmt: skip

    def _observe(
        self,
        scope: Scope,
        deployment: str,
        loaded: LoadedVersion | None,
        outcome: str,
        started: float,
        inputs: dict[str, np.ndarray] | None,
        outputs: dict[str, np.ndarray] | None,
        request_id: str | None,
        actor: Any,
        audit_in: Any,
        audit_out: Any,
    ) -> None:
        """The side records of one request, each non-blocking: metrics, rollout evidence, and
        the audit record (``audit_in``/``audit_out``: the wire bytes or the arrays served)."""
        elapsed = time.perf_counter() - started
        self.metrics.observe(deployment, loaded, outcome, elapsed)
        if loaded is not None:
            number = loaded.record.number
            trace = trace_id = None
            if self.tracing is not None:
                trace, trace_id = current_trace(), self.tracing.current_trace_id()
            self.rollouts.observe(
                scope, deployment, number, outcome, elapsed, inputs, outputs, request_id, trace
            )
            self.access.audit.record(
                deployment, number, outcome, elapsed, audit_in, audit_out,
                headers=scope.get("headers"), actor=actor, request_id=request_id,
                trace_id=trace_id,
            )  # fmt: skip

    def _emit(
        self,
        scope: Scope,
        request_id: str | None,
        deployment: str,
        loaded: LoadedVersion | None,
        inputs: dict[str, np.ndarray] | None,
        outputs: dict[str, np.ndarray] | None,
    ) -> None:
        """Hand a served request to the CloudEvents sink (a deque append), when there is one."""
        if self.events is not None and loaded is not None and inputs and outputs is not None:
            if request_id is None:
                raw = header(scope, b"x-request-id")
                request_id = raw.decode("latin-1") if raw else None
            record = loaded.record
            self.events.offer(request_id, deployment, record.model, record.number, inputs, outputs)

    def _route(
        self, name: str, version: int | None, scope: Scope | None = None, body: bytes | None = None
    ) -> tuple[str, LoadedVersion]:
        if version is not None:
            return self.repository.resolve(name, version)
        deployment, loaded = self.repository.resolve(name)
        record = self.repository.deployments[deployment]
        if record.traffic is None:
            chosen = choose_version(record)
        else:  # a rollout splits traffic: weights, sticky keys, rules
            chosen = self.rollouts.route(record, scope, body)
        if chosen != loaded.record.number:
            return self.repository.resolve(deployment, chosen)
        return deployment, loaded

    def _routes_on_fields(self, deployment: str) -> bool:
        """Whether the deployment's rollout routes on request fields (then the route is taken
        again once the body is read; the first pick only served authorization)."""
        record = self.repository.deployments.get(deployment)
        traffic = None if record is None else record.traffic
        if traffic is None:
            return False
        return traffic.routing_field is not None or (
            bool(traffic.rules) and any(r.field for r in traffic.rules)
        )

    def _infer(
        self, name: str, version: int | None, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        if self.tracing is None:
            return self._infer_traced(name, version, scope, receive, send, None)
        return self._infer_with_trace(name, version, scope, receive, send)

    async def _infer_with_trace(
        self, name: str, version: int | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        assert self.tracing is not None
        with self.tracing.request(name, scope, "http") as trace:
            await self._infer_traced(name, version, scope, receive, send, trace)

    async def _infer_traced(
        self,
        name: str,
        version: int | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        trace: RequestTrace | None,
    ) -> None:
        started = time.perf_counter()
        outcome = "ok"
        deployment, loaded = name, None
        inputs = outputs = request_id = None  # evidence for a running rollout
        body = payload = actor = None  # for the audit record
        try:
            deployment, loaded = self._route(name, version, scope)
            actor = self.access.authorize_inference(scope, deployment)
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            if version is None and self._routes_on_fields(deployment):
                deployment, loaded = self._route(name, version, scope, body)
            if trace is not None:
                trace.mark("decode")
            request, inputs = codec.decode_infer_request(body, max_rows=self.settings.max_rows)
            if trace is not None:
                trace.mark("decoded")
            request_id = request.id
            outputs = await self._run(deployment, loaded, inputs)
            if trace is not None:
                trace.mark("encode")
            payload = codec.encode_infer_response(
                model_name=name,
                model_version=str(loaded.record.number),
                request_id=request.id,
                outputs=outputs,
                requested=request.outputs,
            )
            if trace is not None:
                trace.mark("encoded")
        except SlipwayError as exc:
            outcome = self.metrics.outcome_of(status_for(exc))
            raise
        finally:
            self._observe(
                scope, deployment, loaded, outcome, started, inputs, outputs, request_id, actor,
                body, payload,
            )  # fmt: skip
        self._emit(scope, request_id, deployment, loaded, inputs, outputs)
        await send_bytes(send, 200, payload)

    def _predict(self, name: str, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if self.tracing is None:
            return self._predict_traced(name, scope, receive, send, None)
        return self._predict_with_trace(name, scope, receive, send)

    async def _predict_with_trace(
        self, name: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        assert self.tracing is not None
        with self.tracing.request(name, scope, "http") as trace:
            await self._predict_traced(name, scope, receive, send, trace)

    async def _predict_traced(
        self, name: str, scope: Scope, receive: Receive, send: Send, trace: RequestTrace | None
    ) -> None:
        started = time.perf_counter()
        outcome = "ok"
        deployment, loaded = name, None
        inputs = outputs = None  # evidence for a running rollout
        body = payload = actor = None  # for the audit record
        try:
            deployment, loaded = self._route(name, None, scope)
            actor = self.access.authorize_inference(scope, deployment)
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            if self._routes_on_fields(deployment):
                deployment, loaded = self._route(name, None, scope, body)
            if trace is not None:
                trace.mark("decode")
            inputs = codec.decode_predict_request(
                body,
                loaded.signature,
                max_rows=self.settings.max_rows,
                feature_names=loaded.feature_names,
            )
            if trace is not None:
                trace.mark("decoded")
            outputs = await self._run(deployment, loaded, inputs)
            if trace is not None:
                trace.mark("encode")
            payload = codec.encode_predict_response(
                outputs,
                model=loaded.record.model,
                version=loaded.record.number,
                deployment=deployment,
            )
            if trace is not None:
                trace.mark("encoded")
        except SlipwayError as exc:
            outcome = self.metrics.outcome_of(status_for(exc))
            raise
        finally:
            self._observe(
                scope, deployment, loaded, outcome, started, inputs, outputs, None, actor,
                body, payload,
            )  # fmt: skip
        self._emit(scope, None, deployment, loaded, inputs, outputs)
        await send_bytes(send, 200, payload)


def msgspec_to_dict(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)
