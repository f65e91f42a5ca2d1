"""The README written into every bundle."""

from __future__ import annotations

from slipway.packaging.docker import USER_ID
from slipway.packaging.kubernetes import KubernetesOptions, resource_name, termination_grace_s
from slipway.packaging.manifest import BundleManifest


def render_readme(manifest: BundleManifest, k8s: KubernetesOptions, *, hashed: bool) -> str:
    """What the bundle holds and how to serve it: locally, in Docker, on Kubernetes. ``hashed``:
    the lock pins every file by hash, so it is installed with ``--require-hashes``."""
    record = manifest.version
    serving = manifest.serving
    name = resource_name(k8s.name)
    secret = k8s.secret or f"{name}-registry"
    inputs = "\n".join(
        f"| input | `{s.name}` | {s.datatype} | {s.shape} |" for s in record.signature.inputs
    )
    outputs = "\n".join(
        f"| output | `{s.name}` | {s.datatype} | {s.shape} |" for s in record.signature.outputs
    )
    handler = (
        f"""
## Inference hooks

`handler/handler.py` runs around the model in the server: `preprocess(request)` on each decoded
request (a dict of arrays by input name) and `postprocess(outputs)` on the model's outputs.
Its tests passed when this bundle was written. It is code: serve this bundle only if you trust
whoever packaged it. sha256 `{manifest.handler.sha256}`.
"""
        if manifest.handler
        else ""
    )
    return f"""\
# {record.model}@{record.number}

A Slipway bundle: everything needed to serve version {record.number} of `{record.model}`
({record.format}, sha256 `{record.digest}`) as deployment `{serving.deployment}`.

| | name | datatype | shape |
| --- | --- | --- | --- |
{inputs}
{outputs}

## Contents

| file | what |
| --- | --- |
| `bundle.json` | the manifest: version record, file hashes, serving settings |
| `{manifest.artifact.path}` | the model artifact (checked against its hash when served) |
| `requirements.lock` | `==` pins of only what serving needs, resolved by pip |
| `{manifest.wheel.path}` | slipway itself |
| `Dockerfile`, `.dockerignore` | two stages: the lock into a venv; a slim non-root runtime |
| `kubernetes/` | Deployment, Service, HorizontalPodAutoscaler, ConfigMap |
{handler}
## Serve it without a container

```sh
python{manifest.python} -m venv venv
venv/bin/pip install --no-deps{" --require-hashes" if hashed else ""} -r requirements.lock
venv/bin/pip install --no-deps {manifest.wheel.path}
venv/bin/slipway serve --bundle . --port {serving.port}
```

`serve --bundle` copies the artifact into the registry of `SLIPWAY_HOME` (or
`SLIPWAY_DATABASE_URL`) as `{record.model}@{record.number}` if it is not there yet (refusing a
registry whose `{record.model}@{record.number}` has other content), creates deployment
`{serving.deployment}` if it does not exist, and serves:
`POST /v2/models/{serving.deployment}/infer`, `POST /predict/{serving.deployment}`, `/metrics`,
`/v2/health/ready`. The lock was resolved for Python {manifest.python} on {manifest.platform}.

## Docker

```sh
docker build{f" --platform linux/{k8s.arch}" if k8s.arch else ""} -t {k8s.image} .
docker run --rm -p {serving.port}:{serving.port} {k8s.image}
```

The lock holds the wheels for {manifest.platform}, so the image is built for that platform
(elsewhere Docker emulates it; `slipway package --platform` resolves for another).
The image runs as user {USER_ID}, exposes port {serving.port} and reports healthy when
`/v2/health/ready` answers 200. It holds no secret: pass `SLIPWAY_DATABASE_URL` at run time to
use a shared registry.

## Kubernetes

```sh
kubectl create secret generic {secret} \\
    --from-literal={k8s.secret_key}='postgresql://USER:PASSWORD@HOST:5432/slipway'
kubectl apply -f kubernetes/
```

Every replica reads the same PostgreSQL registry from the Secret `{secret}`, so all of them
reconcile to the same deployments. Readiness probes `/v2/health/ready`, liveness
`/v2/health/live`, and a startup probe allows {k8s.startup_timeout_s}s for the model to load. On
termination a replica stops taking traffic, drains in-flight requests for up to
{serving.drain_s}s, and has {termination_grace_s(k8s)}s before it is killed. Prometheus scrapes
`/metrics` through the pod annotations. Change the deployment's version with `slipway deploy`
against the same registry; replicas load versions from their artifact store, so mount one that
every replica shares (a ReadWriteMany volume at `/var/lib/slipway/artifacts`) to serve versions
other than the one in this image.
"""
