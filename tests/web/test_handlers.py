"""The dashboard's handlers over real HTTP, without a browser: sessions, CSRF, origins, roles."""

from __future__ import annotations

import re
import time

import pytest

from slipway.governance.identities import list_tokens, revoke_token
from slipway.governance.roles import Role
from slipway.rollout import actions
from slipway.rollout.policy import RolloutConfig
from slipway.serving.access import PUBLIC_ROUTES
from slipway.web import dashboard_of

from .conftest import csrf_of

VALUES = {"model": "cancer", "version": "1", "deployment": "cancer-prod", "request": "1"}


def fill(template: str) -> str:
    values = {**VALUES, "action": "pause", "decision": "approve", "file": "dashboard.css"}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


@pytest.fixture
def routes(ui_server):
    return dashboard_of(ui_server.app).routes


def test_public_routes_are_the_signin_page_and_assets_only(routes) -> None:
    public = {(r.method, r.template) for r in routes if r.kind == "public"}
    assert public == {("GET", "/ui/signin"), ("POST", "/ui/signin"), ("GET", "/ui/static/{file}")}
    assert public <= set(PUBLIC_ROUTES)  # the app's one public list names them too


def test_roles_are_those_of_the_matching_api_routes(ui_server, routes) -> None:
    api = {(r.method, r.template): r.role for r in ui_server.app.management.routes}
    board = dashboard_of(ui_server.app)
    for route in routes:
        if route.kind == "public":
            continue
        assert board.role_of(route) == api[route.api]
        if route.kind == "action" and route.template != "/ui/signout":
            assert board.role_of(route) >= Role.DEPLOYER, route.template
    by_template = {r.template: board.role_of(r) for r in routes if r.kind != "public"}
    assert by_template["/ui/audit"] == Role.ADMIN
    assert by_template["/ui/approvals/{request}/{decision}"] == Role.APPROVER


def test_without_a_session_pages_answer_401_with_the_signin_form(session, routes) -> None:
    http = session()
    for route in routes:
        if route.kind == "public":
            continue
        path = fill(route.template)
        if route.method == "GET":
            response = http.get(path)
            assert response.status_code == 401, path
            if path.endswith(".json"):
                assert "sign in" in response.json()["error"]
            else:
                assert 'action="/ui/signin"' in response.text
                assert f'name="next" value="{path}"' in response.text
        else:
            response = http.post(
                path, data={"csrf": "x"}, headers={"origin": str(http.base_url).rstrip("/")}
            )
            assert response.status_code == 401, path


def test_signin_sets_a_strict_httponly_cookie_and_refuses_bad_tokens(session, users) -> None:
    http = session()
    origin = {"origin": str(http.base_url).rstrip("/")}
    bad = http.post("/ui/signin", data={"token": "slw_nope"}, headers=origin)
    assert bad.status_code == 401
    assert "unknown, revoked or expired" in bad.text
    assert "set-cookie" not in bad.headers
    good = http.post(
        "/ui/signin", data={"token": users["viewer"], "next": "/ui/approvals"}, headers=origin
    )
    assert good.status_code == 303
    assert good.headers["location"] == "/ui/approvals"
    cookie = good.headers.get_list("set-cookie")[0]
    for part in ("slipway_session=", "HttpOnly", "SameSite=Strict", "Path=/ui"):
        assert part in cookie
    assert http.get("/ui/approvals").status_code == 200


