"""Open Inference Protocol V2 over real HTTP."""

from __future__ import annotations

import numpy as np
import pytest


def v2_body(rows: np.ndarray, **extra: object) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ],
        **extra,
    }


def _tensor_text(datatype: str, data: str) -> bytes:
    """A V2 body for the cancer model's input (shape [1, 30]) with ``data`` as JSON text."""
    return (
        '{"inputs":[{"name":"input","shape":[1,30],"datatype":"'
        + datatype
        + '","data":'
        + data
        + "}]}"
    ).encode()


def test_health_and_server_metadata(http) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    meta = http.get("/v2").json()
    assert meta["name"] == "slipway" and "version" in meta


def test_model_metadata_and_ready(http) -> None:
    meta = http.get("/v2/models/cancer-prod").json()
    assert meta["name"] == "cancer-prod"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert http.get("/v2/models/cancer-prod/ready").status_code == 200
    assert http.get("/v2/models/cancer-prod/versions/1/ready").status_code == 200
    assert http.get("/v2/models/cancer-prod/versions/1").json()["parameters"]["version"] == 1
    assert http.get("/v2/models/nope/ready").status_code == 404


def test_infer_matches_estimator(http, cancer, cancer_models) -> None:
    x, _ = cancer
    rows = x[:5]
    response = http.post("/v2/models/cancer-prod/infer", json=v2_body(rows, id="req-7"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-7"
    assert body["model_name"] == "cancer-prod" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [5]
    assert outputs["label"]["data"] == cancer_models[0].predict(rows).tolist()
    proba = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(proba, cancer_models[0].predict_proba(rows), atol=1e-4)


def test_infer_nested_data_fp64_and_requested_outputs(http, cancer, cancer_models) -> None:
    x, _ = cancer
    rows = x[:2].astype(np.float64)
    body = {
        "inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP64", "data": rows.tolist()}],
        "outputs": [{"name": "label"}],
    }
    response = http.post("/v2/models/cancer-prod/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [o["name"] for o in outputs] == ["label"]
    assert outputs[0]["data"] == cancer_models[0].predict(x[:2]).tolist()


def test_infer_explicit_version_served_for_rollback(
    http, registry, server, cancer, cancer_models
) -> None:
    import time

    registry.store.set_deployment_version("cancer-prod", 2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1])).json()[
                "model_version"
            ]
            == "2"
        ):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the server did not pick up version 2")
    # version 1 stays loaded and addressable: it is the rollback target
    old = http.post("/v2/models/cancer-prod/versions/1/infer", json=v2_body(cancer[0][:3]))
    assert old.status_code == 200 and old.json()["model_version"] == "1"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        pytest.param(b"{not json", 400, "not valid JSON", id="bad-json"),
        pytest.param(b'{"inputs": []}', 400, "no inputs", id="no-inputs"),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[1,2]}]}',
            400,
            "needs 30 values",
            id="short-data",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[100000000,30],"datatype":"FP32","data":[1]}]}',
            413,
            "rows",
            id="shape-promises-too-much",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1,2]}]}',
            400,
            "shape",
            id="wrong-width",
        ),
        pytest.param(
            b'{"inputs":[{"name":"other","shape":[1,30],"datatype":"FP32","data":'
            + str([0.0] * 30).encode()
            + b"}]}",
            400,
            "missing input",
            id="wrong-name",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,1],"datatype":"FP99","data":[1]}]}',
            400,
            "unknown datatype",
            id="bad-datatype",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,1],"datatype":"FP32","data":["x"]}]}',
            400,
            "does not fit",
            id="string-in-fp32",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":'
            + str([0.0] * 30).encode()
            + b'}],"outputs":[{"name":"nope"}]}',
            400,
            "unknown output",
            id="unknown-output",
        ),
        pytest.param(  # numpy reads any non-empty string as True
            _tensor_text("BOOL", '["false"' + ', "false"' * 29 + "]"),
            400,
            "BOOL data must be true or false",
            id="bool-from-strings",
        ),
        pytest.param(
            _tensor_text("BOOL", "[2" + ", 0" * 29 + "]"),
            400,
            "BOOL data must be true or false",
            id="bool-from-numbers",
        ),
        pytest.param(  # numpy truncated it to 1
            _tensor_text("INT32", "[1.5" + ", 1" * 29 + "]"),
            400,
            "INT32 data must be whole numbers, got 1.5",
            id="fraction-in-int32",
        ),
        pytest.param(  # 29 + 1 values: the count matched, so it was read as one row
            _tensor_text("FP32", "[[" + ", ".join(["0.5"] * 29) + "], [0.5]]"),
            400,
            "ragged",
            id="ragged-nesting",
        ),
        pytest.param(  # two rows of 15 for shape [1, 30]
            _tensor_text("FP32", str([[0.5] * 15] * 2)),
            400,
            "does not match shape [1, 30]",
            id="nesting-against-the-shape",
        ),
        pytest.param(
            _tensor_text("FP32", "[null" + ", 1" * 29 + "]"),
            400,
            "null",
            id="null-in-fp32",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":'
            + str([0.0] * 30).encode()
            + b'}],"outputs":[{"name":"label"},{"name":"label"}]}',
            400,
            "output 'label' requested twice",
            id="output-twice",
        ),
        pytest.param(  # it said: model expects inputs [input], got [input, max_tokens]
            b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":'
            + str([0.0] * 30).encode()
            + b'}],"parameters":{"max_tokens":5}}',
            400,
            "takes no parameter 'max_tokens'",
            id="max-tokens-for-a-classifier",
        ),
        pytest.param(  # fits FP64, but the model takes FP32: cast, it became infinity
            b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP64","data":'
            + str([1e300] * 30).encode()
            + b"}]}",
            400,
            "FP32",
            id="overflows-the-models-fp32",
        ),
        pytest.param(
            b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"BYTES","data":'
            + str(["a"] * 30).replace("'", '"').encode()
            + b"}]}",
            400,
            "input 'input' is BYTES; the model takes FP32",
            id="bytes-for-fp32",
        ),
    ],
)
def test_bad_requests_get_4xx_json_and_server_keeps_serving(
    http, cancer, body, status, fragment
) -> None:
    response = http.post(
        "/v2/models/cancer-prod/infer", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    ok = http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1]))
    assert ok.status_code == 200


