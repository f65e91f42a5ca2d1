"""What the registry keeps about a written bundle: a ``version.packaged`` event on the version.

``slipway package`` records where the bundle went and the facts read back from its files (the
serving lock's pins, the Dockerfile's stages and health check, the Kubernetes manifests'
replicas, resources and autoscaler), so the readiness checklist (``slipway readiness``) can
judge the bundle from the registry alone, even after the directory was copied elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from slipway.governance.sessions import event, writing
from slipway.packaging.manifest import KUBERNETES_DIR, LOCK, MANIFEST, BundleManifest, sha256_file
from slipway.registry.store import SqlStore

PACKAGED = "version.packaged"
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==[^\s;=*]+(\s*;.*)?$")


def lock_facts(text: str) -> dict[str, Any]:
    """How many packages the lock pins, whether every one is an exact ``==`` pin without
    wildcards, and whether every one carries a ``--hash``."""
    entries = _lock_entries(text)
    loose = [e.split()[0] for e in entries if not _PIN.match(e.split(" --hash")[0].strip())]
    return {
        "packages": len(entries),
        "exact": bool(entries) and not loose,
        "loose": loose[:10],
        "hashed": bool(entries) and all("--hash=" in e for e in entries),
    }


def dockerfile_facts(text: str) -> dict[str, Any]:
    """Stages (``FROM`` lines), a ``HEALTHCHECK`` other than ``NONE``, and a non-root ``USER``."""
    lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    words = [line.split() for line in lines if line]
    stages = sum(1 for w in words if w[0].upper() == "FROM")
    health = any(w[0].upper() == "HEALTHCHECK" and w[1:2] != ["NONE"] for w in words)
    users = [w[1] for w in words if w[0].upper() == "USER" and len(w) > 1]
    return {
        "stages": stages,
        "healthcheck": health,
        "non_root": bool(users) and users[-1] not in ("root", "0"),
    }


def kubernetes_facts(directory: Path) -> dict[str, Any]:
    """The manifests' kinds, replicas, container resources, autoscaler bounds, probes, and
    whether the registry URL comes from a Secret (so every replica shares one registry)."""
    kinds: dict[str, dict[str, Any]] = {}
    files = sorted(p.name for p in directory.glob("*.yaml")) if directory.is_dir() else []
    for name in files:
        for document in yaml.safe_load_all((directory / name).read_text()):
            if isinstance(document, dict) and "kind" in document:
                kinds[str(document["kind"])] = document
    facts: dict[str, Any] = {"files": files, "kinds": sorted(kinds)}
    deployment = kinds.get("Deployment")
    if deployment is not None:
        spec = deployment.get("spec", {})
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        container = containers[0] if containers else {}
        resources = container.get("resources", {})
        env = container.get("env", [])
        facts.update(
            replicas=spec.get("replicas"),
            requests=resources.get("requests", {}),
            limits=resources.get("limits", {}),
            probes=sorted(
                k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in container
            ),  # fmt: skip
            shared_registry=any(
                e.get("name") == "SLIPWAY_DATABASE_URL" and "secretKeyRef" in e.get("valueFrom", {})
                for e in env
            ),
        )
    autoscaler = kinds.get("HorizontalPodAutoscaler")
    if autoscaler is not None:
        spec = autoscaler.get("spec", {})
        facts.update(min_replicas=spec.get("minReplicas"), max_replicas=spec.get("maxReplicas"))
    return facts


def bundle_facts(bundle: Path, manifest: BundleManifest) -> dict[str, Any]:
    """The ``version.packaged`` event's data, read back from the files of ``bundle``."""
    dockerfile = bundle / "Dockerfile"
    return {
        "path": str(bundle.resolve()),
        "digest": manifest.version.digest,
        "manifest_sha256": sha256_file(bundle / MANIFEST),
        "created_at": manifest.created_at,
        "deployment": manifest.serving.deployment,
        "python": manifest.python,
        "platform": manifest.platform,
        "handler": manifest.handler is not None,
        "lock": lock_facts((bundle / LOCK).read_text()),
        "dockerfile": dockerfile_facts(dockerfile.read_text()) if dockerfile.is_file() else None,
        "kubernetes": kubernetes_facts(bundle / KUBERNETES_DIR),
    }


def record_bundle(
    store: SqlStore, bundle: Path, manifest: BundleManifest, *, actor: str | None = None
) -> dict[str, Any]:
    """Append the ``version.packaged`` event (and its audit record) for ``bundle``."""
    data = bundle_facts(bundle, manifest)
    with writing(store) as session:
        event(session, store, PACKAGED, manifest.version.ref, actor, data)
    return data


def _lock_entries(text: str) -> list[str]:
    """One string per requirement of a pip lock, continuation lines (``\\``) joined."""
    entries: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line and not current:
            continue
        current = f"{current} {line.rstrip(chr(92)).strip()}".strip()
        if not line.endswith("\\"):
            if current and not current.startswith("-"):
                entries.append(current)
            current = ""
    if current and not current.startswith("-"):
        entries.append(current)
    return entries
