"""The dashboard end to end in a real headless Chromium, against a real server.

Each test signs in through the real form, acts through the pages, and checks the result both on
the page and in the registry. Screenshots of every page land in ``test-artifacts/ui/``.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from slipway.governance import approvals
from slipway.rollout import actions
from slipway.rollout.policy import RolloutConfig

from ..serving.test_v2 import v2_body
from .conftest import shoot


def infer(server, rows: np.ndarray, n: int = 1, **extra: object) -> list[dict]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answers = []
        for _ in range(n):
            response = http.post("/v2/models/cancer-prod/infer", json=v2_body(rows, **extra))
            assert response.status_code == 200, response.text
            answers.append(response.json())
        return answers


def cell(page, field: str) -> str:
    return page.inner_text(f'tr[data-deployment="cancer-prod"] [data-field="{field}"]')


def test_overview_shows_traffic_change_live(signed_in, ui_server, cancer, artifacts) -> None:
    page = signed_in("viewer")
    assert cell(page, "requests") == "0"
    assert cell(page, "weights") == "v1 100%"
    page.evaluate("window.notReloaded = true")
    infer(ui_server, cancer[0][:2], n=25)
    page.wait_for_function(
        """() => Number(document.querySelector(
            'tr[data-deployment="cancer-prod"] [data-field="requests"]').textContent) >= 25"""
    )
    assert cell(page, "rate") != "—"
    assert cell(page, "p99_ms") != "—"
    assert cell(page, "error_rate") == "0.00%"
    # A rollout started elsewhere (the CLI, the API) shows up in the split without a reload.
    actions.start(
        ui_server.app.store, "cancer-prod", 2, RolloutConfig(steps=[30.0], interval_s=600)
    )
    page.wait_for_function(
        """() => document.querySelector(
            'tr[data-deployment="cancer-prod"] [data-field="weights"]').textContent
            === "v1 70% · v2 30%" """
    )
    assert page.evaluate("window.notReloaded") is True
    shoot(page, artifacts, "overview")


def test_start_and_roll_back_a_canary(signed_in, ui_server, cancer, artifacts) -> None:
    store = ui_server.app.store
    page = signed_in("deployer", "/ui/deployments/cancer-prod/rollout")
    page.select_option("#version", "2")
    page.fill("#steps", "50")
    page.fill("#interval_s", "600")
    page.click("#start")  # confirmed in the dialog
    page.wait_for_selector("text=Started a canary of version 2.")
    assert page.inner_text("#rollout-status") == "running"
    assert page.inner_text("#weights") == "v1 50% · v2 50%"
    rollout = actions.active(store, "cancer-prod")
    assert (rollout.strategy, rollout.candidate, rollout.weight) == ("canary", 2, 50.0)
    served = {a["model_version"] for a in infer(ui_server, cancer[0][:1], n=60)}
    assert served == {"1", "2"}  # the split is live on the data plane
    shoot(page, artifacts, "rollout-running")
    page.click("#rollback")
    page.wait_for_selector("text=Rolled back: serving version 1.")
    assert page.inner_text("#rollout-status") == "rolled_back"
    assert page.inner_text("#weights") == "v1 100%"
    assert page.query_selector("#pause") is None  # nothing left to pause
    assert store.get_deployment("cancer-prod").traffic is None
    deadline = time.monotonic() + 10
    while {a["model_version"] for a in infer(ui_server, cancer[0][:1], n=20)} != {"1"}:
        assert time.monotonic() < deadline, "traffic still reaches version 2"
    shoot(page, artifacts, "rollout-rolled-back")


def test_approve_a_promotion_as_a_second_user(signed_in, ui_server, artifacts) -> None:
    from slipway.errors import ApprovalRequired

    store = ui_server.app.store
    first = approvals.request_promotion(store, "cancer-prod", "cancer", 1, actor="deployer")
    approvals.decide(store, first.id, approve=True, actor="approver2")
    store.update_deployment("cancer-prod", production=True, actor="admin")
    request = approvals.request_promotion(
        store, "cancer-prod", "cancer", 2, actor="deployer", comment="retrained"
    )
    with pytest.raises(ApprovalRequired):
        store.set_deployment_version("cancer-prod", 2, actor="deployer")
    page = signed_in("approver", "/ui/approvals")
    shoot(page, artifacts, "approvals")
    page.click(f'a[href="/ui/approvals/{request.id}"]')
    page.wait_for_selector("#decide")
    page.fill("#approve-comment", "metrics look fine")
    page.click("#approve")
    page.wait_for_selector(f"text=Approved request {request.id}; it is approved.")
    assert page.inner_text("#request-status") == "approved"
    assert "approver approved — “metrics look fine”" in page.inner_text("#decisions")
    assert page.query_selector("#approve") is None
    decided = approvals.get_request(store, request.id)
    assert decided.status == "approved"
    assert [(d.actor, d.decision) for d in decided.decisions] == [("approver", "approve")]
    assert store.set_deployment_version("cancer-prod", 2, actor="deployer").version == 2
    shoot(page, artifacts, "approval")


def test_find_a_prediction_in_the_audit_search(signed_in, ui_server, cancer, artifacts) -> None:
    infer(ui_server, cancer[0][:3], id="req-ui-42")
    infer(ui_server, cancer[0][:1], n=3, id="req-other")
    page = signed_in("admin", "/ui/audit")
    assert "verified" in page.inner_text("#chain")
    deadline = time.monotonic() + 10
    while True:  # the audit writer flushes in the background
        page.fill("#request_id", "req-ui-42")
        page.click("#search")
        page.wait_for_selector("#records")
        rows = page.locator("#records tbody tr")
        if "req-ui-42" in rows.first.inner_text():
            break
        assert time.monotonic() < deadline, "the prediction never appeared in the audit search"
        time.sleep(0.2)
    assert rows.count() == 1
    text = rows.first.inner_text()
    assert "prediction" in text and "cancer-prod" in text
    assert "req-other" not in page.inner_text("#records")
    assert "verified" in page.inner_text("#chain")
    shoot(page, artifacts, "audit")


def test_viewer_sees_no_controls_and_a_crafted_post_gets_403(
    signed_in, ui_server, artifacts
) -> None:
    store = ui_server.app.store
    actions.start(store, "cancer-prod", 2, RolloutConfig(steps=[50.0], interval_s=600))
    request = approvals.request_promotion(store, "cancer-prod", "cancer", 2, actor="deployer")
    page = signed_in("viewer", "/ui/deployments/cancer-prod/rollout")
    assert page.inner_text("#rollout-status") == "running"
    for control in ["#pause", "#promote", "#abort", "#rollback", "#start", "#controls"]:
        assert page.query_selector(control) is None, control
    shoot(page, artifacts, "rollout-viewer")
    page.goto(f"{ui_server.url}/ui/approvals/{request.id}")
    assert page.query_selector("#approve") is None and page.query_selector("#reject") is None
    csrf = page.get_attribute('input[name="csrf"]', "value")  # the viewer's own, valid token
    status = page.evaluate(
        """async ([csrf, target]) => {
            const response = await fetch(target, {
                method: "POST", credentials: "same-origin",
                headers: {"content-type": "application/x-www-form-urlencoded"},
                body: new URLSearchParams({csrf}).toString(),
            });
            return response.status;
        }""",
        [csrf, "/ui/deployments/cancer-prod/rollout/promote"],
    )
    assert status == 403
    assert actions.active(store, "cancer-prod").status == "running"
    assert store.get_deployment("cancer-prod").version == 1
    page.goto(f"{ui_server.url}/ui/audit")
    assert "needs role admin" in page.inner_text("#error")
    shoot(page, artifacts, "audit-viewer-403")


@pytest.mark.parametrize(
    "path",
    [
        "/ui/models/cancer",
        "/ui/models/cancer/versions/2",
        "/ui/deployments/cancer-prod/drift",
        "/ui/deployments/cancer-prod/experiment",
    ],
)
def test_every_other_page_renders(signed_in, ui_server, cancer, artifacts, path) -> None:
    if path.endswith(("/drift", "/experiment")):  # something to show: live rows, feedback
        from slipway.rollout.state import RolloutStore

        rollout = actions.start(
            ui_server.app.store,
            "cancer-prod",
            2,
            RolloutConfig(strategy="ab", weight=50.0, routing_key="x-user"),
        )
        deadline = time.monotonic() + 15  # the server's next reconcile loads version 2
        while ui_server.app.repository.deployments["cancer-prod"].traffic is None:
            assert time.monotonic() < deadline, "the rollout never reached the server"
            time.sleep(0.05)
        infer(ui_server, cancer[0][:200])
        with httpx.Client(base_url=ui_server.url, timeout=30) as http:
            for i in range(40):
                http.post(
                    "/v2/models/cancer-prod/infer",
                    json=v2_body(cancer[0][i : i + 1], id=f"ab-{i}"),
                    headers={"x-user": f"user-{i}"},
                )
        rollouts = RolloutStore(ui_server.app.store)
        for i in range(40):
            rollouts.add_feedback(f"ab-{i}", {"converted": float(i % 3 == 0)}, actor="test")
        # the evidence flush writes which arm served each request id, joining the feedback
        while not rollouts.feedback_by_version(rollout.id):
            assert time.monotonic() < deadline, "no feedback joined to an arm"
            time.sleep(0.1)
    page = signed_in("admin", path)
    if path.endswith("/drift"):
        deadline = time.monotonic() + 15
        while page.query_selector("figure.feature svg") is None:
            assert time.monotonic() < deadline, "no drift charts appeared"
            time.sleep(0.5)
            page.reload()
        assert page.locator("figure.feature").count() >= 30  # every feature charted
    if path.endswith("/experiment"):
        assert "converted" in page.inner_text("#metrics")
    assert page.query_selector("#error") is None
    shoot(page, artifacts, path.strip("/").replace("/", "-"))


def test_readiness_checklist_from_the_version_page(signed_in, artifacts) -> None:
    page = signed_in("viewer", "/ui/models/cancer/versions/1")
    page.click("#readiness-link")
    page.wait_for_selector("#items")
    assert page.inner_text("#verdict").startswith("not ready")
    fix = page.inner_text('tr[data-item="packaged"] [data-field="fix"]')
    assert fix.startswith("slipway package cancer@1 --out ")
    failed, passed = (
        page.locator(f'tr[data-item="{name}"] .verdict').evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        for name in ("packaged", "signature")
    )
    assert failed != passed  # the stylesheet colours a failure unlike a pass
    shoot(page, artifacts, "readiness")
