"""Writing bundles and bringing them into a registry."""

from __future__ import annotations

import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest

from slipway.errors import BundleInvalid, PackagingFailed, VersionConflict
from slipway.local import Registry
from slipway.packaging.bundle import BundleOptions, build_wheel, source_checkout, write_bundle
from slipway.packaging.install import install_bundle
from slipway.packaging.kubernetes import KubernetesOptions
from slipway.packaging.manifest import BundleManifest, read_manifest, sha256_file
from slipway.packaging.readme import render_readme
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.store import SqlStore
from tests.packaging.conftest import settings_for, write_handler


def test_bundle_holds_the_verified_artifact_and_a_manifest(
    bundle: tuple[Path, BundleManifest], source_home: Path
) -> None:
    path, manifest = bundle
    with Registry(settings_for(source_home)) as registry:
        record = registry.store.get_version("iris", 2)
    assert manifest.version == record  # model, number, format, signature, digest, metadata
    assert manifest.artifact.path == "model/model.onnx"
    assert sha256_file(path / manifest.artifact.path) == record.digest == manifest.artifact.sha256
    assert read_manifest(path) == manifest
    assert manifest.serving.deployment == "iris"
    assert manifest.serving.environment["SLIPWAY_MAX_ROWS"] == "4096"
    assert manifest.handler is None and not (path / "handler").exists()
    assert sorted(p.name for p in path.iterdir()) == [
        ".dockerignore", "Dockerfile", "README.md", "bundle.json", "kubernetes", "model",
        "requirements.lock", "wheels",
    ]  # fmt: skip
    readme = (path / "README.md").read_text()
    assert "iris@2" in readme and "slipway serve --bundle" in readme and record.digest in readme


def test_the_readme_installs_the_lock_the_way_the_lock_allows(
    bundle: tuple[Path, BundleManifest],
) -> None:
    # pip refuses --require-hashes for a lock written without hashes (a file whose hash pip
    # could not know), as the Dockerfile already knows.
    path, manifest = bundle
    pip = "venv/bin/pip install --no-deps --require-hashes -r requirements.lock"
    assert pip in (path / "README.md").read_text()
    k8s = KubernetesOptions(name="iris", image="iris:2")
    unhashed = render_readme(manifest, k8s, hashed=False)
    assert "venv/bin/pip install --no-deps -r requirements.lock" in unhashed
    assert "--require-hashes" not in unhashed


def test_the_wheel_is_slipway_itself(bundle: tuple[Path, BundleManifest]) -> None:
    path, manifest = bundle
    wheel = path / manifest.wheel.path
    assert sha256_file(wheel) == manifest.wheel.sha256
    names = zipfile.ZipFile(wheel).namelist()
    assert "slipway/cli.py" in names and "slipway/packaging/install.py" in names
    assert not any("__pycache__" in n for n in names)


def test_the_same_source_builds_the_same_wheel(tmp_path: Path) -> None:
    # Reproducible: the wheel (and so bundle.json's hash of it) must not depend on the clock.
    first = build_wheel(source_checkout(), tmp_path / "first")
    time.sleep(2.1)  # zip entries are dated to 2 s
    second = build_wheel(source_checkout(), tmp_path / "second")
    assert first.name == second.name
    assert first.read_bytes() == second.read_bytes()


def test_a_handler_is_checked_tested_and_bundled(
    handler_bundle: tuple[Path, BundleManifest],
) -> None:
    path, manifest = handler_bundle
    assert manifest.handler is not None
    assert sha256_file(path / "handler" / "handler.py") == manifest.handler.sha256
    assert (path / "handler" / "test_handler.py").is_file()
    assert "preprocess(request)" in (path / "README.md").read_text()


def test_failing_handler_tests_stop_packaging(tmp_path: Path, source_home: Path) -> None:
    broken = "def test_species():\n    from handler import postprocess\n    assert False\n"
    handler = write_handler(tmp_path / "h", test=broken)
    out = tmp_path / "never"
    with (
        Registry(settings_for(source_home)) as registry,
        pytest.raises(PackagingFailed, match="handler's tests failed") as caught,
    ):
        write_bundle(
            registry.store, registry.artifacts, "iris", 2, out, registry.settings,
            BundleOptions(handler=handler),
        )  # fmt: skip
    assert "1 failed" in caught.value.message
    assert not out.exists() and list(tmp_path.glob(".never*")) == []


