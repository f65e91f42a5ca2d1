"""The serving lock: exact pins of only what serving a format needs, resolved by pip.

The inputs are slipway's own declared dependencies (read from the wheel built for the bundle,
so they follow ``pyproject.toml``) without the training libraries that only registration
imports (scikit-learn, skl2onnx), plus the PostgreSQL driver and the format's extra, pinned to
the versions installed where ``slipway package`` runs. pip's resolver adds their dependencies
(``pip install --dry-run --report``) and the lock lists every one with ``==`` and the sha256 of
the file pip chose.

Every distribution is locked as a wheel except the few that publish none (llama-cpp-python
compiles llama.cpp at install): their source archive is locked, by hash, and the image's
builder stage compiles it.
"""

from __future__ import annotations

import email.parser
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement

from slipway.errors import InvalidInput, PackagingFailed
from slipway.packaging.manifest import sha256_file
from slipway.packaging.target import Target, is_native, pip_options

# Extras of slipway's own metadata a replica always gets (the shared PostgreSQL registry), and
# the extra each non-ONNX format's runtime needs (see runtimes/base.py and pyproject.toml).
ALWAYS_EXTRAS: tuple[str, ...] = ("postgres",)
FORMAT_EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": (),
    "torchscript": ("torch",),
    "savedmodel": ("tensorflow",),
    "gguf": ("gguf",),
}
# Only registration imports these (scikit-learn estimators are converted to ONNX there and
# served by ONNX Runtime); a serving lock must never contain them.
TRAINING_ONLY: frozenset[str] = frozenset({"scikit-learn", "skl2onnx"})
# Distributions that publish no wheels: the resolver may take their source archive (and only
# theirs), and the image compiles it (see docker.py).
SOURCE_ONLY: frozenset[str] = frozenset({"llama-cpp-python"})
# A local version label some frameworks use for builds published on their own index only
# (``torch==2.13.0+cpu``): the lock names that index so an install elsewhere finds the file.
LOCAL_INDEXES: dict[tuple[str, str], str] = {
    ("torch", "cpu"): "https://download.pytorch.org/whl/cpu",
}


@dataclass(frozen=True)
class LockedPackage:
    """One resolved distribution: its name, exact version and the sha256 of its file."""

    name: str
    version: str
    sha256: str | None
    source: bool = False  # a source archive (compiled at install), not a wheel


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``typing_extensions`` → ``typing-extensions``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def serving_requirements(
    format: str,
    requires: Iterable[str],
    installed: Callable[[str], str | None],
    extra: Iterable[str] = (),
) -> list[str]:
    """``name==version`` for what serving ``format`` needs, from slipway's own ``Requires-Dist``
    (``requires``): its unconditional dependencies except training-only ones, plus the
    ``postgres`` extra and the format's extra; each at the version ``installed(name)`` reports
    (None = not installed). ``extra`` requirements are appended as given.

    Raises PackagingFailed for an unknown format or a needed package that is not installed.
    """
    if format not in FORMAT_EXTRAS:
        raise PackagingFailed(f"no serving requirements known for format {format!r}")
    wanted_extras = {*ALWAYS_EXTRAS, *FORMAT_EXTRAS[format]}
    pins = []
    for line in requires:
        requirement = Requirement(line)
        if canonical(requirement.name) in TRAINING_ONLY:
            continue
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({"extra": name}) for name in ("", *sorted(wanted_extras))
        ):
            continue  # another extra (dev, otel, ...) or another platform
        version = installed(requirement.name)
        if version is None:
            raise PackagingFailed(
                f"serving a {format} model needs {requirement.name!r}, which is not installed"
                f" here; install it (pip install {requirement.name}) so its version can be"
                " pinned, then package again"
            )
        extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extras}=={version}")
    pins.extend(check_pinned(pinned) for pinned in extra)
    return pins


