"""Terminal helpers shared by every ``slipway`` sub-command, and who runs the command.

The CLI works on the registry database directly. It acts as the holder of ``SLIPWAY_TOKEN``
when that is set (checked against the database and held to its role, so the audit log names
them); without it, as ``local:<login>`` with admin rights, since whoever can open the database
can change anything in it anyway.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.progress import Progress, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from slipway import errors
from slipway.settings import Settings

if TYPE_CHECKING:
    import numpy as np

    from slipway.governance.roles import Principal, Role
    from slipway.local import Registry
    from slipway.registry.store import SqlStore

console = Console()
err_console = Console(stderr=True)


def settings(**overrides: Any) -> Settings:
    """The settings of this invocation: the environment, then flags."""
    return Settings.from_env(os.environ, **overrides)


def open_registry() -> Registry:
    """The registry of ``SLIPWAY_HOME`` / ``SLIPWAY_DATABASE_URL``; close it when done."""
    from slipway.local import Registry

    return Registry(settings())


class _StepColumn(SpinnerColumn):
    """The spinner while a step runs; its mark (✓ or ✗) once it has ended."""

    def render(self, task: Task) -> RenderableType:
        mark = task.fields.get("mark")
        return Text.from_markup(mark) if mark else super().render(task)


class Steps(Progress):
    """A spinner per step with its elapsed time, on stderr. When the block ends every step is
    marked done (✓), or failed (✗) if the block ends with an error while it is still running,
    so the line left above ``error: ...`` says which step failed rather than showing a spinner
    stopped mid-turn."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        for task in self.tasks:
            if task.fields.get("mark"):
                continue
            failed = exc_type is not None and not task.finished
            total = task.total or 1
            self.update(
                task.id, total=total, completed=total, mark="[red]✗[/]" if failed else "[green]✓[/]"
            )
        super().__exit__(exc_type, exc, tb)


def progress() -> Steps:
    """A spinner with elapsed time on stderr, for steps that take a while."""
    return Steps(
        _StepColumn(),
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


def write_output(path: Path, data: bytes | str | Iterable[bytes]) -> None:
    """Write ``data`` (or its chunks, streamed) to a temporary name beside ``path``, then
    rename: a reader (a CI step, a browser) sees the previous file or the new one whole, never
    half of it, also when producing the chunks fails. A path that cannot be written is a
    one-line error, not a traceback."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(data, bytes | str):
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        else:
            with tmp.open("wb") as stream:
                for chunk in data:
                    stream.write(chunk)
        tmp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise errors.SlipwayError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def read_input(path: Path, what: str) -> bytes:
    """The bytes of a file the user named for ``what`` (e.g. ``"--body"``); InvalidInput (exit
    code 2) naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise errors.InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None


def read_json(path: Path, what: str) -> Any:
    """The JSON document in a file the user named; InvalidInput when it is missing or not JSON."""
    try:
        return json.loads(read_input(path, what))
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for binary files
        raise errors.InvalidInput(f"{what} {path} is not valid JSON: {exc}") from None


def read_rows(path: Path, what: str) -> tuple[np.ndarray, list[str] | None]:
    """Rows of numbers from a ``.npy`` file or a CSV file whose first line may be a header, and
    the header's column names (None without one). InvalidInput naming the file when it cannot
    be read as rows."""
    import numpy as np

    path = Path(path)
    read_input(path, what)  # a missing or unreadable file says so, before any parsing
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        with path.open(encoding="utf-8") as f:
            first = f.readline().strip().split(",")
        try:
            [float(v) for v in first]
        except ValueError:
            rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
            names: list[str] | None = first
        else:
            rows, names = np.loadtxt(path, delimiter=",", ndmin=2), None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidInput(
            f"cannot read rows from {what} {path}: {exc}; give a .npy array or a CSV file of"
            " numbers (a header row allowed)"
        ) from None
    if rows.size == 0:
        raise errors.InvalidInput(f"{what} {path} holds no rows")
    return rows, names


def caller(store: SqlStore, role: Role, *, named: bool = False) -> Principal:
    """Who runs this command: the holder of SLIPWAY_TOKEN, or the local login (an admin).
    ``errors.Unauthenticated`` / ``PermissionDenied`` (exit 8) when the token is unknown or its
    role is below ``role``.

    ``named``: a local login will not do (approvals need a real identity)."""
    from slipway.governance import identities
    from slipway.governance.roles import Principal, Role

    token = os.environ.get("SLIPWAY_TOKEN", "").strip()
    if token:
        return identities.authenticate(store, f"Bearer {token}").require(role)
    if named:
        raise errors.Unauthenticated("this command needs to know who you are: set SLIPWAY_TOKEN")
    return Principal(f"local:{_login()}", Role.ADMIN, kind="local")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry and no $USER
        return f"uid{os.getuid()}"


def deployer(store: SqlStore) -> str:
    """The name changes are recorded under, for a command that changes what is served or
    registered (the API's deployer role, as its write routes ask)."""
    from slipway.governance.roles import Role

    return caller(store, Role.DEPLOYER).name
