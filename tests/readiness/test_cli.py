"""``slipway readiness`` as a CI pipeline runs it: a real process, its exit code and its JSON; and
every fix it prints names a real command with real options."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from slipway import errors
from slipway.cli import app
from slipway.local import Registry
from slipway.readiness import evaluate_version
from slipway.rollout import actions
from slipway.rollout.policy import RolloutConfig
from slipway.settings import Settings

from .conftest import DEPLOYMENT


def slipway(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLIPWAY_HOME": str(home), "COLUMNS": "250", "NO_COLOR": "1"}
    env.pop("SLIPWAY_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_json_and_the_exit_code_gate_a_pipeline(home: Path, tmp_path: Path) -> None:
    done = slipway(home, "readiness", "iris@2", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["ref"], report["deployment"], report["ready"]) == ("iris@2", DEPLOYMENT, False)
    assert "packaged" in report["failed"] and "business_metrics" not in report["failed"]
    assert {i["status"] for i in report["items"]} == {"pass", "fail"}
    assert "iris@2 is not ready for production: packaged" in " ".join(done.stderr.split())

    policy = tmp_path / "readiness.yaml"
    policy.write_text("items:\n" + "".join(f"  {name}: optional\n" for name in report["failed"]))
    done = slipway(home, "readiness", "iris@2", "--json", "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    relaxed = json.loads(done.stdout)
    assert relaxed["ready"] and relaxed["failed"] == []
    assert all(not i["required"] for i in relaxed["items"] if i["status"] == "fail")


def test_the_table_for_a_deployment(home: Path) -> None:
    done = slipway(home, "readiness", DEPLOYMENT)
    assert done.returncode == 1
    out = " ".join(done.stdout.split())
    assert f"readiness of iris@1 on {DEPLOYMENT}" in out
    assert "slipway package iris@1 --out iris-1-bundle" in out
    assert "business_metrics (optional)" in out and "not applicable" in out
    assert f"iris@1 on {DEPLOYMENT}: not ready" in out


def test_bad_input_is_one_line_and_an_exit_code(home: Path, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("items:\n  packagd: optional\n")
    done = slipway(home, "readiness", "iris@2", "--policy", str(policy))
    assert done.returncode == 2 and "unknown item(s) packagd" in done.stderr
    assert slipway(home, "readiness", "nope").returncode == 3  # no such deployment


def test_errors_in_process(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPWAY_HOME", str(home))
    monkeypatch.delenv("SLIPWAY_DATABASE_URL", raising=False)
    cli = CliRunner()
    missing = cli.invoke(app, ["readiness", "iris@9"])
    assert isinstance(missing.exception, errors.VersionNotFound)
    both = cli.invoke(app, ["readiness", DEPLOYMENT, "--deployment", DEPLOYMENT])
    assert isinstance(both.exception, errors.InvalidInput)
    elsewhere = cli.invoke(app, ["readiness", "iris@2", "--deployment", "nope"])
    assert isinstance(elsewhere.exception, errors.DeploymentNotFound)


def _assert_runnable(fix: str, root: Any) -> None:
    """Each ``slipway ...`` in ``fix`` resolves to a command whose options exist; each
    ``set SLIPWAY_X=...`` names a real setting."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    for part in fix.split("&&"):
        words = shlex.split(part)
        if words[0] == "set":
            name = words[1].split("=", 1)[0]
            assert name.startswith("SLIPWAY_") and name[8:].lower() in fields, fix
            continue
        assert words[0] == "slipway", fix
        command, rest = root, words[1:]
        while hasattr(command, "commands") and rest and rest[0] in command.commands:
            command, rest = command.commands[rest[0]], rest[1:]
        assert command is not root, fix
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        used = {w for w in rest if w.startswith("--")}
        assert used <= options, (fix, used - options)


def test_every_fix_names_a_real_command(registry: Registry) -> None:
    root = typer.main.get_command(app)
    off = dataclasses.replace(registry.settings, audit_predictions="off", monitoring=0)

    def fixes(number: int) -> list[str]:
        report = evaluate_version(registry.store, registry.artifacts, off, "iris", number)
        return [i.fix for i in report.items if i.fix]

    seen = set()
    for number in (1, 2):
        seen.update(fixes(number))
    actions.start(registry.store, DEPLOYMENT, 2, RolloutConfig(strategy="bluegreen"))
    seen.update(fixes(2))
    actions.abort(registry.store, DEPLOYMENT)
    registry.store.set_deployment_version(DEPLOYMENT, 2)  # a direct switch
    seen.update(fixes(2))
    registry.store.delete_deployment(DEPLOYMENT)
    seen.update(fixes(2))
    assert len(seen) >= 15
    assert any("slipway rollback" in f for f in seen) and any("abort" in f for f in seen)
    for fix in seen:
        _assert_runnable(fix, root)
