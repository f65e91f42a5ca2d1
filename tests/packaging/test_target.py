"""The image platform a serving lock is resolved for: Linux on amd64 or arm64, resolved by pip
for that platform from any machine."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

from slipway.errors import InvalidInput, PackagingFailed
from slipway.local import Registry
from slipway.packaging import lock
from slipway.packaging.bundle import BundleOptions, check_options
from slipway.packaging.manifest import BundleManifest
from slipway.packaging.target import (
    docker_platform,
    host_target,
    is_native,
    parse_target,
    pip_options,
)

from .conftest import settings_for, write_iris_bundle


@pytest.mark.parametrize(
    ("text", "docker", "machine"),
    [
        ("linux/amd64", "linux/amd64", "x86_64"),
        ("linux/arm64", "linux/arm64", "aarch64"),
        ("arm64", "linux/arm64", "aarch64"),
        ("linux/x86_64", "linux/amd64", "x86_64"),
        (" Linux/AArch64 ", "linux/arm64", "aarch64"),
    ],
)
def test_platforms_are_read_as_docker_spells_them(text: str, docker: str, machine: str) -> None:
    target = parse_target(text)
    assert (target.docker, target.machine, target.platform) == (docker, machine, f"linux-{machine}")
    assert docker_platform(target.platform) == docker


@pytest.mark.parametrize("text", ["windows/amd64", "linux/riscv64", "darwin/arm64", ""])
def test_a_platform_no_image_runs_on_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="linux/amd64, linux/arm64"):
        parse_target(text)
    with pytest.raises(InvalidInput, match="--platform"):
        check_options(BundleOptions(platform=text))


def test_the_default_is_linux_on_this_machines_architecture() -> None:
    assert host_target("x86_64").docker == host_target("AMD64").docker == "linux/amd64"
    assert host_target("arm64").docker == host_target("aarch64").docker == "linux/arm64"
    with pytest.raises(InvalidInput, match="choose one with --platform"):
        host_target("ppc64le")
    # pip on a Mac or on another architecture must be told; on Linux of the same, not.
    arm = parse_target("linux/arm64")
    assert is_native(arm, system="linux", machine="aarch64")
    assert not is_native(arm, system="darwin", machine="arm64")
    assert not is_native(arm, system="linux", machine="x86_64")
    options = pip_options(arm, "3.11")
    assert "--platform=manylinux2014_aarch64" in options
    assert "--platform=manylinux_2_28_aarch64" in options
    assert not any("x86_64" in o for o in options)
    assert options[-3:] == ["--python-version=3.11", "--implementation=cp", "--abi=cp311"]


def test_a_lock_for_another_architecture_pins_that_architectures_wheels() -> None:
    """numpy publishes one wheel per architecture: the pins agree, the hashes must not."""
    requirement = f"numpy=={importlib.metadata.version('numpy')}"
    here = host_target()
    other = parse_target("linux/arm64" if here.docker == "linux/amd64" else "linux/amd64")
    (native,) = lock.resolve([requirement], target=here)
    (foreign,) = lock.resolve([requirement], target=other)
    assert native.version == foreign.version and not foreign.source
    assert foreign.sha256 is not None and len(foreign.sha256) == 64
    assert foreign.sha256 != native.sha256


def test_a_source_only_distribution_cannot_be_resolved_for_another_platform() -> None:
    other = parse_target("linux/arm64" if host_target().docker == "linux/amd64" else "linux/amd64")
    with pytest.raises(PackagingFailed, match="llama-cpp-python publishes no wheels"):
        lock.resolve(["llama-cpp-python==0.3.16", "numpy==2.4.6"], target=other)


def _hashes(lock_text: str) -> dict[str, str]:
    """name → sha256 of a hashed lock."""
    found = re.findall(r"^(\S+)==\S+ \\\n    --hash=sha256:([0-9a-f]{64})$", lock_text, re.M)
    return dict(found)


def test_a_bundle_for_arm64_says_so_everywhere(
    tmp_path: Path, source_home: Path, bundle: tuple[Path, BundleManifest]
) -> None:
    out = tmp_path / "iris-arm"
    manifest = write_iris_bundle(source_home, out, BundleOptions(platform="linux/arm64"))
    with Registry(settings_for(source_home)) as registry:
        (packaged,) = registry.store.events("iris@2", kinds=("version.packaged",), limit=1)
    assert manifest.platform == "linux-aarch64" == packaged.data["platform"]
    deployment = yaml.safe_load((out / "kubernetes" / "deployment.yaml").read_text())
    selector = deployment["spec"]["template"]["spec"]["nodeSelector"]
    assert selector == {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}
    assert "docker build --platform linux/arm64 -t iris:2 ." in (out / "README.md").read_text()
    text = (out / "requirements.lock").read_text()
    assert "resolved by pip for Python 3.11 on linux-aarch64." in text.splitlines()[0]
    arm = _hashes(text)
    native = _hashes((bundle[0] / "requirements.lock").read_text())
    assert arm.keys() >= {"numpy", "onnxruntime"}
    if bundle[1].platform == "linux-x86_64":  # the session's bundle is for this machine
        assert arm["numpy"] != native["numpy"] and arm["onnxruntime"] != native["onnxruntime"]
