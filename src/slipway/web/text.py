"""Text in and out of the dashboard: form fields parsed with clear errors, and the template
filters that show times, numbers and metadata."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from slipway.errors import InvalidInput
from slipway.rollout.policy import RolloutConfig


def whole(raw: str, what: str) -> int:
    """A whole number from a path or form field, else InvalidInput (400)."""
    try:
        return int(raw)
    except ValueError:
        raise InvalidInput(f"{what} must be a whole number, got {raw!r}") from None


def finite(raw: str, what: str) -> float:
    """A finite number from a form field, else InvalidInput (400)."""
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{what} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"{what} must be a finite number")
    return value


def when(value: Any) -> str:
    """A time (aware datetime, unix seconds or ISO 8601 text) as UTC for people."""
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):  # an ISO 8601 time from a record turned into plain JSON
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def num(value: Any, digits: int = 3) -> str:
    """A number in a few significant digits; "—" for none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def show(value: Any) -> str:
    """A metadata value as text: JSON for structures, "—" for nothing."""
    if value is None:
        return "—"
    if isinstance(value, dict | list | tuple | bool):
        return msgspec.json.encode(value).decode()
    return str(value)


def pct(value: Any) -> str:
    """A fraction as a percentage; "—" for none."""
    return "—" if value is None else f"{100 * value:.2f}%"


def rollout_config(form: dict[str, str]) -> RolloutConfig:
    """The rollout settings of the dashboard's start form; blank fields keep the defaults."""
    fields: dict[str, Any] = {"strategy": form.get("strategy", "canary")}
    if form.get("steps", "").strip():
        fields["steps"] = [finite(s, "step") for s in form["steps"].split(",") if s.strip()]
    for name in ("interval_s", "weight"):
        if form.get(name, "").strip():
            fields[name] = finite(form[name], name)
    if form.get("routing_key", "").strip():
        fields["routing_key"] = form["routing_key"].strip()
    try:
        return msgspec.convert(fields, RolloutConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid rollout settings: {exc}") from None
