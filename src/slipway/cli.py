"""The ``slipway`` command. Errors become exit codes here and nowhere else."""

from __future__ import annotations

import json
import os
import string
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from slipway import errors
from slipway.commands import governance as governance_commands
from slipway.commands import importers as importer_commands
from slipway.commands import monitoring as monitoring_commands
from slipway.commands import packaging as packaging_commands
from slipway.commands import readiness as readiness_commands
from slipway.commands import rollout as rollout_commands
from slipway.commands import validation as validation_commands
from slipway.commands.common import (
    console,
    deployer,
    err_console,
    key_values,
    read_input,
    read_rows,
)
from slipway.commands.common import open_registry as _registry
from slipway.commands.common import progress as _progress
from slipway.commands.common import settings as _settings

app = typer.Typer(
    name="slipway",
    help="Take trained models from prototype to production: register, deploy, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="Register and inspect models and their versions.", no_args_is_help=True
)
deployments_app = typer.Typer(
    help="List deployments; show or change their policy.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(deployments_app, name="deployments")
app.add_typer(rollout_commands.app, name="rollout")
app.add_typer(packaging_commands.app)  # package
app.add_typer(rollout_commands.rollback_app)  # rollback
app.add_typer(rollout_commands.experiment_app, name="experiment")
app.add_typer(monitoring_commands.app, name="monitor")
app.add_typer(monitoring_commands.alerts_app, name="alerts")
app.add_typer(importer_commands.app, name="import")
app.add_typer(governance_commands.users_app, name="users")
app.add_typer(governance_commands.tokens_app, name="tokens")
app.add_typer(governance_commands.approvals_app, name="approvals")
app.add_typer(governance_commands.audit_app, name="audit")
app.add_typer(validation_commands.app)  # validate, loadtest
app.add_typer(readiness_commands.app)  # readiness
deployments_app.command("policy")(governance_commands.deployment_policy)


# Exit codes, in one place. 1 = any other Slipway error.
EXIT_CODES: list[tuple[type[errors.SlipwayError], int]] = [
    (errors.NotFound, 3),
    (errors.InvalidInput, 2),
    (errors.VersionConflict, 4),
    (errors.LastAdmin, 4),
    (errors.UntrustedArtifact, 5),
    (errors.ArtifactCorrupt, 6),
    (errors.ConversionMismatch, 7),
    (errors.PackagingFailed, 11),
    (errors.Unauthenticated, 8),
    (errors.PermissionDenied, 8),
    (errors.ApprovalRequired, 9),
    (errors.PromotionBlocked, 9),
    (errors.AuditChainBroken, 10),
    (errors.ValidationFailed, 12),
]


# A server's answer to a command that called it (predict, monitor report), by HTTP status:
# the exit code the same error would have had locally (serving/errors.py maps them to statuses).
HTTP_EXIT_CODES: dict[int, int] = {
    400: 2, 401: 8, 403: 8, 404: 3, 409: 4, 413: 2, 415: 2, 422: 7,
}  # fmt: skip


def exit_code_for(exc: errors.SlipwayError) -> int:
    from slipway.client import ApiError

    if isinstance(exc, ApiError):
        return HTTP_EXIT_CODES.get(exc.status, 1)
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    # slipway.client.ApiError carries the server's status (not imported: it would load httpx
    # at every start of the command).
    status = getattr(exc, "status", None)
    return HTTP_EXIT_CODES.get(status, 1) if isinstance(status, int) else 1


@app.command()
def init() -> None:
    """Create the Slipway home (registry, artifact store) and the first admin; print its token."""
    settings = _settings()
    with _registry() as registry:
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)  # else made on first write
        console.print(f"Slipway home ready at [bold]{settings.home}[/]")
        console.print(f"registry: {settings.database_url}")
        governance_commands.print_first_admin(registry.store)


