"""Who may call what on the serving app, and the prediction audit hook.

Every route of the app is in exactly one of three classes:

- **public**: health, readiness, server metadata, ``/metrics``, and the dashboard's sign-in page
  and static assets (``PUBLIC_ROUTES``; every other ``/ui`` route needs a session, see
  ``slipway.web.dashboard``);
- **inference**: public when the deployment's InferencePolicy allows anonymous inference, else a
  valid token of any role (``INFERENCE_ROUTES``, and the gRPC methods);
- **management**: every ``/api/...`` route, each with the role it needs (``ManagementApi.routes``).

``tests/governance/test_routes.py`` enumerates them and probes the app for anything answering
outside this table. Tokens are checked against an in-memory :class:`TokenCache`, so the check
costs a sha256 and a dict lookup; anonymous inference costs one attribute read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry

from slipway.errors import PermissionDenied, Unauthenticated, UnsupportedFormat
from slipway.governance.identities import TokenCache
from slipway.governance.recorder import PredictionRecorder
from slipway.governance.roles import ANONYMOUS_ADMIN, Principal
from slipway.registry.store import SqlStore
from slipway.serving.failure_log import FailureLog
from slipway.serving.http import Scope, header
from slipway.serving.repository import ModelRepository
from slipway.settings import Settings

log = logging.getLogger("slipway.serving")

PUBLIC_ROUTES: list[tuple[str, str]] = [
    ("GET", "/"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/ping"),  # MLflow scoring health checks
    ("GET", "/health"),
    ("GET", "/mlflow/{deployment}/ping"),
    ("GET", "/mlflow/{deployment}/health"),
    ("GET", "/v2/models/{name}/ready"),  # readiness, like the health checks
    ("GET", "/v2/models/{name}/versions/{version}/ready"),
    ("GET", "/v1/models/{name}"),  # KServe V1 readiness
    ("GET", "/ui/signin"),  # the dashboard's sign-in page and assets (slipway.web)
    ("POST", "/ui/signin"),
    ("GET", "/ui/static/{file}"),
]
INFERENCE_ROUTES: list[tuple[str, str]] = [
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("POST", "/predict/{deployment}"),
    ("POST", "/invocations"),
    ("POST", "/mlflow/{deployment}/invocations"),
    ("POST", "/v1/models/{name}:predict"),
]
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]"})


class ServingAccess:
    """Authentication for the serving app and its prediction audit recorder.

    ``start``/``stop`` run with the app: they load the token cache, keep it fresh every
    ``token_refresh_s`` and run the audit writer.
    """

    def __init__(
        self,
        store: SqlStore,
        repository: ModelRepository,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.enabled = bool(settings.auth)
        self.repository = repository
        self.tokens = TokenCache(store)
        self.audit = PredictionRecorder(
            store,
            lambda name: repository.deployments.get(name),  # the table is swapped on reconcile
            mode=settings.audit_predictions,
            max_records=settings.audit_queue_records,
            max_bytes=settings.audit_queue_bytes,
            batch_size=settings.audit_batch_size,
            flush_interval_s=settings.audit_flush_interval_s,
            registry=registry,
        )
        self._origins = frozenset(
            o.strip().rstrip("/") for o in settings.allowed_origins.split(",") if o.strip()
        )
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.tokens.refresh)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        self.audit.start()

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.audit.stop()

    async def _refresh_forever(self) -> None:
        failures = FailureLog(log, "token refresh", "using the last known tokens")
        while True:
            await asyncio.sleep(self.settings.token_refresh_s)
            try:
                await asyncio.to_thread(self.tokens.refresh)
            except Exception as exc:  # the registry may be briefly unreachable; keep the last
                failures.failed(exc)
            else:
                failures.succeeded()

    # -- checks ------------------------------------------------------------------------------

    def authenticate(self, scope: Scope) -> Principal:
        """The caller of a request, from its bearer token (anyone, when auth is off); from the
        cache only, for the request path."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        return self.tokens.authenticate(header(scope, b"authorization"))

    async def authenticate_api(self, scope: Scope) -> Principal:
        """Like ``authenticate``, but a token the cache has not seen yet (issued a moment ago,
        maybe through another replica) is looked up in the database once."""
        try:
            return self.authenticate(scope)
        except Unauthenticated:
            authorization = header(scope, b"authorization")
            if authorization is None:
                raise
            await asyncio.to_thread(self.tokens.load, authorization)
            return self.authenticate(scope)

    def authorize_inference(self, scope: Scope, deployment: str) -> str | None:
        """Let an inference request to ``deployment`` (or a model name with a deployment) through:
        None when the deployment allows anonymous inference, else the caller's name;
        Unauthenticated without a valid token."""
        deployments = self.repository.deployments
        record = deployments.get(deployment)
        if record is None:  # a model name; resolve() does the same
            record = next((d for d in deployments.values() if d.model == deployment), None)
        if record is None or record.inference.anonymous:
            return None
        return self.authenticate(scope).name

    def check_browser_request(self, scope: Scope, *, binary: bool = False) -> None:
        """Refuse what a web page on another site could make a browser send: a state-changing
        request with a foreign ``Origin`` (403), or one whose body is not JSON (415; model
        uploads, ``binary``, may be application/octet-stream, which browsers cannot send
        without asking first)."""
        method = scope["method"]
        if method not in _STATE_CHANGING:
            return
        origin = header(scope, b"origin")
        if origin is not None and not self._origin_allowed(scope, origin.decode("latin-1")):
            raise PermissionDenied(
                f"origin {origin.decode('latin-1')}",
                "state-changing requests from other sites are refused; list the origin in"
                " SLIPWAY_ALLOWED_ORIGINS if it is yours",
            )
        if method == "DELETE":
            return
        content_type = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        allowed = {b"application/json"}
        if binary:
            allowed |= {b"application/octet-stream", b"application/onnx"}
        if content_type not in allowed:
            raise UnsupportedFormat(
                f"send {' or '.join(sorted(a.decode() for a in allowed))} with a Content-Type"
                " header; form posts, plain text, pickles and other formats are refused"
            )

    def origin_allowed(self, scope: Scope, origin: str) -> bool:
        """Whether a browser request from ``origin`` counts as this server's own (or a listed
        origin): the check ``check_browser_request`` makes, for the dashboard's form posts."""
        return self._origin_allowed(scope, origin)

    def _origin_allowed(self, scope: Scope, origin: str) -> bool:
        origin = origin.rstrip("/")
        if origin in self._origins:
            return True
        host = (header(scope, b"host") or b"").decode("latin-1")
        if not host or origin not in (f"http://{host}", f"https://{host}"):
            return False
        # Same origin. With auth off, a DNS-rebinding page also looks same-origin, so only a
        # loopback host name is believed.
        return self.enabled or host.rsplit(":", 1)[0] in _LOOPBACK
