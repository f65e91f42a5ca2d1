"""``slipway rollout …``, ``slipway rollback`` and ``slipway experiment report``.

They act on the registry database directly; every server replica reconciles to the change
within its reconcile interval.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from slipway import errors
from slipway.commands.common import console, deployer, open_registry

if TYPE_CHECKING:
    from slipway.registry.store import SqlStore

app = typer.Typer(
    help="Progressive rollouts: canary, blue-green, A/B, shadow.", no_args_is_help=True
)
rollback_app = typer.Typer()  # `slipway rollback`: one command, mounted without a group
experiment_app = typer.Typer(help="A/B experiment results.", no_args_is_help=True)


def _floats(raw: str, what: str) -> list[float]:
    try:
        return [float(p) for p in raw.split(",") if p.strip()]
    except ValueError:
        raise errors.InvalidInput(
            f"{what} must be numbers separated by commas, got {raw!r}"
        ) from None


@app.command("start")
def start(
    deployment: Annotated[str, typer.Argument(help="Deployment name")],
    version: Annotated[int, typer.Argument(help="Candidate version of the deployment's model")],
    strategy: Annotated[
        str, typer.Option(help="canary, bluegreen (blue-green), ab (A/B) or shadow")
    ] = "canary",
    steps: Annotated[
        str | None, typer.Option(help="Canary weights in percent [default: 5,25,50]")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds to hold each canary step [default: 60]")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="Promotion policy file: its canary section gives steps, interval, gates"),
    ] = None,
    weight: Annotated[float, typer.Option(help="A/B: percent of keys to the candidate")] = 50.0,
    routing_key: Annotated[
        str | None, typer.Option(help="Header whose hash picks the arm, e.g. X-User-Id")
    ] = None,
    routing_field: Annotated[
        str | None,
        typer.Option(help="Request field whose hash picks the arm (JSON body or V2 parameters)"),
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option(help="HEADER=VALUE:ARM (arm stable|candidate), repeatable"),
    ] = None,
    field_rule: Annotated[
        list[str] | None,
        typer.Option(help="FIELD=VALUE:ARM on a request field, repeatable"),
    ] = None,
    shadow_fraction: Annotated[float, typer.Option(help="Shadow: share mirrored")] = 1.0,
    segment_header: Annotated[
        str | None, typer.Option(help="Shadow: header that names a request's segment")
    ] = None,
    gates: Annotated[
        str | None, typer.Option(help="Analysis gates as JSON, e.g. '{\"min_samples\": 500}'")
    ] = None,
    require_validation: Annotated[
        bool, typer.Option(help="Promote only after a passing validation report")
    ] = False,
    hold: Annotated[
        float, typer.Option(help="Blue-green: seconds blue stays warm and revertible")
    ] = 0.0,
    min_shadow_agreement: Annotated[
        float | None, typer.Option(help="Shadow: promote only at this agreement or above")
    ] = None,
    min_shadow_samples: Annotated[
        int, typer.Option(help="Shadow: compared requests needed before promotion")
    ] = 100,
) -> None:
    """Start a rollout of VERSION on DEPLOYMENT."""
    import msgspec

    from slipway.registry.records import RoutingRule
    from slipway.rollout import actions
    from slipway.rollout.analysis import GateConfig
    from slipway.rollout.policy import RolloutConfig

    rules = []
    for option, raws in (("--rule", rule or []), ("--field-rule", field_rule or [])):
        for raw in raws:
            condition, _, arm = raw.rpartition(":")
            name, sep, value = condition.partition("=")
            if not sep or not name or not arm:
                what = "HEADER" if option == "--rule" else "FIELD"
                raise errors.InvalidInput(f"{option} must look like {what}=VALUE:ARM, got {raw!r}")
            if option == "--rule":
                rules.append(RoutingRule(header=name, equals=value, arm=arm))
            else:
                rules.append(RoutingRule(field=name, equals=value, arm=arm))
    canary = None
    if policy is not None:
        from slipway.validation.policy import CanaryPolicy, load_policy

        canary = load_policy(policy).canary or CanaryPolicy()
    try:
        if gates:
            gate_config = msgspec.json.decode(gates, type=GateConfig)
        else:
            gate_config = canary.gates if canary else GateConfig()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise errors.InvalidInput(f"invalid --gates: {exc}") from None
    # Explicit options win over the policy file, which wins over the defaults.
    step_list = (
        _floats(steps, "--steps") if steps else (canary.steps if canary else [5.0, 25.0, 50.0])
    )
    hold_each = interval if interval is not None else (canary.interval_s if canary else 60.0)
    config = RolloutConfig(
        strategy=strategy,
        steps=step_list,
        interval_s=hold_each,
        gates=gate_config,
        weight=weight,
        routing_key=routing_key,
        routing_field=routing_field,
        rules=rules,
        shadow_fraction=shadow_fraction,
        segment_header=segment_header,
        require_validation=require_validation,
        hold_s=hold,
        min_shadow_agreement=min_shadow_agreement,
        min_shadow_samples=min_shadow_samples,
    )
    registry = open_registry()
    try:
        record = actions.start(
            registry.store, deployment, version, config, actor=deployer(registry.store)
        )
    finally:
        registry.close()
    console.print(
        f"rollout [bold]{record.id}[/] started: {record.strategy} of"
        f" {record.model}@{record.candidate} on {deployment} (stable {record.stable},"
        f" candidate weight {record.weight:g}%)"
    )


@app.command("status")
def status(
    deployment: Annotated[str, typer.Argument(help="Deployment name")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show weights, step, analysis results and events of the deployment's rollout."""
    from slipway.rollout.reports import rollout_status

    registry = open_registry()
    try:
        with _named(registry.store, deployment):
            report = rollout_status(registry.store, deployment)
    finally:
        registry.close()
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    rollout = report["rollout"]
    console.print(
        f"rollout [bold]{rollout['id']}[/] {rollout['strategy']} on {deployment}:"
        f" [bold]{rollout['status']}[/], step {rollout['step']},"
        f" stable {rollout['stable']} → candidate {rollout['candidate']}"
    )
    weights = Table("version", "weight %", "requests", "errors", "p99 ms")
    for version, share in report["weights"].items():
        live = report["evidence"].get(version, {})
        p99 = live.get("p99_ms")
        weights.add_row(
            version,
            f"{share:g}",
            str(live.get("requests", 0)),
            str(live.get("errors", 0)),
            "-" if p99 is None else f"{p99:.2f}",
        )
    console.print(weights)
    analysis = rollout.get("analysis")
    if analysis:
        checks = Table(
            "check", "status", "value", "threshold", "samples", "detail", title="analysis"
        )
        for c in analysis["checks"]:
            checks.add_row(
                c["name"],
                c["status"],
                _num(c["value"]),
                _num(c["threshold"]),
                str(c["samples"]),
                c.get("detail") or "",
            )
        console.print(checks)
    if "shadow" in report:
        shadow = Table("measure", "value", title="shadow comparison")
        for key, value in report["shadow"].items():
            shadow.add_row(key, _num(value) if not isinstance(value, dict) else json.dumps(value))
        console.print(shadow)
    events = Table("at", "event", "actor", "detail", title="events")
    for e in report["events"]:
        detail = e["data"].get("reason") or ""
        events.add_row(f"{e['at']}"[:19], e["kind"], e["actor"] or "-", str(detail))
    console.print(events)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextlib.contextmanager