@models_app.command("register")
def models_register(
    model: Annotated[str, typer.Argument(help="Model name, e.g. churn")],
    path: Annotated[
        Path,
        typer.Argument(
            help="Model file (ONNX, TorchScript, GGUF) or SavedModel directory", exists=True
        ),
    ],
    description: Annotated[str, typer.Option(help="What this version is")] = "",
    training_data: Annotated[
        str | None, typer.Option(help="Reference to the training data")
    ] = None,
    training_data_sha256: Annotated[
        str | None, typer.Option(help="sha256 of the training data")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="Training rows (.npy or .csv, header row allowed) for the drift profile"),
    ] = None,
    metric: Annotated[list[str] | None, typer.Option(help="name=value, repeatable")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Hyperparameter name=value, repeatable")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="name=value, repeatable")] = None,
    trusted: Annotated[
        bool,
        typer.Option(
            "--trusted",
            help="Load a pickle/joblib scikit-learn file (runs code from the file; only for"
            " sources you trust) and convert it to ONNX; needs --reference rows",
        ),
    ] = False,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="onnx, torchscript, savedmodel or gguf; detected from the file when left out."
            " TorchScript reads its signature from the --reference rows",
        ),
    ] = None,
) -> None:
    """Register a model (ONNX, TorchScript, SavedModel, GGUF, or a trusted scikit-learn pickle)
    as the next version of MODEL; see docs/formats.md."""
    import numpy as np

    from slipway.registry.names import check_name
    from slipway.registry.records import VersionMeta

    check_name("model", model)  # refuse a bad name before any work starts

    metrics = {}
    for key, value in key_values(metric, "--metric").items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise errors.InvalidInput(f"--metric {key} must be a number, got {value!r}") from None
    if training_data_sha256 is not None:  # as sha256sum prints it, or with a sha256: prefix
        training_data_sha256 = training_data_sha256.strip().lower().removeprefix("sha256:")
        if len(training_data_sha256) != 64 or set(training_data_sha256) - set(string.hexdigits):
            raise errors.InvalidInput(
                "--training-data-sha256 must be the 64 hex characters of a sha256 (sha256sum"
                " prints them)"
            )
    meta = VersionMeta(
        description=description,
        training_data=training_data,
        training_data_sha256=training_data_sha256,
        hyperparameters=dict(key_values(param, "--param")),
        metrics=metrics,
        tags=key_values(tag, "--tag"),
    )
    rows = None
    feature_names = None
    if reference is not None:
        rows, feature_names = read_rows(reference, "--reference")
    from slipway.runtimes.trust import is_pickle_file

    if is_pickle_file(path):
        record = _register_pickle(model, path, meta, rows, feature_names, trusted=trusted)
        console.print(f"registered [bold]{record.ref}[/] sha256:{record.digest[:12]}")
        return
    registry = _registry()
    try:
        from slipway.registry.registration import register_model

        actor = deployer(registry.store)
        with _progress() as progress:
            task = progress.add_task(f"storing, verifying and registering {path.name}", total=None)
            record = register_model(
                registry.store,
                registry.artifacts,
                model,
                path,
                format=format,
                meta=meta,
                reference=rows if rows is None else np.asarray(rows, dtype=np.float32),
                feature_names=feature_names,
                actor=actor,
            )
            progress.update(task, total=1, completed=1)
    finally:
        registry.close()
    console.print(f"registered [bold]{record.ref}[/] sha256:{record.digest[:12]}")


def _register_pickle(
    model: str,
    path: Path,
    meta: Any,
    rows: Any,
    feature_names: list[str] | None,
    *,
    trusted: bool,
) -> Any:
    from slipway.registry.registration import register_sklearn
    from slipway.runtimes.trust import load_pickled_estimator

    registry = _registry()
    try:
        actor = deployer(registry.store)  # before the file's code runs
        estimator = load_pickled_estimator(path, trusted=trusted)  # refuses before reading
        if rows is None:
            raise errors.InvalidInput(
                "a pickled estimator needs --reference training rows to verify its ONNX conversion"
            )
        with _progress() as progress:
            task = progress.add_task(f"converting {path.name} to ONNX and verifying", total=None)
            record = register_sklearn(
                registry.store,
                registry.artifacts,
                model,
                estimator,
                rows,
                meta=meta,
                feature_names=feature_names,
                actor=actor,
            )
            progress.update(task, total=1, completed=1)
    finally:
        registry.close()
    return record


