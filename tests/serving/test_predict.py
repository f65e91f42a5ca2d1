"""The plain JSON endpoint."""

from __future__ import annotations

import httpx
import numpy as np


def test_predict_rows(http, cancer, cancer_models) -> None:
    x, _ = cancer
    response = http.post("/predict/cancer-prod", json={"instances": x[:4].tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["model"] == "cancer" and body["version"] == 1 and body["deployment"] == "cancer-prod"
    )
    assert body["predictions"] == cancer_models[0].predict(x[:4]).tolist()
    assert len(body["outputs"]["probabilities"]) == 4


def test_predict_feature_dicts(http, cancer, cancer_models) -> None:
    x, _ = cancer
    rows = [{f"f{i}": float(v) for i, v in enumerate(row)} for row in x[:2]]
    response = http.post("/predict/cancer-prod", json={"instances": rows})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == cancer_models[0].predict(x[:2]).tolist()


def test_predict_bad_input(http) -> None:
    for body, status in [
        ({"rows": []}, 400),
        ({"instances": []}, 400),
        ({"instances": [[1, 2, 3]]}, 400),
        ({"instances": [[1, 2], [1]]}, 400),
        ({"instances": [["a"] * 30]}, 400),
    ]:
        response = http.post("/predict/cancer-prod", json=body)
        assert response.status_code == status, (body, response.text)
        assert "error" in response.json()
    assert http.post("/predict/ghost", json={"instances": [[1.0]]}).status_code == 404


def test_predict_feature_dicts_are_matched_to_registered_feature_names(
    http, cancer, cancer_models
) -> None:
    """Registered feature names (x0..x29 here) decide the column order, not the order in which
    a client's JSON object happens to list them; as on KServe V1 and MLflow."""
    x, _ = cancer
    rows = x[:5]
    reordered = [{f"x{i}": float(row[i]) for i in reversed(range(30))} for row in rows]
    response = http.post("/predict/cancer-prod", json={"instances": reordered})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == cancer_models[0].predict(rows).tolist()
    np.testing.assert_allclose(
        response.json()["outputs"]["probabilities"],
        cancer_models[0].predict_proba(rows),
        atol=1e-4,
    )


def test_predict_rows_mixing_objects_and_lists_get_a_clear_400(http, cancer) -> None:
    row = cancer[0][0].tolist()
    first = {f"x{i}": v for i, v in enumerate(row)}
    for path in ("/predict/cancer-prod", "/v1/models/cancer-prod:predict"):
        response = http.post(path, json={"instances": [first, row]})
        assert response.status_code == 400, response.text
        assert "object" in response.json()["error"], response.text
        assert "list indices" not in response.json()["error"]


def test_predict_rows_with_a_field_the_first_row_lacks_get_a_clear_400(http, cancer) -> None:
    rows = [{f"x{i}": float(v) for i, v in enumerate(row)} for row in cancer[0][:2]]
    rows[1]["x30"] = 1.0  # dropped without a word before
    for path in ("/predict/cancer-prod", "/v1/models/cancer-prod:predict"):
        response = http.post(path, json={"instances": rows})
        assert response.status_code == 400, response.text
        assert "'x30' is not in the first row" in response.json()["error"], response.text


def test_kserve_v1_inputs_that_are_not_a_list_are_named_as_sent(http) -> None:
    response = http.post("/v1/models/cancer-prod:predict", json={"inputs": {"x0": [1.0]}})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == 'expected {"inputs": [...]}: a list of rows'


def test_predict_max_tokens_for_a_model_without_it_says_so(http, cancer) -> None:
    body = {"instances": cancer[0][:1].tolist(), "max_tokens": 3}
    response = http.post("/predict/cancer-prod", json=body)
    assert response.status_code == 400, response.text
    assert "takes no parameter 'max_tokens'" in response.json()["error"]


def test_predict_overflow_is_not_called_unequal_rows(http) -> None:
    response = http.post("/predict/cancer-prod", json={"instances": [[1e39] * 30]})
    assert response.status_code == 400, response.text
    assert "range" in response.json()["error"], response.text


def test_predict_bool_and_integer_inputs_take_only_their_own_values(identity_server) -> None:
    with httpx.Client(base_url=identity_server.url, timeout=10) as http:
        for deployment, rows, fragment in [
            ("flags-prod", [["false", "true"]], "true or false"),
            ("small-prod", [[1.5, 2]], "whole numbers"),
            ("small-prod", [[1000, 2]], "INT8"),
        ]:
            response = http.post(f"/predict/{deployment}", json={"instances": rows})
            assert response.status_code == 400, (deployment, rows, response.text)
            assert fragment in response.json()["error"], response.text
        ok = http.post("/predict/flags-prod", json={"instances": [[False, True]]})
        assert ok.json()["predictions"] == [[False, True]]
