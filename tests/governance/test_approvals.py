"""Promotion to production needs an approved request bound to the artifact digest and to the
evidence the approvers saw; rollback to the previous version needs none."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from slipway.errors import (
    ApprovalRequired,
    InvalidInput,
    PermissionDenied,
    VersionConflict,
)
from slipway.governance import approvals
from slipway.governance.evidence import ApprovalPolicy
from slipway.registry.records import VersionMeta
from slipway.registry.store import SqlStore

from ..registry.samples import DIGEST, SIGNATURE

OTHER = "cd" * 32


@pytest.fixture
def prod(store: SqlStore) -> SqlStore:
    """``churn`` with versions 1-3 and ``churn-prod`` serving 1, made production by approval."""
    for digest in (DIGEST, OTHER, OTHER):
        store.register_version("churn", format="onnx", digest=digest, size=1, signature=SIGNATURE)
    store.create_deployment("churn-prod", "churn", 1)
    with pytest.raises(ApprovalRequired, match="there is none"):
        store.update_deployment("churn-prod", production=True, actor="admin")
    approve(store, "churn-prod", 1)
    assert store.update_deployment("churn-prod", production=True, actor="admin").production
    return store


def approve(store: SqlStore, deployment: str, version: int) -> approvals.PromotionRequest:
    request = approvals.request_promotion(store, deployment, "churn", version, actor="dora")
    return approvals.decide(store, request.id, approve=True, actor="abe", comment="ok")


def test_promotion_needs_an_approved_request(prod: SqlStore) -> None:
    with pytest.raises(ApprovalRequired, match="there is none"):
        prod.set_deployment_version("churn-prod", 2)
    request = approvals.request_promotion(
        prod, "churn-prod", "churn", 2, actor="dora", comment="better auc"
    )
    assert request.status == "pending" and request.digest == OTHER
    with pytest.raises(ApprovalRequired, match="still waiting"):
        prod.set_deployment_version("churn-prod", 2)
    with pytest.raises(PermissionDenied, match="their own"):
        approvals.decide(prod, request.id, approve=True, actor="dora")
    decided = approvals.decide(prod, request.id, approve=True, actor="abe", comment="lgtm")
    assert decided.status == "approved"
    assert [(d.actor, d.decision, d.comment) for d in decided.decisions] == [
        ("abe", "approve", "lgtm")
    ]
    with pytest.raises(ApprovalRequired):
        prod.set_deployment_version("churn-prod", 3)  # the approval is for version 2 only
    assert prod.set_deployment_version("churn-prod", 2, actor="dora").version == 2
    assert approvals.get_request(prod, request.id).status == "promoted"
    # Used once: going away and coming back to 2 later is a rollback only while 2 is previous.
    kinds = [e.kind for e in prod.events("deployment:churn-prod")]
    assert kinds[:4] == [
        "deployment.version_changed",
        "promotion.approved",
        "promotion.requested",
        "deployment.updated",
    ]


def test_rollback_to_the_previous_version_needs_no_approval(prod: SqlStore) -> None:
    approve(prod, "churn-prod", 2)
    prod.set_deployment_version("churn-prod", 2)
    back = prod.set_deployment_version("churn-prod", 1, actor="oncall")  # rollback
    assert (back.version, back.previous_version) == (1, 2)
    forward = prod.set_deployment_version("churn-prod", 2, actor="oncall")  # and back again
    assert forward.version == 2
    with pytest.raises(ApprovalRequired):
        prod.set_deployment_version("churn-prod", 3)


def test_rollback_only_to_a_version_approved_here(store: SqlStore) -> None:
    for _ in range(2):
        store.register_version("churn", format="onnx", digest=DIGEST, size=1, signature=SIGNATURE)
    store.create_deployment("churn-prod", "churn", 1)
    store.set_deployment_version("churn-prod", 2)  # before it was production
    approve(store, "churn-prod", 2)
    store.update_deployment("churn-prod", production=True)
    with pytest.raises(ApprovalRequired):
        store.set_deployment_version("churn-prod", 1)  # never approved for production


def test_rejected_requests_promote_nothing(prod: SqlStore) -> None:
    request = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    rejected = approvals.decide(prod, request.id, approve=False, actor="abe", comment="no")
    assert rejected.status == "rejected"
    with pytest.raises(ApprovalRequired, match=f"request #{request.id} was rejected"):
        prod.set_deployment_version("churn-prod", 2)  # not "there is none"
    with pytest.raises(InvalidInput, match="only pending"):
        approvals.decide(prod, request.id, approve=True, actor="cy")


def test_evidence_changing_after_approval_makes_it_stale(prod: SqlStore) -> None:
    request = approve(prod, "churn-prod", 2)
    assert request.status == "approved"
    approvals.attach_report(
        prod, "churn", 2, kind="validation", name="holdout", passed=False, actor="ci"
    )
    assert approvals.get_request(prod, request.id).status == "stale"
    with pytest.raises(ApprovalRequired, match="stale"):
        prod.set_deployment_version("churn-prod", 2)


def test_evidence_changing_before_the_decision_is_caught(prod: SqlStore) -> None:
    request = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    approvals.set_policy(prod, "churn", ApprovalPolicy(approvals=1), actor="admin")  # same
    assert approvals.get_request(prod, request.id).status == "pending"
    approvals.set_policy(prod, "churn", ApprovalPolicy(approvals=2), actor="admin")  # changed
    assert approvals.get_request(prod, request.id).status == "stale"
    with pytest.raises(InvalidInput, match="stale"):
        approvals.decide(prod, request.id, approve=True, actor="abe")


def test_the_approval_is_bound_to_the_artifact_digest(prod: SqlStore, store_url: str) -> None:
    request = approve(prod, "churn-prod", 2)
    engine = create_engine(store_url)
    try:  # someone swaps the version's artifact in the database after the approval
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE versions SET digest = '{'ef' * 32}' WHERE number = 2")
    finally:
        engine.dispose()
    with pytest.raises(ApprovalRequired, match=f"request #{request.id} approved artifact"):
        prod.set_deployment_version("churn-prod", 2)


def test_policy_needs_approvers_validation_and_checks(prod: SqlStore) -> None:
    policy = ApprovalPolicy(approvals=2, require_validation=True, required_checks=["load-test"])
    approvals.set_policy(prod, "churn", policy, actor="admin")
    request = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    assert request.evidence is not None
    assert request.evidence["unmet"] == [
        "a passing validation report",
        "check 'load-test' has no report",
    ]
    with pytest.raises(InvalidInput, match="policy still needs"):
        approvals.decide(prod, request.id, approve=True, actor="abe")
    for kind, name in [("validation", "holdout"), ("check", "load-test")]:
        approvals.attach_report(prod, "churn", 2, kind=kind, name=name, passed=True,
                                summary={"auc": 0.93}, actor="ci")  # fmt: skip
    request = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    assert request.evidence is not None and request.evidence["unmet"] == []
    assert approvals.decide(prod, request.id, approve=True, actor="abe").status == "pending"
    with pytest.raises(VersionConflict, match="already decided"):
        approvals.decide(prod, request.id, approve=True, actor="abe")
    assert approvals.decide(prod, request.id, approve=True, actor="cy").status == "approved"
    assert prod.set_deployment_version("churn-prod", 2).version == 2


def test_evidence_bundle(prod: SqlStore) -> None:
    prod.register_version(
        "churn",
        format="onnx",
        digest=OTHER,
        size=1,
        signature=SIGNATURE,
        meta=VersionMeta(
            training_data="s3://b/churn.parquet",
            training_data_sha256="aa" * 32,
            hyperparameters={"C": 0.5},
            metrics={"auc": 0.91},
        ),
    )
    request = approvals.request_promotion(prod, "churn-prod", "churn", 4, actor="dora")
    bundle = request.evidence
    assert bundle is not None
    assert bundle["candidate"]["ref"] == "churn@4" and bundle["candidate"]["digest"] == OTHER
    assert bundle["candidate"]["lineage"] == {
        "training_data": "s3://b/churn.parquet",
        "training_data_sha256": "aa" * 32,
    }
    assert bundle["current"]["ref"] == "churn@1"
    diff = bundle["diff"]
    assert diff["against"] == "churn@1" and diff["training_data_changed"] is True
    assert diff["metrics"]["auc"] == {"current": None, "candidate": 0.91, "change": None}
    assert diff["hyperparameters"] == {"C": {"current": None, "candidate": 0.5}}
    assert len(request.evidence_digest) == 64


def test_a_newer_request_supersedes_a_pending_one(prod: SqlStore) -> None:
    first = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    second = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    assert approvals.get_request(prod, first.id).status == "cancelled"
    assert [r.id for r in approvals.list_requests(prod, status="pending")] == [second.id]
    with pytest.raises(InvalidInput, match="--deployment churn-prod --status pending"):
        approvals.decide(prod, first.id, approve=True, actor="abe")  # cancelled: the newer one
    # The cancellation is on the record, with the request that superseded it.
    cancelled = prod.events("deployment:churn-prod", kinds=("promotion.cancelled",))
    assert [(e.actor, e.data) for e in cancelled] == [
        ("dora", {"request": first.id, "superseded_by": second.id})
    ]


def test_an_approved_request_is_not_thrown_away_by_a_new_one(prod: SqlStore) -> None:
    """Approvers' decisions are not undone by anyone who can ask again: the approved request
    stands until it is used or its evidence moves."""
    approved = approve(prod, "churn-prod", 2)
    with pytest.raises(VersionConflict, match=f"request #{approved.id} .* already approved"):
        approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    assert approvals.get_request(prod, approved.id).status == "approved"
    assert prod.set_deployment_version("churn-prod", 2, actor="dora").version == 2


def test_an_approval_is_a_persons_decision_not_a_service_accounts(prod: SqlStore) -> None:
    """Promotion to production needs human review: a service account (a CI bot) holding the
    approver role or above may reject a request, never approve one."""
    from slipway.governance import identities

    identities.create_user(prod, "ci-bot", "admin", kind="service", actor="admin")
    request = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    with pytest.raises(PermissionDenied, match="service account"):
        approvals.decide(prod, request.id, approve=True, actor="ci-bot")
    assert approvals.get_request(prod, request.id).status == "pending"
    assert approvals.decide(prod, request.id, approve=True, actor="abe").status == "approved"
    other = approvals.request_promotion(prod, "churn-prod", "churn", 3, actor="dora")
    assert approvals.decide(prod, other.id, approve=False, actor="ci-bot").status == "rejected"


def test_deciding_a_closed_request_says_what_to_do(prod: SqlStore) -> None:
    """Only pending requests are decided; the refusal names the command that moves on."""
    stale = approvals.request_promotion(prod, "churn-prod", "churn", 2, actor="dora")
    approvals.set_policy(prod, "churn", ApprovalPolicy(approvals=2), actor="admin")
    with pytest.raises(InvalidInput, match="slipway approvals request churn-prod churn@2"):
        approvals.decide(prod, stale.id, approve=True, actor="abe")
    rejected = approvals.request_promotion(prod, "churn-prod", "churn", 3, actor="dora")
    approvals.decide(prod, rejected.id, approve=False, actor="abe")
    with pytest.raises(InvalidInput, match="slipway approvals request churn-prod churn@3"):
        approvals.decide(prod, rejected.id, approve=True, actor="cy")
    approvals.set_policy(prod, "churn", ApprovalPolicy(approvals=1), actor="admin")
    done = approve(prod, "churn-prod", 3)
    with pytest.raises(InvalidInput, match="approved already; nothing is left to decide"):
        approvals.decide(prod, done.id, approve=False, actor="cy")


def test_the_workflow_over_http(client, gov_registry) -> None:
    deployer, approver, approver2, admin = (
        client("deployer"), client("approver"), client("approver2"), client("admin"),
    )  # fmt: skip
    assert (
        admin.patch("/api/deployments/cancer-prod/policy", json={"production": True}).status_code
        == 409
    )  # needs an approved request for the version it serves
    request = deployer.post(
        "/api/approvals", json={"deployment": "cancer-prod", "model": "cancer", "version": 1}
    ).json()
    assert approver.post(f"/api/approvals/{request['id']}/approve", json={}).status_code == 200
    production = admin.patch("/api/deployments/cancer-prod/policy", json={"production": True})
    assert production.status_code == 200 and production.json()["production"] is True
    # Now a deployer cannot move it without an approval: 409 with a clear reason.
    moved = deployer.patch("/api/deployments/cancer-prod", json={"version": 2})
    assert moved.status_code == 409 and "approved promotion request" in moved.json()["error"]
    created = deployer.post(
        "/api/approvals",
        json={"deployment": "cancer-prod", "model": "cancer", "version": 2, "comment": "v2"},
    )
    assert created.status_code == 201
    number = created.json()["id"]
    shown = client("viewer").get(f"/api/approvals/{number}").json()
    assert shown["evidence"]["diff"]["against"] == "cancer@1" and shown["status"] == "pending"
    assert deployer.post(f"/api/approvals/{number}/approve", json={}).status_code == 403
    own = client("approver")  # approvers may request too, but not approve their own
    mine = own.post(
        "/api/approvals", json={"deployment": "cancer-prod", "model": "cancer", "version": 2}
    ).json()
    assert own.post(f"/api/approvals/{mine['id']}/approve", json={}).status_code == 403
    listed = client("viewer").get("/api/approvals", params={"status": "pending"}).json()
    assert [r["id"] for r in listed] == [mine["id"]]  # the newer request superseded the older
    approved = approver2.post(f"/api/approvals/{mine['id']}/approve", json={"comment": "ok"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert deployer.patch("/api/deployments/cancer-prod", json={"version": 2}).status_code == 200
    back = deployer.patch("/api/deployments/cancer-prod", json={"version": 1})
    assert back.status_code == 200  # rollback without a new approval
    verified = admin.get("/api/audit/verify").json()
    assert verified["ok"] is True
    records = admin.get("/api/audit", params={"kind": "control", "limit": 1000}).json()
    actions = [r["action"] for r in records]
    for action in ("promotion.requested", "promotion.approved", "deployment.version_changed"):
        assert action in actions


def test_the_sdk_speaks_the_workflow(gov_server, users) -> None:
    from slipway.client import ApiError, Client

    with (
        Client(gov_server.url, token=users["deployer"]) as deployer,
        Client(gov_server.url, token=users["approver"]) as approver,
    ):
        assert deployer.whoami()["role"] == "deployer"
        request = deployer.request_promotion("cancer-prod", "cancer", 2, comment="sdk")
        with pytest.raises(ApiError) as refused:
            deployer.approve(request["id"])
        assert refused.value.status == 403
        assert approver.approve(request["id"], "fine")["status"] == "approved"
        assert [r["id"] for r in approver.approvals("approved")] == [request["id"]]
        assert approver.approval(request["id"])["evidence"]["candidate"]["ref"] == "cancer@2"
        with pytest.raises(ApiError) as admin_only:
            approver.audit(deployment="cancer-prod")
        assert admin_only.value.status == 403


def test_a_production_deployment_cannot_be_deleted_and_recreated(prod: SqlStore) -> None:
    with pytest.raises(VersionConflict, match="is production"):
        prod.delete_deployment("churn-prod", actor="dora")
    prod.update_deployment("churn-prod", production=False, actor="admin")
    prod.delete_deployment("churn-prod", actor="admin")


def test_a_rule_to_the_candidate_on_production_needs_an_approval(prod: SqlStore) -> None:
    from slipway.registry.records import RoutingRule
    from slipway.rollout import actions
    from slipway.rollout.policy import RolloutConfig

    rule = RoutingRule(header="x-tier", equals="gold", arm="candidate")  # could match everyone
    config = RolloutConfig(strategy="ab", weight=10, rules=[rule])
    with pytest.raises(ApprovalRequired, match="any share of traffic"):
        actions.start(prod, "churn-prod", 2, config)
    # A split by weight alone stays below 100% and needs no approval until promotion.
    actions.start(prod, "churn-prod", 2, RolloutConfig(strategy="ab", weight=10))
    actions.abort(prod, "churn-prod")
    approve(prod, "churn-prod", 2)
    started = actions.start(prod, "churn-prod", 2, config)
    assert started.status == "running"
    # The approval was not used up by the rule: promotion still consumes it.
    assert actions.promote(prod, "churn-prod").status == "promoted"
    assert prod.get_deployment("churn-prod").version == 2
