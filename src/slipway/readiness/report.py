"""What a readiness evaluation returns: one result per checklist item, and the whole report."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

Status = Literal["pass", "fail", "not applicable"]


class ItemResult(msgspec.Struct, frozen=True):
    """One checklist item. ``evidence`` says what the registry shows (a value, a report and its
    date, an event); ``fix`` is the command (or step) that turns a failure into a pass."""

    name: str
    title: str
    status: Status
    required: bool
    evidence: str
    fix: str | None = None


class ReadinessReport(msgspec.Struct, frozen=True):
    """The checklist of one version, in the context of one deployment when there is one.

    ``ready`` is False when any required item fails; optional failures are reported but do not
    count.
    """

    model: str
    version: int
    digest: str
    deployment: str | None
    evaluated_at: dt.datetime
    items: list[ItemResult]

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def ready(self) -> bool:
        return not self.failed_required()

    def failed_required(self) -> list[ItemResult]:
        """The required items that fail."""
        return [i for i in self.items if i.required and i.status == "fail"]

    def to_builtins(self) -> dict[str, object]:
        """Plain JSON-able values, with ``ready`` and ``failed`` spelled out (``--json``, API)."""
        data: dict[str, object] = msgspec.to_builtins(self)
        data["ref"] = self.ref
        data["ready"] = self.ready
        data["failed"] = [i.name for i in self.failed_required()]
        return data
