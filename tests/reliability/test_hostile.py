"""Hostile bodies over real sockets: each gets a clear 4xx JSON answer, the server reads no
more than its limit, allocates nothing a body only promises, and keeps serving.

Already in tests/serving: over the limit by Content-Length and chunked (test_limits.py), a shape
promising 10^8 rows (413), short data, bad datatypes (test_v2.py)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import string
import time

import httpx
import pytest

from slipway.server import BackgroundServer

from ..serving.test_v2 import v2_body
from .conftest import make_settings

pytestmark = pytest.mark.reliability

INFER = "/v2/models/cancer-prod/infer"


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body[:length]


def _request_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _still_serves(url: str, cancer) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post(INFER, json=v2_body(cancer[0][:1])).status_code == 200


@pytest.fixture
def small_limit_server(registry):
    settings = make_settings(registry.settings.home, max_body_bytes=10_000)
    with BackgroundServer(settings) as server:
        yield server


def test_413_by_content_length_comes_before_the_body_is_sent(small_limit_server, cancer) -> None:
    with _connect(small_limit_server.url) as sock:
        sock.sendall(_request_head(INFER, Content_Length="50000000") + b'{"inputs": [')
        status, body = _read_response(sock)  # 50 MB never sent: the answer came first
    assert status == 413 and "limit of 10000" in json.loads(body)["error"]
    _still_serves(small_limit_server.url, cancer)


def test_413_by_chunked_transfer_comes_before_the_body_ends(small_limit_server, cancer) -> None:
    with _connect(small_limit_server.url) as sock:
        sock.sendall(_request_head(INFER, Transfer_Encoding="chunked"))
        for _ in range(12):  # 12 KB of an endless body, then wait for the answer
            sock.sendall(b"3e8\r\n" + b" " * 1000 + b"\r\n")
        status, body = _read_response(sock)
    assert status == 413 and "limit of 10000" in json.loads(body)["error"]
    _still_serves(small_limit_server.url, cancer)


def test_100k_tiny_chunks_are_one_request(server, cancer, cancer_models) -> None:
    rows = cancer[0][:3]
    payload = json.dumps(v2_body(rows)).encode()
    payload = payload[:-1] + b" " * (100_000 - len(payload)) + b"}"  # JSON allows the padding
    with _connect(server.url) as sock:
        sock.sendall(_request_head(INFER, Transfer_Encoding="chunked"))
        framed = b"".join(b"1\r\n" + payload[i : i + 1] + b"\r\n" for i in range(len(payload)))
        sock.sendall(framed + b"0\r\n\r\n")
        status, body = _read_response(sock)
    assert status == 200, body
    labels = json.loads(body)["outputs"][0]["data"]
    assert labels == cancer_models[0].predict(rows).tolist()


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            id="content-length-not-a-number",
        ),
        pytest.param(
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            id="negative-content-length",
        ),
        pytest.param(
            b"GET /v2/models/" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="long-url"
        ),
        pytest.param(b"GET /v2/models/\xff HTTP/1.1\r\nHost: x\r\n\r\n", id="raw-non-ascii-path"),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="not-http"),
    ],
)
def test_a_request_that_is_not_valid_http_gets_a_json_400(server, cancer, head: bytes) -> None:
    """The HTTP parser's refusals answered text/plain 'Invalid HTTP request received.'; every
    error is JSON (docs/serving.md)."""
    with _connect(server.url) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    headers, _, body = data.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.1 400"), data[:200]
    assert b"content-type: application/json" in headers.lower()
    assert "HTTP" in json.loads(body)["error"]
    _still_serves(server.url, cancer)


@pytest.fixture
def short_timeout_server(registry):
    settings = make_settings(registry.settings.home, head_timeout_s=1.0)
    with BackgroundServer(settings) as server:
        yield server


def test_a_body_that_stops_arriving_is_answered_408_and_closed(short_timeout_server, cancer):
    """A head sent in time and a body that stalls held the connection (and the request) for
    ever: the head timeout covered the head only."""
    with _connect(short_timeout_server.url) as sock:
        sock.sendall(_request_head(INFER, Content_Length="1000") + b'{"inputs": [')
        started = time.monotonic()
        status, body = _read_response(sock)
        assert status == 408 and "body" in json.loads(body)["error"]
        assert sock.recv(1024) == b""  # then closed
    assert time.monotonic() - started < 5
    _still_serves(short_timeout_server.url, cancer)


def test_a_body_that_keeps_arriving_slowly_is_served(short_timeout_server, cancer, cancer_models):
    """The body timeout is a limit on each pause, not on the whole body: a slow upload that
    keeps sending is served however long it takes."""
    payload = json.dumps(v2_body(cancer[0][:2])).encode()
    pieces = [
        payload[i : i + len(payload) // 6 + 1]
        for i in range(0, len(payload), len(payload) // 6 + 1)
    ]
    with _connect(short_timeout_server.url) as sock:
        sock.sendall(_request_head(INFER, Content_Length=str(len(payload))))
        for piece in pieces:  # 6-7 pieces, 0.4 s apart: well past the 1 s timeout in all
            time.sleep(0.4)
            sock.sendall(piece)
        status, body = _read_response(sock)
    assert status == 200, body
    assert (
        json.loads(body)["outputs"][0]["data"] == cancer_models[0].predict(cancer[0][:2]).tolist()
    )


def _deep(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param(INFER, '{"inputs": ' + _deep(100_000) + "}", id="v2-inputs"),
        pytest.param(
            INFER,
            '{"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": '
            + _deep(100_000)
            + "}]}",
            id="v2-data",
        ),
        pytest.param(
            INFER,
            '{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1],'
            ' "parameters": {"x": ' + _deep(100_000) + "}}]}",
            id="v2-parameters",
        ),
        pytest.param("/predict/cancer-prod", '{"instances": ' + _deep(100_000) + "}", id="predict"),
        pytest.param(
            "/v1/models/cancer-prod:predict",
            '{"instances": ' + _deep(100_000) + "}",
            id="kserve-v1",
        ),
        pytest.param("/invocations", '{"instances": ' + _deep(100_000) + "}", id="mlflow"),
        pytest.param(
            "/invocations",
            '{"dataframe_records": [{"a": ' + _deep(100_000) + "}]}",
            id="mlflow-records",
        ),
        pytest.param(
            "/invocations",
            '{"instances": [[1]], "params": {"a": ' + _deep(100_000) + "}}",
            id="mlflow-params",
        ),
        pytest.param(
            "/api/deployments", '{"name": "x", "model": ' + _deep(100_000) + "}", id="management"
        ),
        pytest.param(
            "/api/feedback",
            '{"request_id": "r", "values": {"a": ' + _deep(100_000) + "}}",
            id="feedback",
        ),
    ],
)
def test_deeply_nested_json_is_a_400(http, cancer, path: str, text: str) -> None:
    response = http.post(path, content=text, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    _still_serves(str(http.base_url), cancer)


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        pytest.param([1, 10**12], "needs 1000000000000 values", id="wide"),
        pytest.param([4, 10**9, 10**9], "needs", id="three-dims"),
        pytest.param([2**62, 0], "rows", id="rows-with-a-zero"),
        pytest.param([1, -30], "negative", id="negative"),
    ],
)
def test_a_shape_promising_more_than_sent_is_refused_without_allocating(
    http, cancer, shape: list[int], fragment: str
) -> None:
    body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": [1.0] * 30}]}
    response = http.post(INFER, json=body)
    assert response.status_code in (400, 413), response.text
    assert fragment in response.json()["error"]
    _still_serves(str(http.base_url), cancer)


@pytest.mark.parametrize(
    ("value", "datatype"),
    [
        pytest.param("NaN", "FP32", id="nan-literal"),
        pytest.param("Infinity", "FP32", id="infinity-literal"),
        pytest.param("-Infinity", "FP64", id="minus-infinity-literal"),
        pytest.param("1e999", "FP64", id="overflows-fp64"),
        pytest.param("1e39", "FP32", id="overflows-fp32"),
        pytest.param("70000", "FP16", id="overflows-fp16"),
        pytest.param('"NaN"', "FP32", id="nan-string"),
    ],
)
def test_nan_and_infinity_are_refused(http, cancer, value: str, datatype: str) -> None:
    values = value + ", 1.0" * 29  # JSON text: NaN and Infinity are not valid JSON numbers
    text = (
        f'{{"inputs": [{{"name": "input", "shape": [1, 30], "datatype": "{datatype}",'
        f' "data": [{values}]}}]}}'
    )
    response = http.post(INFER, content=text, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    if datatype == "FP16":  # /predict takes the model's own datatype (FP32)
        return
    text = f'{{"instances": [[{values}]]}}'
    response = http.post(
        "/predict/cancer-prod", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    _still_serves(str(http.base_url), cancer)


def _series(metrics_text: str) -> set[str]:
    return {
        line.rsplit(" ", 1)[0] for line in metrics_text.splitlines() if not line.startswith("#")
    }


@pytest.mark.slow
def test_10000_requests_to_random_model_names_keep_metric_series_bounded(
    http, cancer, server
) -> None:
    body = v2_body(cancer[0][:1])
    http.post("/v2/models/ghost/infer", json=body)  # the "unknown" series exist from here on
    http.post("/predict/ghost", json={"instances": [[1.0]]})
    http.get("/v2/models/ghost/ready")
    before = _series(http.get("/metrics").text)
    rng = random.Random(9)
    names = [
        "".join(rng.choices(string.ascii_lowercase + string.digits + "-_.", k=rng.randint(1, 40)))
        for _ in range(10_000)
    ]

    async def hammer() -> list[int]:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=32)
        ) as client:
            sem = asyncio.Semaphore(32)

            async def one(i: int, name: str) -> int:
                async with sem:
                    if i % 3 == 0:
                        r = await client.post(f"/predict/{name}", json={"instances": [[1.0]]})
                    elif i % 3 == 1:
                        r = await client.get(f"/v2/models/{name}/versions/{i}/ready")
                    else:
                        r = await client.post(f"/v2/models/{name}/infer", json=body)
                    return r.status_code

            return await asyncio.gather(*[one(i, n) for i, n in enumerate(names)])

    started = time.monotonic()
    statuses = asyncio.run(hammer())
    assert set(statuses) <= {400, 404}, sorted(set(statuses))
    after = _series(http.get("/metrics").text)
    grown = {s for s in after - before if "cancer-prod" not in s}
    assert not grown, sorted(grown)[:10]
    assert not any(name in http.get("/metrics").text for name in names[:100] if len(name) > 8)
    assert time.monotonic() - started < 280  # well inside the test timeout
