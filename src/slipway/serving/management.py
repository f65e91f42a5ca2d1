"""The management API under ``/api/``: models, versions, deployments, events, OpenAPI, and the
governance routes (users, tokens, approvals, audit; see ``governance_api.py``).

Every route passes through ``authorize`` — the one place authentication and roles plug in: each
route carries the role it needs (reads: viewer, changes: deployer, unless it says otherwise),
and a request without a valid token gets 401, one with too small a role 403. State-changing
requests from browsers on other sites are refused before that (``check_browser_request``).
Blocking registry and artifact work runs in a thread so inference keeps flowing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from slipway import __version__
from slipway.errors import InvalidInput, UnsupportedFormat
from slipway.governance.roles import Principal, Role
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import (
    BatchingConfig,
    DeploymentRecord,
    EventRecord,
    ModelRecord,
    VersionMeta,
    VersionRecord,
)
from slipway.registry.store import SqlStore
from slipway.serving.access import ServingAccess
from slipway.serving.http import (
    Receive,
    Scope,
    Send,
    header,
    method_not_allowed,
    query,
    read_body,
    send_bytes,
)
from slipway.settings import Settings

_encoder = msgspec.json.Encoder()


class MetadataHeader(VersionMeta, frozen=True, forbid_unknown_fields=True):
    """The X-Slipway-Metadata header: a misspelt field is refused, not silently dropped."""


class DeploymentCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    model: str
    version: int | None = None  # None = latest
    batching: BatchingConfig | None = None


class DeploymentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    version: int | None = None
    batching: BatchingConfig | None = None


class ErrorBody(msgspec.Struct):
    error: str


Handler = Callable[["Request"], Awaitable[tuple[int, Any]]]


class Request(msgspec.Struct):
    scope: Any
    receive: Any
    params: dict[str, str]
    actor: str | None = None
    principal: Principal | None = None


@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    summary: str
    body: Any
    response: Any
    role: Role


class ManagementApi:
    """Routes for ``/api/...``; returns JSON, errors as ``{"error": ...}``."""

    def __init__(
        self,
        store: SqlStore,
        artifacts: ArtifactStore,
        settings: Settings,
        access: ServingAccess,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.access = access
        self.routes: list[Route] = []
        self._add("GET", "/api/models", self.list_models, "List models", None, list[ModelRecord])
        self._add(
            "GET",
            "/api/models/{model}",
            self.show_model,
            "Show a model and its versions",
            None,
            dict,
        )
        self._add(
            "GET",
            "/api/models/{model}/versions",
            self.list_versions,
            "List versions",
            None,
            list[VersionRecord],
        )
        self._add(
            "POST",
            "/api/models/{model}/versions",
            self.register_version,
            "Register a model (request body, application/octet-stream) as the next version:"
            " an ONNX, TorchScript or GGUF file, or a SavedModel directory as a .zip, .tar or"
            " .tar.gz archive. Query parameter format=onnx|torchscript|savedmodel|gguf (or"
            " header X-Slipway-Format) names the format; without it ONNX, TorchScript and GGUF"
            " are detected. TorchScript needs sample rows in the X-Slipway-Sample header, as a"
            ' V2 infer body ({"inputs": [...]}). Metadata as JSON in the X-Slipway-Metadata'
            " header. Pickle-based files are refused (415); unsafe archives (links, paths"
            " outside the archive) 400; a format whose package is missing 415",
            bytes,
            VersionRecord,
        )
        self._add(
            "GET",
            "/api/models/{model}/versions/{version}",
            self.show_version,
            "Show a version",
            None,
            VersionRecord,
        )
        self._add(
            "GET",
            "/api/deployments",
            self.list_deployments,
            "List deployments",
            None,
            list[DeploymentRecord],
        )
        self._add(
            "POST",
            "/api/deployments",
            self.create_deployment,
            "Create a deployment",
            DeploymentCreate,
            DeploymentRecord,
        )
        self._add(
            "GET",
            "/api/deployments/{deployment}",
            self.show_deployment,
            "Show a deployment",
            None,
            DeploymentRecord,
        )
        self._add(
            "PATCH",
            "/api/deployments/{deployment}",
            self.update_deployment,
            "Point a deployment at another version or change its batching",
            DeploymentUpdate,
            DeploymentRecord,
        )
        self._add(
            "DELETE",
            "/api/deployments/{deployment}",
            self.delete_deployment,
            "Delete a deployment",
            None,
            dict,
        )
        self._add(
            "GET",
            "/api/events",
            self.list_events,
            "Registry events, newest first",
            None,
            list[EventRecord],
        )
        self._add("GET", "/api/openapi.json", self.openapi, "This document", None, dict)
        from slipway.serving.governance_api import GovernanceApi
        from slipway.serving.readiness_api import ReadinessApi

        GovernanceApi(self)
        ReadinessApi(self)

    def _add(
        self,
        method: str,
        template: str,
        handler: Handler,
        summary: str,
        body: Any,
        response: Any,
        role: Role | None = None,
    ) -> None:
        """Add a route; ``role`` defaults to viewer for GET and deployer for anything else."""
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
        if role is None:
            role = Role.VIEWER if method == "GET" else Role.DEPLOYER
        self.routes.append(Route(method, template, pattern, handler, summary, body, response, role))

    # -- the seam for authentication ------------------------------------------------------

    async def authorize(self, scope: Scope, route: Route) -> Principal:
        """Who is calling, with at least the route's role; else Unauthenticated (401) or
        PermissionDenied (403). Foreign-origin and non-JSON state changes are refused first."""
        self.access.check_browser_request(scope, binary=route.body is bytes)
        return (await self.access.authenticate_api(scope)).require(route.role)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        from slipway.errors import NotFound

        path, method = scope["path"], scope["method"]
        check_api_path(scope)
        allowed = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != method and not (method == "HEAD" and route.method == "GET"):
                allowed.append(route.method)  # HEAD is answered like GET
                continue
            principal = await self.authorize(scope, route)
            status, value = await route.handler(
                Request(scope, receive, match.groupdict(), principal.name, principal)
            )
            await send_bytes(send, status, _encoder.encode(value))
            return
        if allowed:
            await method_not_allowed(send, method, ", ".join(dict.fromkeys(allowed)))
            return
        raise NotFound(f"no API route {path}; see /api/openapi.json")

    # -- handlers ----------------------------------------------------------------------------

    async def _json(self, request: Request, kind: type[Any]) -> Any:
        content_type = header(request.scope, b"content-type") or b""
        if not content_type.startswith(b"application/json"):
            raise UnsupportedFormat("send JSON with Content-Type: application/json")
        body = await read_body(request.scope, request.receive, self.settings.max_body_bytes)
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid request body: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from exc

    async def list_models(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(self.store.list_models)

    async def show_model(self, request: Request) -> tuple[int, Any]:
        name = request.params["model"]
        model = await asyncio.to_thread(self.store.get_model, name)
        versions = await asyncio.to_thread(self.store.list_versions, name)
        return 200, {"model": model, "versions": versions}

    async def list_versions(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(self.store.list_versions, request.params["model"])

    async def show_version(self, request: Request) -> tuple[int, Any]:
        raw = request.params["version"]
        number = None if raw == "latest" else _int(raw, "version")
        return 200, await asyncio.to_thread(self.store.get_version, request.params["model"], number)

    async def register_version(self, request: Request) -> tuple[int, Any]:
        from slipway.registry.uploads import register_upload
        from slipway.serving.codec import decode_infer_request

        content_type = header(request.scope, b"content-type") or b""
        if not content_type.startswith(
            (b"application/octet-stream", b"application/onnx", b"application/zip",
             b"application/gzip", b"application/x-tar")
        ):  # fmt: skip
            raise UnsupportedFormat(
                "upload the model file (or a SavedModel archive) as the request body with"
                " Content-Type: application/octet-stream; pickle and other code-carrying"
                " formats are not accepted"
            )
        raw_format = query(request.scope).get("format") or header(
            request.scope, b"x-slipway-format"
        )
        format = raw_format.decode("latin-1") if isinstance(raw_format, bytes) else raw_format
        raw_meta = header(request.scope, b"x-slipway-metadata")
        try:
            given = msgspec.json.decode(raw_meta, type=MetadataHeader) if raw_meta else None
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidInput(f"invalid X-Slipway-Metadata header: {exc}") from exc
        meta = VersionMeta(**msgspec.structs.asdict(given)) if given else VersionMeta()
        raw_sample = header(request.scope, b"x-slipway-sample")
        sample = None
        if raw_sample:
            try:
                _, sample = decode_infer_request(raw_sample, max_rows=self.settings.max_rows)
            except InvalidInput as exc:
                raise InvalidInput(f"invalid X-Slipway-Sample header: {exc.message}") from exc
        body = await read_body(request.scope, request.receive, self.settings.max_upload_bytes)
        record = await asyncio.to_thread(
            register_upload,
            self.store,
            self.artifacts,
            request.params["model"],
            body,
            format=format or None,
            sample=sample,
            meta=meta,
            actor=request.actor,
            max_unpacked_bytes=self.settings.max_upload_bytes,
            sample_hint="send sample rows in the X-Slipway-Sample header as a V2 infer body:"
            ' {"inputs": [{"name": ..., "datatype": "FP32", "shape": [rows, ...], "data": [...]}]}',
        )
        return 201, record

    async def list_deployments(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(self.store.list_deployments)

    async def create_deployment(self, request: Request) -> tuple[int, Any]:
        spec: DeploymentCreate = await self._json(request, DeploymentCreate)
        version = spec.version
        if version is None:
            version = (await asyncio.to_thread(self.store.get_version, spec.model, None)).number
        record = await asyncio.to_thread(
            lambda: self.store.create_deployment(
                spec.name,
                spec.model,
                version,
                batching=spec.batching or _default_batching(self.settings),
                actor=request.actor,
            )
        )
        return 201, record

    async def show_deployment(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(self.store.get_deployment, request.params["deployment"])

    async def update_deployment(self, request: Request) -> tuple[int, Any]:
        name = request.params["deployment"]
        spec: DeploymentUpdate = await self._json(request, DeploymentUpdate)

        def apply() -> DeploymentRecord:
            if spec.version is not None:  # with the batching, in one transaction
                return self.store.set_deployment_version(
                    name, spec.version, batching=spec.batching, actor=request.actor
                )
            if spec.batching is not None:
                return self.store.update_deployment(
                    name, batching=spec.batching, actor=request.actor
                )
            return self.store.get_deployment(name)

        return 200, await asyncio.to_thread(apply)

    async def delete_deployment(self, request: Request) -> tuple[int, Any]:
        name = request.params["deployment"]
        await asyncio.to_thread(lambda: self.store.delete_deployment(name, actor=request.actor))
        return 200, {"deleted": name}

    async def list_events(self, request: Request) -> tuple[int, Any]:
        params = query(request.scope)
        limit = _int(params.get("limit", "100"), "limit")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        subject = params.get("subject")
        return 200, await asyncio.to_thread(lambda: self.store.events(subject, limit))

    async def openapi(self, request: Request) -> tuple[int, Any]:
        return 200, self.openapi_document()

    def openapi_document(self) -> dict[str, Any]:
        """OpenAPI 3.1 for the management API, schemas generated from the msgspec records."""
        types: list[Any] = [ErrorBody]
        for route in self.routes:
            for kind in (route.body, route.response):
                if kind not in (None, bytes, dict):
                    types.append(kind)
        schemas, components = msgspec.json.schema_components(
            types, ref_template="#/components/schemas/{name}"
        )
        by_type = dict(zip(types, schemas, strict=True))
        paths: dict[str, dict[str, Any]] = {}
        for route in self.routes:
            method, template, body = route.method, route.template, route.body
            op: dict[str, Any] = {
                "summary": route.summary,
                "x-slipway-role": str(route.role),  # a bearer token of this role or above
                "operationId": method.lower() + re.sub(r"[/{}]+", "_", template).rstrip("_"),
                "responses": {
                    "default": {
                        "description": "error",
                        "content": {"application/json": {"schema": by_type[ErrorBody]}},
                    },
                },
            }
            ok = "201" if method == "POST" else "200"
            schema = by_type.get(route.response, {"type": "object"})
            op["responses"][ok] = {
                "description": "success",
                "content": {"application/json": {"schema": schema}},
            }
            params = re.findall(r"\{(\w+)\}", template)
            if params:
                op["parameters"] = [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in params
                ]
            if body is bytes:
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                }
            elif body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": by_type[body]}},
                }
            paths.setdefault(template, {})[method.lower()] = op
        return {
            "openapi": "3.1.0",
            "info": {"title": "Slipway management API", "version": __version__},
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
        }


_ENCODED = re.compile(rb"%(2e|2f|5c|00|25)", re.IGNORECASE)


def check_api_path(scope: Scope) -> None:
    """Refuse (400) a path that tries to climb out of its route: ``.`` or ``..`` segments,
    empty segments (``//etc``), backslashes, NUL and other control characters, and encoded
    dots, slashes, backslashes, NULs or percent signs (``%2e%2e%2f``, double ``%252e``)."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or path.encode()
    segments = path.split("/")[1:]
    if (
        any(s in ("", ".", "..") for s in segments[:-1])
        or segments[-1] in (".", "..")
        or "\\" in path
        or "%" in path
        or any(ord(c) < 0x20 or c == "\x7f" for c in path)
        or _ENCODED.search(raw)
    ):
        raise InvalidInput(
            f"refused path {path!r}: dot segments, empty segments, backslashes, control"
            " characters and percent-encoded separators are not allowed in API paths"
        )


def _int(raw: str, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{what} must be a number, got {raw!r}") from None


def _default_batching(settings: Settings) -> BatchingConfig:
    return BatchingConfig(
        max_batch_size=settings.max_batch_size,
        max_batch_delay_ms=settings.max_batch_delay_ms,
        max_queue_rows=settings.max_queue_rows,
    )