def _named(store: SqlStore, deployment: str) -> Iterator[None]:
    """'no rollout on deployment X' becomes 'deployment X not found' when there is no such
    deployment: a typo in the name is the likelier mistake."""
    try:
        yield
    except errors.RolloutNotFound:
        store.get_deployment(deployment)  # raises DeploymentNotFound
        raise


def _act(action: str, deployment: str) -> None:
    from slipway.rollout import actions

    run = {
        "pause": actions.pause,
        "resume": actions.resume,
        "promote": actions.promote,
        "abort": actions.abort,
    }[action]
    registry = open_registry()
    try:
        with _named(registry.store, deployment):
            record = run(registry.store, deployment, actor=deployer(registry.store))
    finally:
        registry.close()
    console.print(f"rollout [bold]{record.id}[/] on {deployment}: {record.status}")


@app.command("pause")
def pause(deployment: Annotated[str, typer.Argument(help="Deployment name")]) -> None:
    """Stop advancing the rollout; current weights stay."""
    _act("pause", deployment)


@app.command("resume")
def resume(deployment: Annotated[str, typer.Argument(help="Deployment name")]) -> None:
    """Resume a paused rollout."""
    _act("resume", deployment)


@app.command("promote")
def promote(deployment: Annotated[str, typer.Argument(help="Deployment name")]) -> None:
    """Make the candidate stable now (the blue-green switch)."""
    _act("promote", deployment)


