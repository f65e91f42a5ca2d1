"""Blue-green switch and hold, and the promotion gates a rollout sets for itself."""

from __future__ import annotations

import time

import httpx
import pytest

from slipway.local import Registry
from slipway.validation.checks import Check, Report, StageResult
from slipway.validation.reports import save_report

from .conftest import predict_version, rollout_settings, rows, start_server, wait_for


def _status(http: httpx.Client) -> dict:
    return http.get("/api/deployments/cancer-prod/rollout").json()


def test_bluegreen_switches_at_once_and_holds_blue_for_an_instant_switch_back(
    registry: Registry, cancer
) -> None:
    server, loads = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            x = rows(cancer)
            body = {"version": 2, "strategy": "bluegreen", "hold_s": 3600}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            assert [predict_version(http, x) for _ in range(10)] == [1] * 10  # green is warm only
            switched = http.post("/api/deployments/cancer-prod/rollout/promote", json={})
            assert switched.status_code == 200, switched.text
            assert switched.json()["status"] == "running" and switched.json()["step"] == 1
            assert [predict_version(http, x) for _ in range(10)] == [2] * 10
            status = _status(http)
            assert status["events"][0]["kind"] == "switched"
            time.sleep(0.6)  # controller ticks: the hold keeps the rollout open
            assert _status(http)["rollout"]["status"] == "running"
            loaded = loads.count
            back = http.post("/api/deployments/cancer-prod/rollout/abort", json={})
            assert back.status_code == 200, back.text
            assert [predict_version(http, x) for _ in range(10)] == [1] * 10
            assert loads.count == loaded  # blue was still warm: no load
            assert http.get("/api/deployments/cancer-prod").json()["version"] == 1
            # A short hold: the controller closes the rollout as promoted once it has passed.
            body = {"version": 2, "strategy": "bluegreen", "hold_s": 0.5}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            http.post("/api/deployments/cancer-prod/rollout/promote", json={}).raise_for_status()
            wait_for(lambda: _status(http)["rollout"]["status"] == "promoted", what="hold end")
            assert predict_version(http, x) == 2
    finally:
        server.stop()


def test_a_holding_bluegreen_reports_the_weights_it_serves(registry: Registry, cancer) -> None:
    """After the switch green serves everything; the status said blue 100%, green 0%."""
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "strategy": "bluegreen", "hold_s": 3600}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            assert _status(http)["weights"] == {"1": 100.0, "2": 0.0}
            switched = http.post("/api/deployments/cancer-prod/rollout/promote", json={}).json()
            assert (switched["step"], switched["weight"]) == (1, 100.0)
            assert [predict_version(http, rows(cancer)) for _ in range(10)] == [2] * 10
            status = _status(http)
            assert status["weights"] == {"1": 0.0, "2": 100.0}
            assert status["events"][0]["data"]["weight"] == 100.0
            http.post("/api/deployments/cancer-prod/rollout/abort", json={}).raise_for_status()
            assert _status(http)["weights"] == {"1": 100.0}
    finally:
        server.stop()


def test_a_bluegreen_switch_can_require_a_passing_validation_report(
    registry: Registry, cancer
) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "strategy": "bluegreen", "require_validation": True}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            refused = http.post("/api/deployments/cancer-prod/rollout/promote", json={})
            assert refused.status_code == 409
            assert "no validation report" in refused.json()["error"]
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ")
            gate = Check("accuracy", 0.61, ">= 0.9", "fail")
            failing = Report(
                "cancer", 2, "default", None, now, [StageResult("quality", True, [gate])]
            )
            assert not save_report(registry.store, failing, "<html></html>").passed
            refused = http.post("/api/deployments/cancer-prod/rollout/promote", json={})
            assert refused.status_code == 409 and "failed" in refused.json()["error"]
            gate = Check("accuracy", 0.95, ">= 0.9", "pass")
            passing = Report(
                "cancer", 2, "default", None, now, [StageResult("quality", True, [gate])]
            )
            assert save_report(registry.store, passing, "<html></html>").passed
            assert http.post("/api/deployments/cancer-prod/rollout/promote", json={}).is_success
            assert predict_version(http, rows(cancer)) == 2
    finally:
        server.stop()