@models_app.command("list")
def models_list() -> None:
    """List registered models."""
    registry = _registry()
    try:
        models = registry.store.list_models()
    finally:
        registry.close()
    table = Table("model", "latest version", "created", "description")
    for m in models:
        table.add_row(
            m.name, str(m.latest_version or "-"), f"{m.created_at:%Y-%m-%d %H:%M}", m.description
        )
    console.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="MODEL or MODEL@VERSION")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show a model's versions, or one version's full metadata."""
    import msgspec

    from slipway.registry.names import parse_ref

    model, number = parse_ref(ref)
    registry = _registry()
    try:
        if "@" in ref:
            record = registry.store.get_version(model, number)
            if as_json:
                console.print_json(msgspec.json.encode(record).decode())
                return
            _print_version(record)
            return
        versions = registry.store.list_versions(model)
    finally:
        registry.close()
    if as_json:
        console.print_json(msgspec.json.encode(versions).decode())
        return
    table = Table("version", "format", "digest", "metrics", "created", "description")
    for v in versions:
        metrics = ", ".join(f"{k}={val:.4g}" for k, val in v.meta.metrics.items())
        table.add_row(
            str(v.number),
            v.format,
            v.digest[:12],
            metrics,
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.meta.description,
        )
    console.print(table)


def _print_version(record: Any) -> None:
    table = Table(show_header=False, title=record.ref)
    table.add_row("format", record.format)
    table.add_row("digest", f"sha256:{record.digest}")
    table.add_row("size", f"{record.size} bytes")
    table.add_row("created", f"{record.created_at:%Y-%m-%d %H:%M:%S %Z}")
    for spec in record.signature.inputs:
        table.add_row("input", f"{spec.name} {spec.datatype} {spec.shape}")
    for spec in record.signature.outputs:
        table.add_row("output", f"{spec.name} {spec.datatype} {spec.shape}")
    meta = record.meta
    table.add_row("description", meta.description)
    lineage = [meta.training_data or ""]
    if meta.training_data_sha256:
        lineage.append(f"sha256:{meta.training_data_sha256}")
    table.add_row("training data", " ".join(filter(None, lineage)) or "-")
    table.add_row("hyperparameters", json.dumps(meta.hyperparameters))
    table.add_row("metrics", json.dumps(meta.metrics))
    table.add_row("tags", json.dumps(meta.tags))
    profile = record.profile
    table.add_row(
        "reference profile",
        f"{profile.rows} rows, {len(profile.features)} features" if profile else "-",
    )
    console.print(table)


@app.command()
def deploy(
    deployment: Annotated[str, typer.Argument(help="Deployment (endpoint) name")],
    ref: Annotated[str, typer.Argument(help="MODEL or MODEL@VERSION (latest when no version)")],
    max_batch_size: Annotated[
        int | None, typer.Option(help="Rows per batch; 1 turns batching off")
    ] = None,
    max_batch_delay_ms: Annotated[
        float | None, typer.Option(help="Wait for more rows under load")
    ] = None,
) -> None:
    """Create DEPLOYMENT serving MODEL@VERSION, or point it at that version."""
    import msgspec

    from slipway.registry.names import parse_ref
    from slipway.registry.records import BatchingConfig

    settings = _settings()
    model, number = parse_ref(ref)
    # Only the flags given change; the rest is the deployment's own, or the defaults.
    given: dict[str, Any] = {}
    if max_batch_size is not None:
        given["max_batch_size"] = max_batch_size
    if max_batch_delay_ms is not None:
        given["max_batch_delay_ms"] = max_batch_delay_ms
    registry = _registry()
    try:
        actor = deployer(registry.store)
        version = registry.store.get_version(model, number)
        existing = {d.name: d for d in registry.store.list_deployments()}
        if deployment in existing:
            current = existing[deployment]
            if current.model != model:
                raise errors.InvalidInput(
                    f"deployment {deployment!r} serves model {current.model!r}, not {model!r}"
                )
            record = registry.store.set_deployment_version(
                deployment,
                version.number,
                batching=msgspec.structs.replace(current.batching, **given) if given else None,
                actor=actor,
            )
        else:
            defaults = BatchingConfig(
                max_batch_size=settings.max_batch_size,
                max_batch_delay_ms=settings.max_batch_delay_ms,
                max_queue_rows=settings.max_queue_rows,
            )
            record = registry.store.create_deployment(
                deployment,
                model,
                version.number,
                batching=msgspec.structs.replace(defaults, **given),
                actor=actor,
            )
    finally:
        registry.close()
    console.print(
        f"deployment [bold]{record.name}[/] → {record.model}@{record.version}"
        + (f" (previous {record.previous_version} kept warm)" if record.previous_version else "")
    )


@deployments_app.command("list")
def deployments_list() -> None:
    """List deployments and the versions they serve."""
    registry = _registry()
    try:
        deployments = registry.store.list_deployments()
    finally:
        registry.close()
    table = Table("deployment", "model", "version", "previous", "batching", "updated")
    for d in deployments:
        table.add_row(
            d.name,
            d.model,
            str(d.version),
            str(d.previous_version or "-"),
            f"{d.batching.max_batch_size} rows / {d.batching.max_batch_delay_ms:g} ms",
            f"{d.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug, trace")
    ] = "info",
    bundle: Annotated[
        Path | None,
        typer.Option(help="Serve a bundle from `slipway package` (runs its handler code)"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes sharing the port, one per core (default 1)"),
    ] = None,
) -> None:
    """Serve every deployment: V2 inference, /predict, /metrics and the management API."""
    from uvicorn.config import LOG_LEVELS

    from slipway.server import run

    settings = _settings(host=host, port=port, workers=workers)
    if log_level.lower() not in LOG_LEVELS:
        raise errors.InvalidInput(
            f"--log-level {log_level!r} is not a log level: use one of {', '.join(LOG_LEVELS)}"
        )
    if bundle is not None:
        if settings.workers != 1:
            raise errors.InvalidInput("--bundle serves in one process; leave out --workers")
        packaging_commands.serve_bundle(bundle, settings, log_level=log_level)
        return
    if settings.workers != 1:
        from slipway import workers as worker_processes

        raise typer.Exit(worker_processes.serve(settings, log_level=log_level))
    # Said once the port is bound (a busy one is an error first; 0 names the port chosen).
    run(
        settings,
        log_level=log_level,
        listening=lambda url: err_console.print(f"serving on {url}  (Ctrl-C to stop)"),
    )


@app.command()
def predict(
    deployment: Annotated[str, typer.Argument(help="Deployment name")],
    instances: Annotated[
        str,
        typer.Argument(
            help='JSON rows, e.g. "[[1.0, 2.0]]", or @file.json, @file.csv (a header row names'
            " the features), @file.npy"
        ),
    ],
    url: Annotated[str, typer.Option(help="Slipway server URL")] = "http://127.0.0.1:8000",
) -> None:
    """Send rows to a running server's /predict endpoint and print the answer."""
    from slipway.client import Client

    path = Path(instances[1:]) if instances.startswith("@") else None
    rows: Any
    if path is not None and path.suffix.lower() in (".csv", ".npy"):
        array, names = read_rows(path, "the rows file")
        rows = array.tolist()
        if names is not None:  # named columns travel as feature objects
            rows = [dict(zip(names, row, strict=True)) for row in rows]
    else:
        text = instances if path is None else read_input(path, "the rows file")
        try:
            rows = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for binary files
            where = f" in {path}" if path is not None else ""
            raise errors.InvalidInput(f"the rows{where} are not valid JSON: {exc}") from None
        if isinstance(rows, dict) and "instances" in rows:
            rows = rows["instances"]
    with Client(url, token=os.environ.get("SLIPWAY_TOKEN")) as client:
        result = client.predict(deployment, rows)
    console.print_json(json.dumps(result))


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the tour instead of serving")
    ] = False,
    port: Annotated[int, typer.Option(help="Port to serve on")] = 8000,
) -> None:
    """A guided tour: train two models, register, deploy, serve, and send real requests."""
    from slipway.demo import run_demo

    run_demo(_settings(port=port), once=once, console=console)


