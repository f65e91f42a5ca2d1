"""The plain JSON endpoint."""

from __future__ import annotations


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
