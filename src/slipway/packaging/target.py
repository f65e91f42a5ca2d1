"""The platform a bundle's image runs on, which its serving lock must be resolved for.

Images are Linux (``python:X.Y-slim``), on x86-64 or 64-bit ARM. By default the lock is resolved
for Linux on the packaging machine's own architecture, which is what ``docker build`` on that
machine builds (Docker Desktop on a Mac with Apple silicon builds ``linux/arm64``). On a Linux
machine of that architecture pip resolves natively; anywhere else (a Mac, Windows, another
architecture) it is asked for the target's wheels with ``--platform``, ``--python-version``,
``--implementation`` and ``--abi``, and only wheels qualify.
"""

from __future__ import annotations

import platform as host
import sys
from dataclasses import dataclass

from slipway.errors import InvalidInput

# Architecture names as `docker build --platform` and Kubernetes (kubernetes.io/arch) spell
# them, and as Python and wheel tags do.
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
_HOST_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
# manylinux wheels for glibc 2.17 (manylinux2014) up to this one run on the base image: Debian
# 12, python:X.Y-slim's oldest current base, has glibc 2.36.
GLIBC_MINORS = range(17, 37)


@dataclass(frozen=True)
class Target:
    """A Linux platform for images: ``docker`` as ``docker build --platform`` takes it."""

    docker: str

    @property
    def machine(self) -> str:
        """``x86_64`` or ``aarch64``, as wheel tags and ``uname -m`` spell it."""
        return MACHINES[self.docker]

    @property
    def arch(self) -> str:
        """``amd64`` or ``arm64``, as Kubernetes' ``kubernetes.io/arch`` label spells it."""
        return self.docker.split("/", 1)[1]

    @property
    def platform(self) -> str:
        """``linux-x86_64``: ``sysconfig.get_platform()``'s spelling, as the manifest records."""
        return f"linux-{self.machine}"


def docker_platform(platform: str) -> str:
    """A manifest's ``platform`` (``linux-aarch64``) as ``docker build --platform`` takes it."""
    for docker, machine in MACHINES.items():
        if platform == f"linux-{machine}":
            return docker
    return platform


def parse_target(text: str) -> Target:
    """``linux/amd64`` or ``linux/arm64`` (``amd64``, ``arm64``, ``x86_64`` and ``aarch64``
    are read as those); InvalidInput for anything else."""
    value = text.strip().lower()
    if "/" not in value:
        value = f"linux/{value}"
    os_name, _, machine = value.partition("/")
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    docker = f"{os_name}/{machine}"
    if docker not in MACHINES:
        raise InvalidInput(
            f"--platform {text!r} is not one the image can run on; use one of {', '.join(MACHINES)}"
        )
    return Target(docker)


def host_target(machine: str | None = None) -> Target:
    """Linux on this machine's architecture (``machine``: ``platform.machine()``)."""
    found = _HOST_MACHINES.get((machine or host.machine()).lower())
    if found is None:
        raise InvalidInput(
            f"no image platform matches this machine's architecture ({machine or host.machine()});"
            f" choose one with --platform ({', '.join(MACHINES)})"
        )
    docker = next(name for name, value in MACHINES.items() if value == found)
    return Target(docker)


def is_native(target: Target, *, system: str | None = None, machine: str | None = None) -> bool:
    """Whether pip running here resolves for ``target`` without being told (Linux, same
    architecture)."""
    on_linux = (system or sys.platform).startswith("linux")
    return on_linux and _HOST_MACHINES.get((machine or host.machine()).lower()) == target.machine


def pip_options(target: Target, python: str) -> list[str]:
    """The pip options that resolve wheels for ``target`` and CPython ``python`` ("3.11") from
    any machine. pip still evaluates environment markers (``sys_platform``, ``platform_machine``)
    against the machine it runs on."""
    plain = python.replace(".", "")
    tags = [f"manylinux_2_{minor}_{target.machine}" for minor in reversed(GLIBC_MINORS)]
    tags.append(f"manylinux2014_{target.machine}")
    options = [f"--platform={tag}" for tag in tags]
    return [
        *options,
        f"--python-version={python}",
        "--implementation=cp",
        f"--abi=cp{plain}",
    ]
