"""Open Inference Protocol V2 over gRPC (``inference.GRPCInferenceService``) beside REST.

A ``grpc.aio`` server on its own port (``grpc_port``; -1 = off, the default) in the same process
and event loop as the ASGI app. ModelInfer goes through ``SlipwayApp.run_inference``: the same
routing, batch queue, timeouts and metrics as REST; the message size limit is ``max_body_bytes``
and the row limit ``max_rows``, so what REST refuses, gRPC refuses too.

Errors keep REST's meaning: the HTTP status from ``serving/errors.py`` becomes the gRPC code.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from slipway import __version__
from slipway.errors import InvalidInput, NotFound, SlipwayError
from slipway.serving import grpc_codec
from slipway.serving.codec import decode_version
from slipway.serving.errors import status_for
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from slipway.serving.scoring_routes import DataPlane

log = logging.getLogger("slipway.serving.grpc")

# HTTP status (the one table in serving/errors.py) → gRPC status code.
GRPC_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code_for(exc: SlipwayError) -> grpc.StatusCode:
    return GRPC_CODES.get(status_for(exc), grpc.StatusCode.INTERNAL)


def _version(text: str) -> int | None:
    return decode_version(text) if text else None


def metadata_scope(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    """The call's metadata as an ASGI-style scope, so header-based routing works the same."""
    metadata = context.invocation_metadata() or ()
    headers = [
        (key.encode("latin-1"), value.encode("latin-1"))
        for key, value in metadata
        if isinstance(value, str)  # "-bin" keys carry bytes: not headers anyone routes on
    ]
    return {"type": "grpc", "headers": headers}


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The six V2 RPCs over a ``DataPlane`` (the running ``SlipwayApp``)."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def _abort(self, context: grpc.aio.ServicerContext, exc: SlipwayError) -> None:
        await context.abort(grpc_code_for(exc), exc.message)

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.repository.ready and not self.plane.draining)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="slipway", version=__version__, extensions=[])

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self.plane.repository.resolve(request.name, _version(request.version))
        except (NotFound, InvalidInput) as exc:  # as REST: 404 unknown, 400 a bad version
            await self._abort(context, exc)
        except SlipwayError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        repository = self.plane.repository
        try:
            deployment, loaded = repository.resolve(request.name, _version(request.version))
            self.plane.access.authorize_inference(metadata_scope(context), deployment)
        except SlipwayError as exc:
            await self._abort(context, exc)
            raise  # unreachable: abort raises
        served = repository.deployments[deployment]
        versions = [str(served.version)]
        if served.previous_version is not None:
            versions.append(str(served.previous_version))
        record = loaded.record
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=versions,
            platform=record.format,
            inputs=[
                tensor(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in record.signature.inputs
            ],
            outputs=[
                tensor(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in record.signature.outputs
            ],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        max_rows = self.plane.settings.max_rows
        try:
            return await self.plane.run_inference(
                request.model_name,
                _version(request.model_version),
                lambda _loaded: grpc_codec.decode_infer_request(request, max_rows=max_rows),
                lambda _deployment, loaded, outputs: grpc_codec.encode_infer_response(
                    request, model_version=str(loaded.record.number), outputs=outputs
                ),
                metadata_scope(context),
                request.id or None,
            )
        except SlipwayError as exc:
            await self._abort(context, exc)
            raise  # unreachable: abort raises
        except Exception:  # as on REST: log it, tell the client nothing internal
            log.exception("unhandled error in ModelInfer for %s", request.model_name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise


async def start_grpc_server(plane: DataPlane, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start the V2 gRPC service on ``host:port`` (0 = any free port); returns it and its port."""
    limit = plane.settings.max_body_bytes
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        # Off, so a port in use is an error at start; on for `serve --workers`, whose
        # workers share the port (the supervisor checked it was free).
        ("grpc.so_reuseport", int(bool(plane.settings.grpc_reuse_port))),
    ]
    server = grpc.aio.server(options=options)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(plane), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SlipwayError(
            f"cannot listen for gRPC on {host}:{port}; choose another with SLIPWAY_GRPC_PORT"
        )
    await server.start()
    log.info("V2 gRPC listening on %s:%s", host, bound)
    return server, bound