def test_a_handler_without_tests_or_hooks_is_refused(tmp_path: Path, source_home: Path) -> None:
    untested = write_handler(tmp_path / "untested", test="")
    hookless = write_handler(tmp_path / "hookless", handler="VALUE = 1\n")
    with Registry(settings_for(source_home)) as registry:
        for handler, match in [(untested, "has no tests"), (hookless, "defines neither")]:
            with pytest.raises(PackagingFailed, match=match):
                write_bundle(
                    registry.store, registry.artifacts, "iris", 2, tmp_path / "out",
                    registry.settings, BundleOptions(handler=handler),
                )  # fmt: skip


def test_a_handler_that_needs_files_the_bundle_lacks_is_refused(
    tmp_path: Path, source_home: Path
) -> None:
    # Its tests pass beside labels.json, but the bundle (and the image) hold handler.py alone:
    # `serve --bundle` could never import it.
    reads_labels = """
import json
from pathlib import Path

SPECIES = json.loads((Path(__file__).parent / "labels.json").read_text())


def postprocess(outputs):
    return {**outputs, "species": [SPECIES[i] for i in outputs["label"]]}
"""
    test = "from handler import SPECIES\n\ndef test_labels():\n    assert len(SPECIES) == 3\n"
    handler = write_handler(tmp_path / "h", handler=reads_labels, test=test)
    (tmp_path / "h" / "labels.json").write_text('["setosa", "versicolor", "virginica"]')
    out = tmp_path / "never"
    with (
        Registry(settings_for(source_home)) as registry,
        pytest.raises(PackagingFailed, match="as the bundle holds it.*labels.json"),
    ):
        write_bundle(
            registry.store, registry.artifacts, "iris", 2, out, registry.settings,
            BundleOptions(handler=handler),
        )  # fmt: skip
    assert not out.exists() and list(tmp_path.glob(".never*")) == []


def test_a_bundle_the_registry_cannot_record_is_not_left_behind(
    tmp_path: Path, source_home: Path
) -> None:
    """The version.packaged event is written after the rename; when the database refuses it,
    the bundle goes too, so no bundle exists that the registry does not know of."""
    from sqlalchemy.exc import IntegrityError

    home = tmp_path / "home"
    shutil.copytree(source_home, home)  # the shared registry keeps no trigger
    out = tmp_path / "iris-2"
    with Registry(settings_for(home)) as registry:
        with registry.store.engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_packaged BEFORE INSERT ON events"
                " WHEN NEW.kind = 'version.packaged'"
                " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
            )
        before = registry.store.events("iris@2")
        with pytest.raises(IntegrityError, match="the disk is full"):
            write_bundle(registry.store, registry.artifacts, "iris", 2, out, registry.settings)
        assert not out.exists() and list(tmp_path.glob(".iris-2*")) == []
        assert registry.store.events("iris@2") == before


def test_an_existing_output_directory_is_not_overwritten(
    bundle: tuple[Path, BundleManifest], source_home: Path
) -> None:
    with (
        Registry(settings_for(source_home)) as registry,
        pytest.raises(PackagingFailed, match="already exists"),
    ):
        write_bundle(registry.store, registry.artifacts, "iris", 2, bundle[0], registry.settings)


def test_install_keeps_the_version_number_and_is_idempotent(
    bundle: tuple[Path, BundleManifest], store_url: str, tmp_path: Path
) -> None:
    path, manifest = bundle
    with SqlStore(store_url) as store:
        artifacts = ArtifactStore(tmp_path / "artifacts")
        first = install_bundle(path, store, artifacts)
        again = install_bundle(path, store, artifacts)  # a second replica starting
        assert first.version.ref == again.version.ref == "iris@2"
        assert first.version.digest == manifest.version.digest
        assert first.version.profile == manifest.version.profile
        assert first.version.meta.metrics == {"accuracy": 0.97}
        assert first.deployment == again.deployment
        assert (first.deployment.name, first.deployment.version) == ("iris", 2)
        assert artifacts.verified_path(manifest.version.digest).is_file()
        assert first.hooks is None
        # The registry's desired state wins: a deployment moved elsewhere stays there.
        store.register_version(
            "iris", format="onnx", digest=manifest.version.digest, size=1,
            signature=manifest.version.signature, number=3,
        )  # fmt: skip
        store.set_deployment_version("iris", 3)
        assert install_bundle(path, store, artifacts).deployment.version == 3
        with pytest.raises(VersionConflict, match="iris@3 is already registered"):
            store.register_version(
                "iris", format="onnx", digest=manifest.version.digest, size=1,
                signature=manifest.version.signature, number=3,
            )  # fmt: skip


