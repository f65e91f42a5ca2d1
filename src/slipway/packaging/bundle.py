"""Writing a bundle: ``slipway package MODEL@VERSION --out DIR``.

The bundle is assembled in a temporary directory beside ``out`` and renamed into place at the
end, so ``out`` is either complete or absent; when its ``version.packaged`` event cannot be
recorded, it is removed again, so no bundle exists that the registry does not know of.
Steps: verify the artifact against its digest; import the handler and run its tests; build
slipway's wheel; resolve the serving lock; write the manifest, Dockerfile, ``.dockerignore``,
Kubernetes manifests and README.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from slipway.errors import PackagingFailed
from slipway.packaging import docker, kubernetes, lock
from slipway.packaging.hooks import handler_tests, load_hooks, run_handler_tests
from slipway.packaging.manifest import (
    BUNDLE_FORMAT,
    HANDLER_DIR,
    HANDLER_FILE,
    KUBERNETES_DIR,
    LOCK,
    MANIFEST,
    MODEL_DIR,
    WHEEL_DIR,
    BundleManifest,
    FileRef,
    ServingConfig,
    encode_manifest,
    sha256_file,
)
from slipway.packaging.readme import render_readme
from slipway.packaging.record import record_bundle
from slipway.packaging.target import Target, host_target, parse_target
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.names import check_name
from slipway.registry.records import BatchingConfig, VersionRecord
from slipway.registry.store import SqlStore
from slipway.settings import Settings

# Server limits that travel with the bundle into its ConfigMap. An allow-list: settings that
# may hold secrets (tokens, URLs) never go into a ConfigMap.
SERVING_SETTINGS = (
    "max_body_bytes",
    "max_rows",
    "request_timeout_s",
    "max_queue_rows",
    "max_batch_size",
    "max_batch_delay_ms",
    "onnx_threads",
    "reconcile_interval_s",
)
# A SavedModel directory is stored (and bundled) as one tar archive; see runtimes/savedmodel.py.
ARTIFACT_NAMES = {
    "onnx": "model.onnx",
    "torchscript": "model.pt",
    "savedmodel": "saved_model.tar",
    "gguf": "model.gguf",
}

# 1980-01-01, the earliest time a zip entry can hold: the date of every file in the wheel.
WHEEL_EPOCH = "315532800"

Step = Callable[[str], None]


@dataclass(frozen=True)
class BundleOptions:
    """Choices for one bundle. ``handler`` is a ``handler.py`` (its tests beside it);
    ``extra_requirements`` are ``name==version`` pins the handler imports beyond serving's."""

    deployment: str | None = None  # defaults to the model's name
    image: str | None = None  # defaults to "<model>:<version>"
    handler: Path | None = None
    extra_requirements: tuple[str, ...] = ()
    handler_test_timeout_s: float = 120.0
    resolve_timeout_s: float = 300.0
    kubernetes: dict[str, object] = field(default_factory=dict)  # KubernetesOptions fields
    # The image's platform, "linux/amd64" or "linux/arm64"; None: this machine's architecture.
    platform: str | None = None

    def target(self) -> Target:
        """The platform the lock is resolved for (InvalidInput for one no image runs on)."""
        return parse_target(self.platform) if self.platform is not None else host_target()


