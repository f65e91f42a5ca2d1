"""Every route of the app is public, token-gated inference, or management with a role.

The enumeration below reads the app's own route tables, so a new management route is checked
the moment it is added; the probe sends every method to every known path and many unknown
ones, without a token, and fails on anything that answers outside the public list.
"""

from __future__ import annotations

import re

import httpx
import pytest

from slipway.governance.roles import Role
from slipway.serving.access import INFERENCE_ROUTES, PUBLIC_ROUTES

from ..serving.test_v2 import v2_body

VALUES = {
    "model": "cancer",
    "version": "1",
    "name": "private",
    "deployment": "private",
    "user": "ghost",
    "token": "999",
    "request": "999",
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Paths no route declares: aliases and front ends someone might add without a gate.
UNKNOWN = [
    "/ui", "/ui/", "/ui/index.html", "/docs", "/redoc", "/openapi.json", "/api", "/api/",
    "/api/v1/models", "/admin", "/debug", "/debug/pprof", "/static/app.js", "/v1", "/v1/models",
    "/v2/models", "/v2/repository/index", "/v2/models/private/generate",
    "/v2/models/private/infer_stream", "/v2/models/private/versions/1/generate", "/predict",
    "/predict/", "/invocations/", "/mlflow", "/metrics/", "/healthz", "/livez", "/readyz",
    "/ws", "/graphql", "/api/models/cancer/versions/1/artifact", "/api/models/cancer/export",
]  # fmt: skip


def fill(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: VALUES.get(m.group(1), "x"), template)


def matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"[^/]+", re.escape(template))
    return re.fullmatch(pattern, path) is not None


def send(http: httpx.Client, method: str, path: str) -> httpx.Response:
    if method in ("POST", "PUT", "PATCH"):  # a well-formed JSON body, so only auth can refuse
        return http.request(method, path, json={}, headers={"content-type": "application/json"})
    return http.request(method, path)


@pytest.fixture
def routes(gov_server) -> list[tuple[str, str, str, Role | None]]:
    """(method, template, class, role) of every route the app declares."""
    table: list[tuple[str, str, str, Role | None]] = []
    table += [(m, t, "public", None) for m, t in PUBLIC_ROUTES]
    table += [(m, t, "inference", None) for m, t in INFERENCE_ROUTES]
    table += [
        (r.method, r.template, "management", r.role) for r in gov_server.app.management.routes
    ]
    return table


def test_every_management_route_has_a_role(gov_server) -> None:
    routes = gov_server.app.management.routes
    assert len(routes) >= 30  # core + governance + rollouts + monitoring
    for route in routes:
        assert isinstance(route.role, Role), route.template
        if route.method != "GET":
            assert route.role >= Role.DEPLOYER, f"{route.method} {route.template} changes state"
    by_path = {(r.method, r.template): r.role for r in routes}
    assert by_path[("POST", "/api/users")] == Role.ADMIN
    assert by_path[("POST", "/api/tokens")] == Role.ADMIN
    assert by_path[("POST", "/api/approvals/{request}/approve")] == Role.APPROVER
    assert by_path[("GET", "/api/audit")] == Role.ADMIN
    assert by_path[("PATCH", "/api/deployments/{deployment}/policy")] == Role.ADMIN


def test_every_declared_route_refuses_without_a_token_unless_public(client, routes) -> None:
    http = client()
    for method, template, kind, _ in routes:
        path = fill(template)
        response = send(http, method, path)
        if kind == "public":
            assert response.status_code not in (401, 403), (method, path)
        else:
            assert response.status_code == 401, (method, path, response.text)
            assert "token" in response.json()["error"]


def test_probe_finds_nothing_answering_outside_the_table(client, routes) -> None:
    http = client()
    paths = sorted({fill(t) for _, t, _, _ in routes} | set(UNKNOWN))
    public = [t for m, t, kind, _ in routes if kind == "public"]
    gated = {(m, fill(t)) for m, t, kind, _ in routes if kind != "public"}
    for path in paths:
        for method in METHODS:
            status = send(http, method, path).status_code
            if any(matches(t, path) for t in public):
                continue
            if (method, path) in gated:
                assert status == 401, (method, path, status)
            else:
                assert status in (401, 404, 405), f"{method} {path} answered {status} unguarded"


def test_roles_are_enforced_on_every_management_route(client, routes) -> None:
    ladder = ["viewer", "deployer", "approver", "admin"]
    clients = {name: client(name) for name in ladder}
    for method, template, kind, role in routes:
        if kind != "management":
            continue
        assert role is not None
        path = fill(template)
        for name in ladder:
            status = send(clients[name], method, path).status_code
            if Role.parse(name) < role:
                assert status == 403, (name, method, path, status)
            else:
                assert status not in (401, 403), (name, method, path, status)


def test_bad_and_revoked_tokens(client, users, gov_registry) -> None:
    from slipway.governance.identities import list_tokens

    for header in ["Bearer nope", "Basic YWRtaW46YWRtaW4=", "Bearer", users["admin"]]:
        http = client(authorization=header)
        response = http.get("/api/models")
        assert response.status_code == 401, header
        # RFC 9110: a 401 names the scheme that would be accepted.
        assert response.headers["www-authenticate"] == 'Bearer realm="slipway"', header
    admin = client("admin")
    assert admin.get("/api/whoami").json() == {"name": "admin", "role": "admin", "kind": "user"}
    (token,) = list_tokens(gov_registry.store, "admin")
    assert admin.delete(f"/api/tokens/{token.id}").status_code == 200  # revoked through the API
    assert admin.get("/api/models").status_code == 401  # ... takes effect at once here


