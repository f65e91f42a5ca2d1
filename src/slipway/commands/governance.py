"""``slipway users|tokens|approvals|audit`` and ``slipway deployments policy``.

Who runs them is :func:`~slipway.commands.common.caller`. Approving and rejecting need a named
identity, so they require ``SLIPWAY_TOKEN``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from slipway import errors
from slipway.commands.common import (
    caller,
    console,
    open_registry,
    progress,
    read_input,
    read_json,
    write_output,
)
from slipway.governance import approvals, audit, identities
from slipway.governance.evidence import ApprovalPolicy
from slipway.governance.roles import Role
from slipway.registry.store import SqlStore

users_app = typer.Typer(help="Users and service accounts, and their roles.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="API tokens: create (shown once), list, revoke.", no_args_is_help=True
)
approvals_app = typer.Typer(
    help="Promotion requests to production: request, review the evidence, approve, reject.",
    no_args_is_help=True,
)
audit_app = typer.Typer(
    help="The tamper-evident audit log: verify, query, export, checkpoint, purge.",
    no_args_is_help=True,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DURATION_S = identities.MAX_TOKEN_LIFETIME.total_seconds()


def parse_duration(text: str) -> dt.timedelta:
    """``"90d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` → timedelta, at most 100 years (a
    longer one would overflow the dates computed from it)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise errors.InvalidInput(f"invalid duration {text!r}: write e.g. 90d, 12h, 30m")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > _MAX_DURATION_S:
        raise errors.InvalidInput(f"duration {text!r} is too long: at most 100 years (36525d)")
    return dt.timedelta(seconds=seconds)