def environment_failure(exc: BaseException) -> str | None:
    """The one-line reason for a failure of the machine rather than of Slipway: a file or
    directory that cannot be read or written, a registry database that cannot be reached or
    written. None for anything else (a bug, which keeps its traceback)."""
    if isinstance(exc, OSError):
        if exc.filename is None:
            return f"{exc.strerror or exc}"
        return f"{exc.strerror or exc}: {exc.filename}; check the path and its permissions"
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import DatabaseError, OperationalError

        # DatabaseError itself: SQLite's "file is not a database"; its other subclasses
        # (IntegrityError, ProgrammingError) are bugs and keep their tracebacks.
        if isinstance(exc, OperationalError) or type(exc) is DatabaseError:
            reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            return (
                f"the registry database cannot be used: {reason}; check SLIPWAY_DATABASE_URL"
                " (or SLIPWAY_HOME), that the database is reachable, and that you may write it"
            )
    return None


def _fail(message: str, code: int) -> NoReturn:
    # soft_wrap: one line whatever the terminal's width, so scripts can read it.
    err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Console entry point: run the CLI, turning Slipway errors (and files or databases that
    cannot be used) into a one-line reason and an exit code."""
    try:
        app()
    except errors.RegistryUnavailable as exc:  # the driver's reason: this is the operator
        _fail(f"{exc.message} ({exc.reason})", exit_code_for(exc))
    except errors.SlipwayError as exc:
        _fail(exc.message, exit_code_for(exc))
    except Exception as exc:
        reason = environment_failure(exc)
        if reason is None:
            raise
        _fail(reason, 1)


if __name__ == "__main__":
    main()
