"""`slipway models register` with every format: detection, --format, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from tests.runtimes.frameworks import require


def slipway(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLIPWAY_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_register_torchscript_with_reference_rows(tmp_path: Path) -> None:
    torch = require("torch")
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1))
    with warnings.catch_warnings():  # torch.jit.trace is deprecated in torch 2.13; still used
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module.eval(), torch.zeros(1, 3))
    path = tmp_path / "net.pt"
    traced.save(str(path))
    rows = tmp_path / "rows.npy"
    np.save(rows, np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32))

    without = slipway(tmp_path / "home", "models", "register", "net", str(path))
    assert without.returncode == 2, without.stderr
    assert "--reference" in without.stderr + without.stdout

    done = slipway(
        tmp_path / "home", "models", "register", "net", str(path), "--reference", str(rows)
    )
    assert done.returncode == 0, done.stderr
    assert "registered net@1" in done.stdout
    shown = slipway(tmp_path / "home", "models", "show", "net")
    assert "torchscript" in shown.stdout


def test_a_wrong_format_flag_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF" + bytes(60))
    done = slipway(tmp_path / "home", "models", "register", "m", str(path), "--format", "pmml")
    assert done.returncode == 2
    assert "unknown format 'pmml'" in done.stderr + done.stdout


def test_register_gguf_is_detected(tmp_path: Path) -> None:
    require("llama_cpp")
    require("gguf")
    from tests.runtimes.tiny_llama import write_tiny_llama

    path = write_tiny_llama(tmp_path / "tiny.bin")  # no suffix to go by: the magic bytes tell
    done = slipway(tmp_path / "home", "models", "register", "chat", str(path))
    assert done.returncode == 0, done.stderr
    shown = slipway(tmp_path / "home", "models", "show", "chat")
    assert "gguf" in shown.stdout
