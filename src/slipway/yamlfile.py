"""Policy files: YAML text read into a msgspec struct, every failure an InvalidInput naming the
file and the field (shared by the promotion policy and the readiness policy)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec
import yaml

from slipway.errors import InvalidInput

T = TypeVar("T")


def parse_yaml(text: str, kind: type[T], *, source: str, shape: str) -> T:
    """``text`` as a ``kind``; ``shape`` says what the top level must be, for the error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source} is not valid YAML{_where(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{source} must be {shape}")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{source}: {exc}") from None


def _where(exc: yaml.YAMLError) -> str:
    """Where and why, on one line: PyYAML's own message spans several, with a caret drawing."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f": {' '.join(str(exc).split())}"
    mark = exc.problem_mark or exc.context_mark
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join((exc.problem or "").split())
    context = f" ({' '.join(exc.context.split())})" if exc.context else ""
    return f"{at}: {problem}{context}"


def read_text(path: Path, what: str) -> str:
    """The file's text; InvalidInput naming ``what`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} {path}: {exc.strerror}") from None
