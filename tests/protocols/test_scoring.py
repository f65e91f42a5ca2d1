"""MLflow pyfunc scoring and KServe V1 bodies against a real server, checked against the model."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.settings import Settings


def _expected(cancer_models, x: np.ndarray) -> list[int]:
    return cancer_models[0].predict(x).tolist()


def test_mlflow_root_routes_serve_the_only_deployment(http: httpx.Client, cancer, cancer_models):
    x, _ = cancer
    assert http.get("/ping").status_code == 200
    assert http.get("/health").status_code == 200
    answer = http.post("/invocations", json={"instances": x[:5].tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": _expected(cancer_models, x[:5])}


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param("split", id="dataframe_split"),
        pytest.param("records", id="dataframe_records"),
        pytest.param("instances", id="instances"),
        pytest.param("inputs", id="inputs"),
        pytest.param("inputs-named", id="inputs-by-name"),
    ],
)
def test_mlflow_json_bodies(http: httpx.Client, cancer, cancer_models, shape: str):
    x, _ = cancer
    rows = x[10:17]
    columns = [f"f{i}" for i in range(x.shape[1])]
    body = {
        "split": {"dataframe_split": {"columns": columns, "data": rows.tolist()}},
        "records": {
            "dataframe_records": [dict(zip(columns, r, strict=True)) for r in rows.tolist()]
        },
        "instances": {"instances": rows.tolist()},
        "inputs": {"inputs": rows.tolist(), "params": {"ignored": 1}},
        "inputs-named": {"inputs": {"input": rows.tolist()}},
    }[shape]
    answer = http.post("/mlflow/cancer-prod/invocations", json=body)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    if shape == "inputs-named":  # tensor-style request: every output by name
        assert predictions["label"] == _expected(cancer_models, rows)
        np.testing.assert_allclose(
            predictions["probabilities"], cancer_models[0].predict_proba(rows), atol=1e-4
        )
    else:
        assert predictions == _expected(cancer_models, rows)


def test_mlflow_csv_body(http: httpx.Client, cancer, cancer_models):
    x, _ = cancer
    rows = x[:4]
    lines = [",".join(f"f{i}" for i in range(x.shape[1]))]
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    answer = http.post(
        "/invocations", content="\n".join(lines) + "\n", headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": _expected(cancer_models, rows)}


def test_mlflow_columns_follow_registered_feature_names(settings: Settings, iris_model):
    estimator, x = iris_model
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with Registry(settings) as registry:
        registry.register_sklearn("iris", estimator, x, feature_names=names)
        registry.store.create_deployment("iris-prod", "iris", 1)
    rows = x[[0, 60, 120]]
    # Columns sent in reverse order: they must be put back in the registered order.
    reversed_columns = {"columns": names[::-1], "data": rows[:, ::-1].tolist()}
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/invocations", json={"dataframe_split": reversed_columns})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == estimator.predict(rows).tolist()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        pytest.param(b"not json", 400, "JSON", id="not-json"),
        pytest.param(b'{"instances": [[1]], "inputs": [[1]]}', 400, "exactly one", id="two"),
        pytest.param(b'{"rows": [[1]]}', 400, "exactly one", id="none"),
        pytest.param(b'{"instances": []}', 400, "empty", id="empty"),
        pytest.param(b'{"instances": [[1, 2]]}', 400, "shape", id="wrong-width"),
        pytest.param(b'{"dataframe_split": {"data": 3}}', 400, "dataframe_split", id="bad-split"),
        pytest.param(b'{"inputs": {"nope": [[1]]}}', 400, "unknown input", id="unknown-input"),
    ],
)
def test_mlflow_bad_bodies_get_a_clear_4xx(http: httpx.Client, body, status, fragment):
    answer = http.post("/invocations", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    assert fragment in answer.json()["error"]
    assert http.get("/ping").status_code == 200  # still serving


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        pytest.param(b"a\n" + b"1" * 200_000 + b"\n", "field", id="field-over-csv-limit"),
        pytest.param(b'a\n"unterminated\n', "", id="unterminated-quote"),
        pytest.param(b"a,b\n1,2\x00\n", "", id="nul-byte"),
    ],
)
def test_mlflow_malformed_csv_is_a_400(http: httpx.Client, cancer, body, fragment):
    answer = http.post("/invocations", content=body, headers={"content-type": "text/csv"})
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"]
    ok = http.post("/invocations", json={"instances": cancer[0][:1].tolist()})
    assert ok.status_code == 200  # still serving


def _row_with(value: str) -> str:
    return "[" + value + ", 1.0" * 29 + "]"  # JSON text: NaN and Infinity are not valid JSON


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("NaN", id="nan-literal"),
        pytest.param("Infinity", id="infinity-literal"),
        pytest.param('"NaN"', id="nan-string"),
        pytest.param('"-inf"', id="inf-string"),
        pytest.param("null", id="null"),
        pytest.param("1e39", id="overflows-fp32"),
    ],
)
@pytest.mark.parametrize(
    ("path", "template"),
    [
        pytest.param("/v1/models/cancer-prod:predict", '{"instances": [ROW]}', id="v1"),
        pytest.param("/invocations", '{"instances": [ROW]}', id="mlflow-instances"),
        pytest.param("/invocations", '{"dataframe_split": {"data": [ROW]}}', id="mlflow-split"),
        pytest.param("/invocations", '{"inputs": {"input": [ROW]}}', id="mlflow-named"),
        pytest.param(
            "/invocations",
            '{"dataframe_records": [{"f0": VALUE'
            + "".join(f', "f{i}": 1.0' for i in range(1, 30))
            + "}]}",
            id="mlflow-records",
        ),
    ],
)
def test_nan_infinity_and_overflow_are_refused_on_every_protocol(
    http: httpx.Client, cancer, path: str, template: str, value: str
):
    """As on V2 and /predict: a model fed NaN answers nulls, so the request is refused."""
    body = template.replace("ROW", _row_with(value)).replace("VALUE", value)
    answer = http.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]
    ok = http.post(path, json={"instances": cancer[0][:1].tolist()})
    assert ok.status_code == 200  # still serving


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e39"])
def test_nan_infinity_and_overflow_are_refused_in_csv(http: httpx.Client, value: str):
    lines = [",".join(f"f{i}" for i in range(30)), ",".join([value] + ["1.0"] * 29)]
    answer = http.post(
        "/invocations", content="\n".join(lines) + "\n", headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]


def test_mlflow_refuses_other_content_types(http: httpx.Client):
    answer = http.post("/invocations", content=b"x", headers={"content-type": "application/xml"})
    assert answer.status_code == 415
    assert "text/csv" in answer.json()["error"]


def test_mlflow_unknown_deployment_is_404_and_not_ready(http: httpx.Client):
    assert http.get("/mlflow/nope/ping").status_code == 503
    answer = http.post("/mlflow/nope/invocations", json={"instances": [[1.0]]})
    assert answer.status_code == 404
    assert "nope" in answer.json()["error"]


def test_mlflow_root_needs_a_choice_when_several_deployments(http: httpx.Client, registry, server):
    registry.store.create_deployment("cancer-two", "cancer", 2)
    deadline = time.monotonic() + 10
    while len(server.app.repository.deployments) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    answer = http.post("/invocations", json={"instances": [[0.0] * 30]})
    assert answer.status_code == 400
    assert "SLIPWAY_SCORING_DEPLOYMENT" in answer.json()["error"]


def test_mlflow_root_serves_the_configured_deployment(tmp_path, registry, cancer, cancer_models):
    x, _ = cancer
    registry.store.create_deployment("cancer-two", "cancer", 2)
    settings = Settings.from_env(
        {"SLIPWAY_HOME": str(registry.settings.home), "SLIPWAY_SCORING_DEPLOYMENT": "cancer-two"},
        port=0,
    )
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/invocations", json={"instances": x[:20].tolist()})
    assert answer.json()["predictions"] == cancer_models[1].predict(x[:20]).tolist()


def test_kserve_v1_predict(http: httpx.Client, cancer, cancer_models):
    x, _ = cancer
    assert http.get("/v1/models/cancer-prod").json() == {"name": "cancer-prod", "ready": True}
    answer = http.post("/v1/models/cancer-prod:predict", json={"instances": x[:8].tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": _expected(cancer_models, x[:8])}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        pytest.param("/v1/models/nope:predict", {"instances": [[1.0]]}, 404, id="unknown-model"),
        pytest.param("/v1/models/cancer-prod:predict", {"instances": "x"}, 400, id="not-a-list"),
        pytest.param("/v1/models/cancer-prod:explain", {"instances": [[1.0]]}, 404, id="verb"),
        pytest.param("/v1/models/cancer-prod:predict", {"instances": [[1.0]]}, 400, id="width"),
    ],
)
def test_kserve_v1_errors(http: httpx.Client, path, body, status):
    answer = http.post(path, json=body)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_row_limit_applies_to_every_protocol(tmp_path, registry, cancer):
    x, _ = cancer
    settings = Settings.from_env({"SLIPWAY_HOME": str(registry.settings.home)}, port=0, max_rows=3)
    rows = x[:4].tolist()
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        v2 = http.post(
            "/v2/models/cancer-prod/infer",
            json={
                "inputs": [{"name": "input", "shape": [4, 30], "datatype": "FP32", "data": rows}]
            },
        )
        v1 = http.post("/v1/models/cancer-prod:predict", json={"instances": rows})
        mlflow = http.post("/invocations", json={"dataframe_split": {"data": rows}})
        ok = http.post("/v1/models/cancer-prod:predict", json={"instances": rows[:3]})
    assert v2.status_code == v1.status_code == mlflow.status_code == 413
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("deployment", "rows", "fragment"),
    [
        pytest.param("flags-prod", [["false", "true"]], "true or false", id="bool-from-strings"),
        pytest.param("flags-prod", [[2, 0]], "true or false", id="bool-from-numbers"),
        pytest.param("small-prod", [[1.5, 2]], "whole numbers", id="fraction-in-int8"),
        pytest.param("small-prod", [[1000, 2]], "INT8", id="wraps-in-int8"),
    ],
)
def test_bool_and_integer_inputs_take_only_their_own_values(
    identity_server, deployment: str, rows: list, fragment: str
):
    """As on V2: numpy read "false" as True and truncated 1.5 to 1, served with 200."""
    with httpx.Client(base_url=identity_server.url, timeout=10) as http:
        for path, body in [
            (f"/v1/models/{deployment}:predict", {"instances": rows}),
            (f"/mlflow/{deployment}/invocations", {"dataframe_split": {"data": rows}}),
            (f"/mlflow/{deployment}/invocations", {"inputs": {"x": rows}}),
        ]:
            answer = http.post(path, json=body)
            assert answer.status_code == 400, (path, answer.text)
            assert fragment in answer.json()["error"], (path, answer.text)


def test_csv_booleans_and_whole_numbers_are_read_as_such(identity_server):
    with httpx.Client(base_url=identity_server.url, timeout=10) as http:
        flags = http.post(
            "/mlflow/flags-prod/invocations",
            content="a,b\nfalse,TRUE\nTrue,False\n",
            headers={"content-type": "text/csv"},
        )
        assert flags.status_code == 200, flags.text
        assert flags.json() == {"predictions": [[False, True], [True, False]]}
        small = http.post(
            "/mlflow/small-prod/invocations",
            content="a,b\n1,-2\n3,4.5\n",
            headers={"content-type": "text/csv"},
        )
        assert small.status_code == 400 and "whole numbers" in small.json()["error"]
        ok = http.post("/v1/models/small-prod:predict", json={"instances": [[1, -2], [3.0, 4]]})
        assert ok.json() == {"predictions": [[1, -2], [3, 4]]}


@pytest.mark.parametrize("value", [None, {"a": 1}, [1]])
def test_text_inputs_refuse_null_objects_and_lists(identity_server, value):
    """They reached the model as Python's text of them ("None")."""
    with httpx.Client(base_url=identity_server.url, timeout=10) as http:
        for path, body in [
            ("/v1/models/text-prod:predict", {"instances": [[value, "a"]]}),
            ("/mlflow/text-prod/invocations", {"dataframe_records": [{"a": value, "b": "a"}]}),
            ("/mlflow/text-prod/invocations", {"inputs": {"x": [[value, "a"]]}}),
            ("/predict/text-prod", {"instances": [[value, "a"]]}),
        ]:
            answer = http.post(path, json=body)
            assert answer.status_code == 400, (path, answer.text)
            assert "BYTES" in answer.json()["error"], (path, answer.text)
        ok = http.post("/v1/models/text-prod:predict", json={"instances": [["é", "a"]]})
        assert ok.json() == {"predictions": [["é", "a"]]}
        csv = http.post(
            "/mlflow/text-prod/invocations",
            content="a,b\n12,x\n",
            headers={"content-type": "text/csv"},
        )
        assert csv.status_code == 200, csv.text
