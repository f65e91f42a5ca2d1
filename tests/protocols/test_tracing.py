"""OpenTelemetry spans for inference, with the caller's W3C traceparent as parent."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from slipway.errors import SlipwayError
from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.serving.app import SlipwayApp
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from slipway.serving.tracing import Tracing, tracing_from_endpoint
from tests.serving.conftest import make_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture
def traced(tmp_path, cancer, cancer_models):
    x, _ = cancer
    settings = make_settings(tmp_path / "home", grpc_port=0)
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = SlipwayApp(settings)
    app.tracing = Tracing(provider)
    with BackgroundServer(settings, app=app) as server:
        yield server, exporter
    provider.shutdown()


def _spans_by_trace(exporter: InMemorySpanExporter) -> dict[str, list]:
    traces: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        traces.setdefault(f"{span.context.trace_id:032x}", []).append(span)
    return traces


def _settle(exporter: InMemorySpanExporter, done: Callable[[dict[str, list]], bool]) -> None:
    """Wait (up to 5 s) until ``done(spans by trace)``: the root span ends just after the
    response is sent, so the caller can hold the answer a moment before it ends. On timeout
    the test's assertions say what is missing."""
    deadline = time.monotonic() + 5
    while not done(_spans_by_trace(exporter)) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_rest_and_grpc_requests_continue_the_callers_trace(traced, cancer):
    server, exporter = traced
    x, _ = cancer
    with httpx.Client(base_url=server.url) as http:
        answer = http.post(
            "/v1/models/cancer-prod:predict",
            json={"instances": x[:2].tolist()},
            headers={"traceparent": TRACEPARENT},
        )
    assert answer.status_code == 200
    with grpc.insecure_channel(f"127.0.0.1:{server.app.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="cancer-prod")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 30])
        tensor.contents.fp32_contents.extend(x[0].tolist())
        stub.ModelInfer(request, metadata=(("traceparent", TRACEPARENT.replace("4bf9", "5bf9")),))
    with httpx.Client(base_url=server.url) as http:  # the V2 REST and /predict routes too
        v2 = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                          "data": x[0].tolist()}]}  # fmt: skip
        traceparent = TRACEPARENT.replace("4bf9", "6bf9")
        answer = http.post(
            "/v2/models/cancer-prod/infer", json=v2, headers={"traceparent": traceparent}
        )
        assert answer.status_code == 200
        traceparent = TRACEPARENT.replace("4bf9", "7bf9")
        answer = http.post(
            "/predict/cancer-prod",
            json={"instances": x[:3].tolist()},
            headers={"traceparent": traceparent},
        )
        assert answer.status_code == 200
    prefixes = {"4bf9": "http", "5bf9": "grpc", "6bf9": "http", "7bf9": "http"}
    ids = [p + TRACE_ID[4:] for p in prefixes]
    _settle(exporter, lambda traces: all(len(traces.get(t, [])) >= 5 for t in ids))
    traces = _spans_by_trace(exporter)
    for prefix, protocol in prefixes.items():
        spans = {s.name: s for s in traces.get(prefix + TRACE_ID[4:], [])}
        assert set(spans) == {"slipway.infer", "decode", "queue", "inference", "encode"}
        root = spans["slipway.infer"]
        assert f"{root.parent.span_id:016x}" == PARENT_SPAN  # the caller's span is the parent
        assert root.attributes["slipway.deployment"] == "cancer-prod"
        assert root.attributes["slipway.protocol"] == protocol
        for child in ("decode", "queue", "inference", "encode"):
            assert spans[child].parent.span_id == root.context.span_id
            assert root.start_time <= spans[child].start_time <= spans[child].end_time
            assert spans[child].end_time <= root.end_time
        assert spans["decode"].end_time <= spans["queue"].start_time
        assert spans["queue"].end_time == spans["inference"].start_time
        assert spans["inference"].end_time <= spans["encode"].start_time


