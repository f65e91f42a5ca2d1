"""OpenTelemetry tracing of inference requests (optional: ``pip install 'slipway[otel]'``).

Off unless ``otlp_endpoint`` is set; then the app holds a ``Tracing`` and every inference
request — V2 REST, ``/predict``, gRPC, MLflow and KServe V1 — becomes a server span
``slipway.infer`` (a child of the caller's span when the request carries a W3C
``traceparent`` header or gRPC metadata) with children ``decode``, ``queue`` (waiting for its
batch), ``inference`` (the model run of that batch) and ``encode``; a mirrored request adds a
``shadow`` span in the same trace when the shadow answers. The trace id goes into the
request's audit record.

The request path only takes timestamps (``RequestTrace.mark``); the child spans are created
from them when the request ends, so the path pays no span bookkeeping in between, and nothing
at all when tracing is off beyond one ``is None`` check per step.

The tracer provider is passed in (tests give one with an in-memory exporter); the global
OpenTelemetry provider is never touched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from slipway.errors import SlipwayError


class RequestTrace:
    """Timestamps (ns since the epoch) of one traced request, turned into spans at its end.

    ``marks``: ``decode``/``decoded`` and ``encode``/``encoded``; ``batch``: the batch queue
    appends the start and end of the model run that served this request.
    """

    __slots__ = ("batch", "context", "marks")

    def __init__(self) -> None:
        self.marks: dict[str, int] = {}
        self.batch: list[int] = []
        self.context: Any = None  # the request span's context, for spans made after it ends

    def mark(self, name: str) -> None:
        self.marks[name] = time.time_ns()


_CURRENT: ContextVar[RequestTrace | None] = ContextVar("slipway_request_trace", default=None)


def current() -> RequestTrace | None:
    """The trace of the request being served in this task, if it is traced."""
    return _CURRENT.get()


class Tracing:
    """Spans for inference requests on one tracer provider."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("slipway.serving")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER

    def flush(self, timeout_ms: int = 5000) -> None:
        """Export what the provider still holds (at shutdown)."""
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush(timeout_ms)

    def current_trace_id(self) -> str | None:
        """The 32-hex-digit id of the trace in progress (for audit records), if any."""
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        return f"{context.trace_id:032x}" if context.is_valid else None

    @contextlib.contextmanager
    def request(self, deployment: str, scope: Any, protocol: str) -> Iterator[RequestTrace]:
        """The server span of one request, current while the body runs; its children are made
        from the request's marks when it ends (errors mark the span as failed)."""
        from opentelemetry.trace import set_span_in_context

        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        parent = self._propagator.extract(carrier) if carrier else None
        trace = RequestTrace()
        token = _CURRENT.set(trace)
        try:
            with self.tracer.start_as_current_span(
                "slipway.infer", context=parent, kind=self._server
            ) as span:
                span.set_attribute("slipway.deployment", deployment)
                span.set_attribute("slipway.protocol", protocol)
                trace.context = set_span_in_context(span)
                try:
                    yield trace
                finally:
                    self._children(trace)
        finally:
            _CURRENT.reset(token)

    def _children(self, trace: RequestTrace) -> None:
        marks, batch = trace.marks, trace.batch
        self._span(trace, "decode", marks.get("decode"), marks.get("decoded"))
        if len(batch) >= 2:
            self._span(trace, "queue", marks.get("decoded"), batch[0])
            self._span(trace, "inference", batch[0], batch[1])
        self._span(trace, "encode", marks.get("encode"), marks.get("encoded"))

    def _span(self, trace: RequestTrace, name: str, start: int | None, end: int | None) -> None:
        if start is None or end is None or end < start:
            return
        span = self.tracer.start_span(name, context=trace.context, start_time=start)
        span.end(end_time=end)

    def shadow_span(self, trace: RequestTrace, started_ns: int, error: str | None) -> None:
        """A ``shadow`` span in ``trace`` for the mirrored run that ended now."""
        from opentelemetry.trace import Status, StatusCode

        span = self.tracer.start_span("shadow", context=trace.context, start_time=started_ns)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


def tracing_from_endpoint(endpoint: str, *, service_name: str = "slipway") -> Tracing | None:
    """Tracing that exports over OTLP/HTTP to ``endpoint``; None when ``endpoint`` is empty."""
    if not endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise SlipwayError(
            f"tracing to {endpoint} needs the OpenTelemetry SDK and OTLP exporter, which are not"
            " installed; install them with `pip install 'slipway[otel]'` or unset"
            " SLIPWAY_OTLP_ENDPOINT"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return Tracing(provider)
