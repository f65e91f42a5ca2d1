"""The bundle manifest, ``bundle.json``: what the bundle holds and how to check it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from slipway.errors import BundleInvalid
from slipway.registry.records import BatchingConfig, VersionRecord

MANIFEST = "bundle.json"
LOCK = "requirements.lock"
MODEL_DIR = "model"
WHEEL_DIR = "wheels"
HANDLER_DIR = "handler"
HANDLER_FILE = "handler.py"
KUBERNETES_DIR = "kubernetes"
# Bumped when the layout changes in a way an older ``serve --bundle`` cannot read.
BUNDLE_FORMAT = 1


class FileRef(msgspec.Struct, frozen=True):
    """A file inside the bundle (a relative POSIX path) and the sha256 of its bytes."""

    path: str
    sha256: str


class ServingConfig(msgspec.Struct, frozen=True):
    """Where and how the bundle is served: deployment name, port, batching, server limits."""

    deployment: str
    port: int
    batching: BatchingConfig
    environment: dict[str, str]  # SLIPWAY_* settings rendered into the ConfigMap
    drain_s: int  # how long the server takes to finish in-flight requests on SIGTERM


class BundleManifest(msgspec.Struct, frozen=True):
    """Everything ``serve --bundle`` needs to bring the version into a registry and serve it.

    ``version`` is the registry's record (format, signature, digest, metadata, reference
    profile); ``artifact`` is its file inside the bundle.
    """

    bundle_format: int
    version: VersionRecord
    artifact: FileRef
    wheel: FileRef  # slipway itself, built at package time
    lock: FileRef
    requirements: list[str]  # what the lock was resolved from
    python: str  # "3.11": the interpreter the lock was resolved for
    platform: str  # e.g. "manylinux x86_64": wheels in the lock are for this platform
    serving: ServingConfig
    handler: FileRef | None = None
    created_at: str = ""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def encode_manifest(manifest: BundleManifest) -> bytes:
    """The manifest as indented JSON, stable from run to run."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def read_manifest(bundle: Path) -> BundleManifest:
    """Read and check ``bundle.json``; raises :class:`BundleInvalid` with the reason."""
    path = bundle / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BundleInvalid(str(bundle), f"{MANIFEST} is missing") from None
    except OSError as exc:
        raise BundleInvalid(str(bundle), f"cannot read {MANIFEST}: {exc.strerror}") from None
    try:
        found = msgspec.json.decode(raw, type=dict).get("bundle_format")
    except msgspec.DecodeError as exc:
        raise BundleInvalid(str(bundle), f"{MANIFEST} is not valid JSON: {exc}") from None
    if found != BUNDLE_FORMAT:
        raise BundleInvalid(
            str(bundle),
            f"bundle format {found!r} is not the one this slipway reads ({BUNDLE_FORMAT})",
        )
    try:
        return msgspec.json.decode(raw, type=BundleManifest)
    except msgspec.ValidationError as exc:
        raise BundleInvalid(str(bundle), f"{MANIFEST} does not match its schema: {exc}") from None


def verified_file(bundle: Path, ref: FileRef) -> Path:
    """The path of a file the manifest names, after checking it stays inside the bundle and
    still hashes to what was recorded at package time."""
    relative = Path(ref.path)
    if relative.is_absolute() or ".." in relative.parts:
        raise BundleInvalid(str(bundle), f"{ref.path!r} points outside the bundle")
    path = bundle / relative
    if path.is_symlink() or not path.is_file():
        raise BundleInvalid(str(bundle), f"{ref.path} is missing")
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise BundleInvalid(
            str(bundle),
            f"{ref.path} hashes to sha256:{actual[:12]}, not the recorded sha256:{ref.sha256[:12]}"
            " (it was changed after packaging)",
        )
    return path
