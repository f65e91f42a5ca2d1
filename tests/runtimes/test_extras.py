"""A format whose package is missing is refused with the exact install command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.errors import MissingExtra, UnsupportedFormat
from slipway.runtimes.extras import EXTRAS, import_extra, import_module_or_refuse
from tests.runtimes.frameworks import require

REPO = Path(__file__).resolve().parents[2]


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements-extras.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_a_missing_module_names_the_install_command() -> None:
    with pytest.raises(MissingExtra) as info:
        import_module_or_refuse(
            "torchscript", "slipway_no_such_module", "pip install torch==2.13.0"
        )
    assert isinstance(info.value, UnsupportedFormat)  # a 415 / exit code 2 like other formats
    assert info.value.install == "pip install torch==2.13.0"
    assert str(info.value) == (
        "the torchscript format needs the Python package 'slipway_no_such_module', which is not"
        " installed in this environment; install it with `pip install torch==2.13.0`"
    )


def test_a_broken_dependency_is_not_reported_as_a_missing_extra(tmp_path: Path) -> None:
    package = tmp_path / "slipway_broken_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import slipway_missing_dependency\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError, match="slipway_missing_dependency"):
            import_module_or_refuse("x", "slipway_broken_pkg", "pip install x")
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_install_commands_pin_what_the_extras_lock_pins(name: str) -> None:
    pins = _lock_pins()
    command = EXTRAS[name].install.split()
    assert command[:2] == ["pip", "install"]
    for requirement in command[2:]:
        package, version = requirement.split("==")
        assert pins[package.lower()] == version, f"{requirement} vs requirements-extras.lock"


@pytest.mark.parametrize(
    ("format", "module", "make"),
    [
        pytest.param("torchscript", "torch", "zip", id="torchscript"),
        pytest.param("savedmodel", "tensorflow", "dir", id="savedmodel"),
        pytest.param("gguf", "llama_cpp", "gguf", id="gguf"),
    ],
)
def test_registration_without_the_package_is_refused_before_storing(
    format: str, module: str, make: str, tmp_path: Path
) -> None:
    # A real interpreter in which the framework cannot be imported, as on a machine without
    # the extra: None in sys.modules makes `import torch` fail with ModuleNotFoundError.
    source = tmp_path / "model"
    if make == "dir":
        source.mkdir()
        (source / "saved_model.pb").write_bytes(b"\x08\x01")
    elif make == "gguf":
        source.write_bytes(b"GGUF" + bytes(60))
    else:
        import zipfile

        with zipfile.ZipFile(source, "w") as archive:
            archive.writestr("model/code/__torch__/model.py", "")
    script = f"""
import sys
sys.modules[{module!r}] = None
from slipway.errors import MissingExtra
from slipway.local import Registry
from slipway.settings import Settings
with Registry(Settings.from_env({{"SLIPWAY_HOME": {str(tmp_path / "home")!r}}})) as registry:
    try:
        registry.register_model("m", {str(source)!r}, reference=[[0.0]])
    except MissingExtra as exc:
        print(exc)
    stored = list(registry.settings.artifacts_dir.rglob("*"))
    print(len(registry.store.list_models()), len(stored))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    message, counts = done.stdout.strip().splitlines()
    assert message.endswith(f"install it with `{EXTRAS[format].install}`")
    assert counts == "0 0"  # no model row, no artifact


def test_import_extra_returns_the_module_when_installed() -> None:
    require("onnxmltools")
    assert import_extra("onnxmltools").__name__ == "onnxmltools"


def test_the_two_lock_files_never_disagree() -> None:
    base = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            base[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    for name, version in _lock_pins().items():
        assert base.get(name, version) == version, f"{name} is pinned differently in the locks"