def test_inference_token_per_deployment(client, cancer) -> None:
    body = v2_body(cancer[0][:1])
    anonymous = client()
    assert anonymous.post("/v2/models/cancer-prod/infer", json=body).status_code == 200
    refused = anonymous.post("/v2/models/private/infer", json=body)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.get("/v2/models/private").status_code == 401
    assert anonymous.post("/predict/private", json={"instances": [[0.0] * 30]}).status_code == 401
    assert anonymous.get("/v2/models/private/ready").status_code == 200  # readiness is public
    viewer = client("viewer")
    assert viewer.post("/v2/models/private/infer", json=body).status_code == 200
    assert viewer.get("/v2/models/private").status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({"origin": "https://evil.example"}, 403, id="foreign-origin"),
        pytest.param({"origin": "null"}, 403, id="null-origin"),
        pytest.param({"content-type": "text/plain"}, 415, id="text-plain"),
        pytest.param({"content-type": "application/x-www-form-urlencoded"}, 415, id="form"),
        pytest.param({"content-type": "multipart/form-data; boundary=x"}, 415, id="multipart"),
        pytest.param({"content-type": ""}, 415, id="no-content-type"),
    ],
)
def test_drive_by_browser_requests_are_refused(client, headers, status) -> None:
    http = client("admin")
    request = {"content-type": "application/json", **headers}
    response = http.post("/api/users", content=b'{"name": "mallory"}', headers=request)
    assert response.status_code == status, response.text
    assert http.get("/api/users").status_code == 200
    assert "mallory" not in http.get("/api/users").text


def test_same_origin_and_listed_origins_may_change_state(client, gov_server) -> None:
    http = client("admin")
    same = gov_server.url  # http://127.0.0.1:PORT, the Host the client sends
    response = http.post("/api/users", json={"name": "alice"}, headers={"origin": same})
    assert response.status_code == 201, response.text
    # Reads are not state changes: any origin may read with a token.
    assert http.get("/api/users", headers={"origin": "https://evil.example"}).status_code == 200


def test_auth_off_refuses_to_bind_beyond_loopback(tmp_path) -> None:
    from slipway.errors import SlipwayError
    from slipway.server import BackgroundServer, check_auth_for_host

    from ..serving.conftest import make_settings

    with pytest.raises(SlipwayError, match="authentication off"):
        BackgroundServer(make_settings(tmp_path, host="0.0.0.0", auth=0))
    with pytest.raises(SlipwayError, match="authentication off"):
        check_auth_for_host(make_settings(tmp_path, host="192.168.1.10", auth=0))
    check_auth_for_host(make_settings(tmp_path, host="0.0.0.0"))  # auth on: fine
    check_auth_for_host(make_settings(tmp_path, host="127.0.0.1", auth=0))  # loopback: fine


def test_auth_off_on_loopback_still_refuses_drive_by_requests(tmp_path, gov_registry) -> None:
    from slipway.server import BackgroundServer

    from ..serving.conftest import make_settings

    settings = make_settings(
        tmp_path / "home2", database_url=gov_registry.settings.database_url, auth=0
    )
    server = BackgroundServer(settings)
    with server, httpx.Client(base_url=server.url) as http:
        assert http.get("/api/models").status_code == 200
        rebinding = {"origin": "http://attacker.example:80", "host": "attacker.example:80"}
        response = http.post("/api/users", json={"name": "eve"}, headers=rebinding)
        assert response.status_code == 403
        response = http.post(
            "/api/users", content=b'{"name":"eve"}', headers={"content-type": "text/plain"}
        )
        assert response.status_code == 415
    server.app.store.close()


def test_text_with_a_nul_is_never_a_500(client, gov_settings) -> None:
    """PostgreSQL text cannot hold NUL: a filter or field with one is a JSON 400 there (SQLite
    holds it), never a 500, and the server serves on."""
    postgres = gov_settings.database_url.startswith("postgresql")
    admin = client("admin")
    calls = [
        ("GET", "/api/events", {"params": {"subject": "deployment:x\x00"}}, 200),
        ("GET", "/api/alerts", {"params": {"deployment": "cancer-prod\x00"}}, 200),
        ("POST", "/api/tokens", {"json": {"user": "viewer", "description": "ci\x00"}}, 201),
        ("POST", "/api/approvals",
         {"json": {"deployment": "cancer-prod", "model": "cancer", "comment": "ok\x00"}}, 201),
    ]  # fmt: skip
    for method, path, kwargs, ok in calls:
        answer = admin.request(method, path, **kwargs)
        assert answer.status_code == (400 if postgres else ok), (path, answer.text)
        if postgres:
            assert "NUL" in answer.json()["error"]
    # A request id is stored with U+FFFD for the NUL, and found by the id as sent.
    assert admin.get("/api/audit", params={"request_id": "r\x00"}).json() == []
    assert admin.get("/api/models").status_code == 200
