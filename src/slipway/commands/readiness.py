"""``slipway readiness MODEL@VERSION | DEPLOYMENT``: the production readiness checklist."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from slipway import errors
from slipway.commands.common import caller, console, open_registry

if TYPE_CHECKING:
    from slipway.readiness.report import ReadinessReport

app = typer.Typer()  # `slipway readiness`: one command, mounted without a group of its own

_COLORS = {"pass": "green", "fail": "red", "not applicable": "dim"}


@app.command(
    "readiness", short_help="The production readiness checklist of a version or a deployment."
)
def readiness(
    target: Annotated[
        str, typer.Argument(help="MODEL@VERSION, or a DEPLOYMENT (the version it serves)")
    ],
    deployment: Annotated[
        str | None,
        typer.Option(help="Judge MODEL@VERSION's deployment items on this deployment"),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="YAML file marking items required or optional", exists=True),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """The production readiness checklist of a version or a deployment, from the registry's
    records: item, status, evidence, and the command that fixes each failure. Exits with code
    1 when a required item fails, so it can gate a CI pipeline."""
    import msgspec

    from slipway.governance.roles import Role
    from slipway.readiness import ReadinessPolicy, evaluate_deployment, evaluate_version
    from slipway.readiness.policy import load_policy
    from slipway.registry.names import parse_ref

    rules = load_policy(policy) if policy is not None else ReadinessPolicy()
    with open_registry() as registry:
        caller(registry.store, Role.VIEWER)  # an invalid SLIPWAY_TOKEN is refused (exit 8)
        if "@" in target:
            model, number = parse_ref(target)
            report = evaluate_version(
                registry.store,
                registry.artifacts,
                registry.settings,
                model,
                number,
                deployment=deployment,
                policy=rules,
            )
        else:
            if deployment is not None:
                raise errors.InvalidInput("--deployment goes with MODEL@VERSION, not a deployment")
            report = evaluate_deployment(
                registry.store, registry.artifacts, registry.settings, target, policy=rules
            )
    if as_json:
        # Plain echo: rich would wrap long lines and break the JSON.
        typer.echo(msgspec.json.format(msgspec.json.encode(report.to_builtins())).decode())
    else:
        _print(report)
    failed = report.failed_required()
    if failed:
        raise errors.NotReady(report.ref, [item.name for item in failed])


def _print(report: ReadinessReport) -> None:
    where = f" on {report.deployment}" if report.deployment else ""
    table = Table(title=f"readiness of {report.ref}{where}", show_lines=True)
    for column in ("item", "status", "evidence", "fix"):
        table.add_column(column, overflow="fold")
    for item in report.items:
        name = item.name if item.required else f"{item.name} [dim](optional)[/]"
        color = _COLORS[item.status]
        table.add_row(
            name,
            f"[{color}]{item.status}[/]",
            escape(item.evidence),
            escape(item.fix or ""),
        )
    console.print(table)
    counts = {s: sum(1 for i in report.items if i.status == s) for s in _COLORS}
    verdict = "[green]ready[/]" if report.ready else "[red]not ready[/]"
    console.print(
        f"{report.ref}{where}: {verdict} ({counts['pass']} pass, {counts['fail']} fail,"
        f" {counts['not applicable']} not applicable)"
    )
