"""The management API and the SDK over it."""

from __future__ import annotations

import pickle
import time

import httpx
import pytest
from skl2onnx import to_onnx

from slipway.client import ApiError, Client

from ..auth import admin_token


def test_sdk_register_deploy_predict(server, settings, tmp_path, iris_model) -> None:
    estimator, x = iris_model
    onnx_model = to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    with Client(server.url, token=admin_token(settings)) as client:
        version = client.register("iris", path, description="iris LR", metrics={"accuracy": 0.97})
        assert version["model"] == "iris" and version["number"] == 1
        assert version["meta"]["metrics"] == {"accuracy": 0.97}
        assert version["signature"]["inputs"][0]["shape"] == [-1, 4]
        assert [m["name"] for m in client.models()] == ["cancer", "iris"]
        assert client.model("iris")["versions"][0]["number"] == 1
        deployment = client.deploy("iris-prod", "iris")
        assert deployment["version"] == 1
        deadline = time.monotonic() + 10
        while True:
            try:
                result = client.predict("iris-prod", x[:3].tolist())
                break
            except ApiError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert result["predictions"] == estimator.predict(x[:3]).tolist()
        kinds = [e["kind"] for e in client.events()]
        assert "version.registered" in kinds and "deployment.created" in kinds


def test_sdk_takes_numpy_arrays_as_they_are(server, settings, tmp_path, iris_model) -> None:
    """Rows as a numpy array (numpy scalars inside lists too) and V2 inputs as a mapping of
    input name to array: the SDK encodes them; the answers are the estimator's."""
    import numpy as np

    estimator, x = iris_model
    onnx_model = to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    want = estimator.predict(x[:3]).tolist()
    with Client(server.url, token=admin_token(settings)) as client:
        client.register("iris", path)
        client.deploy("iris-np", "iris")
        deadline = time.monotonic() + 10
        while not any(d["name"] == "iris-np" for d in client.deployments()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while True:
            try:
                result = client.predict("iris-np", x[:3])
                break
            except ApiError:
                assert time.monotonic() < deadline, "iris-np was not served"
                time.sleep(0.1)
        assert result["predictions"] == want
        assert client.predict("iris-np", [list(row) for row in x[:3]])["predictions"] == want
        name = onnx_model.graph.input[0].name
        answer = client.infer("iris-np", {name: x[:3].astype(np.float32)}, id="np-1")
        assert answer["id"] == "np-1"
        (label,) = [o for o in answer["outputs"] if o["name"] == "label"]
        assert label["data"] == want and label["shape"] == [3]
        with pytest.raises(ApiError, match="HTTP 400"):
            client.infer("iris-np", {name: x[:3, :2].astype(np.float32)})


def test_register_refuses_pickle_and_garbage(http) -> None:
    blob = pickle.dumps({"a": 1})
    response = http.post(
        "/api/models/evil/versions",
        content=blob,
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 415
    response = http.post(
        "/api/models/evil/versions",
        content=b"x",
        headers={"content-type": "application/python-pickle"},
    )
    assert response.status_code == 415
    response = http.post(
        "/api/models/evil/versions",
        content=b"not onnx",
        headers={"content-type": "application/octet-stream"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert http.get("/api/models/evil").status_code == 404


def test_deployment_crud_and_errors(http) -> None:
    created = http.post(
        "/api/deployments", json={"name": "second", "model": "cancer", "version": 2}
    )
    assert created.status_code == 201, created.text
    assert (
        http.post("/api/deployments", json={"name": "second", "model": "cancer"}).status_code == 409
    )
    assert http.post("/api/deployments", json={"name": "x", "model": "ghost"}).status_code == 404
    assert (
        http.post(
            "/api/deployments", json={"name": "y", "model": "cancer", "version": 9}
        ).status_code
        == 404
    )
    assert (
        http.post("/api/deployments", json={"name": "../etc", "model": "cancer"}).status_code == 400
    )
    assert http.post("/api/deployments", json={"nam": "z"}).status_code == 400
    assert (
        http.post(
            "/api/deployments", content=b"name=z", headers={"content-type": "text/plain"}
        ).status_code
        == 415
    )
    # Batching and version change together or not at all: a version that does not exist
    # leaves the batching as it was.
    before = http.get("/api/deployments/second").json()["batching"]
    wanted = {**before, "max_batch_size": before["max_batch_size"] + 1}
    refused = http.patch("/api/deployments/second", json={"version": 99, "batching": wanted})
    assert refused.status_code == 404, refused.text
    assert http.get("/api/deployments/second").json()["batching"] == before
    moved = http.patch("/api/deployments/second", json={"version": 1})
    assert moved.status_code == 200 and moved.json()["previous_version"] == 2
    assert http.get("/api/deployments/second").json()["version"] == 1
    assert http.delete("/api/deployments/second").status_code == 200
    assert http.get("/api/deployments/second").status_code == 404
    assert http.put("/api/deployments").status_code == 405


def test_openapi_document_covers_every_route(http, server) -> None:
    doc = http.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for route in server.app.management.routes:
        assert route.method.lower() in doc["paths"][route.template]
    schema = doc["paths"]["/api/deployments"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert schema["$ref"].endswith("DeploymentCreate")
    assert "DeploymentCreate" in doc["components"]["schemas"]


@pytest.mark.parametrize(
    "path", ["/api/models/..%2f..%2fetc", "/api/models/a%00b", "/api/models/$(id)"]
)
def test_hostile_names(http, path) -> None:
    response = http.get(path)
    assert response.status_code in (400, 404)
    assert "error" in response.json()


def test_events_limit_validated(http) -> None:
    assert http.get("/api/events", params={"limit": 0}).status_code == 400
    assert http.get("/api/events", params={"limit": "x"}).status_code == 400


def test_metrics_counts_requests(http, cancer) -> None:
    from .test_v2 import v2_body

    http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1]))
    http.post("/v2/models/ghost-1/infer", json=v2_body(cancer[0][:1]))
    http.post("/v2/models/ghost-2/infer", json=v2_body(cancer[0][:1]))
    text = http.get("/metrics").text
    assert (
        'slipway_requests_total{arm="stable",deployment="cancer-prod",outcome="ok",version="1"} 1.0'
        in text
    )
    assert 'deployment="_unknown"' in text and "ghost" not in text
    assert "slipway_request_duration_seconds_bucket" in text


def test_unreachable_server_is_a_clear_error() -> None:
    with (
        Client("http://127.0.0.1:9", timeout=2) as client,
        pytest.raises(Exception, match="cannot reach"),
    ):
        client.models()
    assert httpx  # the SDK is built on httpx


def test_sdk_register_sends_non_ascii_metadata_intact(
    server, settings, tmp_path, iris_model
) -> None:
    estimator, x = iris_model
    onnx_model = to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    with Client(server.url, token=admin_token(settings)) as client:
        version = client.register(
            "iris", path, description="modèle für Kunden", tags={"équipe": "ß"}
        )
        assert version["meta"]["description"] == "modèle für Kunden"
        assert version["meta"]["tags"] == {"équipe": "ß"}


def test_ready_is_false_when_the_server_cannot_be_reached() -> None:
    with Client("http://127.0.0.1:9", timeout=2) as client:
        assert client.ready() is False


def test_a_misspelt_metadata_field_is_refused_not_dropped(
    server, settings, tmp_path, iris_model
) -> None:
    estimator, x = iris_model
    onnx_model = to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}})
    path = tmp_path / "iris.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    with Client(server.url, token=admin_token(settings)) as client:
        with pytest.raises(ApiError) as refused:
            client.register("iris", path, metric={"accuracy": 0.97})  # not "metrics"
        assert refused.value.status == 400 and "metric" in str(refused.value)
        assert all(m["name"] != "iris" for m in client.models())  # nothing registered
