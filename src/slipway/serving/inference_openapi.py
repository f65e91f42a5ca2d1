"""OpenAPI 3.1 description of the inference routes (V2 REST, plain JSON ``/predict``, health),
served at ``/v2/openapi.json``. The management API has its own at ``/api/openapi.json``.

The request and response schemas are generated from the codec's msgspec structs, so the
document cannot drift from what the server decodes and encodes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from slipway import __version__
from slipway.serving.codec import InferenceRequest, InferenceResponse, PredictRequest


class ErrorBody(msgspec.Struct):
    error: str


class HealthLive(msgspec.Struct):
    live: bool


class HealthReady(msgspec.Struct):
    ready: bool
    reasons: list[str] | None = None


class ModelReady(msgspec.Struct):
    name: str
    ready: bool


class TensorMetadata(msgspec.Struct):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ServerMetadata(msgspec.Struct):
    name: str
    version: str
    extensions: list[str]


class PredictResponse(msgspec.Struct):
    predictions: list[Any]
    model: str
    version: int
    deployment: str
    outputs: dict[str, list[Any]] | None = None


_TYPES: list[Any] = [
    ErrorBody,
    HealthLive,
    HealthReady,
    ModelReady,
    ModelMetadata,
    ServerMetadata,
    InferenceRequest,
    InferenceResponse,
    PredictRequest,
    PredictResponse,
]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document() -> dict[str, Any]:
    """The OpenAPI document of the inference routes."""
    schemas, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}"
    )
    ref = dict(zip(_TYPES, schemas, strict=True))
    error = _json(ref[ErrorBody], "error: 4xx for bad requests, 503/504 when overloaded")
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
    # 400 from a ready route: the version is not ready, or the request itself is malformed.
    not_ready = {
        "description": "not ready (or an error body for a malformed request)",
        "content": {"application/json": {"schema": {"anyOf": [ref[ModelReady], ref[ErrorBody]]}}},
    }

    def op(
        op_id: str,
        summary: str,
        ok: dict[str, Any],
        params: list[dict[str, Any]],
        body: Any = None,
        **other: dict[str, Any],
    ) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operationId": op_id,
            "summary": summary,
            "responses": {"200": ok, **other, "default": error},
        }
        if params:
            operation["parameters"] = params
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref[body]}},
            }
        return operation

    infer = "Run the model (Open Inference Protocol V2); the deployment's routing picks a version"
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": op("live", "Liveness", _json(ref[HealthLive], "live"), [])},
        "/v2/health/ready": {
            "get": op(
                "ready",
                "Readiness: every deployment's versions loaded, and not draining",
                _json(ref[HealthReady], "ready"),
                [],
                **{"503": _json(ref[HealthReady], "not ready, with the reasons")},
            )
        },
        "/v2": {
            "get": op("server_metadata", "Server metadata", _json(ref[ServerMetadata], ""), [])
        },
        "/v2/models/{name}": {
            "get": op("model_metadata", "Model metadata", _json(ref[ModelMetadata], ""), [name])
        },
        "/v2/models/{name}/ready": {
            "get": op(
                "model_ready",
                "Model readiness",
                _json(ref[ModelReady], "ready"),
                [name],
                **{"400": not_ready},
            )
        },
        "/v2/models/{name}/versions/{version}/ready": {
            "get": op(
                "model_version_ready",
                "Readiness of one version",
                _json(ref[ModelReady], "ready"),
                [name, version],
                **{"400": not_ready},
            )
        },
        "/v2/models/{name}/infer": {
            "post": op("infer", infer, _json(ref[InferenceResponse], ""), [name], InferenceRequest)
        },
        "/v2/models/{name}/versions/{version}/infer": {
            "post": op(
                "infer_version",
                "Run one version of the deployment's model",
                _json(ref[InferenceResponse], ""),
                [name, version],
                InferenceRequest,
            )
        },
        "/predict/{name}": {
            "post": op(
                "predict",
                'Plain JSON: {"instances": [[...], ...]} or a list of feature objects',
                _json(ref[PredictResponse], ""),
                [name],
                PredictRequest,
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Slipway inference API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # Only deployments that require tokens ask for one (docs/governance.md).
        "security": [{}, {"bearer": []}],
    }


DOCUMENT: bytes = msgspec.json.encode(document())
