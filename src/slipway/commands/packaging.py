"""``slipway package MODEL@VERSION`` and the serving side of bundles (``serve --bundle``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from slipway import errors
from slipway.commands.common import console, deployer, err_console, open_registry, progress
from slipway.settings import Settings

app = typer.Typer()  # `slipway package`: one command, mounted without a group of its own


@app.command("package", short_help="Write a self-contained bundle of a model version.")
def package(
    ref: Annotated[str, typer.Argument(help="MODEL@VERSION (or MODEL for its latest version)")],
    out: Annotated[
        Path | None, typer.Option(help="Directory to create (default: ./MODEL-VERSION)")
    ] = None,
    handler: Annotated[
        Path | None,
        typer.Option(
            help="handler.py with preprocess(request) / postprocess(outputs); its test_*.py"
            " files beside it run now and must pass",
            exists=True,
        ),
    ] = None,
    deployment: Annotated[
        str | None, typer.Option(help="Deployment name served from the bundle (default: MODEL)")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Image the Kubernetes manifests run (default MODEL:VERSION)")
    ] = None,
    requirement: Annotated[
        list[str] | None,
        typer.Option(help="Extra name==version the handler imports; repeatable"),
    ] = None,
    replicas: Annotated[int, typer.Option(help="Replicas (and the autoscaler's minimum)")] = 2,
    max_replicas: Annotated[int, typer.Option(help="Autoscaler's maximum replicas")] = 10,
    cpu: Annotated[str, typer.Option(help="CPU request per replica")] = "500m",
    cpu_limit: Annotated[str, typer.Option(help="CPU limit per replica")] = "2",
    memory: Annotated[str, typer.Option(help="Memory request per replica")] = "512Mi",
    memory_limit: Annotated[str, typer.Option(help="Memory limit per replica")] = "2Gi",
    platform: Annotated[
        str | None,
        typer.Option(
            help="Image platform the lock is resolved for: linux/amd64 or linux/arm64"
            " (default: Linux on this machine's architecture)"
        ),
    ] = None,
) -> None:
    """Write a self-contained bundle of a model version: artifact, manifest, serving lock,
    slipway wheel, Dockerfile, Kubernetes manifests, README (and the handler when given)."""
    from slipway.packaging.bundle import BundleOptions, check_options, write_bundle
    from slipway.packaging.target import docker_platform
    from slipway.registry.names import parse_ref

    model, number = parse_ref(ref)
    _check_resources(
        replicas,
        max_replicas,
        cpu=cpu,
        cpu_limit=cpu_limit,
        memory=memory,
        memory_limit=memory_limit,
    )
    options = BundleOptions(
        deployment=deployment,
        image=image,
        handler=handler,
        extra_requirements=tuple(requirement or ()),
        platform=platform,
        kubernetes={
            "replicas": replicas,
            "min_replicas": min(replicas, max_replicas),
            "max_replicas": max_replicas,
            "cpu_request": cpu,
            "cpu_limit": cpu_limit,
            "memory_request": memory,
            "memory_limit": memory_limit,
        },
    )
    check_options(options)
    registry = open_registry()
    try:
        actor = deployer(registry.store)
        version = registry.store.get_version(model, number)
        target = out or Path(f"{model}-{version.number}")
        with progress() as bar:
            task = bar.add_task(f"packaging {version.ref}", total=None)
            manifest = write_bundle(
                registry.store,
                registry.artifacts,
                model,
                version.number,
                target,
                registry.settings,
                options,
                step=lambda what: bar.update(task, description=what),
                actor=actor,
            )
            bar.update(task, description=f"packaged {version.ref}", total=1, completed=1)
    finally:
        registry.close()
    console.print(
        f"bundle of [bold]{manifest.version.ref}[/] written to {target}"
        f" (deployment {manifest.serving.deployment}, lock: {len(manifest.requirements)}"
        " direct requirements)"
    )
    console.print(
        f"serve it: slipway serve --bundle {target}   or:"
        f" docker build --platform {docker_platform(manifest.platform)} -t IMAGE {target}"
    )


def _check_resources(replicas: int, max_replicas: int, **quantities: str) -> None:
    """Refuse what `kubectl apply` would refuse, before any packaging work starts."""
    from slipway.packaging.kubernetes import quantity

    if replicas < 1:
        raise errors.InvalidInput(f"--replicas must be at least 1, got {replicas}")
    if max_replicas < replicas:
        raise errors.InvalidInput(
            f"--max-replicas ({max_replicas}) must be at least --replicas ({replicas})"
        )
    values: dict[str, Decimal] = {}
    for name, value in quantities.items():
        parsed = quantity(value)
        if parsed is None:
            raise errors.InvalidInput(
                f"{_option(name)} {value!r} is not a Kubernetes quantity, e.g. 500m or 2 (CPU),"
                " 512Mi or 2Gi (memory)"
            )
        values[name] = parsed
    for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
        if values[request] > values[limit]:
            raise errors.InvalidInput(
                f"{_option(request)} {quantities[request]} is more than {_option(limit)}"
                f" {quantities[limit]}, which Kubernetes refuses; raise {_option(limit)}"
                f" or lower {_option(request)}"
            )


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def serve_bundle(bundle: Path, current: Settings, *, log_level: str) -> None:
    """Bring ``bundle`` into the registry of ``current`` and serve it (with its hooks)."""
    from slipway.packaging.install import install_bundle
    from slipway.registry.artifacts import ArtifactStore
    from slipway.registry.store import SqlStore
    from slipway.server import run
    from slipway.serving.app import SlipwayApp

    if not bundle.is_dir():
        raise errors.BundleInvalid(str(bundle), "it is not a directory")
    current.home.mkdir(parents=True, exist_ok=True)
    store = SqlStore(current.database_url)
    artifacts = ArtifactStore(current.artifacts_dir)
    installed = install_bundle(bundle, store, artifacts)
    version, deployment = installed.version, installed.deployment
    err_console.print(f"bundle {version.ref} in the registry; deployment {deployment.name}")
    if (deployment.model, deployment.version) != (version.model, version.number):
        err_console.print(
            f"note: deployment {deployment.name} serves {deployment.model}@{deployment.version}"
            " per the registry (its desired state wins over the bundle's)"
        )
    app = SlipwayApp(current, store=store, artifacts=artifacts)
    if installed.hooks is not None:
        app.repository.hooks[(version.model, version.number)] = installed.hooks
    run(
        current,
        log_level=log_level,
        app=app,
        listening=lambda url: err_console.print(f"serving on {url}  (Ctrl-C to stop)"),
    )
