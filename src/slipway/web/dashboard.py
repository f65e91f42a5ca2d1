"""The dashboard's ASGI handler: routes under ``/ui``, sessions, CSRF, roles, rendering.

Every route is in one of three classes, like the app's (``serving/access.py``):

- **public**: the sign-in page and the static assets (listed in ``PUBLIC_ROUTES`` there too);
- **page**: a GET that needs a session whose principal holds the role of the management API
  route showing the same data (``Route.api``), so the dashboard never shows more than the
  API would;
- **action**: a form POST that needs a session, the dashboard's own ``Origin``, a form body,
  the session's CSRF token, and the role of the API route doing the same change.

Without a session a page answers 401 with the sign-in form (and returns to the page after
signing in); a principal without the role gets 403. Actions call the same functions as the
management API (``rollout.actions``, ``governance.approvals``) and redirect back (303).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
import msgspec

from slipway import __version__
from slipway.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
    SlipwayError,
    Unauthenticated,
    UnsupportedFormat,
)
from slipway.governance.roles import ANONYMOUS_ADMIN, Principal, Role
from slipway.serving.errors import status_for
from slipway.serving.http import Receive, Scope, Send, header, query, read_body, send_bytes
from slipway.web import session, text, views

if TYPE_CHECKING:
    from slipway.serving.app import SlipwayApp

log = logging.getLogger("slipway.web")
FORM_LIMIT = 64 * 1024
_FORM = b"application/x-www-form-urlencoded"
_HTML = [(b"content-type", b"text/html; charset=utf-8")]
# The pages use no inline script and no outside resource: a script a page would somehow carry
# (an unescaped name) does not run, and nothing loads from anywhere but this server.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_STATIC_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".txt": b"text/plain; charset=utf-8",
}

Handler = Callable[["Call"], Awaitable[tuple[int, Any]]]


@dataclasses.dataclass(frozen=True)
class Route:
    """One dashboard route; ``api`` names the management route whose role it needs."""

    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    kind: str  # "public" | "page" | "action"
    api: tuple[str, str] | None


@dataclasses.dataclass
class Call:
    """One request to the dashboard, once it passed its route's checks."""

    scope: Scope
    params: dict[str, str]
    principal: Principal
    csrf: str
    form: dict[str, str]
    query: dict[str, str]


class Redirect(msgspec.Struct):
    """A 303 to ``location``, with a one-time message; ``session`` sets (a token) or clears
    ("") the session cookie, None leaves it."""

    location: str
    flash: str = ""
    session: str | None = None


@dataclasses.dataclass(frozen=True)
class Page:
    """A template to render with its context."""

    template: str
    context: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Asset:
    """A static file's bytes."""

    content_type: bytes
    body: bytes


