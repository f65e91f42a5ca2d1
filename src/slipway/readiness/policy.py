"""The readiness policy: which checklist items are required and which only reported.

A YAML file of item names, each ``required`` or ``optional``; items it leaves out keep their
default (every item is required except ``business_metrics``)::

    items:
      business_metrics: required
      validation_shadow: optional
      scaling: optional
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from slipway.errors import InvalidInput
from slipway.readiness.items import ITEMS, NAMES
from slipway.yamlfile import parse_yaml, read_text


class ReadinessPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Item name → ``required`` or ``optional``; unnamed items keep their default."""

    items: dict[str, Literal["required", "optional"]] = {}

    def __post_init__(self) -> None:
        unknown = sorted(set(self.items) - set(NAMES))
        if unknown:
            raise InvalidInput(
                f"readiness policy: unknown item(s) {', '.join(unknown)}; use {', '.join(NAMES)}"
            )

    def required(self, name: str) -> bool:
        """Whether a failure of item ``name`` makes the version not ready."""
        if name in self.items:
            return self.items[name] == "required"
        return next(item.required for item in ITEMS if item.name == name)


def parse_policy(text: str, *, source: str = "readiness policy") -> ReadinessPolicy:
    """A policy from YAML text; InvalidInput naming what does not fit."""
    return parse_yaml(
        text, ReadinessPolicy, source=source, shape="a YAML mapping with an `items:` section"
    )


def load_policy(path: Path) -> ReadinessPolicy:
    """Read a policy file; InvalidInput when it is missing or malformed."""
    return parse_policy(read_text(path, "readiness policy"), source=str(path))