def test_a_shadow_is_promoted_only_on_enough_agreeing_evidence(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            x, _ = cancer
            body = {
                "version": 2,
                "strategy": "shadow",
                "min_shadow_agreement": 0.8,
                "min_shadow_samples": 40,
            }
            started = http.post("/api/deployments/cancer-prod/rollout", json=body)
            assert started.status_code == 201, started.text
            early = http.post("/api/deployments/cancer-prod/rollout/promote", json={})
            assert early.status_code == 409 and "compared 0 requests" in early.json()["error"]
            for i in range(60):
                http.post("/predict/cancer-prod", json={"instances": [x[i].tolist()]})
            wait_for(
                lambda: (_status(http).get("shadow") or {}).get("mirrored", 0) >= 40,
                what="shadow comparisons",
            )
            promoted = http.post("/api/deployments/cancer-prod/rollout/promote", json={})
            assert promoted.status_code == 200, promoted.text
            assert predict_version(http, rows(cancer)) == 2
    finally:
        server.stop()


def test_an_agreement_gate_on_a_model_that_answers_scores_only_is_refused_at_start(
    tmp_path,
) -> None:
    """Agreement counts rows of the same class; a regressor has none, so the gate could never
    be met and the rollout would sit blocked. It is refused when the rollout starts."""
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression, Ridge

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    with Registry(rollout_settings(tmp_path / "home")) as registry:
        registry.register_sklearn("sugar", LinearRegression().fit(x, y), x)
        registry.register_sklearn("sugar", Ridge().fit(x, y), x)
        registry.store.create_deployment("sugar-prod", "sugar", 1)
        server, _ = start_server(registry)
        try:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                body = {"version": 2, "strategy": "shadow", "min_shadow_agreement": 0.9}
                refused = http.post("/api/deployments/sugar-prod/rollout", json=body)
                assert refused.status_code == 400, refused.text
                assert "answers scores only" in refused.json()["error"]
                del body["min_shadow_agreement"]
                started = http.post("/api/deployments/sugar-prod/rollout", json=body)
                assert started.status_code == 201, started.text
        finally:
            server.stop()


def test_gate_settings_are_checked(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for body, message in [
                ({"version": 2, "strategy": "canary", "hold_s": 5}, "bluegreen"),
                ({"version": 2, "strategy": "bluegreen", "hold_s": -1}, "hold_s"),
                ({"version": 2, "strategy": "canary", "min_shadow_agreement": 0.9}, "shadow"),
                ({"version": 2, "strategy": "shadow", "min_shadow_agreement": 2}, "[0, 1]"),
                # With 0 a check judged no evidence at all (and the output one crashed the
                # controller for every rollout): each needs at least one sample.
                ({"version": 2, "gates": {"min_output_samples": 0}}, "min_output_samples"),
                ({"version": 2, "gates": {"min_input_samples": 0}}, "min_input_samples"),
                ({"version": 2, "gates": {"min_feedback": 0}}, "min_feedback"),
                ({"version": 2, "steps": [5, 5, 50]}, "increasing"),
            ]:
                answer = http.post("/api/deployments/cancer-prod/rollout", json=body)
                assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    finally:
        server.stop()


@pytest.mark.parametrize("rows", [1, 3, 40])  # 40 rows x 2 columns takes the numpy path
def test_shadow_comparison_of_small_and_large_answers(rows: int) -> None:
    import numpy as np

    from slipway.rollout.shadow import compare_outputs

    rng = np.random.default_rng(rows)
    labels = rng.integers(0, 3, rows)
    probabilities = rng.random((rows, 2)).astype(np.float32)
    names = np.array(["a", "b"])[rng.integers(0, 2, rows)]
    other_labels = labels.copy()
    other_labels[0] = (labels[0] + 1) % 3  # the first row disagrees
    other_probabilities = probabilities + rng.normal(0, 0.01, (rows, 2))  # float64 now
    if rows > 1:
        other_probabilities[1, 0] = np.nan
    primary = {"label": labels, "probabilities": probabilities, "name": names}
    shadow = {"label": other_labels, "probabilities": other_probabilities, "name": names.copy()}
    class_rows, agree, diffs = compare_outputs(primary, shadow)
    assert class_rows == 2 * rows and agree == 2 * rows - 1
    expected = np.abs(probabilities.astype(np.float64) - other_probabilities).max(axis=1)
    assert len(diffs) == rows
    np.testing.assert_allclose(diffs, expected)  # NaN where the shadow answered NaN
    assert compare_outputs({"x": np.zeros((0, 2))}, {"x": np.zeros((0, 2))}) == (0, 0, [])
    longer = np.concatenate([labels, labels])
    assert compare_outputs({"x": labels}, {"x": longer}) == (0, 0, [])  # shapes differ


def test_mirrored_requests_waiting_together_share_a_model_call() -> None:
    """Jobs queued at once go to the shadow in one call; each is compared on its own rows."""
    import asyncio

    import numpy as np

    from slipway.rollout.shadow import ShadowMirror, ShadowStats, report

    calls: list[int] = []
    stats = ShadowStats()

    async def shadow(deployment: str, version: int, inputs, timeout_s: float):
        calls.append(len(inputs["x"]))
        x = inputs["x"]
        return {"label": (x[:, 0] > 0).astype(np.int64), "score": x[:, 0] * 0.5}

    async def scenario() -> None:
        mirror = ShadowMirror(shadow, lambda rollout, version: stats, workers=1)
        mirror.start()
        for i in range(10):
            x = np.array([[float(i - 4)]] * (1 + i % 2))  # 1 or 2 rows; i - 4 > 0 for i >= 5
            primary = {"label": np.ones(len(x), dtype=np.int64), "score": x[:, 0] * 0.5}
            mirror.offer("d", 1, 2, 1.0, {"x": x}, primary, 0.001, segment=f"s{i % 2}")
        while stats.rows < 15:
            await asyncio.sleep(0.01)
        await mirror.stop()

    asyncio.run(scenario())
    assert calls == [15]  # one call for ten requests
    summary = report(stats)
    assert (summary.mirrored, stats.rows, stats.class_rows) == (10, 15, 15)
    assert stats.agree == 2 + 1 + 2 + 1 + 2  # the rows of requests 5..9 agree
    assert summary.diff_max == 0.0
    assert summary.segments == {"s0": 2 / 5, "s1": 6 / 10}


def test_a_group_is_counted_as_its_requests_would_be_one_by_one() -> None:
    """The grouped comparison (one pass over every row) gives the counts the per-request one
    gives; requests whose inputs do not fit together each get a model call of their own."""
    import asyncio

    import numpy as np

    from slipway.rollout.shadow import ShadowMirror, ShadowStats, compare_outputs

    rng = np.random.default_rng(7)
    calls: list[int] = []
    grouped = ShadowStats()
    jobs = []
    for i in range(12):
        rows = 1 + i % 3
        x = rng.normal(size=(rows, 3))
        primary = {
            "label": (x[:, 0] > 0).astype(np.int64),
            "pair": np.stack([x[:, 1] > 0, x[:, 2] > 0], axis=1),  # a class output per row pair
            "score": x[:, :2].astype(np.float32),
        }
        jobs.append((x, primary, f"s{i % 4}" if i % 5 else None))

    def answer(x: np.ndarray) -> dict[str, np.ndarray]:
        score = x[:, :2] + 0.01
        score[x[:, 2] > 0.8] = np.nan  # some rows answered NaN
        return {
            "label": (x[:, 0] > 0.2).astype(np.int64),
            "pair": np.stack([x[:, 1] > 0, x[:, 2] > 0.1], axis=1),
            "score": score,
        }

    async def shadow(deployment: str, version: int, inputs, timeout_s: float):
        calls.append(len(inputs["x"]))
        return answer(inputs["x"])

    async def scenario() -> None:
        mirror = ShadowMirror(shadow, lambda rollout, version: grouped, workers=1)
        mirror.start()
        for x, primary, segment in jobs:
            mirror.offer("d", 1, 2, 1.0, {"x": x}, primary, 0.001, segment=segment)
        odd = np.zeros((1, 4))  # another width: cannot join the others
        mirror.offer("d", 1, 2, 1.0, {"x": odd}, {"label": np.zeros(1, np.int64)}, 0.001)
        while grouped.rows < 25:
            await asyncio.sleep(0.01)
        await mirror.stop()

    asyncio.run(scenario())
    assert grouped.errors == grouped.timeouts == 0
    # The odd one out spoilt the group: a call each.
    assert sorted(calls) == sorted([len(x) for x, _, _ in jobs] + [1])
    expected = ShadowStats()
    for x, primary, segment in [*jobs, (np.zeros((1, 4)), {"label": np.zeros(1, np.int64)}, None)]:
        class_rows, agree, diffs = compare_outputs(primary, answer(x))
        expected.rows += len(x)
        expected.class_rows += class_rows
        expected.agree += agree
        expected.diffs.extend(diffs)
        if segment is not None:
            have = expected.segments.setdefault(segment, [0, 0])
            have[0] += class_rows
            have[1] += agree
    assert (grouped.rows, grouped.class_rows, grouped.agree) == (
        expected.rows, expected.class_rows, expected.agree,
    )  # fmt: skip
    assert grouped.segments == expected.segments
    np.testing.assert_allclose(np.sort(grouped.diffs), np.sort(expected.diffs))

    # Without the odd one the twelve share one call and count the same.
    calls.clear()
    grouped = ShadowStats()

    async def together() -> None:
        mirror = ShadowMirror(shadow, lambda rollout, version: grouped, workers=1)
        mirror.start()
        for x, primary, segment in jobs:
            mirror.offer("d", 1, 2, 1.0, {"x": x}, primary, 0.001, segment=segment)
        while grouped.rows < 24:
            await asyncio.sleep(0.01)
        await mirror.stop()

    asyncio.run(together())
    assert calls == [24]
    assert (grouped.rows, grouped.class_rows, grouped.agree) == (
        24, expected.class_rows - 1, expected.agree - 1,
    )  # fmt: skip
    assert grouped.segments == expected.segments
    np.testing.assert_allclose(np.sort(grouped.diffs), np.sort(expected.diffs))
