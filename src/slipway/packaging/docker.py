"""The bundle's Dockerfile and ``.dockerignore``.

Two stages: a builder that installs the serving lock (hash-checked) and slipway's wheel into a
virtual environment, and a slim runtime stage that copies only that environment and the bundle,
runs as a non-root user, exposes the port and checks readiness. When the lock holds a source
archive (llama-cpp-python), the builder starts from the full ``python`` image, which has the C/C++
toolchain; the runtime stage stays slim either way. No secret is baked in: the
registry URL comes from the environment at run time (a Kubernetes Secret).
"""

from __future__ import annotations

BUNDLE_ROOT = "/srv/bundle"
HOME = "/var/lib/slipway"
USER_ID = 10001


def render_dockerfile(
    *,
    python: str,
    wheel: str,
    port: int,
    hashed: bool,
    handler: bool,
    drain_s: int,
    compiles: bool = False,
) -> str:
    """The Dockerfile for a bundle whose lock was resolved for Python ``python`` ("3.11") and
    whose slipway wheel is ``wheel`` (a path inside the bundle)."""
    require_hashes = " --require-hashes" if hashed else ""
    builder = f"python:{python}" if compiles else f"python:{python}-slim"
    # urlopen raises on any non-2xx answer, so the probe exits non-zero while not ready. It
    # reads SLIPWAY_PORT as the server does, so `docker run -e SLIPWAY_PORT=...` moves both.
    probe = (
        "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:'"
        f" + (os.environ.get('SLIPWAY_PORT') or '{port}') + '/v2/health/ready', timeout=2)"
    )
    handler_copy = f"COPY handler/handler.py {BUNDLE_ROOT}/handler/handler.py\n" if handler else ""
    return f"""\
# syntax=docker/dockerfile:1
# Written by `slipway package`. Build from the bundle directory: docker build -t IMAGE .

FROM {builder} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.lock {wheel} ./
RUN python -m venv /opt/venv \\
    && /opt/venv/bin/pip install --no-cache-dir --no-deps{require_hashes} -r requirements.lock \\
    && /opt/venv/bin/pip install --no-cache-dir --no-deps ./{wheel.rsplit("/", 1)[-1]}

FROM python:{python}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    SLIPWAY_HOME={HOME} \\
    SLIPWAY_HOST=0.0.0.0 \\
    SLIPWAY_PORT={port}
RUN groupadd --system --gid {USER_ID} slipway \\
    && useradd --system --no-log-init --uid {USER_ID} --gid slipway --home-dir {HOME} slipway \\
    && mkdir -p {HOME} \\
    && chown slipway:slipway {HOME}
COPY --from=builder /opt/venv /opt/venv
COPY bundle.json {BUNDLE_ROOT}/bundle.json
COPY model/ {BUNDLE_ROOT}/model/
{handler_copy}USER {USER_ID}
WORKDIR {HOME}
EXPOSE {port}
# Docker's own health state follows readiness: 503 while loading or draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
    CMD ["python", "-c", "{probe}"]
# SIGTERM makes the server drain in-flight requests for up to {drain_s}s before exiting.
STOPSIGNAL SIGTERM
CMD ["slipway", "serve", "--bundle", "{BUNDLE_ROOT}"]
"""


def render_dockerignore(*, handler: bool) -> str:
    """Keep the build context to what the Dockerfile copies."""
    lines = [
        "# Written by `slipway package`: only what the image needs goes into the build context.",
        "*",
        "!bundle.json",
        "!requirements.lock",
        "!model/",
        "!wheels/",
    ]
    if handler:
        lines.append("!handler/handler.py")
    return "\n".join(lines) + "\n"
