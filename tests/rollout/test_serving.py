"""Rollouts through a real server: rollback, canary, shadow, A/B with feedback."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np

from slipway.local import Registry
from slipway.registry.store import SqlStore
from slipway.rollout.experiment import two_proportion_ztest
from slipway.rollout.state import RolloutStore

from .conftest import predict_version, raises, rows, sleeps, start_server, wait_for

FAST_GATES = {"min_samples": 30, "min_output_samples": 20, "max_output_psi": None}


def test_rollback_switches_without_loading_a_model(registry: Registry, cancer) -> None:
    server, loads = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            x = rows(cancer)
            assert predict_version(http, x) == 1
            http.patch("/api/deployments/cancer-prod", json={"version": 2}).raise_for_status()
            wait_for(lambda: predict_version(http, x) == 2, what="version 2 serving")
            loaded = loads.count
            assert loaded == 2  # 1 and 2, each once
            response = http.post("/api/deployments/cancer-prod/rollback", json={})
            assert response.status_code == 200, response.text
            assert response.json()["version"] == 1
            # The replica that took the call switched before answering: the very next request.
            assert [predict_version(http, x) for _ in range(20)] == [1] * 20
            assert loads.count == loaded
            history = http.get(
                "/api/deployments/cancer-prod/history",
                params={"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))},
            ).json()
            assert history["version"] == 1
            bad = http.get("/api/deployments/cancer-prod/history", params={"at": "yesterday"})
            assert bad.status_code == 400 and "ISO 8601" in bad.json()["error"]
    finally:
        server.stop()


def _drive(http: httpx.Client, x: list[list[float]], until, timeout: float = 30.0) -> dict:
    """Send traffic until ``until(status)`` holds; returns the last rollout status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _ in range(20):
            http.post("/predict/cancer-prod", json={"instances": x})
        status = http.get("/api/deployments/cancer-prod/rollout").json()
        if until(status):
            return status
    raise AssertionError(f"rollout did not finish: {status}")


def test_a_failing_canary_is_rolled_back_automatically(registry: Registry, cancer) -> None:
    server, _ = start_server(registry, faults={2: raises})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # The error rate alone must decide: on a busy machine the latency gate could fail
            # first (both answer fast here; noise is all that tells them apart).
            gates = {**FAST_GATES, "max_p99_ratio": None}
            body = {"version": 2, "steps": [30, 60], "interval_s": 0, "gates": gates}
            started = http.post("/api/deployments/cancer-prod/rollout", json=body)
            assert started.status_code == 201, started.text
            status = _drive(http, rows(cancer), lambda s: s["rollout"]["status"] != "running")
            assert status["rollout"]["status"] == "rolled_back"
            failed = {c["name"]: c for c in status["rollout"]["analysis"]["checks"]}
            assert failed["error_rate"]["status"] == "fail"
            assert failed["error_rate"]["value"] > failed["error_rate"]["threshold"]
            assert status["events"][0]["kind"] == "rolled_back"
            # The decision is committed a moment before this replica applies it.
            wait_for(
                lambda: (
                    http.post("/predict/cancer-prod", json={"instances": rows(cancer)})
                    .json()
                    .get("version")
                    == 1
                ),
                what="version 1 serving",
            )
            assert all(predict_version(http, rows(cancer)) == 1 for _ in range(10))
    finally:
        server.stop()


def test_a_slow_canary_is_rolled_back(registry: Registry, cancer) -> None:
    server, _ = start_server(registry, faults={2: sleeps(0.25)})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "steps": [40], "interval_s": 0, "gates": FAST_GATES}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            status = _drive(http, rows(cancer), lambda s: s["rollout"]["status"] != "running")
            assert status["rollout"]["status"] == "rolled_back"
            checks = {c["name"]: c["status"] for c in status["rollout"]["analysis"]["checks"]}
            assert checks["p99_latency"] == "fail"
    finally:
        server.stop()


