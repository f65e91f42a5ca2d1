"""REST routes of other ecosystems' scoring protocols, over the same data plane as V2.

MLflow pyfunc scoring:
    GET  /ping, /health, POST /invocations            the deployment named by the
                                                       ``scoring_deployment`` setting, or the
                                                       only deployment when there is one
    GET  /mlflow/{deployment}/ping|health, POST /mlflow/{deployment}/invocations
KServe V1:
    GET  /v1/models/{name}                             readiness
    POST /v1/models/{name}:predict                     ``{"instances"}`` → ``{"predictions"}``

Every inference goes through ``DataPlane.run_inference``: the same routing, batch queue,
limits and metrics as ``/v2/models/{name}/infer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

from slipway.errors import DeploymentNotFound, InvalidInput, SlipwayError
from slipway.serving import kserve_v1, mlflow_scoring
from slipway.serving.access import ServingAccess
from slipway.serving.codec import encode_json
from slipway.serving.http import (
    Receive,
    Scope,
    Send,
    header,
    method_not_allowed,
    read_body,
    send_bytes,
)
from slipway.serving.repository import LoadedVersion, ModelRepository
from slipway.settings import Settings

T = TypeVar("T")
Decode = Callable[[LoadedVersion], dict[str, np.ndarray]]


class DataPlane(Protocol):
    """What protocol front-ends need from the server: its state and its one inference path."""

    settings: Settings
    repository: ModelRepository
    draining: bool
    access: ServingAccess  # who may call; inference checks run inside run_inference

    async def run_inference(
        self,
        name: str,
        version: int | None,
        decode: Decode,
        encode: Callable[[str, LoadedVersion, dict[str, np.ndarray]], T],
        scope: Scope,
        request_id: str | None = None,
        body: bytes | None = None,
    ) -> T: ...


_MLFLOW_ROOT = frozenset({"/ping", "/health", "/invocations"})
_TEXT = [(b"content-type", b"text/plain")]


def handles(path: str) -> bool:
    """Whether ``path`` belongs to these protocols (cheap: checked on every request)."""
    return path in _MLFLOW_ROOT or path.startswith(("/mlflow/", "/v1/models/"))


async def handle(plane: DataPlane, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one request on a path for which ``handles`` was true."""
    path: str = scope["path"]
    method: str = scope["method"]
    if path.startswith("/v1/models/"):
        await _v1(plane, path[len("/v1/models/") :], method, scope, receive, send)
        return
    if path.startswith("/mlflow/"):
        deployment, _, action = path[len("/mlflow/") :].partition("/")
        action = "/" + action
    else:
        deployment, action = _configured_deployment(plane), path
    if action in ("/ping", "/health"):
        if method not in ("GET", "HEAD"):
            await method_not_allowed(send, method, "GET")
            return
        ready = not plane.draining and _is_ready(plane, deployment)
        await send_bytes(send, 200 if ready else 503, b"\n", _TEXT)
    elif action == "/invocations":
        if method != "POST":
            await method_not_allowed(send, method, "POST")
            return
        await _invocations(plane, deployment, scope, receive, send)
    else:
        await send_bytes(send, 404, encode_json({"error": f"no route {method} {path}"}))


def _configured_deployment(plane: DataPlane) -> str:
    if plane.settings.scoring_deployment:
        return plane.settings.scoring_deployment
    deployments = list(plane.repository.deployments)
    if len(deployments) == 1:
        return deployments[0]
    raise InvalidInput(
        f"/invocations needs one deployment but {len(deployments)} are served; set"
        " SLIPWAY_SCORING_DEPLOYMENT or use /mlflow/{deployment}/invocations"
    )


def _is_ready(plane: DataPlane, name: str) -> bool:
    try:
        plane.repository.resolve(name)
    except DeploymentNotFound:
        return False
    except SlipwayError:
        return False
    return True


async def _invocations(
    plane: DataPlane, deployment: str, scope: Scope, receive: Receive, send: Send
) -> None:
    limits = plane.settings
    body = await read_body(scope, receive, limits.max_body_bytes)
    content_type = (header(scope, b"content-type") or b"application/json").decode("latin-1")
    named = False

    def decode(loaded: LoadedVersion) -> dict[str, np.ndarray]:
        nonlocal named
        request = mlflow_scoring.decode_scoring_request(
            body, content_type, loaded.record, max_rows=limits.max_rows
        )
        named = request.named_outputs
        return request.inputs

    def encode(_: str, __: LoadedVersion, outputs: dict[str, np.ndarray]) -> bytes:
        return mlflow_scoring.encode_scoring_response(outputs, named=named)

    # Audited as sent: its column names (JSON or CSV header) reach the payload policy.
    payload = await plane.run_inference(deployment, None, decode, encode, scope, body=body)
    await send_bytes(send, 200, payload)


async def _v1(
    plane: DataPlane, rest: str, method: str, scope: Scope, receive: Receive, send: Send
) -> None:
    name, colon, verb = rest.partition(":")
    if not name or "/" in name:
        await send_bytes(send, 404, encode_json({"error": f"no route {method} /v1/models/{rest}"}))
        return
    if not colon:
        if method not in ("GET", "HEAD"):
            await method_not_allowed(send, method, "GET")
            return
        plane.repository.resolve(name)  # 404 for an unknown name, 503 while loading
        await send_bytes(send, 200, encode_json({"name": name, "ready": True}))
        return
    if verb != "predict":
        await send_bytes(send, 404, encode_json({"error": f"no route {method} /v1/models/{rest}"}))
        return
    if method != "POST":
        await method_not_allowed(send, method, "POST")
        return
    limits = plane.settings
    body = await read_body(scope, receive, limits.max_body_bytes)

    def decode(loaded: LoadedVersion) -> dict[str, np.ndarray]:
        return kserve_v1.decode_v1_request(body, loaded.record, max_rows=limits.max_rows)

    def encode(_: str, __: LoadedVersion, outputs: dict[str, np.ndarray]) -> bytes:
        return kserve_v1.encode_v1_response(outputs)

    payload = await plane.run_inference(name, None, decode, encode, scope, body=body)
    await send_bytes(send, 200, payload)
