"""The server stack every benchmark endpoint runs on, exactly as ``slipway serve`` runs Slipway:
uvicorn with uvloop and httptools, lifespan on, no access log, one process."""

from __future__ import annotations

from typing import Any

import uvicorn


def serve(app: Any, host: str, port: int) -> None:
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