@pytest.mark.parametrize(
    "next_path",
    ["https://evil.example/", "//evil.example/ui", "/\\evil.example", "/api/users", "javascript:1"],
)
def test_signin_only_returns_to_dashboard_pages(session, users, next_path) -> None:
    http = session()
    response = http.post(
        "/ui/signin",
        data={"token": users["viewer"], "next": next_path},
        headers={"origin": str(http.base_url).rstrip("/")},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"


def test_signin_returns_to_a_page_whose_path_is_not_ascii(session, users) -> None:
    http = session()
    asked = http.get("/ui/models/caf%C3%A9")  # a link to a model name with an accent
    assert asked.status_code == 401
    next_path = re.search(r'name="next" value="([^"]*)"', asked.text).group(1)
    response = http.post(
        "/ui/signin",
        data={"token": users["viewer"], "next": next_path},
        headers={"origin": str(http.base_url).rstrip("/")},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/models/caf%C3%A9"
    back = http.get(response.headers["location"])
    assert back.status_code == 400 and "invalid model name" in back.text  # not a 500


def test_signin_form_refuses_other_sites_and_other_encodings(session, users) -> None:
    http = session()
    foreign = http.post(
        "/ui/signin", data={"token": users["admin"]}, headers={"origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    as_json = http.post("/ui/signin", json={"token": users["admin"]})
    assert as_json.status_code == 415
    assert "set-cookie" not in foreign.headers and "set-cookie" not in as_json.headers


def test_form_posts_need_the_sessions_csrf_token_and_own_origin(session, ui_server) -> None:
    store = ui_server.app.store
    actions.start(store, "cancer-prod", 2, RolloutConfig(steps=[50.0], interval_s=600))
    http = session("deployer")
    origin = ui_server.url
    page = http.get("/ui/deployments/cancer-prod/rollout")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    other = csrf_of(session("admin").get("/ui/deployments/cancer-prod/rollout").text)
    assert other != csrf  # each session has its own
    path = "/ui/deployments/cancer-prod/rollout/pause"
    refused = [
        (403, {"data": {"x": "1"}, "headers": {"origin": origin}}),  # no token
        (403, {"data": {"csrf": "0" * 64}, "headers": {"origin": origin}}),  # wrong token
        (403, {"data": {"csrf": other}, "headers": {"origin": origin}}),  # another session's
        (403, {"data": {"csrf": csrf}, "headers": {"origin": "https://evil.example"}}),
        (403, {"data": {"csrf": csrf}, "headers": {"origin": "null"}}),
        (403, {"data": {"csrf": csrf}}),  # no Origin at all
        (415, {"json": {"csrf": csrf}, "headers": {"origin": origin}}),
        (415, {"content": f"csrf={csrf}", "headers": {"origin": origin,
                                                     "content-type": "text/plain"}}),
    ]  # fmt: skip
    for status, kwargs in refused:
        response = http.post(path, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert actions.active(store, "cancer-prod").status == "running"
    ok = http.post(path, data={"csrf": csrf}, headers={"origin": origin})
    assert ok.status_code == 303, ok.text
    assert actions.active(store, "cancer-prod").status == "paused"
    assert "Rollout paused." in http.get(ok.headers["location"]).text  # the one-time message


def test_the_start_form_refuses_a_routing_key_with_a_line_break(session, ui_server) -> None:
    http = session("deployer")
    csrf = csrf_of(http.get("/ui/deployments/cancer-prod/rollout").text)
    form = {"csrf": csrf, "version": "2", "strategy": "ab", "routing_key": "x-user\r\nx-evil"}
    refused = http.post(
        "/ui/deployments/cancer-prod/rollout", data=form, headers={"origin": ui_server.url}
    )
    assert refused.status_code == 400, refused.text
    assert "control characters" in refused.text
    assert ui_server.app.store.get_deployment("cancer-prod").traffic is None


def test_viewer_sees_no_controls_and_a_crafted_post_gets_403(session, ui_server) -> None:
    store = ui_server.app.store
    actions.start(store, "cancer-prod", 2, RolloutConfig(steps=[50.0], interval_s=600))
    http = session("viewer")
    page = http.get("/ui/deployments/cancer-prod/rollout")
    assert page.status_code == 200
    assert 'id="rollout-status"' in page.text
    mutating = re.findall(r'<form method="post" action="([^"]+)"', page.text)
    assert mutating == ["/ui/signout"]  # only signing out
    csrf = csrf_of(page.text)  # the viewer's own, valid token
    for path in [
        "/ui/deployments/cancer-prod/rollout/promote",
        "/ui/deployments/cancer-prod/rollout/abort",
        "/ui/deployments/cancer-prod/rollback",
        "/ui/deployments/cancer-prod/rollout",
        "/ui/approvals/1/approve",
    ]:
        response = http.post(
            path, data={"csrf": csrf, "version": "2"}, headers={"origin": ui_server.url}
        )
        assert response.status_code == 403, path
        assert "needs role" in response.text
    assert actions.active(store, "cancer-prod").status == "running"
    assert store.get_deployment("cancer-prod").version == 1
    assert http.get("/ui/audit").status_code == 403  # the audit log is for admins


def test_a_revoked_token_ends_the_session(session, ui_server) -> None:
    http = session("deployer")
    assert http.get("/ui").status_code == 200
    (token,) = list_tokens(ui_server.app.store, "deployer")
    revoke_token(ui_server.app.store, token.id, actor="test")
    deadline = time.monotonic() + 10
    while http.get("/ui").status_code == 200:  # within one token refresh interval
        assert time.monotonic() < deadline, "the revoked token still opens the dashboard"
        time.sleep(0.1)
    assert http.get("/ui").status_code == 401


def test_static_assets_and_security_headers(session) -> None:
    http = session("viewer")
    css = http.get("/ui/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert http.get("/ui/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert session().get("/ui/static/dashboard.js").status_code == 200  # public
    for missing in ["/ui/static/nope.js", "/ui/static/..%2f..%2fsettings.py", "/ui/nope"]:
        assert http.get(missing).status_code == 404, missing
    page = http.get("/ui")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in page.text  # no inline script: the policy allows none


def test_pages_render_for_an_admin(session, ui_server) -> None:
    from slipway.governance import approvals

    approvals.request_promotion(ui_server.app.store, "cancer-prod", "cancer", 2, actor="deployer")
    http = session("admin")
    for path, expected in [
        ("/ui", "cancer-prod"),
        ("/ui/overview.json", '"deployments"'),
        ("/ui/models/cancer", "v2"),
        ("/ui/models/cancer/versions/1", "s3://bucket/cancer.parquet"),
        ("/ui/deployments/cancer-prod/rollout", "Start a rollout"),
        ("/ui/deployments/cancer-prod/experiment", "No rollout has run"),
        ("/ui/deployments/cancer-prod/drift", "p95 latency"),
        ("/ui/approvals", "cancer@2"),
        ("/ui/approvals/1", "Evidence"),
        ("/ui/audit", "verified"),
        ("/ui/audit?deployment=cancer-prod&kind=control", "deployment.created"),
    ]:
        response = http.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert expected in response.text, path
    for path, status in [
        ("/ui/models/nope", 404),
        ("/ui/models/cancer/versions/x", 400),
        ("/ui/deployments/nope/rollout", 404),
        ("/ui/audit?since=yesterday", 400),
        ("/ui/audit?key=novalue", 400),
        ("/ui/deployments/cancer-prod/experiment?alpha=2", 400),
    ]:
        response = http.get(path)
        assert response.status_code == status, path
        assert 'id="error"' in response.text


def test_the_version_page_finds_where_it_served_behind_many_newer_events(
    session, ui_server
) -> None:
    from slipway.registry.records import BatchingConfig

    store = ui_server.app.store
    store.create_deployment("cancer-staging", "cancer", 2)
    for n in range(1001):  # unrelated changes, all newer than cancer@1 going live
        store.update_deployment("cancer-staging", batching=BatchingConfig(max_batch_size=2 + n % 2))
    page = session("viewer").get("/ui/models/cancer/versions/1")
    assert page.status_code == 200, page.text[:500]
    assert "never deployed" not in page.text
    assert re.search(r"<td>cancer-prod</td><td>started serving</td>", page.text), page.text


def test_with_auth_off_pages_open_but_forms_still_need_csrf_and_origin(
    tmp_path, ui_registry
) -> None:
    import httpx

    from slipway.server import BackgroundServer

    from ..serving.conftest import make_settings

    settings = make_settings(
        tmp_path / "home2", database_url=ui_registry.settings.database_url, auth=0
    )
    server = BackgroundServer(settings)
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        page = http.get("/ui/deployments/cancer-prod/rollout")
        assert page.status_code == 200
        assert "anonymous · admin" in page.text
        csrf = csrf_of(page.text)
        path = "/ui/deployments/cancer-prod/rollout"
        form = {"csrf": csrf, "version": "2", "steps": "50"}
        assert (
            http.post(
                path, data={**form, "csrf": "0" * 64}, headers={"origin": server.url}
            ).status_code
            == 403
        )
        rebinding = {"origin": "http://attacker.example", "host": "attacker.example"}
        assert http.post(path, data=form, headers=rebinding).status_code == 403
        assert ui_registry.store.get_deployment("cancer-prod").traffic is None
        done = http.post(path, data=form, headers={"origin": server.url})
        assert done.status_code == 303, done.text
        assert actions.active(ui_registry.store, "cancer-prod").candidate == 2
    server.app.store.close()


def test_every_page_footer_names_the_slipway_release(session) -> None:
    from slipway import __version__

    http = session("viewer")
    for path in ["/ui", "/ui/models/cancer", "/ui/models/cancer/versions/1", "/ui/approvals"]:
        page = http.get(path).text
        footer = re.search(r"<footer>(.*?)</footer>", page, re.S)
        assert footer is not None and footer.group(1) == f"Slipway {__version__}", path