def test_unknown_model_and_route(http) -> None:
    response = http.post("/v2/models/ghost/infer", json={"inputs": []})
    assert response.status_code == 404
    assert "ghost" in response.json()["error"]
    assert http.get("/nowhere").status_code == 404


def test_v2_client_library_shape(http, cancer) -> None:
    """The exact body the tritonclient/kserve HTTP clients send (flat data, parameters)."""
    x, _ = cancer
    body = {
        "id": "42",
        "parameters": {"binary_data_output": False},
        "inputs": [
            {
                "name": "input",
                "shape": [1, 30],
                "datatype": "FP32",
                "parameters": {"binary_data_size": None},
                "data": x[0].tolist(),
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}],
    }
    response = http.post("/v2/models/cancer-prod/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [1, 2]


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        pytest.param("INT64", [1, 1000], "do not fit the model's INT8", id="wraps-in-int8"),
        pytest.param("FP32", [1.5, 2.0], "input 'x' is FP32; the model takes INT8", id="float"),
    ],
)
def test_inputs_the_model_cannot_take_unchanged_are_refused(
    identity_server, datatype: str, data: list, fragment: str
) -> None:
    """The server casts an input to the model's datatype only when nothing is lost: 1000 would
    wrap to -24 in INT8, and 1.5 would be truncated, each answered 200 before."""
    import httpx

    url = f"{identity_server.url}/v2/models/small-prod/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]}
    response = httpx.post(url, json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    body["inputs"][0].update(datatype="INT64", data=[1, -2])  # a cast that loses nothing
    response = httpx.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1, -2]


def test_bytes_reach_an_onnx_string_model_as_text(identity_server) -> None:
    """V2 BYTES arrive as bytes; onnxruntime made "a" into the text "b'a'" (str() of bytes)."""
    import httpx

    url = f"{identity_server.url}/v2/models/text-prod/infer"
    body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "BYTES", "data": []}]}
    body["inputs"][0]["data"] = ["a", "é", "", "x y"]
    response = httpx.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["a", "é", "", "x y"]


