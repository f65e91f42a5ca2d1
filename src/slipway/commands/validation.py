"""``slipway validate`` and ``slipway loadtest``: the pre-deployment gate, and the load
generator on its own."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    read_input,
    read_json,
    write_output,
)

# The server, scikit-learn metrics and the pipeline are imported inside the commands: every
# `slipway` invocation imports this module, and `slipway serve --bundle` runs from a serving
# lock that has no training libraries.
if TYPE_CHECKING:
    from slipway.registry.artifacts import ArtifactStore
    from slipway.validation.checks import Report
    from slipway.validation.pipeline import Deployed, Serve

app = typer.Typer()


def serve_in_process(artifacts: ArtifactStore, *, ready_timeout_s: float = 60.0) -> Serve:
    """A ``serve`` for :class:`Validation`: a real server on 127.0.0.1 (a free port) over a
    throwaway registry holding copies of the versions, so validating never touches the
    deployments of the real one."""

    from slipway.registry.artifacts import ArtifactStore
    from slipway.registry.store import SqlStore
    from slipway.server import BackgroundServer
    from slipway.serving.app import SlipwayApp
    from slipway.settings import Settings

    @contextmanager
    def serve(deployed: list[Deployed]) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="slipway-validate-") as home:
            settings = Settings.from_env(
                {"SLIPWAY_HOME": home}, host="127.0.0.1", port=0, monitoring=0
            )
            scratch = ArtifactStore(settings.artifacts_dir)
            with SqlStore(settings.database_url) as store:
                registered: set[tuple[str, int]] = set()
                for item in deployed:
                    v = item.version
                    if (v.model, v.number) not in registered:
                        scratch.put_file(artifacts.verified_path(v.digest))
                        store.register_version(
                            v.model,
                            format=v.format,
                            digest=v.digest,
                            size=v.size,
                            signature=v.signature,
                            meta=v.meta,
                            profile=v.profile,
                            number=v.number,
                        )
                        registered.add((v.model, v.number))
                    store.create_deployment(item.name, v.model, v.number)
            server_app = SlipwayApp(settings)
            for item in deployed:
                if item.hooks is not None:
                    server_app.repository.hooks[(item.version.model, item.version.number)] = (
                        item.hooks
                    )
            with BackgroundServer(settings, app=server_app) as server:
                _wait_ready(server.url, [d.name for d in deployed], ready_timeout_s)
                yield server.url

    return serve


def _wait_ready(url: str, names: list[str], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5.0) as client:
        for name in names:
            while client.get(f"/v2/models/{name}/ready").status_code != 200:
                if time.monotonic() > deadline:
                    raise errors.SlipwayError(
                        f"the validation server did not load {name} within {timeout_s:g}s"
                    )
                time.sleep(0.05)


@app.command()
def validate(
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION to validate")],
    data: Annotated[Path, typer.Option(help="Holdout CSV or Parquet with a label column")],
    policy: Annotated[Path | None, typer.Option(help="Promotion policy (YAML)")] = None,
    against: Annotated[
        str | None, typer.Option(help="Deployment whose version is production")
    ] = None,
    handler: Annotated[
        Path | None,
        typer.Option(
            help="The bundle's handler.py with preprocess/postprocess (runs its code)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write the HTML report here")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON report here")
    ] = None,
) -> None:
    """Run the promotion policy's gates on a version and store the report on it.

    Exits with code 12 when a required gate fails.
    """
    import msgspec
    from rich.progress import TaskID

    from slipway.registry.names import parse_ref
    from slipway.validation.holdout import read_holdout
    from slipway.validation.html import to_html
    from slipway.validation.junit import to_junit
    from slipway.validation.pipeline import Validation
    from slipway.validation.policy import Policy, load_policy
    from slipway.validation.reports import save_report

    model, number = parse_ref(ref)
    for option, out in (("--junit", junit), ("--html", html), ("--json", json_out)):
        # Refused now, not after the run has stored its report.
        if out is not None and not out.parent.is_dir():  # exit 1, as any file not writable
            raise errors.SlipwayError(
                f"cannot write {option} {out}: the directory {out.parent} does not exist;"
                " create it first"
            )
    rules = load_policy(policy) if policy is not None else Policy()
    holdout = read_holdout(data, rules.label)
    hooks = None
    if handler is not None:
        from slipway.packaging.hooks import load_hooks

        hooks = load_hooks(handler)
    with open_registry() as registry, progress() as bar:
        actor = deployer(registry.store)  # the report is stored as evidence under this name
        version = registry.store.get_version(model, number)
        tasks: dict[str, TaskID] = {}

        def on_stage(stage: str, state: str) -> None:
            if state == "start":
                tasks[stage] = bar.add_task(f"{stage}…", total=1)
            else:
                mark = "[green]pass[/]" if state == "pass" else "[red]fail[/]"
                bar.update(tasks[stage], description=f"{stage}: {mark}", completed=1)

        report = Validation(
            store=registry.store,
            artifacts=registry.artifacts,
            candidate=version,
            holdout=holdout,
            policy=rules,
            serve=serve_in_process(registry.artifacts),
            hooks=hooks,
            against=against,
            base_dir=policy.parent if policy is not None else Path("."),
            on_stage=on_stage,
        ).run()
        page = to_html(report)
        stored = save_report(registry.store, report, page, actor=actor)
    _print(report)
    console.print(f"report #{stored.id} stored on {report.ref}")
    if junit is not None:
        write_output(junit, to_junit(report))
    if html is not None:
        write_output(html, page.encode("utf-8"))
    if json_out is not None:
        write_output(json_out, msgspec.json.format(msgspec.json.encode(report)))
    failed = report.failed_required()
    if failed:
        raise errors.ValidationFailed(report.ref, failed)


def _print(report: Report) -> None:
    table = Table(title=f"validation of {report.ref} ({report.policy})")
    for column in ("stage", "check", "value", "threshold", "verdict", "detail"):
        table.add_column(column)
    colors = {"pass": "green", "fail": "red", "info": "dim"}
    for stage in report.stages:
        for check in stage.checks:
            table.add_row(
                stage.stage,
                escape(check.name),
                "-" if check.value is None else escape(_value(check.value)),
                escape(check.threshold),
                f"[{colors[check.verdict]}]{check.verdict}[/]",
                escape(check.detail),  # why a check failed; an exception's text may hold [ ]
            )
    console.print(table)


def _value(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@app.command()
def loadtest(
    url: Annotated[str, typer.Argument(help="URL to load, e.g. .../v2/models/NAME/infer")],
    rate: Annotated[float, typer.Option(help="Requests per second (open loop)")] = 10.0,
    duration: Annotated[float, typer.Option(help="Seconds")] = 10.0,
    body: Annotated[
        Path | None, typer.Option(help="JSON request body to POST (GET without it)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds")] = 5.0,
) -> None:
    """Send requests at a fixed rate; latency counts from each request's intended send time.

    Exits with code 1 when no request succeeded (a server that is down, a wrong route)."""
    from slipway.validation.loadgen import Request, run_load

    payload = None
    if body is not None:
        read_json(body, "--body")  # refused here, not by the server on every request
        payload = read_input(body, "--body")
    with progress() as bar:
        bar.add_task(f"{rate:g} requests/s for {duration:g}s → {url}", total=None)
        result = run_load(
            url, rate=rate, duration_s=duration, requests=[Request(payload)], timeout_s=timeout
        )
    table = Table(title=f"load test of {url}")
    for column in (
        "rate/s",
        "sent",
        "ok",
        "errors",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "ok/s",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{result.rate:g}",
        str(result.sent),
        str(result.ok),
        str(result.errors),
        f"{result.p50_ms:.2f}",
        f"{result.p95_ms:.2f}",
        f"{result.p99_ms:.2f}",
        f"{result.max_ms:.2f}",
        f"{result.throughput:.1f}",
    )
    console.print(table)
    if result.sent and not result.ok:
        raise errors.SlipwayError(
            f"none of the {result.sent} requests succeeded: is the server at {url} up, and is"
            " that the right route and --body?"
        )
    if result.errors:
        err_console.print(f"[yellow]{result.errors} of {result.sent} requests failed[/]")
