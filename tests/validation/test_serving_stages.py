"""Integration, performance and shadow stages through a real server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path

from slipway.local import Registry
from slipway.packaging.hooks import load_hooks
from slipway.validation.holdout import Holdout
from slipway.validation.pipeline import Serve, Validation
from slipway.validation.policy import parse_policy

ONLY_SERVING = "contract: null\nquality: null\n"


def run(registry: Registry, version: int, holdout: Holdout, serve: Serve, text: str, **kw):
    return Validation(
        store=registry.store,
        artifacts=registry.artifacts,
        candidate=registry.store.get_version("cancer", version),
        holdout=holdout,
        policy=parse_policy(text),
        serve=serve,
        **kw,
    ).run()


def handler(tmp_path: Path, code: str):
    path = tmp_path / "handler.py"
    path.write_text("import numpy as np\nimport time\n\n" + code)
    return load_hooks(path, name=f"handler_{abs(hash(code))}")


def test_served_answers_equal_the_runtimes_and_hooks_may_add_outputs(
    registry, holdout, serve, tmp_path
):
    hooks = handler(
        tmp_path,
        "def postprocess(outputs):\n"
        "    return {**outputs, 'risk': outputs['probabilities'][:, 1:] * 100}\n",
    )
    report = run(registry, 1, holdout, serve, ONLY_SERVING, hooks=hooks)
    [integration] = report.stages
    assert integration.passed, integration.checks
    assert [c.value for c in integration.checks] == [holdout.rows, holdout.rows]


def test_a_postprocess_hook_that_corrupts_outputs_fails_integration(
    registry, holdout, serve, tmp_path
):
    hooks = handler(
        tmp_path,
        "def postprocess(outputs):\n"
        "    label = outputs['label'].copy()\n"
        "    label[::7] = 1 - label[::7]\n"
        "    return {**outputs, 'label': label}\n",
    )
    report = run(registry, 1, holdout, serve, ONLY_SERVING, hooks=hooks)
    [integration] = report.stages
    assert [c.verdict for c in integration.checks] == ["fail", "fail"]
    assert "rows differ" in integration.checks[0].detail
    assert report.failed_required() == [
        "integration: v2 answers equal the runtime's",
        "integration: predict answers equal the runtime's",
    ]


PERFORMANCE = (
    ONLY_SERVING
    + """integration: null
performance:
  rates: [10]
  duration_s: 2
  sla: {p95_ms: 180, error_rate: 0}
