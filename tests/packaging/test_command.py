"""``slipway package`` as a user runs it: a real process against a real registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from slipway.packaging.manifest import read_manifest
from tests.packaging.conftest import write_handler


def slipway(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLIPWAY_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SLIPWAY_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli", *args],
        env=env, capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def test_package_writes_a_bundle_with_the_options_given(source_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(source_home, home)  # the session registry stays as it was
    handler = write_handler(tmp_path / "handler")
    out = tmp_path / "bundle"
    done = slipway(
        home, "package", "iris@2", "--out", str(out), "--handler", str(handler),
        "--deployment", "iris-edge", "--replicas", "3", "--max-replicas", "6",
        "--memory", "1Gi", "--image", "registry.example/iris:2", "--cpu", "3",
        "--cpu-limit", "4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"bundle of iris@2 written to {out}" in " ".join(done.stdout.split())
    manifest = read_manifest(out)
    assert manifest.serving.deployment == "iris-edge" and manifest.handler is not None
    deployment = yaml.safe_load((out / "kubernetes" / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == "iris-edge"
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/iris:2"
    assert container["resources"]["requests"] == {"cpu": "3", "memory": "1Gi"}
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "2Gi"}
    hpa = yaml.safe_load((out / "kubernetes" / "hpa.yaml").read_text())
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)


def test_package_failures_are_one_line_and_an_exit_code(source_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(source_home, home)
    failing = write_handler(tmp_path / "h", test="def test_no():\n    assert 1 == 2\n")
    done = slipway(
        home, "package", "iris@2", "--out", str(tmp_path / "b"), "--handler", str(failing)
    )
    assert done.returncode == 11
    assert "handler's tests failed" in done.stderr and not (tmp_path / "b").exists()
    missing = slipway(home, "package", "iris@9", "--out", str(tmp_path / "b"))
    assert missing.returncode == 3 and "iris" in missing.stderr
    taken = tmp_path / "a-file"
    taken.write_text("")
    unwritable = slipway(home, "package", "iris@2", "--out", str(taken / "bundle"))
    assert unwritable.returncode == 11, unwritable.stderr
    last = unwritable.stderr.splitlines()[-1]  # after the progress line
    assert last.startswith(f"error: cannot write the bundle {taken / 'bundle'}")
    assert "Traceback" not in unwritable.stderr
    not_a_bundle = slipway(home, "serve", "--bundle", str(tmp_path), "--port", "0")
    assert not_a_bundle.returncode == 2
    assert "bundle.json is missing" in not_a_bundle.stderr


def test_a_handler_given_by_a_relative_path_has_its_tests_run(
    source_home: Path, tmp_path: Path
) -> None:
    # As packaging.md shows it: `slipway package churn@3 --out churn-3 --handler hooks/handler.py`
    home = tmp_path / "home"
    shutil.copytree(source_home, home)
    write_handler(tmp_path / "hooks")
    done = slipway(
        home, "package", "iris@2", "--out", "iris-2", "--handler", "hooks/handler.py",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(tmp_path / "iris-2")
    assert manifest.handler is not None
    assert (tmp_path / "iris-2" / "handler" / "test_handler.py").is_file()


def test_manifest_options_kubernetes_would_refuse_are_refused_first(
    source_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(source_home, home)
    out = tmp_path / "b"
    for args, fragment in [
        (["--replicas", "0"], "--replicas"),
        (["--replicas", "5", "--max-replicas", "2"], "--max-replicas"),
        (["--cpu", "banana"], "--cpu"),
        (["--memory", "1 GB"], "--memory"),
        (["--memory-limit", "-2Gi"], "--memory-limit"),
        (["--cpu-limit", "lots"], "--cpu-limit"),
        # A request above its limit: the Deployment would be refused by the API server.
        (["--cpu", "4"], "--cpu 4 is more than --cpu-limit 2"),
        (["--memory", "4Gi"], "--memory 4Gi is more than --memory-limit 2Gi"),
        (["--memory", "3Gi", "--memory-limit", "3000M"], "--memory 3Gi is more than"),
    ]:
        done = slipway(home, "package", "iris@2", "--out", str(out), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error:") and fragment in done.stderr
        assert not out.exists()


def test_options_that_would_break_the_bundle_are_refused_before_any_work(
    source_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(source_home, home)
    out = tmp_path / "b"
    for args, fragment in [
        # serve --bundle would refuse the name only when the bundle is served
        (["--deployment", "edge deployment!"], "invalid deployment name 'edge deployment!'"),
        # docker build -t and the kubelet refuse these references
        (["--image", "Registry Example/iris:2"], "is not an image reference"),
        (["--image", "iris:"], "is not an image reference"),
        # was a traceback (packaging's InvalidRequirement)
        (["--requirement", "==1"], "extra requirement '==1' is not a requirement"),
        (["--requirement", "pillow==10.*"], "must be pinned with == to one exact version"),
        (["--requirement", "pillow>=10"], "must be pinned with =="),
    ]:
        done = slipway(home, "package", "iris@2", "--out", str(out), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error:") and fragment in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "building" not in done.stderr
        assert not out.exists()