def _time(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise errors.InvalidInput(
            f"invalid time {text!r}: use ISO 8601, e.g. 2026-01-31T12:00Z"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _print_json(value: Any) -> None:
    console.print_json(msgspec.json.encode(value).decode())


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"


def print_first_admin(store: SqlStore) -> None:
    """For ``slipway init``: create the first admin and print their token, once; or a new admin
    when none of the registry's admins is enabled."""
    recovering = bool(identities.list_users(store))
    issued = identities.bootstrap_admin(store)
    if issued is None:
        console.print("an admin exists already; `slipway tokens create USER` makes more tokens")
        return
    user = issued.record.user
    if recovering:
        console.print(f"no enabled admin was left: new admin [bold]{user}[/]; their token"
                      " (shown only now):")  # fmt: skip
    else:
        console.print(f"first admin: [bold]{user}[/]; their token (shown only now):")
    console.print(issued.token, highlight=False, soft_wrap=True)
    console.print("export SLIPWAY_TOKEN=<token> for the CLI, or send it as a bearer token")


# -- users -------------------------------------------------------------------------------------


@users_app.command("list")
def users_list() -> None:
    """List users and service accounts."""
    with open_registry() as registry:
        caller(registry.store, Role.ADMIN)
        users = identities.list_users(registry.store)
    table = Table("user", "kind", "role", "disabled", "created", "by")
    for u in users:
        table.add_row(
            u.name, u.kind, u.role, "yes" if u.disabled else "", _when(u.created_at),
            u.created_by or "-",
        )  # fmt: skip
    console.print(table)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name, e.g. alice or ci-bot")],
    role: Annotated[str, typer.Option(help="viewer, deployer, approver or admin")] = "viewer",
    service: Annotated[bool, typer.Option("--service", help="A service account")] = False,
) -> None:
    """Add a user (or a service account with --service)."""
    with open_registry() as registry:
        actor = caller(registry.store, Role.ADMIN).name
        kind = "service" if service else "user"
        user = identities.create_user(registry.store, name, role, kind=kind, actor=actor)
    console.print(f"added {user.kind} [bold]{user.name}[/] with role {user.role}")


@users_app.command("set-role")
def users_set_role(
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Argument(help="viewer, deployer, approver or admin")],
) -> None:
    """Change a user's role."""
    with open_registry() as registry:
        actor = caller(registry.store, Role.ADMIN).name
        user = identities.update_user(registry.store, name, role=role, actor=actor)
    console.print(f"{user.name} is now {user.role}")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Disable a user: every token of theirs stops working."""
    _set_disabled(name, True)


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument(help="User name")]) -> None:
    """Enable a disabled user again (their unrevoked, unexpired tokens work again)."""
    _set_disabled(name, False)


def _set_disabled(name: str, disabled: bool) -> None:
    with open_registry() as registry:
        actor = caller(registry.store, Role.ADMIN).name
        identities.update_user(registry.store, name, disabled=disabled, actor=actor)
    console.print(f"{name} is {'disabled' if disabled else 'enabled'}")


# -- tokens ------------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Argument(help="Whose token")],
    description: Annotated[str, typer.Option(help="What it is for")] = "",
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 90d, 12h (default: until revoked)")
    ] = None,
) -> None:
    """Issue a token. It is printed once; only its hash is kept."""
    lifetime = None if expires_in is None else parse_duration(expires_in)
    with open_registry() as registry:
        actor = caller(registry.store, Role.ADMIN).name
        issued = identities.issue_token(
            registry.store, user, description=description, expires_in=lifetime, actor=actor
        )
    record = issued.record
    expiry = f", expires {_when(record.expires_at)} UTC" if record.expires_at else ""
    console.print(f"token {record.id} for [bold]{user}[/]{expiry} (shown only now):")
    console.print(issued.token, highlight=False, soft_wrap=True)


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens")] = None,
) -> None:
    """List tokens (their first characters, never the secret)."""
    with open_registry() as registry:
        caller(registry.store, Role.ADMIN)
        tokens = identities.list_tokens(registry.store, user)  # NotFound for no such user
    table = Table("id", "user", "token", "description", "created", "expires", "revoked")
    for t in tokens:
        table.add_row(
            str(t.id), t.user, t.prefix + "…", t.description, _when(t.created_at),
            _when(t.expires_at), _when(t.revoked_at),
        )  # fmt: skip
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id (tokens list)")]) -> None:
    """Revoke a token; servers stop accepting it within SLIPWAY_TOKEN_REFRESH_S seconds."""
    with open_registry() as registry:
        actor = caller(registry.store, Role.ADMIN).name
        record = identities.revoke_token(registry.store, token_id, actor=actor)
    console.print(f"token {record.id} of {record.user} revoked")


# -- deployment policy (mounted as `slipway deployments policy`) -------------------------------


def deployment_policy(
    deployment: Annotated[str, typer.Argument(help="Deployment name")],
    production: Annotated[
        bool | None,
        typer.Option(
            "--production/--no-production",
            help="Mark it production: it then moves only to approved versions",
        ),
    ] = None,
    anonymous: Annotated[
        bool | None,
        typer.Option("--anonymous/--require-token", help="Who may call its inference routes"),
    ] = None,
    audit_payload: Annotated[
        str | None,
        typer.Option(help="What prediction audit records keep: hash, full, redact, sample, none"),
    ] = None,
    redact: Annotated[
        list[str] | None, typer.Option(help="Payload field to redact (repeatable)")
    ] = None,
    key: Annotated[
        list[str] | None, typer.Option(help="Business key field to record (repeatable)")
    ] = None,
    sample_rate: Annotated[
        float | None, typer.Option(help="Fraction recorded in full with --audit-payload sample")
    ] = None,
) -> None:
    """Show or change a deployment's policy: production, inference access, audit payloads."""
    with open_registry() as registry:
        store = registry.store
        changes: dict[str, Any] = {}
        for field, value in [
            ("anonymous", anonymous),
            ("payload", audit_payload),
            ("redact", redact),
            ("keys", key),
            ("sample_rate", sample_rate),
        ]:
            if value is not None:
                changes[field] = value
        changing = bool(changes) or production is not None
        actor = caller(store, Role.ADMIN if changing else Role.VIEWER).name
        current = store.get_deployment(deployment)
        if changing:
            try:
                inference = msgspec.convert(
                    {**msgspec.to_builtins(current.inference), **changes},
                    type(current.inference),
                )
            except msgspec.ValidationError as exc:
                raise errors.InvalidInput(f"invalid policy: {exc}") from None
            current = store.update_deployment(
                deployment,
                production=production,
                inference=inference if changes else None,
                actor=actor,
            )
    _print_json({"deployment": current.name, "production": current.production,
                 "inference": current.inference})  # fmt: skip


# -- approvals ---------------------------------------------------------------------------------


