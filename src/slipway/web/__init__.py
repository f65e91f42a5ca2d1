"""The web dashboard under ``/ui``: see and steer deployments, rollouts, drift, approvals and
the audit log in a browser. :func:`mount` puts it on a server app (``slipway.server`` does so
for every server it starts); the app then hands every ``/ui`` request to :func:`handle`."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from slipway.serving.http import Receive, Scope, Send

if TYPE_CHECKING:
    from slipway.serving.app import SlipwayApp
    from slipway.web.dashboard import Dashboard

_DASHBOARDS: weakref.WeakKeyDictionary[SlipwayApp, Dashboard] = weakref.WeakKeyDictionary()


def dashboard_of(app: SlipwayApp) -> Dashboard:
    """The app's dashboard, built on its first ``/ui`` request (templates, assets, routes)."""
    found = _DASHBOARDS.get(app)
    if found is None:
        from slipway.web.dashboard import Dashboard

        found = _DASHBOARDS[app] = Dashboard(app)
    return found


async def handle(app: SlipwayApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one request whose path is ``/ui`` or under ``/ui/``."""
    await dashboard_of(app)(scope, receive, send)


def mount(app: SlipwayApp) -> SlipwayApp:
    """Serve the dashboard at ``/ui`` on ``app`` (built lazily, on its first request)."""

    async def frontend(scope: Scope, receive: Receive, send: Send) -> None:
        await handle(app, scope, receive, send)

    app.mount("/ui", frontend)
    return app
