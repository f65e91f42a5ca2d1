"""Tokens for tests that call the management API: auth is on by default, as in production.

with httpx.Client(base_url=server.url, headers=admin_headers(settings)) as http: ...
Client(server.url, token=admin_token(settings))
"""

from __future__ import annotations

from slipway.governance.identities import bootstrap_admin, issue_token
from slipway.registry.store import SqlStore
from slipway.settings import Settings

_TOKENS: dict[str, str] = {}


def admin_token(settings: Settings) -> str:
    """An admin token in the registry of ``settings``; the same one on every call."""
    if settings.database_url not in _TOKENS:
        with SqlStore(settings.database_url) as store:
            issued = bootstrap_admin(store) or issue_token(store, "admin", actor="tests")
        _TOKENS[settings.database_url] = issued.token
    return _TOKENS[settings.database_url]


def admin_headers(settings: Settings) -> dict[str, str]:
    """``Authorization`` header with :func:`admin_token`."""
    return {"authorization": f"Bearer {admin_token(settings)}"}