def check_pinned(text: str) -> str:
    """Return ``text`` if it pins one exact version (``name==version``, extras and a marker
    allowed), else raise :class:`~slipway.errors.InvalidInput`."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidInput(
            f"extra requirement {text!r} is not a requirement ({str(exc).splitlines()[0]});"
            " write NAME==VERSION, e.g. pillow==10.4.0"
        ) from None
    specifiers = list(requirement.specifier)
    if (
        requirement.url
        or len(specifiers) != 1
        or specifiers[0].operator != "=="
        or specifiers[0].version.endswith(".*")
    ):
        raise InvalidInput(
            f"extra requirement {text!r} must be pinned with == to one exact version,"
            " e.g. pillow==10.4.0"
        )
    return text


def wheel_requires(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.BytesParser().parsebytes(archive.read(name))
    return metadata.get_all("Requires-Dist") or []


def resolve(
    requirements: list[str],
    *,
    python: str = sys.executable,
    timeout_s: float = 300,
    target: Target | None = None,
) -> list[LockedPackage]:
    """Ask pip's resolver (with this machine's index configuration) for the full set of
    distributions ``requirements`` need, as wheels; nothing is installed. ``target``: the
    image's platform when it is not this machine's (see ``target.py``)."""
    cross: list[str] = []
    if target is not None and not is_native(target):
        compiled = sorted({canonical(Requirement(r).name) for r in requirements} & SOURCE_ONLY)
        if compiled:
            raise PackagingFailed(
                f"{', '.join(compiled)} publishes no wheels and is compiled at install, which"
                f" cannot be resolved for {target.docker} from this machine; package on a"
                f" Linux {target.arch} machine"
            )
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        cross = pip_options(target, version)
    with tempfile.TemporaryDirectory(prefix="slipway-lock-") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            python,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--only-binary=:all:",
            *cross,
            *source_only_options(requirements),
            "--report",
            str(report),
            *requirements,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PackagingFailed(
                f"pip did not resolve the serving lock within {timeout_s:g}s"
            ) from None
        if done.returncode != 0:
            raise PackagingFailed(
                "pip could not resolve the serving requirements"
                f" ({' '.join(requirements)}):\n{_tail(done.stderr)}"
            )
        data = json.loads(report.read_text())
    return packages_from_report(data)


def source_only_options(requirements: Iterable[str]) -> list[str]:
    """``--no-binary`` for the requirements that publish no wheels (pip then takes their
    source archive; every other distribution stays wheel-only)."""
    names = {canonical(Requirement(r).name) for r in requirements}
    return [f"--no-binary={name}" for name in sorted(names & SOURCE_ONLY)]


def packages_from_report(report: dict[str, Any]) -> list[LockedPackage]:
    """The distributions of a ``pip install --report`` document, with the sha256 pip recorded
    (or, for a local file without one, computed here)."""
    packages = []
    for item in report.get("install", []):
        meta = item["metadata"]
        info = item.get("download_info") or {}
        hashes = (info.get("archive_info") or {}).get("hashes") or {}
        sha256 = hashes.get("sha256")
        url = info.get("url", "")
        if sha256 is None and url.startswith("file://"):
            local = Path(unquote(urlparse(url).path))
            if local.is_file():
                sha256 = sha256_file(local)
        wheel = urlparse(url).path.endswith(".whl")
        packages.append(LockedPackage(meta["name"], meta["version"], sha256, source=not wheel))
    return sorted(packages, key=lambda p: canonical(p.name))


def render_lock(
    packages: list[LockedPackage], requirements: list[str], python: str, platform: str = ""
) -> str:
    """The lock file: a header saying what it was resolved from, then one ``==`` pin per
    distribution, each with ``--hash`` when every file's hash is known (pip's hash-checking
    mode is all or nothing)."""
    training = sorted(p.name for p in packages if canonical(p.name) in TRAINING_ONLY)
    if training:
        raise PackagingFailed(
            f"the serving lock would contain training libraries ({', '.join(training)});"
            " a serving requirement depends on them"
        )
    hashed = all(p.sha256 for p in packages)
    lines = [
        "# Serving lock written by `slipway package`: exact pins resolved by pip for Python"
        f" {python}{f' on {platform}' if platform else ''}.",
        f"# Resolved from: {' '.join(requirements)}",
        "# Install: pip install --no-deps"
        + (" --require-hashes" if hashed else "")
        + " -r requirements.lock",
    ]
    compiled = [p.name for p in packages if p.source]
    if compiled:
        lines.append(
            f"# Built from source at install (needs a C/C++ compiler): {', '.join(compiled)}"
        )
    indexes = sorted(
        {
            index
            for p in packages
            for (name, label), index in LOCAL_INDEXES.items()
            if canonical(p.name) == name and p.version.endswith(f"+{label}")
        }
    )
    lines.extend(f"--extra-index-url {index}" for index in indexes)
    for p in packages:
        if hashed:
            lines.append(f"{p.name}=={p.version} \\\n    --hash=sha256:{p.sha256}")
        else:
            lines.append(f"{p.name}=={p.version}")
    return "\n".join(lines) + "\n"


def lock_compiles(text: str) -> bool:
    """True when installing the lock compiles a source archive (the image needs a compiler)."""
    return "# Built from source at install" in text


def lock_is_hashed(text: str) -> bool:
    """True when the lock pins every file by hash (install it with ``--require-hashes``)."""
    return "--hash=sha256:" in text


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