@approvals_app.command("list")
def approvals_list(
    status: Annotated[
        str | None,
        typer.Option(help="pending, approved, promoted, rejected, stale or cancelled"),
    ] = None,
    deployment: Annotated[str | None, typer.Option(help="Only this deployment")] = None,
) -> None:
    """List promotion requests, newest first."""
    with open_registry() as registry:
        caller(registry.store, Role.VIEWER)
        found = approvals.list_requests(registry.store, status=status, deployment=deployment)
    table = Table("id", "deployment", "version", "status", "approvals", "requested by", "at")
    for r in found:
        approved = sum(d.decision == "approve" for d in r.decisions)
        table.add_row(
            str(r.id), r.deployment, r.ref, r.status, f"{approved}/{r.approvals_required}",
            r.requested_by, _when(r.requested_at),
        )  # fmt: skip
    console.print(table)


@approvals_app.command("show")
def approvals_show(
    request_id: Annotated[int, typer.Argument(help="Request id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show a request: its evidence bundle, the diff against production, and decisions."""
    with open_registry() as registry:
        caller(registry.store, Role.VIEWER)
        request = approvals.get_request(registry.store, request_id)
    if as_json:
        _print_json(request)
        return
    evidence = request.evidence or {}
    candidate = evidence.get("candidate", {})
    table = Table(show_header=False, title=f"request #{request.id}: {request.ref} → "
                  f"{request.deployment} ({request.status})")  # fmt: skip
    table.add_row("requested", f"{request.requested_by} at {_when(request.requested_at)}")
    table.add_row("comment", request.comment or "-")
    table.add_row("artifact", f"sha256:{request.digest}")
    table.add_row("evidence", f"sha256:{request.evidence_digest}")
    table.add_row("lineage", json.dumps(candidate.get("lineage")))
    table.add_row("hyperparameters", json.dumps(candidate.get("hyperparameters")))
    table.add_row("metrics", json.dumps(candidate.get("metrics")))
    for report in evidence.get("reports", []):
        verdict = "passed" if report["passed"] else "FAILED"
        table.add_row(f"{report['kind']} report", f"{report['name']}: {verdict}")
    table.add_row("policy", json.dumps(evidence.get("policy")))
    table.add_row("unmet", "; ".join(evidence.get("unmet", [])) or "-")
    diff = evidence.get("diff", {})
    table.add_row("against", str(diff.get("against") or "nothing served yet"))
    for name, change in [
        *diff.get("metrics", {}).items(),
        *diff.get("hyperparameters", {}).items(),
    ]:
        shown = ["-" if v is None else str(v) for v in (change["current"], change["candidate"])]
        table.add_row(f"  {name}", " → ".join(shown))
    for name, key in (
        ("training data", "training_data_changed"),
        ("signature", "signature_changed"),
    ):
        if key in diff:
            table.add_row(f"  {name}", "changed" if diff[key] else "unchanged")
    for d in request.decisions:
        table.add_row(d.decision, f"{d.actor} at {_when(d.at)}: {d.comment or '-'}")
    console.print(table)


@approvals_app.command("request")
def approvals_request(
    deployment: Annotated[str, typer.Argument(help="Production deployment")],
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION (latest when no version)")],
    comment: Annotated[str, typer.Option(help="Why")] = "",
) -> None:
    """Request the promotion of MODEL@VERSION on DEPLOYMENT (role deployer)."""
    from slipway.registry.names import parse_ref

    model, number = parse_ref(ref)
    with open_registry() as registry:
        actor = caller(registry.store, Role.DEPLOYER).name
        request = approvals.request_promotion(
            registry.store, deployment, model, number, actor=actor, comment=comment
        )
    unmet = (request.evidence or {}).get("unmet") or []
    console.print(f"request [bold]#{request.id}[/]: {request.ref} → {request.deployment}, pending")
    if unmet:
        console.print("the policy still needs: " + "; ".join(unmet))


def _decide(request_id: int, comment: str, *, approve: bool) -> None:
    with open_registry() as registry:
        actor = caller(registry.store, Role.APPROVER, named=True).name
        request = approvals.decide(
            registry.store, request_id, approve=approve, actor=actor, comment=comment
        )
    console.print(f"request #{request.id} ({request.ref} → {request.deployment}): {request.status}")


@approvals_app.command("approve")
def approvals_approve(
    request_id: Annotated[int, typer.Argument(help="Request id")],
    comment: Annotated[str, typer.Option(help="Why")] = "",
) -> None:
    """Approve a request (role approver; not your own; SLIPWAY_TOKEN names you)."""
    _decide(request_id, comment, approve=True)


@approvals_app.command("reject")
def approvals_reject(
    request_id: Annotated[int, typer.Argument(help="Request id")],
    comment: Annotated[str, typer.Option(help="Why")] = "",
) -> None:
    """Reject a request (role approver; not your own; SLIPWAY_TOKEN names you)."""
    _decide(request_id, comment, approve=False)


@approvals_app.command("policy")
def approvals_policy(
    model: Annotated[str, typer.Argument(help="Model name")],
    approvals_needed: Annotated[
        int | None, typer.Option("--approvals", help="Approvers needed")
    ] = None,
    require_validation: Annotated[
        bool | None,
        typer.Option(
            "--require-validation/--no-require-validation", help="Needs passing validation reports"
        ),
    ] = None,
    check: Annotated[
        list[str] | None, typer.Option(help="A check that must pass (repeatable)")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from", help="Take it from a promotion policy file (approvals, checks)"),
    ] = None,
) -> None:
    """Show or set a model's approval policy (setting it needs admin)."""
    with open_registry() as registry:
        store = registry.store
        changing = from_file is not None or any(
            option is not None for option in (approvals_needed, require_validation, check)
        )
        actor = caller(store, Role.ADMIN if changing else Role.VIEWER).name
        policy = approvals.get_policy(store, model)
        if from_file is not None:
            from slipway.validation.policy import load_policy

            declared = load_policy(from_file).approval_policy()
            policy = approvals.set_policy(store, model, declared, actor=actor)
        elif changing:
            policy = approvals.set_policy(
                store,
                model,
                ApprovalPolicy(
                    approvals=policy.approvals if approvals_needed is None else approvals_needed,
                    require_validation=policy.require_validation
                    if require_validation is None
                    else require_validation,
                    required_checks=policy.required_checks if check is None else check,
                ),
                actor=actor,
            )
    _print_json(policy)


@approvals_app.command("report")
def approvals_report(
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION")],
    kind: Annotated[str, typer.Option(help="validation, shadow or check")],
    name: Annotated[str, typer.Option(help="Report name, e.g. holdout or load-test")],
    passed: Annotated[bool, typer.Option("--passed/--failed", help="Its verdict")],
    summary: Annotated[
        Path | None, typer.Option(help="JSON file with the report's figures")
    ] = None,
) -> None:
    """Attach evidence to a version (role deployer); open requests for it turn stale."""
    from slipway.registry.names import parse_ref

    model, number = parse_ref(ref)
    if number is None:
        raise errors.InvalidInput("name the version: MODEL@VERSION")
    figures = {} if summary is None else read_json(summary, "the summary file")
    if not isinstance(figures, dict):
        raise errors.InvalidInput("the summary file must hold a JSON object")
    with open_registry() as registry:
        actor = caller(registry.store, Role.DEPLOYER).name
        report = approvals.attach_report(
            registry.store, model, number, kind=kind, name=name, passed=passed,
            summary=figures, actor=actor,
        )  # fmt: skip
    console.print(f"attached {report.kind} report {report.name!r} to {model}@{number}")


# -- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        list[Path] | None, typer.Option(help="Checkpoint file(s) from `audit checkpoint`")
    ] = None,
) -> None:
    """Verify the whole chain; name the first broken record (exit code 10)."""
    marks = [_checkpoint(path) for path in checkpoint or []]
    with open_registry() as registry:
        caller(registry.store, Role.ADMIN)
        with progress() as bar:
            task = bar.add_task("verifying the audit log", total=None)

            def read(records: int) -> None:
                bar.update(task, description=f"verifying the audit log: {records:,} records")

            result = audit.verify(registry.store, checkpoints=marks, on_progress=read)
    result.raise_if_broken()
    span = f"records {result.first_seq}-{result.last_seq}" if result.records else "no records"
    console.print(f"audit log verified: {result.records} {span}, head sha256:{result.head_hash}")


def _checkpoint(path: Path) -> audit.Checkpoint:
    try:
        return msgspec.json.decode(read_input(path, "the checkpoint"), type=audit.Checkpoint)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise errors.InvalidInput(
            f"the checkpoint {path} is not one from `slipway audit checkpoint`: {exc}"
        ) from None


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path | None, typer.Option(help="Write it to this file too")] = None,
) -> None:
    """Print the chain's head (seq, hash); keep it somewhere the database cannot reach."""
    with open_registry() as registry:
        caller(registry.store, Role.ADMIN)
        mark = audit.checkpoint(registry.store)
    encoded = msgspec.json.encode(mark)
    if out is not None:
        write_output(out, encoded + b"\n")
    console.print_json(encoded.decode())