@pytest.mark.parametrize(
    "value",
    [pytest.param(1, id="number"), pytest.param(None, id="null"), pytest.param({}, id="object")],
)
def test_bytes_data_must_be_strings(identity_server, value) -> None:
    """A number, null or object in BYTES data reached the model as its Python text ("None")."""
    import httpx

    url = f"{identity_server.url}/v2/models/text-prod/infer"
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": [value, "a"]}]}
    response = httpx.post(url, json=body)
    assert response.status_code == 400, response.text
    assert "BYTES data must be strings" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("GET", "/v2/models/cancer-prod/infer", "POST", id="get-infer"),
        pytest.param("PUT", "/v2/models/cancer-prod/versions/1/infer", "POST", id="put-infer"),
        pytest.param("DELETE", "/v2/models/ghost/infer", "POST", id="delete-infer-unknown"),
        pytest.param("POST", "/v2/models/cancer-prod", "GET", id="post-metadata"),
        pytest.param("POST", "/v2/models/cancer-prod/versions/1/ready", "GET", id="post-ready"),
        pytest.param("GET", "/predict/cancer-prod", "POST", id="get-predict"),
        pytest.param("OPTIONS", "/predict/cancer-prod", "POST", id="options-predict"),
        pytest.param("GET", "/v1/models/cancer-prod:predict", "POST", id="get-v1-predict"),
        pytest.param("POST", "/v1/models/cancer-prod", "GET", id="post-v1-model"),
        pytest.param("GET", "/invocations", "POST", id="get-invocations"),
        pytest.param("GET", "/mlflow/cancer-prod/invocations", "POST", id="get-mlflow"),
        pytest.param("POST", "/ping", "GET", id="post-ping"),
        # Health, metadata and metrics answered 200 (or 404) to any method.
        pytest.param("POST", "/v2/health/live", "GET", id="post-live"),
        pytest.param("DELETE", "/v2/health/ready", "GET", id="delete-ready"),
        pytest.param("PUT", "/v2", "GET", id="put-server-metadata"),
        pytest.param("POST", "/v2/openapi.json", "GET", id="post-openapi"),
        pytest.param("POST", "/", "GET", id="post-root"),
        pytest.param("POST", "/metrics", "GET", id="post-metrics"),
        # The management API answered 405 without saying what is allowed.
        pytest.param("DELETE", "/api/whoami", "GET", id="delete-whoami"),
        pytest.param("PUT", "/api/models/cancer/versions", "GET, POST", id="put-versions"),
    ],
)
def test_wrong_method_on_an_inference_route_is_a_405(http, method, path, allowed) -> None:
    """docs/serving.md: 405 wrong method (it was a 404 'no such route' for a route that exists)."""
    response = http.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert allowed in response.json()["error"]


def test_head_is_answered_like_get(http) -> None:
    for path in (
        "/v2/models/cancer-prod",
        "/v2/models/cancer-prod/versions/1/ready",
        "/v2/health/live",
        "/metrics",  # was a 404
    ):
        response = http.head(path)
        assert response.status_code == 200, path
        assert response.content == b""
    response = http.head("/api/whoami")  # a management GET route: was a 405
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/v2foo/models/cancer-prod", id="metadata"),
        pytest.param("POST", "/v2x/models/cancer-prod/infer", id="infer"),
        pytest.param("GET", "/v2-/models/cancer-prod/ready", id="ready"),
    ],
)
def test_paths_that_only_start_like_v2_are_not_v2(http, cancer, method, path) -> None:
    response = http.request(method, path, json=v2_body(cancer[0][:1]))
    assert response.status_code == 404, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    "segment",
    [
        pytest.param("abc", id="letters"),
        pytest.param("1.0", id="decimal"),
        pytest.param("-1", id="negative"),
        pytest.param("0", id="zero"),
        pytest.param("+1", id="plus-sign"),
        pytest.param("%201", id="space"),
        pytest.param("1_0", id="underscore"),  # int() read it as 10
        pytest.param("%D9%A1", id="arabic-indic-digit"),  # int() read it as 1
    ],
)
def test_a_version_that_is_not_a_plain_number_is_a_400(http, cancer, segment) -> None:
    for method, path in [
        ("POST", f"/v2/models/cancer-prod/versions/{segment}/infer"),
        ("GET", f"/v2/models/cancer-prod/versions/{segment}/ready"),
        ("GET", f"/v2/models/cancer-prod/versions/{segment}"),
    ]:
        response = http.request(method, path, json=v2_body(cancer[0][:1]))
        assert response.status_code == 400, (path, response.text)
        assert "version" in response.json()["error"]
    ok = http.post("/v2/models/cancer-prod/versions/01/infer", json=v2_body(cancer[0][:1]))
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