def installed_version(name: str) -> str | None:
    """The version of distribution ``name`` installed in this environment, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_checkout() -> Path:
    """The directory slipway is installed from (``pip install -e``), to build its wheel."""
    dist = importlib.metadata.distribution("slipway")
    text = dist.read_text("direct_url.json")
    if text:
        url = json.loads(text).get("url", "")
        if url.startswith("file://"):
            root = Path(unquote(urlparse(url).path))
            if (root / "pyproject.toml").is_file():
                return root
    raise PackagingFailed(
        "slipway is not installed from a source checkout, so its wheel cannot be built;"
        " install it with `pip install -e <checkout>` on the packaging machine"
    )


def build_wheel(source: Path, into: Path, *, timeout_s: float = 300.0) -> Path:
    """Build slipway's wheel from a copy of ``source`` (the shared checkout is never written).

    The same source gives the same wheel, byte for byte: every entry is dated
    ``SOURCE_DATE_EPOCH`` (the build tools' convention) instead of the build's clock.
    """
    with tempfile.TemporaryDirectory(prefix="slipway-wheel-") as tmp:
        copy = Path(tmp) / "src-copy"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copy2(source / name, copy / name)
        shutil.copytree(
            source / "src" / "slipway",
            copy / "src" / "slipway",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        into.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
            "--wheel-dir", str(into), str(copy),
        ]  # fmt: skip
        env = {**os.environ, "SOURCE_DATE_EPOCH": WHEEL_EPOCH}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, env=env
            )
        except subprocess.TimeoutExpired:
            raise PackagingFailed(f"building slipway's wheel took over {timeout_s:g}s") from None
        if done.returncode != 0:
            raise PackagingFailed(f"building slipway's wheel failed:\n{done.stderr[-2000:]}")
    wheels = sorted(into.glob("slipway-*.whl"))
    if len(wheels) != 1:
        raise PackagingFailed(f"expected one slipway wheel in {into}, found {len(wheels)}")
    return wheels[0]


def serving_environment(settings: Settings) -> dict[str, str]:
    """``SLIPWAY_*`` variables for the server limits in ``settings`` (the ConfigMap's data)."""
    return {
        f"SLIPWAY_{name.upper()}": str(getattr(settings, name))
        for name in SERVING_SETTINGS
        if hasattr(settings, name)
    }


def write_bundle(
    store: SqlStore,
    artifacts: ArtifactStore,
    model: str,
    number: int | None,
    out: Path,
    settings: Settings,
    options: BundleOptions = BundleOptions(),
    *,
    step: Step = lambda _: None,
    source: Path | None = None,
    installed: Callable[[str], str | None] = installed_version,
    actor: str | None = None,
) -> BundleManifest:
    """Write the bundle of ``model@number`` (latest when None) into ``out``, which must not exist,
    and record it on the version as a ``version.packaged`` event (see ``record.py``).

    ``step`` is told what is happening (a CLI shows it). Raises PackagingFailed, or the
    registry's NotFound / ArtifactCorrupt errors.
    """
    if out.exists():
        raise PackagingFailed(f"{out} already exists; remove it or choose another --out")
    check_options(options)
    record = store.get_version(model, number)
    step(f"verifying {record.ref} sha256:{record.digest[:12]}")
    artifact = artifacts.verified_path(record.digest)
    handler = _checked_handler(options, step)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise PackagingFailed(f"cannot write the bundle {out}: {exc.strerror or exc}") from exc
    work.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        manifest = _assemble(
            work, record, artifact, handler, settings, options, step, source, installed
        )
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    # The registry remembers the bundle (and what its files say) for `slipway readiness`. The
    # facts are read from the bundle in place, so the record comes after the rename; a bundle
    # the registry could not record is removed rather than left without its record.
    try:
        record_bundle(store, out, manifest, actor=actor)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return manifest


def check_options(options: BundleOptions) -> None:
    """Refuse what serving the bundle, ``docker build`` or pip would refuse, before any work:
    an invalid deployment name or image reference, an extra requirement not pinned with ``==``.
    """
    if options.deployment is not None:
        check_name("deployment", options.deployment)
    if options.image is not None:
        kubernetes.check_image(options.image)
    for pinned in options.extra_requirements:
        lock.check_pinned(pinned)
    options.target()


def _checked_handler(options: BundleOptions, step: Step) -> Path | None:
    if options.handler is None:
        return None
    path = options.handler
    if path.is_dir():
        path = path / HANDLER_FILE
    if path.name != HANDLER_FILE or not path.is_file():
        raise PackagingFailed(f"--handler must be a {HANDLER_FILE} file (or its directory): {path}")
    step(f"checking the hooks in {path}")
    load_hooks(path, name="slipway_handler_check")
    step(f"running the handler's tests ({len(handler_tests(path.parent))} files)")
    summary = run_handler_tests(path.parent, timeout_s=options.handler_test_timeout_s)
    step(f"handler tests: {summary}")
    return path


def _check_bundled_handler(path: Path) -> None:
    """Import the handler as the bundle holds it, where ``serve --bundle`` will: its tests ran
    beside files (data, modules) that the bundle and the image do not carry."""
    try:
        load_hooks(path, name="slipway_handler_bundled")
    except PackagingFailed as exc:
        why = exc.message.split(" failed: ", 1)[-1]
        raise PackagingFailed(
            f"the handler cannot be imported as the bundle holds it (handler.py alone, without"
            f" the files beside it): {why}; keep what it needs inside handler.py"
        ) from exc


def _assemble(
    work: Path,
    record: VersionRecord,
    artifact: Path,
    handler: Path | None,
    settings: Settings,
    options: BundleOptions,
    step: Step,
    source: Path | None,
    installed: Callable[[str], str | None],
) -> BundleManifest:
    artifact_name = f"{MODEL_DIR}/{ARTIFACT_NAMES.get(record.format, 'model.' + record.format)}"
    (work / MODEL_DIR).mkdir()
    shutil.copyfile(artifact, work / artifact_name)
    handler_ref = None
    if handler is not None:
        (work / HANDLER_DIR).mkdir()
        for path in [handler, *handler_tests(handler.parent)]:
            shutil.copyfile(path, work / HANDLER_DIR / path.name)
        relative = f"{HANDLER_DIR}/{HANDLER_FILE}"
        handler_ref = FileRef(relative, sha256_file(work / relative))
        _check_bundled_handler(work / relative)

    step("building slipway's wheel")
    wheel = build_wheel(source or source_checkout(), work / WHEEL_DIR)

    step("resolving the serving lock with pip")
    requirements = lock.serving_requirements(
        record.format, lock.wheel_requires(wheel), installed, options.extra_requirements
    )
    target = options.target()
    packages = lock.resolve(requirements, timeout_s=options.resolve_timeout_s, target=target)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    lock_text = lock.render_lock(packages, requirements, python, target.platform)
    (work / LOCK).write_text(lock_text)

    deployment = options.deployment or record.model
    serving = ServingConfig(
        deployment=deployment,
        port=8000,
        batching=BatchingConfig(
            max_batch_size=settings.max_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            max_queue_rows=settings.max_queue_rows,
        ),
        environment=serving_environment(settings),
        drain_s=settings.drain_s,
    )
    manifest = BundleManifest(
        bundle_format=BUNDLE_FORMAT,
        version=record,
        artifact=FileRef(artifact_name, record.digest),
        wheel=FileRef(f"{WHEEL_DIR}/{wheel.name}", sha256_file(wheel)),
        lock=FileRef(LOCK, sha256_file(work / LOCK)),
        requirements=requirements,
        python=python,
        platform=target.platform,
        serving=serving,
        handler=handler_ref,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    (work / MANIFEST).write_bytes(encode_manifest(manifest))

    step("writing the Dockerfile, Kubernetes manifests and README")
    k8s = kubernetes.KubernetesOptions(
        name=deployment,
        image=options.image or f"{kubernetes.kubernetes_name(record.model)}:{record.number}",
        port=serving.port,
        drain_s=serving.drain_s,
        environment=serving.environment,
        labels={
            "slipway.dev/model": kubernetes.kubernetes_name(record.model),
            "slipway.dev/version": str(record.number),
        },
        arch=target.arch,
    )
    if options.kubernetes:
        k8s = replace(k8s, **options.kubernetes)  # type: ignore[arg-type]
    (work / "Dockerfile").write_text(
        docker.render_dockerfile(
            python=python,
            wheel=manifest.wheel.path,
            port=serving.port,
            hashed=lock.lock_is_hashed(lock_text),
            compiles=lock.lock_compiles(lock_text),
            handler=handler is not None,
            drain_s=serving.drain_s,
        )
    )
    (work / ".dockerignore").write_text(docker.render_dockerignore(handler=handler is not None))
    (work / KUBERNETES_DIR).mkdir()
    for name, document in kubernetes.render_manifests(k8s).items():
        (work / KUBERNETES_DIR / name).write_text(kubernetes.dump_manifest(document))
    readme = render_readme(manifest, k8s, hashed=lock.lock_is_hashed(lock_text))
    (work / "README.md").write_text(readme)
    return manifest
