"""Terminal helpers shared by every ``slipway`` sub-command."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from slipway import errors
from slipway.settings import Settings

if TYPE_CHECKING:
    from slipway.local import Registry

console = Console()
err_console = Console(stderr=True)


def settings(**overrides: Any) -> Settings:
    """The settings of this invocation: the environment, then flags."""
    return Settings.from_env(os.environ, **overrides)


def open_registry() -> Registry:
    """The registry of ``SLIPWAY_HOME`` / ``SLIPWAY_DATABASE_URL``; close it when done."""
    from slipway.local import Registry

    return Registry(settings())


def progress() -> Progress:
    """A spinner with elapsed time on stderr, for steps that take a while."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; a malformed pair is an ``InvalidInput``."""
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise errors.InvalidInput(f"{what} must look like key=value, got {pair!r}")
        result[key] = value
    return result
