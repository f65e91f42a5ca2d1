"""The governance routes of the management API: users, tokens, deployment policies, approvals,
evidence reports and the audit log. Thin HTTP shells over :mod:`slipway.governance`."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import msgspec

from slipway.errors import InvalidInput
from slipway.governance import approvals, audit, identities
from slipway.governance.evidence import ApprovalPolicy, EvidenceReport
from slipway.governance.roles import Role
from slipway.registry.records import DeploymentRecord, InferencePolicy
from slipway.serving.http import query
from slipway.serving.management import _int

if TYPE_CHECKING:
    from slipway.serving.management import ManagementApi, Request


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str = "viewer"
    kind: str = "user"


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: str | None = None
    disabled: bool | None = None


_MAX_LIFETIME_S = identities.MAX_TOKEN_LIFETIME.total_seconds()


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    description: str = ""
    expires_in_s: float | None = None


class DeploymentPolicyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    production: bool | None = None
    inference: InferencePolicy | None = None


class PromotionCreate(msgspec.Struct, forbid_unknown_fields=True):
    deployment: str
    model: str
    version: int | None = None
    comment: str = ""


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True):
    comment: str = ""


class ReportCreate(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    name: str
    passed: bool
    summary: dict[str, Any] = {}


class PurgeBody(msgspec.Struct, forbid_unknown_fields=True):
    before: dt.datetime


class GovernanceApi:
    """Adds the governance routes to a :class:`ManagementApi`."""

    def __init__(self, api: ManagementApi) -> None:
        self.api = api
        self.store = api.store
        admin, approver, deployer, viewer = Role.ADMIN, Role.APPROVER, Role.DEPLOYER, Role.VIEWER
        routes: list[tuple[str, str, Any, str, Any, Any, Role]] = [
            ("GET", "/api/whoami", self.whoami, "The caller and their role", None, dict, viewer),
            ("GET", "/api/users", self.list_users, "Users", None, list[identities.UserRecord],
             admin),
            ("POST", "/api/users", self.create_user, "Add a user or service account", UserCreate,
             identities.UserRecord, admin),
            ("PATCH", "/api/users/{user}", self.update_user, "Change a user's role, or disable"
             " them", UserUpdate, identities.UserRecord, admin),
            ("GET", "/api/tokens", self.list_tokens, "Tokens (never their secrets)", None,
             list[identities.TokenRecord], admin),
            ("POST", "/api/tokens", self.issue_token, "Issue a token; the secret is in this"
             " response only", TokenCreate, identities.IssuedToken, admin),
            ("DELETE", "/api/tokens/{token}", self.revoke_token, "Revoke a token", None,
             identities.TokenRecord, admin),
            ("PATCH", "/api/deployments/{deployment}/policy", self.deployment_policy,
             "Mark a deployment production (needs an approved promotion of the version it"
             " serves) and set its inference access and audit payload policy",
             DeploymentPolicyUpdate, DeploymentRecord, admin),
            ("GET", "/api/models/{model}/policy", self.get_policy, "A model's approval policy",
             None, ApprovalPolicy, viewer),
            ("PUT", "/api/models/{model}/policy", self.set_policy, "Set a model's approval"
             " policy (open requests turn stale)", ApprovalPolicy, ApprovalPolicy, admin),
            ("GET", "/api/models/{model}/versions/{version}/reports", self.list_reports,
             "Evidence reports of a version", None, list[EvidenceReport], viewer),
            ("POST", "/api/models/{model}/versions/{version}/reports", self.attach_report,
             "Attach a validation, shadow or check report (open requests turn stale)",
             ReportCreate, EvidenceReport, deployer),
            ("GET", "/api/approvals", self.list_requests, "Promotion requests, newest first",
             None, list[approvals.PromotionRequest], viewer),
            ("POST", "/api/approvals", self.request_promotion, "Request a promotion to"
             " production", PromotionCreate, approvals.PromotionRequest, deployer),
            ("GET", "/api/approvals/{request}", self.show_request, "A promotion request with its"
             " evidence bundle and decisions", None, approvals.PromotionRequest, viewer),
            ("POST", "/api/approvals/{request}/approve", self.approve, "Approve (not your own)",
             DecisionBody, approvals.PromotionRequest, approver),
            ("POST", "/api/approvals/{request}/reject", self.reject, "Reject (not your own)",
             DecisionBody, approvals.PromotionRequest, approver),
            ("GET", "/api/audit", self.query_audit, "Audit records: request_id, deployment,"
             " since, until, key=field=value, kind, after (seq), limit", None,
             list[audit.AuditRecord], admin),
            ("GET", "/api/audit/verify", self.verify_audit, "Verify the whole hash chain", None,
             audit.Verification, admin),
            ("GET", "/api/audit/checkpoint", self.checkpoint, "The chain's head, to export",
             None, audit.Checkpoint, admin),
            ("POST", "/api/audit/purge", self.purge, "Delete records older than a time",
             PurgeBody, audit.Purge, admin),
        ]  # fmt: skip
        for route in routes:
            api._add(*route)

    async def _tokens_changed(self) -> None:
        await asyncio.to_thread(self.api.access.tokens.refresh)

    # -- identities ----------------------------------------------------------------------------

    async def whoami(self, request: Request) -> tuple[int, Any]:
        principal = request.principal
        assert principal is not None
        return 200, {"name": principal.name, "role": str(principal.role), "kind": principal.kind}

    async def list_users(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(identities.list_users, self.store)

    async def create_user(self, request: Request) -> tuple[int, Any]:
        spec: UserCreate = await self.api._json(request, UserCreate)
        record = await asyncio.to_thread(
            lambda: identities.create_user(
                self.store, spec.name, spec.role, kind=spec.kind, actor=request.actor
            )
        )
        return 201, record

    async def update_user(self, request: Request) -> tuple[int, Any]:
        spec: UserUpdate = await self.api._json(request, UserUpdate)
        record = await asyncio.to_thread(
            lambda: identities.update_user(
                self.store,
                request.params["user"],
                role=spec.role,
                disabled=spec.disabled,
                actor=request.actor,
            )
        )
        await self._tokens_changed()
        return 200, record

    async def list_tokens(self, request: Request) -> tuple[int, Any]:
        user = query(request.scope).get("user")
        return 200, await asyncio.to_thread(identities.list_tokens, self.store, user)

    async def issue_token(self, request: Request) -> tuple[int, Any]:
        spec: TokenCreate = await self.api._json(request, TokenCreate)
        if spec.expires_in_s is not None and not 0 < spec.expires_in_s <= _MAX_LIFETIME_S:
            # checked here: a huge value overflows the timedelta before the domain sees it
            raise InvalidInput("expires_in_s must be positive and at most 100 years")
        lifetime = None if spec.expires_in_s is None else dt.timedelta(seconds=spec.expires_in_s)
        issued = await asyncio.to_thread(
            lambda: identities.issue_token(
                self.store,
                spec.user,
                description=spec.description,
                expires_in=lifetime,
                actor=request.actor,
            )
        )
        await self._tokens_changed()
        return 201, issued

    async def revoke_token(self, request: Request) -> tuple[int, Any]:
        token_id = _int(request.params["token"], "token id")
        record = await asyncio.to_thread(
            lambda: identities.revoke_token(self.store, token_id, actor=request.actor)
        )
        await self._tokens_changed()
        return 200, record

    # -- deployment policy ---------------------------------------------------------------------

    async def deployment_policy(self, request: Request) -> tuple[int, Any]:
        spec: DeploymentPolicyUpdate = await self.api._json(request, DeploymentPolicyUpdate)
        record = await asyncio.to_thread(
            lambda: self.store.update_deployment(
                request.params["deployment"],
                production=spec.production,
                inference=spec.inference,
                actor=request.actor,
            )
        )
        return 200, record

    # -- approvals -----------------------------------------------------------------------------

    async def get_policy(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(
            approvals.get_policy, self.store, request.params["model"]
        )

    async def set_policy(self, request: Request) -> tuple[int, Any]:
        policy: ApprovalPolicy = await self.api._json(request, ApprovalPolicy)
        return 200, await asyncio.to_thread(
            lambda: approvals.set_policy(
                self.store, request.params["model"], policy, actor=request.actor
            )
        )

    async def list_reports(self, request: Request) -> tuple[int, Any]:
        version = _int(request.params["version"], "version")
        return 200, await asyncio.to_thread(
            approvals.list_reports, self.store, request.params["model"], version
        )

    async def attach_report(self, request: Request) -> tuple[int, Any]:
        version = _int(request.params["version"], "version")
        spec: ReportCreate = await self.api._json(request, ReportCreate)
        report = await asyncio.to_thread(
            lambda: approvals.attach_report(
                self.store,
                request.params["model"],
                version,
                kind=spec.kind,
                name=spec.name,
                passed=spec.passed,
                summary=spec.summary,
                actor=request.actor,
            )
        )
        return 201, report

    async def list_requests(self, request: Request) -> tuple[int, Any]:
        params = query(request.scope)
        return 200, await asyncio.to_thread(
            lambda: approvals.list_requests(
                self.store, status=params.get("status"), deployment=params.get("deployment")
            )
        )

    async def request_promotion(self, request: Request) -> tuple[int, Any]:
        spec: PromotionCreate = await self.api._json(request, PromotionCreate)
        actor = request.actor or "anonymous"
        created = await asyncio.to_thread(
            lambda: approvals.request_promotion(
                self.store,
                spec.deployment,
                spec.model,
                spec.version,
                actor=actor,
                comment=spec.comment,
            )
        )
        return 201, created

    async def show_request(self, request: Request) -> tuple[int, Any]:
        request_id = _int(request.params["request"], "request id")
        return 200, await asyncio.to_thread(approvals.get_request, self.store, request_id)

    async def approve(self, request: Request) -> tuple[int, Any]:
        return await self._decide(request, approve=True)

    async def reject(self, request: Request) -> tuple[int, Any]:
        return await self._decide(request, approve=False)

    async def _decide(self, request: Request, *, approve: bool) -> tuple[int, Any]:
        request_id = _int(request.params["request"], "request id")
        body: DecisionBody = await self.api._json(request, DecisionBody)
        actor = request.actor or "anonymous"
        decided = await asyncio.to_thread(
            lambda: approvals.decide(
                self.store, request_id, approve=approve, actor=actor, comment=body.comment
            )
        )
        return 200, decided

    # -- audit ---------------------------------------------------------------------------------

    async def query_audit(self, request: Request) -> tuple[int, Any]:
        params = query(request.scope)
        limit = _int(params.get("limit", "100"), "limit")
        if not 1 <= limit <= 10000:
            raise InvalidInput("limit must be between 1 and 10000")
        key = None
        if "key" in params:
            field, sep, value = params["key"].partition("=")
            if not sep or not field:
                raise InvalidInput("key must look like field=value, e.g. customer_id=42")
            key = (field, value)
        return 200, await asyncio.to_thread(
            lambda: audit.query(
                self.store,
                request_id=params.get("request_id"),
                deployment=params.get("deployment"),
                since=_time(params.get("since"), "since"),
                until=_time(params.get("until"), "until"),
                key=key,
                kind=params.get("kind"),
                after=_int(params.get("after", "0"), "after"),
                limit=limit,
            )
        )

    async def verify_audit(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(audit.verify, self.store)

    async def checkpoint(self, request: Request) -> tuple[int, Any]:
        return 200, await asyncio.to_thread(audit.checkpoint, self.store)

    async def purge(self, request: Request) -> tuple[int, Any]:
        body: PurgeBody = await self.api._json(request, PurgeBody)
        if body.before.tzinfo is None:
            raise InvalidInput("before needs a time zone, e.g. 2026-01-01T00:00:00Z")
        return 200, await asyncio.to_thread(
            lambda: audit.purge(self.store, before=body.before, actor=request.actor)
        )


def _time(raw: str | None, what: str) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{what} must be an ISO 8601 time, got {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
