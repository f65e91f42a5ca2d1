"""The serving lock: pins of only what serving needs, from pip's resolver, with hashes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slipway.errors import InvalidInput, PackagingFailed
from slipway.packaging.lock import (
    LockedPackage,
    canonical,
    lock_compiles,
    packages_from_report,
    render_lock,
    serving_requirements,
    source_only_options,
    wheel_requires,
)
from slipway.packaging.manifest import BundleManifest, sha256_file

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$")


REQUIRES = [
    "numpy>=2.0",
    "onnxruntime>=1.18",
    "scikit-learn>=1.4",
    "skl2onnx>=1.17",
    'uvloop>=0.19; sys_platform != "win32"',
    'uvloop-on-windows>=1; sys_platform == "win32"',
    'psycopg[binary]>=3.1; extra == "postgres"',
    'torch>=2.3; extra == "torch"',
    'pytest; extra == "dev"',
]


def test_serving_requirements_follow_slipways_metadata_without_training_libraries() -> None:
    onnx = serving_requirements("onnx", REQUIRES, lambda name: "1.0")
    assert onnx == ["numpy==1.0", "onnxruntime==1.0", "uvloop==1.0", "psycopg[binary]==1.0"]
    torch = serving_requirements("torchscript", REQUIRES, lambda name: "2.0", ["pillow==10.0"])
    assert torch[-3:] == ["psycopg[binary]==2.0", "torch==2.0", "pillow==10.0"]


def test_a_missing_package_or_unpinned_extra_is_refused() -> None:
    requires = ['tensorflow-cpu>=2.16; extra == "tensorflow"']
    with pytest.raises(PackagingFailed, match="'tensorflow-cpu', which is not installed"):
        serving_requirements("savedmodel", requires, lambda name: None)
    with pytest.raises(InvalidInput, match="must be pinned"):
        serving_requirements("onnx", [], lambda name: "1", ["pillow>=10"])
    with pytest.raises(PackagingFailed, match="format 'pmml'"):
        serving_requirements("pmml", [], lambda name: "1")


def test_the_bundle_wheel_declares_what_the_lock_was_resolved_from(
    bundle: tuple[Path, BundleManifest],
) -> None:
    path, manifest = bundle
    requires = wheel_requires(path / manifest.wheel.path)
    assert any(r.startswith("scikit-learn") for r in requires)  # declared, yet not served
    assert manifest.requirements == serving_requirements(
        "onnx", requires, lambda name: manifest_version(manifest, name)
    )


def manifest_version(manifest: BundleManifest, name: str) -> str:
    for requirement in manifest.requirements:
        pinned, version = requirement.split("==")
        if canonical(pinned.split("[")[0]) == canonical(name):
            return version
    raise AssertionError(name)


def test_report_hashes_come_from_pip_or_the_local_file(tmp_path: Path) -> None:
    wheel = tmp_path / "b-2.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    report = {
        "install": [
            {
                "metadata": {"name": "b", "version": "2.0"},
                "download_info": {"url": wheel.as_uri(), "archive_info": {}},
            },
            {
                "metadata": {"name": "A_pkg", "version": "1.0"},
                "download_info": {
                    "url": "https://files.example/a.whl",
                    "archive_info": {"hashes": {"sha256": "ab" * 32}},
                },
            },
        ]
    }
    packages = packages_from_report(report)
    assert packages == [
        LockedPackage("A_pkg", "1.0", "ab" * 32),
        LockedPackage("b", "2.0", sha256_file(wheel)),
    ]


def test_hashes_are_all_or_nothing_and_training_libraries_are_refused() -> None:
    hashed = render_lock([LockedPackage("a", "1", "00" * 32)], ["a==1"], "3.11")
    assert "a==1 \\\n    --hash=sha256:" + "00" * 32 in hashed
    assert "--require-hashes" in hashed
    partial = render_lock(
        [LockedPackage("a", "1", "00" * 32), LockedPackage("b", "2", None)], ["a==1"], "3.11"
    )
    assert "--hash" not in partial and "\na==1\nb==2\n" in partial
    with pytest.raises(PackagingFailed, match="scikit_learn"):
        render_lock([LockedPackage("scikit_learn", "1.5", None)], ["a==1"], "3.11")


def test_only_distributions_without_wheels_are_locked_from_source() -> None:
    assert source_only_options(["numpy==2.4.6", "llama_cpp_python==0.3.36"]) == [
        "--no-binary=llama-cpp-python"
    ]
    assert source_only_options(["numpy==2.4.6", "torch==2.13.0"]) == []
    sdist = "https://files.example/llama_cpp_python-0.3.36.tar.gz"
    report = {
        "install": [
            {
                "metadata": {"name": "llama_cpp_python", "version": "0.3.36"},
                "download_info": {"url": sdist, "archive_info": {"hashes": {"sha256": "cd" * 32}}},
            }
        ]
    }
    (package,) = packages_from_report(report)
    assert package.source and package.sha256 == "cd" * 32
    text = render_lock([package, LockedPackage("numpy", "2.4.6", "ab" * 32)], ["x==1"], "3.11")
    assert lock_compiles(text) and "needs a C/C++ compiler): llama_cpp_python" in text
    assert not lock_compiles(render_lock([LockedPackage("numpy", "2", "ab" * 32)], [], "3.11"))


def test_a_cpu_build_of_torch_names_the_index_that_publishes_it() -> None:
    cpu = render_lock([LockedPackage("torch", "2.13.0+cpu", "ab" * 32)], ["torch"], "3.11")
    assert "\n--extra-index-url https://download.pytorch.org/whl/cpu\n" in cpu
    plain = render_lock([LockedPackage("torch", "2.13.0", "ab" * 32)], ["torch"], "3.11")
    assert "--extra-index-url" not in plain


def test_canonical_names() -> None:
    assert canonical("typing_extensions") == canonical("Typing.Extensions") == "typing-extensions"


def test_the_bundle_lock_pins_everything_serving_needs_and_nothing_for_training(
    bundle: tuple[Path, BundleManifest],
) -> None:
    path, manifest = bundle
    lines = (path / "requirements.lock").read_text().splitlines()
    pins = {}
    for i, line in enumerate(lines):
        found = PIN.match(line)
        if found:
            pins[canonical(found[1])] = found[2]
            assert re.fullmatch(r"    --hash=sha256:[0-9a-f]{64}", lines[i + 1]), lines[i + 1]
    for needed in ["onnxruntime", "numpy", "uvicorn", "sqlalchemy", "psycopg-binary", "typer"]:
        assert needed in pins
    assert not {"scikit-learn", "skl2onnx", "pytest", "mypy", "ruff", "hypothesis"} & set(pins)
    # The direct requirements are pinned at exactly the versions resolved.
    for requirement in manifest.requirements:
        name, version = requirement.split("==")
        assert pins[canonical(name.split("[")[0])] == version
    assert manifest.lock.sha256 == sha256_file(path / "requirements.lock")