def test_install_refuses_a_registry_with_other_content_under_that_number(
    bundle: tuple[Path, BundleManifest], tmp_path: Path
) -> None:
    path, manifest = bundle
    with SqlStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        for _ in range(2):
            store.register_version(
                "iris", format="onnx", digest="ab" * 32, size=1,
                signature=manifest.version.signature,
            )  # fmt: skip
        with pytest.raises(BundleInvalid, match="the registry's iris@2 is sha256:abababababab"):
            install_bundle(path, store, ArtifactStore(tmp_path / "artifacts"))


@pytest.mark.parametrize(
    "damage, match",
    [
        pytest.param("artifact", "model/model.onnx hashes to", id="altered-artifact"),
        pytest.param("manifest", "not valid JSON", id="broken-manifest"),
        pytest.param("format", "bundle format 99", id="future-format"),
        pytest.param("missing", "model/model.onnx is missing", id="missing-artifact"),
        pytest.param("escape", "points outside the bundle", id="path-escape"),
    ],
)
def test_an_altered_bundle_is_refused(
    bundle: tuple[Path, BundleManifest], tmp_path: Path, damage: str, match: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bundle[0], copy)
    manifest_path = copy / "bundle.json"
    data = msgspec.json.decode(manifest_path.read_bytes())
    if damage == "artifact":
        with open(copy / "model" / "model.onnx", "ab") as f:
            f.write(b"\0")
    elif damage == "manifest":
        manifest_path.write_text("{")
    elif damage == "format":
        data["bundle_format"] = 99
        manifest_path.write_bytes(msgspec.json.encode(data))
    elif damage == "missing":
        (copy / "model" / "model.onnx").unlink()
    elif damage == "escape":
        data["artifact"]["path"] = "../../etc/passwd"
        manifest_path.write_bytes(msgspec.json.encode(data))
    with (
        SqlStore(f"sqlite:///{tmp_path / 'r.db'}") as store,
        pytest.raises(BundleInvalid, match=match),
    ):
        install_bundle(copy, store, ArtifactStore(tmp_path / "artifacts"))


def test_a_handler_that_fails_to_import_leaves_the_registry_untouched(
    handler_bundle: tuple[Path, BundleManifest], tmp_path: Path
) -> None:
    # Was: version and deployment registered, then the import failed. Another replica serving
    # that deployment would answer without the hooks (millimetres fed to a centimetre model).
    copy = tmp_path / "copy"
    shutil.copytree(handler_bundle[0], copy)
    handler = copy / "handler" / "handler.py"
    handler.write_text("raise RuntimeError('needs a GPU')\n")
    data = msgspec.json.decode((copy / "bundle.json").read_bytes())
    data["handler"]["sha256"] = sha256_file(handler)  # a hash, not a signature
    (copy / "bundle.json").write_bytes(msgspec.json.encode(data))
    with SqlStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        with pytest.raises(PackagingFailed, match="RuntimeError: needs a GPU"):
            install_bundle(copy, store, ArtifactStore(tmp_path / "artifacts"))
        assert store.list_deployments() == [] and store.list_models() == []


def test_replicas_starting_together_agree(
    bundle: tuple[Path, BundleManifest], store_url: str, tmp_path: Path
) -> None:
    # Four replicas bring the same bundle into one registry at once: one registers and creates,
    # the others read what it wrote; nobody fails.
    path, _ = bundle
    SqlStore(store_url).close()  # migrate once, as the first replica would

    def replica(i: int) -> tuple[str, int, int]:
        with SqlStore(store_url) as store:
            done = install_bundle(path, store, ArtifactStore(tmp_path / f"artifacts-{i}"))
            return done.version.ref, done.deployment.version, done.deployment.generation

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(replica, range(4)))
    assert results == [("iris@2", 2, 1)] * 4
    with SqlStore(store_url) as store:
        assert [v.number for v in store.list_versions("iris")] == [2]
