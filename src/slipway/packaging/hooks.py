"""User inference hooks: a bundle's ``handler.py`` with ``preprocess(request)`` and
``postprocess(outputs)``.

``request`` is the decoded request, a dict of numpy arrays keyed by input name, and
``preprocess`` returns the dict the model's signature expects; ``outputs`` is the model's dict
of output arrays and ``postprocess`` returns the dict sent back. Either hook may be left out.

Trust boundary: a handler is code. It is imported (and so runs) only when an operator serves a
bundle with ``slipway serve --bundle``, exactly as installing a package would run its code;
nothing else, registration included, ever executes it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slipway.errors import HandlerFailed, HandlerRejected, PackagingFailed

Hook = Callable[[dict[str, np.ndarray]], Any]


class Hooks:
    """The hooks of one handler, wrapped so their failures become Slipway errors: ``preprocess``
    raising means the request was refused (400), ``postprocess`` raising is a server fault (500).
    """

    def __init__(self, preprocess: Hook | None, postprocess: Hook | None, *, name: str) -> None:
        self._preprocess = preprocess
        self._postprocess = postprocess
        self.name = name

    def preprocess(self, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the user's ``preprocess`` (if any) on a decoded request."""
        if self._preprocess is None:
            return request
        try:
            result = self._preprocess(request)
        except Exception as exc:
            raise HandlerRejected(f"{type(exc).__name__}: {exc}") from exc
        return _arrays(result, "preprocess")

    def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the user's ``postprocess`` (if any) on a model's outputs."""
        if self._postprocess is None:
            return outputs
        try:
            result = self._postprocess(outputs)
        except Exception as exc:
            raise HandlerFailed("postprocess", f"{type(exc).__name__}: {exc}") from exc
        return _arrays(result, "postprocess")


def _arrays(result: object, hook: str) -> dict[str, np.ndarray]:
    if not isinstance(result, Mapping) or not all(isinstance(k, str) for k in result):
        raise HandlerFailed(
            hook, f"it must return a dict of name → array, got {type(result).__name__}"
        )
    if not result:
        raise HandlerFailed(hook, "it returned an empty dict; return at least one array")
    out = {}
    for name, value in result.items():
        try:
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged lists, objects numpy cannot take
            raise HandlerFailed(hook, f"{name!r} is not an array: {exc}") from exc
        if array.ndim == 0:
            raise HandlerFailed(
                hook, f"{name!r} is a scalar; return arrays whose first axis is rows"
            )
        if array.dtype.kind in "US":  # text lists become V2 BYTES like every string output
            array = array.astype(object)
        out[name] = array
    return out


def load_hooks(path: Path, *, name: str = "slipway_handler") -> Hooks:
    """Import ``handler.py`` at ``path`` (this runs its code) and take its hooks.

    Raises PackagingFailed when it cannot be imported or defines neither hook.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PackagingFailed(f"cannot import the handler {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PackagingFailed(
            f"importing the handler {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    hooks = {}
    for hook in ("preprocess", "postprocess"):
        value = getattr(module, hook, None)
        if value is not None and not callable(value):
            raise PackagingFailed(f"{path}: {hook} must be a function")
        hooks[hook] = value
    if hooks["preprocess"] is None and hooks["postprocess"] is None:
        raise PackagingFailed(
            f"{path} defines neither preprocess(request) nor postprocess(outputs)"
        )
    return Hooks(hooks["preprocess"], hooks["postprocess"], name=name)


def handler_tests(directory: Path) -> list[Path]:
    """The handler's own test files next to it: ``test_*.py`` and ``*_test.py``."""
    return sorted({*directory.glob("test_*.py"), *directory.glob("*_test.py")})


def run_handler_tests(
    directory: Path, *, python: str = sys.executable, timeout_s: float = 120.0
) -> str:
    """Run the handler's tests with pytest in a child process; return pytest's summary line.

    Packaging stops (PackagingFailed, with pytest's output) when there are no tests, pytest is
    missing, a test fails, or the run takes longer than ``timeout_s``.
    """
    tests = handler_tests(directory)
    if not tests:
        raise PackagingFailed(
            f"the handler in {directory} has no tests; add test_handler.py beside handler.py"
            " (its tests run at package time)"
        )
    # pytest runs in the handler's directory, so the files are named from there (a relative
    # --handler such as hooks/handler.py would otherwise name hooks/hooks/test_handler.py).
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(t.name for t in tests)]
    try:
        done = subprocess.run(
            command, cwd=directory, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise PackagingFailed(f"the handler's tests did not finish within {timeout_s:g}s") from None
    output = (done.stdout + done.stderr).strip()
    if "No module named pytest" in output:
        raise PackagingFailed("the handler's tests need pytest: pip install pytest")
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise PackagingFailed(f"the handler's tests failed, so nothing was packaged:\n{tail}")
    return output.splitlines()[-1] if output else ""