@app.command("abort")
def abort(deployment: Annotated[str, typer.Argument(help="Deployment name")]) -> None:
    """End the rollout; all traffic back to stable."""
    _act("abort", deployment)


@rollback_app.command("rollback", short_help="Roll a deployment back in one step.")
def rollback(deployment: Annotated[str, typer.Argument(help="Deployment name")]) -> None:
    """Roll a deployment back in one step: end the active rollout, or switch back to the
    previous version (kept warm)."""
    from slipway.rollout import actions
    from slipway.rollout.state import RolloutStore

    registry = open_registry()
    try:
        actor = deployer(registry.store)
        ending = RolloutStore(registry.store).active(deployment)
        record = actions.rollback(registry.store, deployment, actor=actor)
    finally:
        registry.close()
    if ending:
        rollout = ending[0]
        console.print(
            f"ended rollout {rollout.id} ({rollout.strategy} of {rollout.model}@"
            f"{rollout.candidate}) on [bold]{record.name}[/]: all traffic to"
            f" {record.model}@{record.version}"
        )
    else:
        console.print(
            f"deployment [bold]{record.name}[/] → {record.model}@{record.version}"
            f" (back from {record.previous_version}, which stays warm)"
        )


@experiment_app.command("report")
def experiment_report(
    deployment: Annotated[str, typer.Argument(help="Deployment name")],
    alpha: Annotated[float, typer.Option(help="Significance level")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Per-arm business metrics with confidence intervals, tests and sample size still needed."""
    from slipway.rollout.reports import experiment_summary
    from slipway.rollout.state import RolloutStore

    if not 0 < alpha < 1:
        raise errors.InvalidInput("--alpha must be between 0 and 1")
    registry = open_registry()
    try:
        with _named(registry.store, deployment):
            report = experiment_summary(registry.store, deployment, alpha=alpha)
        rollout = RolloutStore(registry.store).get(report["rollout"])
    finally:
        registry.close()
    if as_json:
        console.print_json(json.dumps(report))
        return
    console.print(
        f"rollout {rollout.id} on [bold]{deployment}[/] ({rollout.strategy} rollout,"
        f" {rollout.status}): control {rollout.model}@{rollout.stable} vs treatment"
        f" {rollout.model}@{rollout.candidate}"
    )
    if not report["metrics"]:
        console.print(
            "no feedback yet: clients post outcomes for the request ids they sent to"
            " POST /api/feedback (see docs/rollouts.md); feedback counts once the servers"
            " have recorded its request, within SLIPWAY_EVIDENCE_FLUSH_INTERVAL_S (default 2 s)"
        )
        return
    table = Table(
        "metric", "arm", "n", "mean", f"{1 - alpha:.0%} interval", "p-value", "winner", "more n"
    )
    for m in report["metrics"]:
        test = m["test"]
        for i, arm in enumerate(m["arms"]):
            table.add_row(
                m["metric"] if i == 0 else "",
                str(arm["version"]),
                str(arm["n"]),
                f"{arm['mean']:.4g}",
                f"[{arm['low']:.4g}, {arm['high']:.4g}]",
                (f"{test['p_value']:.4g}" if test else "-") if i == 0 else "",
                (str(m["winner"]) if m["winner"] is not None else "none yet") if i == 0 else "",
                (str(m["more_needed"]) if m["more_needed"] is not None else "-") if i == 0 else "",
            )
    console.print(table)