def test_without_traceparent_a_new_trace_starts(traced, cancer):
    server, exporter = traced
    x, _ = cancer
    with httpx.Client(base_url=server.url) as http:
        http.post("/invocations", json={"inputs": x[:1].tolist()})
    _settle(
        exporter, lambda traces: any(s.name == "slipway.infer" for t in traces.values() for s in t)
    )
    [trace] = _spans_by_trace(exporter).values()
    root = next(s for s in trace if s.name == "slipway.infer")
    assert root.parent is None


def test_tracing_is_off_by_default_and_needs_the_exporter(tmp_path):
    settings = make_settings(tmp_path / "home")
    assert SlipwayApp(settings).tracing is None
    assert tracing_from_endpoint("") is None
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        with pytest.raises(SlipwayError, match="slipway\\[otel\\]"):
            tracing_from_endpoint("http://127.0.0.1:4318/v1/traces")


def test_the_trace_id_is_in_the_audit_record_and_the_shadow_adds_a_span(
    traced, cancer, cancer_models
):
    from slipway.governance import audit

    server, exporter = traced
    x, _ = cancer
    app = server.app
    store = app.store
    with Registry(server.settings) as registry:  # a second version of the model, as shadow
        registry.register_sklearn("cancer", cancer_models[1], x)
    from slipway.rollout import actions
    from slipway.rollout.policy import RolloutConfig

    actions.start(store, "cancer-prod", 2, RolloutConfig(strategy="shadow"))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        deadline = time.monotonic() + 15
        while ("cancer", 2) not in app.repository.loaded and time.monotonic() < deadline:
            time.sleep(0.05)
        traceparent = TRACEPARENT.replace("4bf9", "8bf9")
        request_id = "traced-request-1"
        answer = http.post(
            "/predict/cancer-prod",
            json={"instances": x[:2].tolist()},
            headers={"traceparent": traceparent, "x-request-id": request_id},
        )
        assert answer.status_code == 200
    trace_id = "8bf9" + TRACE_ID[4:]
    deadline = time.monotonic() + 15
    records: list = []
    names: set = set()
    while time.monotonic() < deadline and not (records and "shadow" in names):
        records = audit.query(store, request_id=request_id)
        names = {s.name for s in _spans_by_trace(exporter).get(trace_id, [])}
        time.sleep(0.05)
    [record] = records
    assert record.data["trace_id"] == trace_id
    assert "shadow" in names
    shadow = next(s for s in _spans_by_trace(exporter)[trace_id] if s.name == "shadow")
    root = next(s for s in _spans_by_trace(exporter)[trace_id] if s.name == "slipway.infer")
    assert shadow.parent.span_id == root.context.span_id
    assert shadow.status.is_ok


def test_spans_are_exported_over_otlp_http(tmp_path, cancer, cancer_models):
    """A real OTLP/HTTP receiver on 127.0.0.1 decodes what the exporter sends."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scoped in resource.scope_spans:
                    received.extend((s.trace_id.hex(), s.name) for s in scoped.spans)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(b"")

        def log_message(self, *args: object) -> None:
            pass

    sink = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        x, _ = cancer
        endpoint = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
        settings = make_settings(tmp_path / "home", otlp_endpoint=endpoint)
        with Registry(settings) as registry:
            registry.register_sklearn("cancer", cancer_models[0], x)
            registry.store.create_deployment("cancer-prod", "cancer", 1)
        with (
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, timeout=10) as http,
        ):
            answer = http.post(
                "/predict/cancer-prod",
                json={"instances": x[:1].tolist()},
                headers={"traceparent": TRACEPARENT},
            )
            assert answer.status_code == 200
        # Stopping the server flushed the batched spans to the receiver.
        names = {name for trace_id, name in received if trace_id == TRACE_ID}
        assert names == {"slipway.infer", "decode", "queue", "inference", "encode"}
    finally:
        sink.shutdown()
        sink.server_close()