def test_a_canary_judged_on_drifted_inputs_is_rolled_back(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            gates = {**FAST_GATES, "max_p99_ratio": None, "max_input_psi": 0.25}
            body = {"version": 2, "steps": [40], "interval_s": 0, "gates": gates}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            drifted = (np.asarray(rows(cancer, 10)) * 3.0).tolist()  # far outside training
            status = _drive(http, drifted, lambda s: s["rollout"]["status"] != "running")
            assert status["rollout"]["status"] == "rolled_back"
            checks = {c["name"]: c for c in status["rollout"]["analysis"]["checks"]}
            assert checks["input_drift"]["status"] == "fail"
            assert checks["input_drift"]["value"] > 0.25
            assert checks["error_rate"]["status"] != "fail"  # the inputs alone decided it
    finally:
        server.stop()


def test_a_healthy_canary_is_promoted(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # Latency on a shared test machine is noisy: a generous p99 gate for the healthy one.
            gates = {**FAST_GATES, "max_p99_ratio": 3.0, "p99_slack_ms": 100.0}
            body = {"version": 2, "steps": [20, 50], "interval_s": 0, "gates": gates}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            status = _drive(http, rows(cancer), lambda s: s["rollout"]["status"] != "running")
            assert status["rollout"]["status"] == "promoted", status["rollout"]["analysis"]
            kinds = [e["kind"] for e in status["events"]]
            assert kinds[0] == "promoted" and "advanced" in kinds
            assert http.get("/api/deployments/cancer-prod").json()["version"] == 2
            assert predict_version(http, rows(cancer)) == 2
    finally:
        server.stop()


def test_with_too_few_samples_the_canary_waits(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "steps": [10], "interval_s": 0, "gates": {"min_samples": 10_000}}
            http.post("/api/deployments/cancer-prod/rollout", json=body).raise_for_status()
            for _ in range(60):
                http.post("/predict/cancer-prod", json={"instances": rows(cancer)})
            status = wait_for(
                lambda: (
                    (s := http.get("/api/deployments/cancer-prod/rollout").json())["events"][0][
                        "kind"
                    ]
                    == "waiting"
                    and s
                ),
                what="a waiting decision",
            )
            assert status["rollout"]["status"] == "running"  # type: ignore[index]
            assert status["rollout"]["analysis"]["verdict"] == "wait"  # type: ignore[index]
    finally:
        server.stop()


def _interleaved(http: httpx.Client, x: list[list[float]], n: int) -> dict[str, tuple[list, list]]:
    """Alternate requests to the shadowed deployment and a plain one over the same loaded
    version, so machine noise hits both alike: name → (latencies, answers)."""
    result: dict[str, tuple[list, list]] = {"cancer-prod": ([], []), "cancer-plain": ([], [])}
    for _ in range(n):
        for name, (latencies, answers) in result.items():
            started = time.perf_counter()
            response = http.post(f"/predict/{name}", json={"instances": x})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            answers.append(response.json()["predictions"])
    return result


def test_a_broken_or_slow_shadow_changes_nothing_for_the_caller(registry: Registry, cancer) -> None:
    calls = {"n": 0}

    def flaky(inputs) -> None:  # alternately raises and sleeps past the shadow timeout
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("shadow is broken")
        time.sleep(2.0)

    registry.store.create_deployment("cancer-plain", "cancer", 1)
    server, _ = start_server(
        registry, faults={2: flaky}, shadow_timeout_s=1.0, shadow_queue_size=4, shadow_workers=1
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            x = rows(cancer, 3)
            before = _interleaved(http, x, 20)  # warm up; answers without a shadow
            body = {"version": 2, "strategy": "shadow", "segment_header": "x-region"}
            assert http.post("/api/deployments/cancer-prod/rollout", json=body).status_code == 201
            runs = _interleaved(http, x, 300)
            with_shadow, answers = runs["cancer-prod"]
            without, plain_answers = runs["cancer-plain"]
            assert answers == plain_answers and answers[0] == before["cancer-prod"][1][0]
            p99_without, p99_with = np.quantile(without, 0.99), np.quantile(with_shadow, 0.99)
            assert p99_with <= p99_without * 1.5 + 0.005, (p99_without, p99_with)
            assert calls["n"] > 0
            report = wait_for(
                lambda: (
                    (s := http.get("/api/deployments/cancer-prod/rollout").json())["shadow"][
                        "mirrored"
                    ]
                    >= 300
                    and s["shadow"]["shadow_timeouts"] > 0  # a hung call times out after 1 s
                    and s["shadow"]
                ),
                what="the shadow report",
            )
            assert report["dropped"] > 0, report  # type: ignore[index]
            # Each drop is on the metrics page as it happens (the report's counts are flushed).
            page = http.get("/metrics").text
            line = 'slipway_shadow_dropped_total{deployment="cancer-prod"} '
            counted = float(page.split(line, 1)[1].split("\n", 1)[0])
            assert counted >= report["dropped"], (counted, report)  # type: ignore[index]
            assert report["shadow_errors"] > 0 and report["shadow_timeouts"] > 0  # type: ignore[index]
    finally:
        server.stop()


def test_shadow_comparison_reports_agreement_by_segment(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "strategy": "shadow", "segment_header": "X-Region"}
            http.post("/api/deployments/cancer-prod/rollout", json=body).raise_for_status()
            x, _ = cancer
            for i in range(0, 200, 4):
                region = "eu" if i % 8 else "us"
                http.post(
                    "/predict/cancer-prod",
                    json={"instances": x[i : i + 4].tolist()},
                    headers={"x-region": region},
                ).raise_for_status()
            report = wait_for(
                lambda: (
                    (r := http.get("/api/deployments/cancer-prod/rollout").json()["shadow"])[
                        "agreement"
                    ]
                    is not None
                    and r["mirrored"] == 50
                    and sum(1 for _ in r["segments"]) == 2
                    and r
                ),
                what="the comparison",
            )
            assert 0.8 <= report["agreement"] <= 1.0  # type: ignore[index]
            assert report["diff_max"] is not None and report["diff_max"] < 1  # type: ignore[index]
            assert set(report["segments"]) == {"eu", "us"}  # type: ignore[index]
            assert report["dropped"] == 0 and report["shadow_errors"] == 0  # type: ignore[index]
            # Promoting a shadow makes it stable.
            http.post("/api/deployments/cancer-prod/rollout/promote", json={}).raise_for_status()
            assert predict_version(http, rows(cancer)) == 2
    finally:
        server.stop()


def test_ab_routes_on_a_request_field_on_both_rest_protocols(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            rule = {"field": "tier", "equals": "beta", "arm": "candidate"}
            body = {"version": 2, "strategy": "ab", "weight": 50, "routing_field": "user_id"}
            started = http.post(
                "/api/deployments/cancer-prod/rollout", json={**body, "rules": [rule]}
            )
            assert started.status_code == 201, started.text
            arms = set()
            for user in range(40):
                seen = {
                    http.post(
                        "/predict/cancer-prod",
                        json={"instances": rows(cancer), "user_id": f"u{user}"},
                    ).json()["version"]
                    for _ in range(3)
                }
                assert len(seen) == 1, f"user u{user} saw {seen}"  # sticky on the field
                arms |= seen
            assert arms == {1, 2}
            v2 = {
                "inputs": [
                    {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": rows(cancer)[0]}
                ],
                "parameters": {"tier": "beta"},
            }
            for _ in range(10):  # the rule pins the beta tier to the candidate
                answer = http.post("/v2/models/cancer-prod/infer", json=v2)
                assert answer.status_code == 200, answer.text
                assert answer.json()["model_version"] == "2"
    finally:
        server.stop()


def test_a_header_rule_or_routing_key_with_a_line_break_is_a_400(registry: Registry) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "strategy": "ab", "weight": 50}
            for extra in (
                {"routing_key": "x-user\r\nx-evil"},
                {"rules": [{"header": "x-tier", "equals": "beta\r\n", "arm": "candidate"}]},
            ):
                refused = http.post("/api/deployments/cancer-prod/rollout", json={**body, **extra})
                assert refused.status_code == 400, refused.text
                assert "control characters" in refused.json()["error"]
            assert registry.store.get_deployment("cancer-prod").traffic is None
    finally:
        server.stop()


def test_routing_on_a_field_refuses_a_deeply_nested_body_with_400(
    registry: Registry, cancer
) -> None:
    """The router reads the routing field from the body before the codec does: a body nested
    100,000 deep raised RecursionError there, a 500 instead of the codec's 400."""
    server, _ = start_server(registry)
    deep = "[" * 100_000 + "]" * 100_000
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "strategy": "ab", "weight": 50, "routing_field": "user_id"}
            started = http.post("/api/deployments/cancer-prod/rollout", json=body)
            assert started.status_code == 201, started.text
            for path, text in [
                ("/predict/cancer-prod", '{"instances": ' + deep + "}"),
                ("/predict/cancer-prod", '{"instances": [[1]], "user_id": ' + deep + "}"),
                ("/v2/models/cancer-prod/infer", '{"parameters": {"user_id": ' + deep + "}}"),
            ]:
                answer = http.post(path, content=text, headers={"content-type": "application/json"})
                assert answer.status_code == 400, answer.text
                assert "nested too deeply" in answer.json()["error"]
            ok = http.post("/predict/cancer-prod", json={"instances": rows(cancer), "user_id": "a"})
            assert ok.status_code == 200, ok.text
    finally:
        server.stop()


def test_ab_is_sticky_and_reports_significance_from_feedback(registry: Registry, cancer) -> None:
    server, _ = start_server(registry)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {"version": 2, "strategy": "ab", "weight": 50, "routing_key": "X-User-Id"}
            started = http.post("/api/deployments/cancer-prod/rollout", json=body)
            assert started.status_code == 201, started.text
            rng = np.random.default_rng(5)
            arms: dict[str, int] = {}
            outcomes: dict[int, list[int]] = {1: [], 2: []}
            for user in range(150):
                for _ in range(2):
                    request_id = uuid.uuid4().hex
                    version = predict_version(
                        http, rows(cancer), **{"X-User-Id": f"u{user}", "X-Request-Id": request_id}
                    )
                    assert arms.setdefault(f"u{user}", version) == version  # sticky
                    converted = int(rng.random() < (0.2 if version == 1 else 0.6))
                    outcomes[version].append(converted)
                    response = http.post(
                        "/api/feedback",
                        json={"request_id": request_id, "values": {"converted": converted}},
                    )
                    assert response.status_code == 201, response.text
            assert 0.35 < sum(v == 2 for v in arms.values()) / len(arms) < 0.65
            bad = http.post("/api/feedback", json={"request_id": "x", "values": {"a": "b"}})
            assert bad.status_code == 400
            report = wait_for(
                lambda: (
                    (r := http.get("/api/deployments/cancer-prod/experiment").json())["metrics"]
                    and sum(a["n"] for a in r["metrics"][0]["arms"]) == 300
                    and r
                ),
                what="all feedback joined",
            )
            metric = report["metrics"][0]  # type: ignore[index]
            expected = two_proportion_ztest(
                sum(outcomes[1]), len(outcomes[1]), sum(outcomes[2]), len(outcomes[2])
            )
            assert metric["test"]["p_value"] == expected.p_value
            assert metric["significant"] and metric["winner"] == 2
    finally:
        server.stop()


def test_no_request_is_lost_or_doubled_while_weights_change(registry: Registry, cancer) -> None:
    import concurrent.futures

    server, _ = start_server(registry, evidence_max_request_ids=100_000)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # Gates that wait forever: the weights change only by hand here.
            body = {
                "version": 2,
                "steps": [5, 50, 95],
                "interval_s": 3600,
                "gates": {"min_samples": 10**9, "min_output_samples": 10**9},
            }
            started = http.post("/api/deployments/cancer-prod/rollout", json=body).json()
            # Another process's view of the registry (its own engine) moves the weights.
            other = SqlStore(registry.settings.database_url)
            rollouts = RolloutStore(other)
            x = rows(cancer)

            def client(n: int) -> list[int]:
                with httpx.Client(base_url=server.url, timeout=10) as own:
                    return [
                        own.post("/predict/cancer-prod", json={"instances": x}).status_code
                        for _ in range(n)
                    ]

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(client, 150) for _ in range(4)]
                for step in (1, 2, 0, 1):
                    time.sleep(0.15)
                    rollouts.set_step(started["id"], step)
                codes = [c for f in futures for c in f.result()]
            assert codes == [200] * 600
            arms = wait_for(
                lambda: (
                    (a := rollouts.arm_stats(started["id"]))
                    and sum(s.requests for s in a.values()) >= 600
                    and a
                ),
                what="evidence flushed",
            )
            assert sum(s.requests for s in arms.values()) == 600  # type: ignore[union-attr]
            assert all(s.errors == 0 for s in arms.values())  # type: ignore[union-attr]
            assert set(arms) == {1, 2}  # type: ignore[arg-type]
    finally:
        server.stop()