def _filters(
    request_id: str | None,
    deployment: str | None,
    since: str | None,
    until: str | None,
    key: str | None,
    kind: str | None,
) -> dict[str, Any]:
    if kind is not None and kind not in audit.KINDS:
        raise errors.InvalidInput(f"unknown --kind {kind!r}; use one of {', '.join(audit.KINDS)}")
    pair = None
    if key is not None:
        field, sep, value = key.partition("=")
        if not sep or not field:
            raise errors.InvalidInput("--key must look like field=value, e.g. customer_id=42")
        pair = (field, value)
    return {
        "request_id": request_id,
        "deployment": deployment,
        "since": _time(since),
        "until": _time(until),
        "key": pair,
        "kind": kind,
    }


RequestId = Annotated[str | None, typer.Option(help="One request's records")]
DeploymentOpt = Annotated[str | None, typer.Option(help="One deployment's records")]
Since = Annotated[str | None, typer.Option(help="From this time (ISO 8601)")]
Until = Annotated[str | None, typer.Option(help="Before this time (ISO 8601)")]
Key = Annotated[str | None, typer.Option(help="Business key, field=value")]
Kind = Annotated[str | None, typer.Option(help="control or prediction")]


@audit_app.command("query")
def audit_query(
    request_id: RequestId = None,
    deployment: DeploymentOpt = None,
    since: Since = None,
    until: Until = None,
    key: Key = None,
    kind: Kind = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
) -> None:
    """Find audit records by request id, deployment and time range, or business key."""
    if limit < 1:
        raise errors.InvalidInput(f"--limit must be at least 1, got {limit}")
    filters = _filters(request_id, deployment, since, until, key, kind)
    with open_registry() as registry:
        caller(registry.store, Role.ADMIN)
        found = audit.query(registry.store, limit=limit, **filters)
    if as_json:
        for line in audit.export_jsonl(found):
            console.print(line.decode().rstrip("\n"), highlight=False, soft_wrap=True)
        return
    table = Table("seq", "at", "kind", "action", "actor", "subject", "request id", "data")
    for r in found:
        table.add_row(
            str(r.seq), f"{r.at:%Y-%m-%d %H:%M:%S}", r.kind, r.action, r.actor or "-",
            r.subject, r.request_id or "-", json.dumps(r.data)[:80],
        )  # fmt: skip
    console.print(table)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Argument(help="JSON lines file to write")],
    request_id: RequestId = None,
    deployment: DeploymentOpt = None,
    since: Since = None,
    until: Until = None,
    key: Key = None,
    kind: Kind = None,
) -> None:
    """Export matching records (all by default) as JSON lines, hashes included."""
    filters = _filters(request_id, deployment, since, until, key, kind)
    count = 0

    def lines(store: SqlStore) -> Iterator[bytes]:
        nonlocal count
        for line in audit.export_jsonl(audit.iter_records(store, **filters)):
            count += 1
            yield line

    with open_registry() as registry:
        caller(registry.store, Role.ADMIN)  # a refusal creates no file
        write_output(out, lines(registry.store))  # a failure leaves the previous file
    console.print(f"exported {count} records to {out}")


@audit_app.command("purge")
def audit_purge(
    older_than: Annotated[
        str, typer.Option(help="Retention: delete records older than this, e.g. 365d")
    ],
) -> None:
    """Apply the retention policy: delete old records, leaving an audit record of the purge."""
    before = dt.datetime.now(dt.UTC) - parse_duration(older_than)
    with open_registry() as registry:
        actor = caller(registry.store, Role.ADMIN).name
        result = audit.purge(registry.store, before=before, actor=actor)
    console.print(f"purged {result.deleted} records (through seq {result.through_seq})")
