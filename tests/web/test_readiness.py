"""The readiness checklist page over real HTTP: the same items, statuses and fixes as the API."""

from __future__ import annotations

import html
import re

import httpx

from slipway.monitoring.alert_store import AlertStore
from slipway.monitoring.alerts import AlertRule


def checklist(page_html: str) -> dict[str, dict[str, str]]:
    """Item name -> its status, evidence and fix as the page shows them (unescaped text)."""
    rows = {}
    for name, row in re.findall(r'<tr data-item="(\w+)">(.*?)</tr>', page_html, re.DOTALL):
        cells = dict(re.findall(r'<td data-field="(\w+)">(.*?)</td>', row, re.DOTALL))
        rows[name] = {k: html.unescape(re.sub(r"<[^>]+>", "", v)).strip() for k, v in cells.items()}
    return rows


def test_page_shows_every_item_as_the_api_does_with_fixes_for_failures(
    session, ui_server, users
) -> None:
    http = session("viewer")
    page = http.get("/ui/readiness/cancer/1")
    assert page.status_code == 200, page.text[:500]
    assert "not ready" in page.text
    assert 'href="/ui/deployments/cancer-prod/rollout">cancer-prod</a>' in page.text
    shown = checklist(page.text)
    with httpx.Client(base_url=ui_server.url, timeout=30) as api:
        bearer = {"authorization": f"Bearer {users['viewer']}"}
        expected = api.get("/api/readiness/cancer/1", headers=bearer).json()
    assert list(shown) == [i["name"] for i in expected["items"]]
    for item in expected["items"]:
        row = shown[item["name"]]
        assert row["status"] == item["status"], item["name"]
        assert row["fix"] == (item["fix"] or ("—" if item["status"] == "fail" else "")), item
    assert expected["ready"] is False
    assert shown["signature"]["status"] == "pass"
    packaged = shown["packaged"]
    assert packaged["status"] == "fail"
    assert packaged["evidence"] == "no bundle of cancer@1 recorded"
    assert packaged["fix"].startswith("slipway package cancer@1 --out ")
    assert f"{len(expected['failed'])} required items fail: packaged, " in page.text
    optional = re.findall(r'<strong>(\w+)</strong> <span class="tag">optional</span>', page.text)
    assert optional == [i["name"] for i in expected["items"] if not i["required"]]
    assert "business_metrics" in optional

    # A fix applied elsewhere turns its row green on the next load.
    assert shown["error_alerts"]["status"] == "fail"
    assert "--kind error_rate" in shown["error_alerts"]["fix"]
    AlertStore(ui_server.app.store).add_rule(
        AlertRule(name="errors", kind="error_rate", threshold=0.01, deployment="cancer-prod")
    )
    after = checklist(http.get("/ui/readiness/cancer/1").text)["error_alerts"]
    assert after["status"] == "pass"
    assert after["fix"] == ""
    assert "errors (error_rate > 0.01, cancer-prod)" in after["evidence"]


def test_deployment_page_latest_and_bad_paths(session, ui_server) -> None:
    http = session("viewer")
    of_deployment = http.get("/ui/readiness/deployments/cancer-prod")
    assert of_deployment.status_code == 200
    assert "Production readiness of cancer@1" in of_deployment.text
    assert "(the version it serves)" in of_deployment.text
    assert "<code>slipway readiness cancer-prod</code>" in of_deployment.text
    latest = http.get("/ui/readiness/cancer/latest?deployment=cancer-prod")
    assert latest.status_code == 200
    assert "Production readiness of cancer@2" in latest.text
    assert "slipway readiness cancer@2 --deployment cancer-prod" in latest.text
    for path, status in [
        ("/ui/readiness/cancer/x", 400),
        ("/ui/readiness/cancer/9", 404),
        ("/ui/readiness/nope/1", 404),
        ("/ui/readiness/cancer/1?deployment=nope", 404),
        ("/ui/readiness/deployments/nope", 404),
    ]:
        response = http.get(path)
        assert response.status_code == status, (path, response.text[:300])
        assert 'id="error"' in response.text
    # The checklist is linked from the pages that name the version or the deployment.
    assert 'href="/ui/readiness/cancer/2"' in http.get("/ui/models/cancer/versions/2").text
    for path in ["/ui", "/ui/deployments/cancer-prod/rollout", "/ui/models/cancer"]:
        assert 'href="/ui/readiness/deployments/cancer-prod"' in http.get(path).text, path


def test_without_a_session_the_checklist_answers_401_with_the_signin_form(session) -> None:
    http = session()
    for path in ["/ui/readiness/cancer/1", "/ui/readiness/deployments/cancer-prod"]:
        response = http.get(path)
        assert response.status_code == 401, path
        assert 'action="/ui/signin"' in response.text
        assert f'name="next" value="{path}"' in response.text
        assert "packaged" not in response.text