class Dashboard:
    """The ``/ui`` handler of one :class:`SlipwayApp`."""

    def __init__(self, app: SlipwayApp) -> None:
        self.app = app
        self.access = app.access
        # With authentication off there is no token to derive CSRF tokens from: a per-process
        # secret stands in (such a server only listens on loopback).
        self._anonymous_secret = secrets.token_urlsafe(32)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("slipway.web", "templates"),
            autoescape=True,
        )
        self.templates.filters["when"] = text.when
        self.templates.filters["num"] = text.num
        self.templates.filters["pct"] = text.pct
        self.templates.filters["show"] = text.show
        self.static = {
            entry.name: entry.read_bytes()
            for entry in resources.files("slipway.web").joinpath("static").iterdir()
            if entry.is_file() and entry.name.rsplit(".", 1)[-1] in ("css", "js", "svg", "txt")
        }
        self.roles = {(r.method, r.template): r.role for r in app.management.routes}
        self.routes: list[Route] = []
        page, action, public = "page", "action", "public"
        for method, template, handler, kind, api in [
            ("GET", "/ui", self.overview, page, ("GET", "/api/deployments")),
            ("GET", "/ui/", self.overview, page, ("GET", "/api/deployments")),
            ("GET", "/ui/overview.json", self.overview_json, page, ("GET", "/api/deployments")),
            ("GET", "/ui/signin", self.signin_page, public, None),
            ("POST", "/ui/signin", self.signin, public, None),
            ("POST", "/ui/signout", self.signout, action, ("GET", "/api/whoami")),
            ("GET", "/ui/static/{file}", self.static_file, public, None),
            ("GET", "/ui/models/{model}", self.model, page, ("GET", "/api/models/{model}")),
            ("GET", "/ui/models/{model}/versions/{version}", self.version, page,
             ("GET", "/api/models/{model}/versions/{version}/reports")),
            ("GET", "/ui/deployments/{deployment}/rollout", self.rollout, page,
             ("GET", "/api/deployments/{deployment}/rollout")),
            ("POST", "/ui/deployments/{deployment}/rollout", self.start_rollout, action,
             ("POST", "/api/deployments/{deployment}/rollout")),
            ("POST", "/ui/deployments/{deployment}/rollout/{action}", self.rollout_action,
             action, ("POST", "/api/deployments/{deployment}/rollout/{action}")),
            ("POST", "/ui/deployments/{deployment}/rollback", self.rollback, action,
             ("POST", "/api/deployments/{deployment}/rollback")),
            ("GET", "/ui/deployments/{deployment}/experiment", self.experiment, page,
             ("GET", "/api/deployments/{deployment}/experiment")),
            ("GET", "/ui/deployments/{deployment}/drift", self.drift, page,
             ("GET", "/api/monitoring/{deployment}")),
            # The deployments route first, as in the API: the version route matches it too.
            ("GET", "/ui/readiness/deployments/{deployment}", self.readiness_of_deployment,
             page, ("GET", "/api/readiness/deployments/{deployment}")),
            ("GET", "/ui/readiness/{model}/{version}", self.readiness, page,
             ("GET", "/api/readiness/{model}/{version}")),
            ("GET", "/ui/approvals", self.approvals, page, ("GET", "/api/approvals")),
            ("GET", "/ui/approvals/{request}", self.approval, page,
             ("GET", "/api/approvals/{request}")),
            ("POST", "/ui/approvals/{request}/{decision}", self.decide, action,
             ("POST", "/api/approvals/{request}/approve")),
            ("GET", "/ui/audit", self.audit, page, ("GET", "/api/audit")),
        ]:  # fmt: skip
            pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
            if api is not None and api not in self.roles:
                raise LookupError(f"dashboard route {template} names no API route {api}")
            self.routes.append(Route(method, template, pattern, handler, kind, api))

    def role_of(self, route: Route) -> Role:
        """The role a route needs: that of the management API route it mirrors."""
        assert route.api is not None
        return self.roles[route.api]

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        allowed: list[str] = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            try:
                status, value = await self._serve(route, match.groupdict(), scope, receive)
            except SlipwayError as exc:
                status, value = status_for(exc), exc
            await self._respond(scope, send, status, value)
            return
        if allowed:
            wrong = InvalidInput(f"method {method} not allowed; use {allowed[0]}")
            await self._respond(scope, send, 405, wrong)
            return
        await self._respond(scope, send, 404, NotFound(f"no dashboard page {path}"))

    async def _serve(
        self, route: Route, params: dict[str, str], scope: Scope, receive: Receive
    ) -> tuple[int, Any]:
        form: dict[str, str] = {}
        if route.kind == "public":
            if route.method == "POST":
                form = await self._read_form(scope, receive)
            call = Call(scope, params, ANONYMOUS_ADMIN, "", form, query(scope))
            return await route.handler(call)
        principal, secret = await self._principal(scope)
        if principal is None:
            if route.method == "GET" and not route.template.endswith(".json"):
                return 401, self._signin_view(scope, next_path=session.next_of(scope))
            raise Unauthenticated("sign in to the dashboard first")
        if route.kind == "action":
            form = await self._read_form(scope, receive)
            if not session.csrf_matches(secret, form.get("csrf")):
                raise PermissionDenied(
                    principal.name,
                    "the form's CSRF token is missing or not this session's; reload the page",
                )
        principal.require(self.role_of(route))
        call = Call(scope, params, principal, session.csrf_token(secret), form, query(scope))
        return await route.handler(call)

    async def _principal(self, scope: Scope) -> tuple[Principal | None, str]:
        """The signed-in principal and the session's secret; (None, "") without a session."""
        if not self.access.enabled:
            return ANONYMOUS_ADMIN, self._anonymous_secret
        token = session.session_token(scope)
        if token is None:
            return None, ""
        try:
            return await self._authenticate(token), token
        except Unauthenticated:
            return None, ""

    async def _authenticate(self, token: str) -> Principal:
        authorization = f"Bearer {token}"
        tokens = self.access.tokens
        try:
            return tokens.authenticate(authorization)
        except Unauthenticated:
            await asyncio.to_thread(tokens.load, authorization)  # issued a moment ago, maybe
            return tokens.authenticate(authorization)

    async def _read_form(self, scope: Scope, receive: Receive) -> dict[str, str]:
        """A form post's fields, after the checks that stop other sites' pages: a form body
        only, from the dashboard's own origin (browsers always send Origin on POST)."""
        content_type = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type != _FORM:
            raise UnsupportedFormat(
                "dashboard forms are sent as application/x-www-form-urlencoded; use /api/ for JSON"
            )
        origin = header(scope, b"origin")
        if origin is None or not self.access.origin_allowed(scope, origin.decode("latin-1")):
            shown = "no origin" if origin is None else f"origin {origin.decode('latin-1')}"
            raise PermissionDenied(
                shown, "dashboard forms are accepted from the dashboard's own pages only"
            )
        body = await read_body(scope, receive, FORM_LIMIT)
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"), max_num_fields=64, strict_parsing=False
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"the form is not valid: {exc}") from None
        return dict(pairs)

    # -- responses -----------------------------------------------------------------------------

    async def _respond(self, scope: Scope, send: Send, status: int, value: Any) -> None:
        headers = list(_SECURITY_HEADERS)
        if isinstance(value, Redirect):
            headers.append((b"location", value.location.encode("latin-1")))
            if value.session is not None:
                max_age = session.LIFETIME_S if value.session else 0
                headers.append(
                    session.set_cookie(scope, session.COOKIE, value.session, max_age=max_age)
                )
            if value.flash:
                headers.append(
                    session.set_cookie(
                        scope, session.FLASH, urllib.parse.quote(value.flash), max_age=60
                    )
                )
            await send_bytes(send, 303, b"", headers)
            return
        if isinstance(value, Asset):
            headers = [
                (b"content-type", value.content_type),
                (b"x-content-type-options", b"nosniff"),
            ]
            await send_bytes(send, status, value.body, headers)
            return
        if isinstance(value, Page):
            context = dict(value.context)
            flash = session.cookies(scope).get(session.FLASH)
            if flash:  # shown once
                context.setdefault("flash", urllib.parse.unquote(flash))
                headers.append(session.set_cookie(scope, session.FLASH, "", max_age=0))
            body = self.render(value.template, context)
            await send_bytes(send, status, body, [*_HTML, *headers])
            return
        if isinstance(value, SlipwayError):
            if scope["path"].endswith(".json"):
                body = msgspec.json.encode({"error": value.message})
                await send_bytes(send, status, body, [(b"content-type", b"application/json")])
                return
            page = self.render(
                "error.html",
                {"status": status, "message": value.message, "principal": None, "csrf": ""},
            )
            await send_bytes(send, status, page, [*_HTML, *headers])
            return
        body = msgspec.json.encode(value)
        await send_bytes(send, status, body, [(b"content-type", b"application/json"), *headers])

    def render(self, template: str, context: dict[str, Any]) -> bytes:
        context = {
            # Not "version": the version page's context names the model version so.
            "slipway_release": __version__,
            "flash": "",
            "auth": self.access.enabled,
            **context,
        }
        principal = context.get("principal")
        context["can"] = lambda role: principal is not None and principal.role >= Role.parse(role)
        return self.templates.get_template(template).render(context).encode()

    def _page(self, call: Call, template: str, **context: Any) -> tuple[int, Any]:
        context.update(principal=call.principal, csrf=call.csrf)
        return 200, Page(template, context)

    def _signin_view(self, scope: Scope, *, next_path: str, error: str = "") -> Page:
        context = {"principal": None, "csrf": "", "next": next_path, "error": error}
        return Page("signin.html", context)

    # -- public --------------------------------------------------------------------------------

    async def signin_page(self, call: Call) -> tuple[int, Any]:
        next_path = session.safe_next(call.query.get("next"))
        return 200, self._signin_view(call.scope, next_path=next_path)

    async def signin(self, call: Call) -> tuple[int, Any]:
        token = call.form.get("token", "").strip()
        next_path = session.safe_next(call.form.get("next"))
        if not self.access.enabled:
            return 303, Redirect(next_path)
        try:
            principal = await self._authenticate(token) if token else None
        except Unauthenticated:
            principal = None
        if principal is None:
            view = self._signin_view(
                call.scope, next_path=next_path, error="That token is unknown, revoked or expired."
            )
            return 401, view
        redirect = Redirect(next_path, f"Signed in as {principal.name} ({principal.role}).")
        redirect.session = token
        return 303, redirect

    async def static_file(self, call: Call) -> tuple[int, Any]:
        name = call.params["file"]
        body = self.static.get(name)
        if body is None:
            raise NotFound(f"no dashboard asset {name!r}")
        suffix = "." + name.rsplit(".", 1)[-1]
        return 200, Asset(_STATIC_TYPES[suffix], body)

    # -- session -------------------------------------------------------------------------------

    async def signout(self, call: Call) -> tuple[int, Any]:
        return 303, Redirect("/ui/signin", "Signed out.", session="")

    # -- pages ---------------------------------------------------------------------------------

    async def overview(self, call: Call) -> tuple[int, Any]:
        data = await asyncio.to_thread(views.overview, self.app)
        return self._page(call, "overview.html", **data, interval=self._refresh_s())

    async def overview_json(self, call: Call) -> tuple[int, Any]:
        data = await asyncio.to_thread(views.overview, self.app)
        return 200, data

    def _refresh_s(self) -> float:
        return max(0.5, min(self.app.settings.monitor_interval_s, 5.0))

    async def model(self, call: Call) -> tuple[int, Any]:
        data = await asyncio.to_thread(views.model_page, self.app, call.params["model"])
        return self._page(call, "model.html", **data)

    async def version(self, call: Call) -> tuple[int, Any]:
        number = text.whole(call.params["version"], "version")
        data = await asyncio.to_thread(views.version_page, self.app, call.params["model"], number)
        return self._page(call, "version.html", **data)

    async def rollout(self, call: Call) -> tuple[int, Any]:
        data = await asyncio.to_thread(views.rollout_page, self.app, call.params["deployment"])
        return self._page(call, "rollout.html", **data)

    async def experiment(self, call: Call) -> tuple[int, Any]:
        alpha = text.finite(call.query.get("alpha", "0.05"), "alpha")
        if not 0 < alpha < 1:
            raise InvalidInput("alpha must be between 0 and 1")
        name = call.params["deployment"]
        data = await asyncio.to_thread(views.experiment_page, self.app, name, alpha)
        return self._page(call, "experiment.html", **data)

    async def drift(self, call: Call) -> tuple[int, Any]:
        data = await asyncio.to_thread(views.drift_page, self.app, call.params["deployment"])
        return self._page(call, "drift.html", **data)

    async def readiness(self, call: Call) -> tuple[int, Any]:
        raw = call.params["version"]
        number = None if raw == "latest" else text.whole(raw, "version")
        model, deployment = call.params["model"], call.query.get("deployment") or None
        data = await asyncio.to_thread(
            lambda: views.readiness_page(self.app, model, number, deployment=deployment)
        )
        return self._page(call, "readiness.html", **data)

    async def readiness_of_deployment(self, call: Call) -> tuple[int, Any]:
        name = call.params["deployment"]
        data = await asyncio.to_thread(lambda: views.readiness_page(self.app, deployment=name))
        return self._page(call, "readiness.html", **data)

    async def approvals(self, call: Call) -> tuple[int, Any]:
        status = call.query.get("status", "pending")
        data = await asyncio.to_thread(views.approvals_page, self.app, status)
        return self._page(call, "approvals.html", **data)

    async def approval(self, call: Call) -> tuple[int, Any]:
        request_id = text.whole(call.params["request"], "request id")
        data = await asyncio.to_thread(views.approval_page, self.app, request_id)
        return self._page(call, "approval.html", **data)

    async def audit(self, call: Call) -> tuple[int, Any]:
        form = {k: v.strip() for k, v in call.query.items() if v.strip()}
        filters: dict[str, Any] = {}
        for name in ("request_id", "deployment", "kind"):
            if name in form:
                filters[name] = form[name]
        for name in ("since", "until"):
            if name in form:
                filters[name] = views.parse_time(form[name], name)
        if "key" in form:
            field, sep, value = form["key"].partition("=")
            if not sep or not field:
                raise InvalidInput("key must look like field=value, e.g. customer_id=42")
            filters["key"] = (field, value)
        limit = text.whole(form.get("limit", "100"), "limit")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        data = await asyncio.to_thread(views.audit_page, self.app, filters, limit)
        return self._page(call, "audit.html", **data, form=form, searched=bool(filters))

    # -- actions -------------------------------------------------------------------------------

    async def start_rollout(self, call: Call) -> tuple[int, Any]:
        from slipway.rollout import actions

        name = call.params["deployment"]
        version = text.whole(call.form.get("version", ""), "version")
        config = text.rollout_config(call.form)
        actor = call.principal.name
        await asyncio.to_thread(
            lambda: actions.start(self.app.store, name, version, config, actor=actor)
        )
        await self._apply_now()
        return 303, Redirect(
            f"/ui/deployments/{name}/rollout", f"Started a {config.strategy} of version {version}."
        )

    async def _apply_now(self) -> None:
        # Like the API: this replica switches traffic at once, others on their next reconcile.
        try:
            await self.app.repository.reconcile()
        except Exception:  # the periodic reconcile will retry
            log.exception("reconcile after a dashboard action failed")

    async def rollout_action(self, call: Call) -> tuple[int, Any]:
        from slipway.rollout import actions

        name, action = call.params["deployment"], call.params["action"]
        run, actor = actions.operator_action(action), call.principal.name
        await asyncio.to_thread(lambda: run(self.app.store, name, actor=actor))
        await self._apply_now()
        return 303, Redirect(
            f"/ui/deployments/{name}/rollout",
            f"Rollout {action}d." if action != "resume" else "Rollout resumed.",
        )

    async def rollback(self, call: Call) -> tuple[int, Any]:
        from slipway.rollout import actions

        name, actor = call.params["deployment"], call.principal.name
        record = await asyncio.to_thread(
            lambda: actions.rollback(self.app.store, name, actor=actor)
        )
        await self._apply_now()
        return 303, Redirect(
            f"/ui/deployments/{name}/rollout", f"Rolled back: serving version {record.version}."
        )

    async def decide(self, call: Call) -> tuple[int, Any]:
        from slipway.governance import approvals

        request_id = text.whole(call.params["request"], "request id")
        decision = call.params["decision"]
        if decision not in ("approve", "reject"):
            raise InvalidInput(f"unknown decision {decision!r}; use approve or reject")
        comment, actor = call.form.get("comment", ""), call.principal.name
        decided = await asyncio.to_thread(
            lambda: approvals.decide(
                self.app.store,
                request_id,
                approve=decision == "approve",
                actor=actor,
                comment=comment,
            )
        )
        verb = "Approved" if decision == "approve" else "Rejected"
        return 303, Redirect(
            f"/ui/approvals/{request_id}", f"{verb} request {request_id}; it is {decided.status}."
        )
