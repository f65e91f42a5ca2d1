"""``slipway monitor export|report`` and ``slipway alerts …``.

Rules and events live in the registry database, so ``alerts`` and ``monitor export`` need no
server; the live drift windows live in the serving replica, so ``monitor report`` asks it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.markup import escape
from rich.table import Table

from slipway import errors
from slipway.commands.common import (
    console,
    deployer,
    err_console,
    open_registry,
    progress,
    settings,
    write_output,
)

app = typer.Typer(
    help="Monitoring files: Grafana dashboard, Prometheus rules, reports.", no_args_is_help=True
)
alerts_app = typer.Typer(help="Alert events and rules.", invoke_without_command=True)

URL = Annotated[str, typer.Option(help="Slipway server URL")]
REPORT_EVENTS = 1000  # the deployment's newest alert events in a report


def _file_rules() -> list[Any]:
    from slipway.monitoring.alerts import load_rules

    config = settings()
    return load_rules(Path(config.alert_rules_file)) if config.alert_rules_file else []


def _rules() -> list[Any]:
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import rules_in_force

    with open_registry() as registry:
        stored = AlertStore(registry.store).read_rules()
    for skipped in stored.skipped:
        err_console.print(f"[yellow]warning:[/] {escape(skipped.message)}", soft_wrap=True)
    return rules_in_force(_file_rules(), stored.rules)


@app.command("export")
def export(
    out: Annotated[Path, typer.Option(help="Directory to write the files into")] = Path("."),
) -> None:
    """Write slipway-dashboard.json (Grafana) and slipway-alerts.rules.yml (Prometheus).

    The rules are the configured alert rules (rules file and API), or the defaults when none.
    """
    from slipway.monitoring import export as exporting

    rules = _rules() or exporting.DEFAULT_RULES
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.SlipwayError(f"cannot write {out}: {exc.strerror or exc}") from exc
    files = {
        "slipway-dashboard.json": json.dumps(exporting.dashboard(), indent=2) + "\n",
        "slipway-alerts.rules.yml": exporting.to_yaml(exporting.alerting_rules(rules)),
    }
    for name, text in files.items():
        write_output(out / name, text)
        console.print(f"wrote {out / name}")
    console.print(f"{len(rules)} alert rule(s) exported")


@app.command("report")
def report(
    deployment: Annotated[str, typer.Argument(help="Deployment name")],
    url: URL = "http://127.0.0.1:8000",
    out: Annotated[
        Path | None, typer.Option(help="HTML file (default DEPLOYMENT-report.html)")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="JSON file (default DEPLOYMENT-report.json)")
    ] = None,
) -> None:
    """Write a self-contained HTML report (and its JSON) of DEPLOYMENT's live monitoring."""
    from slipway.client import Client
    from slipway.monitoring.report import report_html, report_json

    with progress() as bar:
        bar.add_task(f"reading monitoring of {deployment} from {url}")
        with Client(url, token=os.environ.get("SLIPWAY_TOKEN")) as client:
            monitoring = client._call("GET", f"/api/monitoring/{deployment}")
            params = {"deployment": deployment, "limit": REPORT_EVENTS}
            listed = client._call("GET", "/api/alerts", params=params)["events"]
    # (A server from before the deployment filter answers every deployment's events.)
    events = [e for e in listed if e["deployment"] == deployment]
    data = report_json(monitoring, events)
    html_path = out or Path(f"{deployment}-report.html")
    json_path = json_out or Path(f"{deployment}-report.json")
    for path, text in ((html_path, report_html(data)), (json_path, json.dumps(data, indent=2))):
        write_output(path, text)
        console.print(f"wrote {path}")


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@alerts_app.callback()
def alerts(
    ctx: typer.Context,
    deployment: Annotated[str | None, typer.Option(help="Only this deployment")] = None,
    limit: Annotated[int, typer.Option(help="Most recent events to show")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show recent alert events (firing and resolved), newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from slipway import errors
    from slipway.monitoring.alert_store import AlertStore

    if limit < 1:
        raise errors.InvalidInput(f"--limit must be at least 1, got {limit}")

    with open_registry() as registry:
        events = AlertStore(registry.store).list_events(deployment=deployment, limit=limit)
    if as_json:
        console.print_json(msgspec.json.encode(events).decode())
        return
    table = Table("at (UTC)", "state", "rule", "deployment", "value", "severity", "message")
    for e in events:
        style = "red" if e.state == "firing" else "green"
        value = "-" if e.value is None else f"{e.value:.4g}"
        table.add_row(
            _when(e.at), f"[{style}]{e.state}[/]", e.rule, e.deployment, value, e.severity,
            e.message,
        )  # fmt: skip
    console.print(table if events else "no alert events")


@alerts_app.command("rules")
def rules() -> None:
    """List alert rules (rules file and API)."""
    table = Table("name", "kind", "deployment", "threshold", "for", "window", "feature/metric")
    for r in _rules():
        table.add_row(
            r.name, r.kind, r.deployment, f"{r.threshold:g}", f"{r.for_s:g}s", f"{r.window_s:g}s",
            r.metric or r.feature,
        )  # fmt: skip
    console.print(table)


@alerts_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Rule name")],
    kind: Annotated[str, typer.Option(help="latency_p50|p95|p99, error_rate, drift_score, …")],
    threshold: Annotated[float, typer.Option(help="Limit (a floor for business_metric)")],
    deployment: Annotated[str, typer.Option(help="Deployment, or * for all")] = "*",
    for_s: Annotated[float, typer.Option("--for", help="Seconds the breach must last")] = 60.0,
    window_s: Annotated[float, typer.Option("--window", help="Rate window, seconds")] = 300.0,
    feature: Annotated[str, typer.Option(help="Drift: feature or output, * = any")] = "*",
    metric: Annotated[str, typer.Option(help="business_metric: metric name")] = "",
    severity: Annotated[str, typer.Option(help="Label for receivers")] = "warning",
) -> None:
    """Add an alert rule (servers pick it up at their next evaluation)."""
    from slipway.monitoring.alert_store import AlertStore
    from slipway.monitoring.alerts import KINDS, AlertRule

    if kind not in KINDS:
        raise errors.InvalidInput(f"unknown --kind {kind!r}; use one of {', '.join(KINDS)}")
    try:
        rule = msgspec.convert(
            {
                "name": name, "kind": kind, "threshold": threshold, "deployment": deployment,
                "for_s": for_s, "window_s": window_s, "feature": feature, "metric": metric,
                "severity": severity,
            },
            AlertRule,
        )  # fmt: skip
    except msgspec.ValidationError as exc:
        raise errors.InvalidInput(f"invalid alert rule: {exc}") from exc
    if any(r.name == name for r in _file_rules()):
        raise errors.InvalidInput(
            f"alert rule {name!r} is defined in the rules file; choose another name"
        )
    with open_registry() as registry:
        AlertStore(registry.store).add_rule(rule, actor=deployer(registry.store))
    console.print(f"added alert rule {name}")


@alerts_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Rule name")]) -> None:
    """Delete an alert rule added through the API or CLI."""
    from slipway.monitoring.alert_store import AlertStore

    with open_registry() as registry:
        AlertStore(registry.store).delete_rule(name, actor=deployer(registry.store))
    console.print(f"deleted alert rule {name}")
