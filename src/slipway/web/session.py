"""Dashboard sessions: a token in a cookie, and the CSRF token derived from it.

A browser signs in by pasting a token once; the cookie then carries that token on every
``/ui`` request, checked against the server's token cache exactly like a bearer header, so a
revoked token or a disabled user is signed out everywhere within one refresh interval, and
every replica behind a load balancer accepts the same cookie without shared session state.

The cookie is ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (other sites' pages
never make the browser send it) and ``Secure`` on HTTPS. Every form carries a CSRF token,
an HMAC of the session's token, so it is known only to pages the server rendered for that
session; form posts must also come from the dashboard's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from http.cookies import CookieError, SimpleCookie

from slipway.serving.http import Scope, header

COOKIE = "slipway_session"
FLASH = "slipway_flash"
LIFETIME_S = 12 * 3600
_CSRF_CONTEXT = b"slipway-ui-csrf-v1"


def cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies; a malformed Cookie header counts as none."""
    raw = header(scope, b"cookie")
    if not raw:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return {}
    return {key: morsel.value for key, morsel in jar.items()}


def session_token(scope: Scope) -> str | None:
    """The token the session cookie carries, if any."""
    token = cookies(scope).get(COOKIE, "").strip()
    return token or None


def csrf_token(secret: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 of a fixed context under the session secret."""
    return hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_matches(secret: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_token(secret), sent)


def set_cookie(scope: Scope, name: str, value: str, *, max_age: int) -> tuple[bytes, bytes]:
    """A ``Set-Cookie`` header scoped to ``/ui``; ``max_age=0`` deletes the cookie."""
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    line = f"{name}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    return (b"set-cookie", line.encode("latin-1"))


def next_of(scope: Scope) -> str:
    """The path (and query) of this request, to come back to after signing in."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return safe_next(scope["path"] + (f"?{raw}" if raw else ""))


def safe_next(raw: str | None) -> str:
    """Only a dashboard path: signing in never redirects to another site."""
    if not raw or not raw.startswith("/ui") or raw.startswith("//") or "\\" in raw:
        return "/ui"
    if any(ord(c) < 32 for c in raw):
        return "/ui"
    # A Location header is ASCII: a path asked for with other characters (the page's path
    # arrives decoded) goes back percent-encoded; what is encoded already stays as it is.
    return urllib.parse.quote(raw, safe="/?&=%#+:;,@!$'()*[]")
