"""Prediction CloudEvents to a real HTTP sink on 127.0.0.1, parsed by the cloudevents SDK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.serving.events_sink import BATCH_CONTENT_TYPE, REQUEST_TYPE, RESPONSE_TYPE
from tests.serving.conftest import make_settings


class SinkServer:
    """An HTTP sink that records every POST (headers, body); ``status`` is what it answers."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.status = 202
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["content-length"]))
                sink.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(sink.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/events"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def events(self) -> list:
        """Every event received so far, parsed by the cloudevents SDK."""
        out = []
        for headers, body in list(self.posts):
            if headers.get("content-type") == BATCH_CONTENT_TYPE:
                out += [JSONFormat().read(None, json.dumps(e)) for e in json.loads(body)]
            else:
                out.append(from_http(HTTPMessage(headers=headers, body=body), JSONFormat()))
        return out

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(events := self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return events


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    server = SinkServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _serve(tmp_path, sink: SinkServer, cancer_models, x, **overrides) -> BackgroundServer:
    settings = make_settings(
        tmp_path / "home", events_url=sink.url, events_flush_interval_s=0.05, **overrides
    )
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    return BackgroundServer(settings)


@pytest.mark.parametrize("mode", ["binary", "batch"])
def test_requests_become_kserve_shaped_cloudevents(tmp_path, sink, cancer, cancer_models, mode):
    x, _ = cancer
    v2 = {
        "id": "req-42",
        "inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": x[:2].tolist()}],
    }
    with (
        _serve(tmp_path, sink, cancer_models, x, events_mode=mode) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.post("/v2/models/cancer-prod/infer", json=v2).status_code == 200
        answer = http.post(
            "/v1/models/cancer-prod:predict",
            json={"instances": x[2:5].tolist()},
            headers={"x-request-id": "req-43"},
        )
        assert answer.status_code == 200
        events = sink.wait_for(4)
    assert len(events) == 4
    by_key = {(e.get_id(), e.get_type()): e for e in events}
    request = by_key[("req-42", REQUEST_TYPE)]
    response = by_key[("req-42", RESPONSE_TYPE)]
    assert request.get_source() == "slipway/deployments/cancer-prod"
    assert request.get_extension("inferenceservicename") == "cancer-prod"
    assert request.get_extension("endpoint") == "cancer@1"
    sent = request.get_data()["inputs"][0]
    assert sent["shape"] == [2, 30] and sent["datatype"] == "FP32"
    labels = {o["name"]: o["data"] for o in response.get_data()["outputs"]}["label"]
    assert labels == cancer_models[0].predict(x[:2]).tolist()
    assert ("req-43", RESPONSE_TYPE) in by_key
    if mode == "batch":
        assert all(h["content-type"] == BATCH_CONTENT_TYPE for h, _ in sink.posts)
        assert len(sink.posts) <= 2


def test_refused_requests_send_no_events_and_a_down_sink_fails_nothing(
    tmp_path, sink, cancer, cancer_models
):
    x, _ = cancer
    sink.status = 500  # the sink is broken: requests must still succeed
    with (
        _serve(tmp_path, sink, cancer_models, x) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        bad = http.post("/v1/models/cancer-prod:predict", json={"instances": [[1.0]]})
        ok = http.post("/v1/models/cancer-prod:predict", json={"instances": x[:1].tolist()})
        events = sink.wait_for(2)
        # The sink has the events a moment before the server has read its 500s and counted them.
        failed = 'slipway_cloudevents_total{outcome="failed"} 2.0'
        deadline = time.monotonic() + 10
        while failed not in (metrics := http.get("/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert bad.status_code == 400 and ok.status_code == 200
    assert len(events) == 2  # the refused request produced none
    assert failed in metrics


def test_full_queue_drops_and_counts(tmp_path, cancer, cancer_models):
    x, _ = cancer
    # A sink nobody listens on, a queue of one request, a long flush interval.
    settings = make_settings(
        tmp_path / "home",
        events_url="http://127.0.0.1:9/none",
        events_queue_size=1,
        events_batch_size=100,
        events_flush_interval_s=30,
    )
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        for i in range(3):
            answer = http.post(
                "/v1/models/cancer-prod:predict", json={"instances": x[i : i + 1].tolist()}
            )
            assert answer.status_code == 200
        metrics = http.get("/metrics").text
    assert 'slipway_cloudevents_total{outcome="dropped"} 4.0' in metrics
