"""``slipway import mlflow DIR`` and ``slipway import triton REPOSITORY``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from slipway.commands.common import console, deployer, open_registry, progress, read_rows
from slipway.registry.records import VersionRecord

app = typer.Typer(
    help="Register models laid out by other tools: MLflow model directories, Triton repositories.",
    no_args_is_help=True,
)


def _rows(path: Path | None) -> Any:
    """Sample rows from a .npy file or a CSV file (with or without a header row)."""
    if path is None:
        return None
    import numpy as np

    rows, _ = read_rows(path, "--sample")
    return np.asarray(rows, dtype=np.float32)


def _show(versions: list[VersionRecord]) -> None:
    table = Table("model", "version", "format", "source", "digest")
    for v in versions:
        source = v.meta.tags.get("mlflow_flavor") or v.meta.tags.get("triton_version", "")
        table.add_row(v.model, str(v.number), v.format, source, v.digest[:12])
    console.print(table)


@app.command("mlflow")
def import_mlflow(
    directory: Annotated[Path, typer.Argument(help="The MLflow model directory (holds MLmodel)")],
    model: Annotated[str, typer.Option("--model", "-m", help="Slipway model name")],
    trusted: Annotated[
        bool,
        typer.Option(
            "--trusted",
            help="Unpickle a scikit-learn flavor (runs code from the file; only for sources you"
            " trust) and convert it to ONNX",
        ),
    ] = False,
    sample: Annotated[
        Path | None,
        typer.Option(
            help="Sample rows (.npy or .csv): verify the conversion, build the drift profile;"
            " default: the model's saved input example",
            exists=True,
        ),
    ] = None,
) -> None:
    """Register the next version of MODEL from an MLflow model directory."""
    from slipway.importers.mlflow import import_mlflow_model

    with open_registry() as registry, progress() as bar:
        actor = deployer(registry.store)  # before any of the directory's code runs
        bar.add_task(f"importing {directory}", total=None)
        version = import_mlflow_model(
            registry.store,
            registry.artifacts,
            model,
            directory,
            trusted=trusted,
            sample=_rows(sample),
            actor=actor,
        )
    _show([version])


@app.command("triton")
def import_triton(
    repository: Annotated[
        Path, typer.Argument(help="A model repository folder, or one model folder in it")
    ],
    sample: Annotated[
        Path | None,
        typer.Option(
            help="Sample rows (.npy or .csv); TorchScript versions need them", exists=True
        ),
    ] = None,
) -> None:
    """Register every numbered version folder of a V2/Triton-style model repository."""
    from slipway.importers.triton import (
        import_repository,
        import_repository_model,
        is_version_folder,
    )

    rows = _rows(sample)
    with open_registry() as registry, progress() as bar:
        actor = deployer(registry.store)
        bar.add_task(f"importing {repository}", total=None)
        if repository.is_dir() and any(is_version_folder(p) for p in repository.iterdir()):
            versions = import_repository_model(
                registry.store, registry.artifacts, repository, sample=rows, actor=actor
            )
        else:
            imported = import_repository(
                registry.store, registry.artifacts, repository, sample=rows, actor=actor
            )
            versions = [v for records in imported.values() for v in records]
    _show(versions)
