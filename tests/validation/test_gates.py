"""Contract and quality gates on real models, and the stored report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slipway.errors import InvalidInput
from slipway.local import Registry
from slipway.validation.holdout import Holdout, read_holdout
from slipway.validation.pipeline import Serve, Validation
from slipway.validation.policy import parse_policy
from slipway.validation.reports import latest_report, list_reports, save_report

GATES = """
name: gates
label: label
against: cancer-prod
integration: null
quality:
  accuracy: {min: 0.8, max_worse: 0.02}
  roc_auc: {min: 0.9}
"""


def run(registry: Registry, version: int, holdout: Holdout, serve: Serve, text: str):
    return Validation(
        store=registry.store,
        artifacts=registry.artifacts,
        candidate=registry.store.get_version("cancer", version),
        holdout=holdout,
        policy=parse_policy(text),
        serve=serve,
    ).run()


def test_a_candidate_worse_than_production_fails_the_relative_gate(registry, holdout, serve):
    report = run(registry, 2, holdout, serve, GATES)
    quality = {s.stage: s for s in report.stages}["quality"]
    verdicts = {c.name: c.verdict for c in quality.checks}
    assert verdicts["accuracy vs production"] == "fail"
    assert verdicts["accuracy"] == "pass"  # above the absolute floor, yet worse than production
    assert not report.passed
    assert report.failed_required() == ["quality: accuracy vs production"]


def test_a_candidate_as_good_as_production_passes(registry, holdout, serve):
    report = run(registry, 3, holdout, serve, GATES)
    assert report.passed, report.failed_required()
    stages = {s.stage: s for s in report.stages}
    metrics = {c.name: c.value for c in stages["quality"].checks}
    assert metrics["accuracy"] > 0.9 and "f1[0]" in metrics and "recall[1]" in metrics
    assert stages["quality"].data["confusion"] and stages["quality"].data["roc"]["fpr"]


def test_contract_refuses_a_holdout_of_the_wrong_width(registry, tmp_path, serve):
    path = tmp_path / "narrow.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n")
    report = run(registry, 1, read_holdout(path, "label"), serve, GATES)
    assert [s.stage for s in report.stages] == ["contract"]
    assert report.failed_required() == ["contract: columns match the signature"]


def test_contract_checks_nan_as_the_policy_declares(registry, holdout, serve):
    features = holdout.features.copy()
    features[0, 3] = np.nan
    holed = Holdout(holdout.columns, features, holdout.labels, [])
    strict = run(registry, 1, holed, serve, GATES)
    assert "contract: rows with NaN/Inf" in strict.failed_required()
    lenient = run(registry, 1, holed, serve, GATES + "contract: {allow_nan: true}\n")
    checks = {c.name: c for c in lenient.stages[0].checks}
    assert "NaN/Inf rows answered with finite outputs" in checks


def test_reports_are_stored_on_the_version_and_attached_as_evidence(registry, holdout, serve):
    from slipway.governance.approvals import list_reports as evidence

    failing = run(registry, 2, holdout, serve, GATES)
    assert latest_report(registry.store, "cancer", 2) is None
    stored = save_report(registry.store, failing, "<html></html>", actor="ci")
    latest = latest_report(registry.store, "cancer", 2)
    assert latest is not None and latest.id == stored.id and not latest.passed
    assert latest.report["stages"][0]["stage"] == "contract"
    assert [r.id for r in list_reports(registry.store, "cancer", 2)] == [stored.id]
    [attached] = evidence(registry.store, "cancer", 2)
    assert (attached.kind, attached.name, attached.passed) == ("validation", "gates", False)
    assert latest_report(registry.store, "cancer", 2, policy="other") is None


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("quality: {accuracy: {minimum: 1}}", "minimum", id="unknown-field"),
        pytest.param("required: [contract, vibes]", "vibes", id="unknown-stage"),
        pytest.param("[1, 2]", "mapping", id="not-a-mapping"),
        pytest.param("a: [", "YAML", id="bad-yaml"),
        # The name is the stored report's and its evidence's: refused before any stage runs.
        pytest.param('name: "promotion policy"', "invalid policy name", id="bad-name"),
        # Numbers outside what a stage can do: refused naming the field, not a traceback or a
        # stage that checks nothing and passes.
        pytest.param("integration: {batch: 0}", "integration.batch", id="batch-zero"),
        pytest.param("integration: {batch: -1}", "integration.batch", id="batch-negative"),
        pytest.param("integration: {rows: -10}", "integration.rows", id="rows-negative"),
        pytest.param("integration: {tolerance: -1}", "integration.tolerance", id="tolerance"),
        pytest.param("contract: {max_out_of_range: 2}", "max_out_of_range", id="fraction"),
        pytest.param("performance: {rates: []}", "performance.rates", id="no-rates"),
        pytest.param("performance: {rates: [0]}", "performance.rates", id="zero-rate"),
        pytest.param("performance: {duration_s: .inf}", "duration_s", id="endless"),
        pytest.param("performance: {timeout_s: 0}", "timeout_s", id="no-timeout"),
        pytest.param("performance: {sla: {error_rate: -1}}", "error_rate", id="error-rate"),
        pytest.param("shadow: {limit: 0}", "shadow.limit", id="no-requests"),
        pytest.param("shadow: {min_agreement: 1.5}", "min_agreement", id="agreement"),
        # A NaN bound failed every candidate, whatever its score; infinity checks nothing.
        pytest.param("quality: {accuracy: {min: .nan}}", "finite.*quality", id="nan-bound"),
        pytest.param("quality: {rmse: {max_worse: .inf}}", "finite.*quality", id="inf-bound"),
    ],
)
def test_malformed_policies_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_policy(text)


def test_a_metric_the_model_lacks_is_refused(registry, holdout, serve):
    report = run(registry, 1, holdout, serve, "integration: null\nquality: {rmse: {max: 1}}")
    quality = report.stages[1]
    assert quality.checks[0].verdict == "fail" and "rmse" in quality.checks[0].detail


def test_a_holdout_without_its_label_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="no label column 'label'"):
        read_holdout(path, "label")


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("a,b,label\n\n\n", "at least one data row", id="only-blank-lines"),
        pytest.param("a,b,label\n1,2,0\n3,4,\n", "1 row has no label", id="empty-label"),
        pytest.param("a,b,label\n1,2, \n3,4,\n", "2 rows have no label", id="blank-labels"),
    ],
)
def test_a_holdout_without_rows_or_labels_is_refused(tmp_path: Path, text, message) -> None:
    path = tmp_path / "h.csv"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message):
        read_holdout(path, "label")


def test_a_holdout_saved_with_a_byte_order_mark_reads_its_first_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("label,a,b\n1,2,3\n0,4,5\n", encoding="utf-8-sig")  # as Excel saves it
    holdout = read_holdout(path, "label")
    assert holdout.columns == ["a", "b"] and holdout.labels.tolist() == [1, 0]


def test_the_approval_rule_reads_the_stored_validation_report(registry, holdout, serve):
    from slipway.governance.approvals import list_reports as evidence
    from slipway.governance.approvals import set_policy
    from slipway.governance.evidence import unmet

    policy = parse_policy(GATES + "approvals: 2\n")
    rule = set_policy(registry.store, "cancer", policy.approval_policy(), actor="ci")
    assert (rule.approvals, rule.require_validation) == (2, True)
    assert unmet(rule, evidence(registry.store, "cancer", 3)) == ["a passing validation report"]
    save_report(registry.store, run(registry, 3, holdout, serve, GATES), "", actor="ci")
    assert unmet(rule, evidence(registry.store, "cancer", 3)) == []
    save_report(registry.store, run(registry, 2, holdout, serve, GATES), "", actor="ci")
    assert unmet(rule, evidence(registry.store, "cancer", 2)) == [
        "validation report 'gates' failed"
    ]


def test_without_against_the_models_production_deployment_is_production(registry, holdout, serve):
    from slipway.governance import approvals

    request = approvals.request_promotion(registry.store, "cancer-prod", "cancer", 1, actor="dora")
    approvals.decide(registry.store, request.id, approve=True, actor="abe")
    registry.store.update_deployment("cancer-prod", production=True, actor="dora")
    report = run(registry, 2, holdout, serve, GATES.replace("against: cancer-prod\n", ""))
    assert report.against == "cancer@1 (deployment cancer-prod)"
    assert report.failed_required() == ["quality: accuracy vs production"]


def test_a_model_with_several_inputs_is_validated_over_v2(registry, tmp_path, serve):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # y = [a0, a1, a2, b] @ w: a [-1, 3] and b [-1] (made [-1, 1]) concatenated.
    weights = np.array([[0.5], [-1.0], [2.0], [3.0]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["b", "axes"], ["b2"]),
            helper.make_node("Concat", ["a", "b2"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    version = registry.register_onnx("sum", path)
    registry.store.create_deployment("sum-prod", "sum", version.number)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    holdout = Holdout(["a0", "a1", "a2", "b"], x.astype(np.float64), x @ weights[:, 0], [])
    policy = "integration: {rows: 60}\nquality:\n  r2: {min: 0.999}\n  rmse: {max: 0.001}\n"
    report = Validation(
        store=registry.store,
        artifacts=registry.artifacts,
        candidate=version,
        holdout=holdout,
        policy=parse_policy(policy),
        serve=serve,
    ).run()
    assert report.passed, report.failed_required()
    stages = {s.stage: {c.name: c for c in s.checks} for s in report.stages}
    assert stages["contract"]["columns match the signature"].verdict == "pass"
    assert stages["integration"]["v2 answers equal the runtime's"].value == 60
    assert stages["integration"]["predict answers equal the runtime's"].verdict == "info"
    wrong = Holdout(["a0", "a1"], x[:, :2].astype(np.float64), x[:, 0], [])
    refused = Validation(
        store=registry.store,
        artifacts=registry.artifacts,
        candidate=version,
        holdout=wrong,
        policy=parse_policy(policy),
        serve=serve,
    ).run()
    assert not refused.passed


@pytest.mark.parametrize(
    "text, where",
    [
        pytest.param("canary: [\n", "line 2, column 1", id="unclosed-list"),
        pytest.param("quality:\n  accuracy: {min: 0.9\nintegration: {}\n", "line 3", id="brace"),
        pytest.param("name: a\n\tlabel: b\n", "line 2", id="tab"),
    ],
)
def test_a_policy_that_is_not_yaml_is_refused_in_one_line_naming_where(text, where) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_policy(text, source="promotion.yaml")
    message = refused.value.message
    assert message.startswith("promotion.yaml is not valid YAML")
    assert where in message and "\n" not in message, message


def test_an_advisory_contract_failure_does_not_skip_the_required_gates(registry, holdout, serve):
    # The holdout fits the signature; only an advisory contract check fails (a few values
    # beyond the training range). The degraded version must still fail the required quality.
    advisory = GATES + "required: [quality]\ncontract: {max_out_of_range: 0.0}\n"
    report = run(registry, 2, holdout, serve, advisory)
    stages = {s.stage: s for s in report.stages}
    assert not stages["contract"].passed and not stages["contract"].required
    assert report.failed_required() == ["quality: accuracy vs production"]
    assert not report.passed
    # Data that does not fit stops the run; the required stages that could not run fail.
    narrow = Holdout(holdout.columns[:2], holdout.features[:, :2], holdout.labels, [])
    stopped = run(registry, 3, narrow, serve, advisory)
    assert [s.stage for s in stopped.stages] == ["contract", "quality"]
    assert stopped.failed_required() == ["quality: stage ran"]


def test_production_must_be_a_deployment_of_the_candidates_model(
    registry, holdout, serve, split, estimators
):
    # Same inputs, another model: comparing with it would judge the candidate on a version it
    # can never replace (a rollout on other-prod takes versions of `other` only).
    registry.register_sklearn("other", estimators[1], split[0])
    registry.store.create_deployment("other-prod", "other", 1)
    with pytest.raises(InvalidInput, match="other-prod serves model 'other', not 'cancer'"):
        run(registry, 2, holdout, serve, GATES.replace("cancer-prod", "other-prod"))


def test_a_stage_that_raises_fails_with_the_reason_and_the_run_goes_on(registry, holdout, serve):
    # With the contract off, a NaN cell reaches the model: its scores hold NaN and
    # scikit-learn's ROC AUC raises ValueError. The stage fails with why; the others still run.
    features = holdout.features.copy()
    features[-1, :] = np.nan  # the last row: integration sends the first 20
    holed = Holdout(holdout.columns, features, holdout.labels, [])
    policy = "contract: null\nintegration: {rows: 20}\nquality: {roc_auc: {min: 0.9}}\n"
    report = run(registry, 1, holed, serve, policy)
    stages = {s.stage: s for s in report.stages}
    [check] = stages["quality"].checks
    assert (check.name, check.verdict) == ("stage ran", "fail")
    assert "NaN" in check.detail, check.detail
    assert stages["integration"].passed


def test_production_is_scored_on_its_own_input_names(
    registry, estimators, split, holdout, serve, tmp_path
):
    # Production cancer@1 names its input "input" (register_sklearn); the candidate was
    # exported elsewhere with skl2onnx's default name "X". Both take the holdout's columns.
    from skl2onnx import to_onnx

    path = tmp_path / "exported.onnx"
    exported = to_onnx(estimators[0], split[0][:1], options={"zipmap": False}, target_opset=17)
    path.write_bytes(exported.SerializeToString())
    candidate = registry.register_onnx("cancer", path, reference=split[0])
    assert [s.name for s in candidate.signature.inputs] == ["X"]
    report = run(registry, candidate.number, holdout, serve, GATES)
    assert report.passed, report.failed_required()
    quality = {s.stage: s for s in report.stages}["quality"]
    assert {c.name: c.verdict for c in quality.checks}["accuracy vs production"] == "pass"
