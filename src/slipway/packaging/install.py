"""Bringing a bundle into a registry so a replica can serve it (``slipway serve --bundle``).

Idempotent and safe for many replicas starting at once against one shared registry: the
artifact goes into this replica's artifact store (content-addressed), the version is registered
under the bundle's own number unless it is already there with the same digest, and the
deployment is created only when missing, so the registry's desired state is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slipway.errors import (
    BundleInvalid,
    DeploymentNotFound,
    ModelNotFound,
    VersionConflict,
    VersionNotFound,
)
from slipway.packaging.hooks import Hooks, load_hooks
from slipway.packaging.manifest import BundleManifest, read_manifest, verified_file
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import DeploymentRecord, VersionRecord
from slipway.registry.store import SqlStore


@dataclass(frozen=True)
class InstalledBundle:
    """A bundle brought into a registry: its manifest, the registry's version and deployment,
    and the handler's hooks (None when the bundle has none)."""

    manifest: BundleManifest
    version: VersionRecord
    deployment: DeploymentRecord
    hooks: Hooks | None


def install_bundle(
    bundle: Path, store: SqlStore, artifacts: ArtifactStore, *, actor: str = "bundle"
) -> InstalledBundle:
    """Check the bundle's files against its manifest, import ``handler.py`` (running its code)
    when the bundle has one, then make the registry hold its version and deployment.

    Raises BundleInvalid (incomplete or altered bundle, or a registry whose version of the same
    number has other content), or PackagingFailed (a handler that cannot be imported; the
    registry is then untouched).
    """
    manifest = read_manifest(bundle)
    wanted = manifest.version
    artifact = verified_file(bundle, manifest.artifact)
    if manifest.artifact.sha256 != wanted.digest:
        raise BundleInvalid(str(bundle), "the artifact's hash differs from the version's digest")
    hooks = None
    if manifest.handler is not None:
        # Before the registry is written: a deployment created by a replica that then failed
        # would be served by the others without its hooks.
        handler = verified_file(bundle, manifest.handler)
        hooks = load_hooks(handler, name=f"slipway_handler_{wanted.model}_{wanted.number}")
    digest, _ = artifacts.put_file(artifact)
    if digest != wanted.digest:  # changed between the check and the copy
        raise BundleInvalid(str(bundle), f"{manifest.artifact.path} changed while being read")
    version = _ensure_version(bundle, store, wanted, actor)
    deployment = _ensure_deployment(store, manifest, actor)
    return InstalledBundle(manifest, version, deployment, hooks)


def _ensure_version(
    bundle: Path, store: SqlStore, wanted: VersionRecord, actor: str
) -> VersionRecord:
    for _ in range(2):
        try:
            found = store.get_version(wanted.model, wanted.number)
        except (ModelNotFound, VersionNotFound):
            try:
                return store.register_version(
                    wanted.model,
                    format=wanted.format,
                    digest=wanted.digest,
                    size=wanted.size,
                    signature=wanted.signature,
                    meta=wanted.meta,
                    profile=wanted.profile,
                    actor=actor,
                    number=wanted.number,
                )
            except VersionConflict:
                continue  # another replica registered it first; compare with theirs
        if found.digest != wanted.digest:
            raise BundleInvalid(
                str(bundle),
                f"the registry's {found.ref} is sha256:{found.digest[:12]}, but the bundle holds"
                f" sha256:{wanted.digest[:12]}; serve it against the registry it was packaged"
                " from, or a fresh one",
            )
        return found
    raise BundleInvalid(str(bundle), f"could not register {wanted.ref}; try again")


def _ensure_deployment(store: SqlStore, manifest: BundleManifest, actor: str) -> DeploymentRecord:
    name = manifest.serving.deployment
    try:
        return store.get_deployment(name)
    except DeploymentNotFound:
        pass
    try:
        return store.create_deployment(
            name,
            manifest.version.model,
            manifest.version.number,
            batching=manifest.serving.batching,
            actor=actor,
        )
    except VersionConflict:  # another replica created it between the two calls
        return store.get_deployment(name)