"""
)


def test_a_candidate_slower_than_the_sla_fails_the_performance_gate(
    registry, holdout, serve, tmp_path
):
    fast = run(registry, 1, holdout, serve, PERFORMANCE)
    assert fast.passed, fast.stages[0].checks
    # The same model made slow for real: its preprocess hook takes 200 ms per request.
    slow_hooks = handler(
        tmp_path, "def preprocess(request):\n    time.sleep(0.2)\n    return request\n"
    )
    slow = run(registry, 1, holdout, serve, PERFORMANCE, hooks=slow_hooks)
    checks = {c.name: c for c in slow.stages[0].checks}
    assert checks["p95 latency ms @10/s"].verdict == "fail"
    assert float(checks["p95 latency ms @10/s"].value) >= 200
    assert slow.stages[0].data["runs"][0]["sent"] == 20


def write_requests(path: Path, holdout: Holdout, rows: int = 60) -> Path:
    with path.open("w") as handle:
        for i in range(0, rows, 3):
            handle.write(json.dumps({"instances": holdout.features[i : i + 3].tolist()}) + "\n")
    return path


def test_a_candidate_that_disagrees_with_production_fails_the_shadow_gate(
    registry, holdout, serve, tmp_path
):
    write_requests(tmp_path / "requests.jsonl", holdout, rows=holdout.rows)
    text = ONLY_SERVING + (
        "integration: null\nagainst: cancer-prod\n"
        "shadow: {requests: requests.jsonl, min_agreement: 0.99}\n"
    )
    same = run(registry, 3, holdout, serve, text, base_dir=tmp_path)
    assert same.passed, same.stages[0].checks
    assert {c.name: c.value for c in same.stages[0].checks}["agreement"] == 1.0
    different = run(registry, 2, holdout, serve, text, base_dir=tmp_path)
    checks = {c.name: c for c in different.stages[0].checks}
    assert checks["agreement"].verdict == "fail"
    assert 0.5 < float(checks["agreement"].value) < 0.99
    assert different.stages[0].data["diffs"]


def test_shadow_replays_production_requests_from_the_audit_log(registry, holdout, serve):
    import httpx

    from slipway.registry.records import InferencePolicy
    from slipway.server import BackgroundServer
    from slipway.validation.wire import v2_body

    registry.store.update_deployment("cancer-prod", inference=InferencePolicy(payload="full"))
    rows = holdout.features.astype("float32")
    with (
        BackgroundServer(registry.settings) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        while client.get("/v2/models/cancer-prod/ready").status_code != 200:
            time.sleep(0.05)
        for i in range(0, 60, 6):  # production traffic on both routes
            part = rows[i : i + 6]
            assert client.post("/predict/cancer-prod", json={"instances": part.tolist()}).is_success
            assert client.post(
                "/v2/models/cancer-prod/infer",
                content=v2_body({"input": part}),
                headers={"content-type": "application/json"},
            ).is_success
    text = ONLY_SERVING + (
        "integration: null\nagainst: cancer-prod\nshadow: {requests: audit, min_agreement: 0.99}\n"
    )
    different = run(registry, 2, holdout, serve, text)
    [shadow] = different.stages
    assert shadow.data["requests"] == 20 and shadow.data["source"] == "audit log of cancer-prod"
    checks = {c.name: c for c in shadow.checks}
    assert checks["request errors"].verdict == "pass"
    assert checks["agreement"].verdict == "fail"
    same = run(registry, 3, holdout, serve, text)
    assert same.passed, same.stages[0].checks


def test_shadow_agreement_of_a_regression_model_is_not_a_vacuous_pass(tmp_path: Path) -> None:
    """A regressor answers scores, no classes: "0 of 0 rows same class" is no evidence, so the
    agreement check says so (info) and the score difference decides."""
    import httpx
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression, Ridge

    from slipway.server import BackgroundServer
    from slipway.settings import Settings
    from slipway.validation.policy import ShadowPolicy
    from slipway.validation.replay import replay

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    settings = Settings.from_env({"SLIPWAY_HOME": str(tmp_path / "home")}, port=0)
    with Registry(settings) as registry:
        registry.register_sklearn("sugar", LinearRegression().fit(x, y), x)
        registry.register_sklearn("sugar", Ridge(alpha=10.0).fit(x, y), x)  # much flatter
        registry.store.create_deployment("sugar-prod", "sugar", 1)
        registry.store.create_deployment("sugar-next", "sugar", 2)
        requests = [{"instances": x[i : i + 5].tolist()} for i in range(0, 50, 5)]
        policy = ShadowPolicy(requests="requests.jsonl", min_agreement=0.99, max_mean_diff=5.0)
        with (
            BackgroundServer(settings) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            checks, _ = replay(
                client,
                requests,
                candidate="sugar-next",
                production="sugar-prod",
                output_names=["variable"],
                policy=policy,
            )
    by_name = {c.name: c for c in checks}
    assert by_name["agreement"].verdict == "info", by_name["agreement"]
    assert "no class outputs" in by_name["agreement"].detail
    assert by_name["mean score difference"].verdict == "fail"  # the flatter model differs


def test_shadow_replays_v2_requests_to_versions_that_name_their_input_differently(
    registry, estimators, split, holdout, serve, tmp_path
):
    """Production cancer@1 names its input "input"; the candidate, exported elsewhere, "X". A
    recorded V2 request names one of them: each side gets it under its own input's name."""
    from skl2onnx import to_onnx

    from slipway.validation.wire import v2_body

    path = tmp_path / "exported.onnx"
    exported = to_onnx(estimators[0], split[0][:1], options={"zipmap": False}, target_opset=17)
    path.write_bytes(exported.SerializeToString())
    candidate = registry.register_onnx("cancer", path, reference=split[0])
    assert [s.name for s in candidate.signature.inputs] == ["X"]
    rows = holdout.features[:30].astype("float32")
    with (tmp_path / "requests.jsonl").open("w") as handle:
        for i in range(0, 30, 3):
            handle.write(v2_body({"input": rows[i : i + 3]}).decode() + "\n")
    text = ONLY_SERVING + (
        "integration: null\nagainst: cancer-prod\n"
        "shadow: {requests: requests.jsonl, min_agreement: 0.99}\n"
    )
    report = run(registry, candidate.number, holdout, serve, text, base_dir=tmp_path)
    checks = {c.name: c for c in report.stages[0].checks}
    assert checks["request errors"].value == 0, checks["request errors"]
    assert checks["agreement"].verdict == "pass" and checks["agreement"].value == 1.0


def test_shadow_refuses_versions_whose_inputs_cannot_be_matched(registry, holdout, serve, tmp_path):
    """A candidate taking two inputs, against production's one: no recorded request can reach
    both, so the stage fails saying why rather than counting every request as an error."""
    import onnx
    from onnx import TensorProto, helper

    from slipway.validation.wire import v2_body

    weights = helper.make_tensor("w", TensorProto.FLOAT, [30, 1], [0.01] * 30)
    graph = helper.make_graph(
        [
            helper.make_node("Concat", ["left", "right"], ["both"], axis=1),
            helper.make_node("MatMul", ["both", "w"], ["score"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("left", TensorProto.FLOAT, [None, 15]),
            helper.make_tensor_value_info("right", TensorProto.FLOAT, [None, 15]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "two.onnx"
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(model)
    candidate = registry.register_onnx("cancer", path)
    rows = holdout.features[:6].astype("float32")
    (tmp_path / "requests.jsonl").write_text(v2_body({"input": rows}).decode() + "\n")
    text = (
        ONLY_SERVING
        + "integration: null\nagainst: cancer-prod\nshadow: {requests: requests.jsonl}\n"
    )
    report = run(registry, candidate.number, holdout, serve, text, base_dir=tmp_path)
    [shadow] = report.stages
    assert not shadow.passed
    checks = {c.name: c for c in shadow.checks}
    assert checks["input names"].verdict == "fail"
    assert "left, right" in checks["input names"].detail
    assert "input" in checks["input names"].detail
