"""Optional runtime packages: which format needs which package, and the guard that imports it.

Heavy frameworks (torch, tensorflow, llama.cpp) and the gradient-boosting libraries are not
dependencies of Slipway itself. Each format's module imports its package through
:func:`import_extra`, so a missing package becomes a ``MissingExtra`` error that names the
exact install command, raised at registration (before anything is stored) or at load.
The pins match ``requirements-extras.lock``; ``tests/runtimes/test_extras.py`` keeps them equal.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from slipway.errors import MissingExtra


@dataclass(frozen=True)
class Extra:
    """The importable module a format needs and the pip command that installs it."""

    module: str
    install: str


EXTRAS: dict[str, Extra] = {
    "torchscript": Extra("torch", "pip install torch==2.13.0"),
    "savedmodel": Extra("tensorflow", "pip install tensorflow-cpu==2.21.0"),
    "gguf": Extra("llama_cpp", "pip install llama-cpp-python==0.3.36"),
    "xgboost": Extra("xgboost", "pip install xgboost-cpu==3.2.0 onnxmltools==1.16.0"),
    "lightgbm": Extra("lightgbm", "pip install lightgbm==4.7.0 onnxmltools==1.16.0"),
    "onnxmltools": Extra("onnxmltools", "pip install onnxmltools==1.16.0"),
    "parquet": Extra("pyarrow.parquet", "pip install pyarrow==26.0.1"),  # Parquet holdouts
}


def import_module_or_refuse(format: str, module: str, install: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtra`` naming ``install``.

    Only a missing module is translated: an installed package that fails while importing
    (a broken build, a missing system library) raises its own error, which says more.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # A missing *dependency* of an installed package is a broken install, not a missing
        # extra: re-raise unless it is the module we asked for (or its top-level package).
        if exc.name is not None and exc.name != module and not module.startswith(exc.name + "."):
            raise
        raise MissingExtra(format, module, install) from exc


def import_extra(name: str) -> ModuleType:
    """Import the package behind ``name`` (a key of ``EXTRAS``), or raise ``MissingExtra``."""
    extra = EXTRAS[name]
    return import_module_or_refuse(name, extra.module, extra.install)
