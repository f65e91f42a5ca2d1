"""Roles and the principal behind a request.

Roles form a ladder: each includes the rights of those below it.

- ``viewer``: read models, versions, deployments, events, approvals.
- ``deployer``: register versions, create and change deployments below production, start
  rollouts, request promotions, attach evidence reports.
- ``approver``: approve or reject promotion requests (never their own).
- ``admin``: users, tokens, deployment policies (production flag, inference access, audit
  payloads), approval policies, the audit log.
"""

from __future__ import annotations

import enum

import msgspec

from slipway.errors import InvalidInput, PermissionDenied


class Role(enum.IntEnum):
    """A rung of the ladder; compare with ``>=``."""

    VIEWER = 1
    DEPLOYER = 2
    APPROVER = 3
    ADMIN = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Role:
        """``"deployer"`` → ``Role.DEPLOYER``; InvalidInput for anything else."""
        try:
            return cls[str(name).upper()]
        except KeyError:
            choices = ", ".join(str(r) for r in cls)
            raise InvalidInput(f"unknown role {name!r}; use one of {choices}") from None


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: a user or service account, and the role their token carries."""

    name: str
    role: Role
    kind: str = "user"  # "user" | "service" | "local" | "anonymous"
    token_id: int | None = None

    def require(self, role: Role) -> Principal:
        """Return self when the principal holds ``role`` or above, else PermissionDenied."""
        if self.role < role:
            raise PermissionDenied(
                self.name, f"this needs role {role} or above and theirs is {self.role}"
            )
        return self


ANONYMOUS_ADMIN = Principal("anonymous", Role.ADMIN, kind="anonymous")
"""The caller when authentication is switched off (only allowed on 127.0.0.1)."""
