"""The governance workflow end to end from the ``slipway`` command, as a user runs it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from slipway.cli import main

TOKEN = re.compile(r"slw_[A-Za-z0-9_-]{43}")


class Cli:
    """Runs ``slipway`` in this process (a subprocess per command would spend most of the test
    importing), through ``slipway.cli.main``: the same parsing, output and exit codes."""

    def __init__(self, home: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("SLIPWAY_HOME", str(home))
        monkeypatch.setenv("SLIPWAY_DATABASE_URL", url)
        monkeypatch.delenv("SLIPWAY_TOKEN", raising=False)
        monkeypatch.setenv("COLUMNS", "250")  # rich reads it on every print

    def __call__(self, *args: str, token: str | None = None) -> Result:
        if token is None:
            self.monkeypatch.delenv("SLIPWAY_TOKEN", raising=False)
        else:
            self.monkeypatch.setenv("SLIPWAY_TOKEN", token)
        self.monkeypatch.setattr(sys, "argv", ["slipway", *args])
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str, token: str | None = None) -> str:
        done = self(*args, token=token)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def token_in(text: str) -> str:
    found = TOKEN.findall(text)
    assert len(found) == 1, text
    return found[0]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    data = load_iris()
    x = data.data.astype(np.float32)
    estimator = LogisticRegression(max_iter=1000).fit(x, data.target)
    path = tmp_path / "iris.onnx"
    path.write_bytes(
        to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}}).SerializeToString()
    )
    return path


def test_init_prints_the_first_admin_token_once(tmp_path: Path) -> None:
    env = {**os.environ, "SLIPWAY_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    env.pop("SLIPWAY_DATABASE_URL", None)
    run = [sys.executable, "-m", "slipway.cli", "init"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "shown only now" in first.stdout
    token = token_in(first.stdout)
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and not TOKEN.search(second.stdout)
    from slipway.governance.identities import authenticate
    from slipway.registry.store import SqlStore

    with SqlStore(f"sqlite:///{tmp_path / 'home' / 'registry.db'}") as store:
        assert authenticate(store, f"Bearer {token}").name == "admin"
        with store.engine.connect() as conn:
            (row,) = conn.exec_driver_sql("SELECT hash FROM tokens").all()
        assert token not in str(row) and len(row[0]) == 64  # only the hash is kept


def test_the_workflow_from_the_cli(
    tmp_path: Path, store_url: str, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    first = cli.ok("init")
    admin = token_in(first)
    assert "shown only now" in first
    again = cli.ok("init")
    assert "an admin exists already" in again and not TOKEN.search(again)

    cli.ok("users", "add", "dora", "--role", "deployer", token=admin)
    cli.ok("users", "add", "abe", "--role", "approver", token=admin)
    cli.ok("users", "add", "ci", "--role", "viewer", "--service", token=admin)
    dora = token_in(cli.ok("tokens", "create", "dora", token=admin))
    abe = token_in(cli.ok("tokens", "create", "abe", "--expires-in", "30d", token=admin))
    ci = token_in(cli.ok("tokens", "create", "ci", token=admin))
    users = cli.ok("users", "list", token=admin)
    assert "dora" in users and "service" in users
    denied = cli("users", "list", token=ci)
    assert denied.returncode == 8 and "needs role admin" in denied.stderr
    exported = tmp_path / "audit.jsonl"
    denied = cli("audit", "export", str(exported), token=ci)
    assert denied.returncode == 8 and not exported.exists()  # refused before the file is made

    for _ in range(2):
        cli.ok("models", "register", "iris", str(model_file), "--metric", "accuracy=0.97")
    cli.ok("deploy", "iris-prod", "iris@1")

    number = re.search(r"request #(\d+)", cli.ok("approvals", "request", "iris-prod", "iris@1",
                                                  token=dora)).group(1)  # fmt: skip
    own = cli("approvals", "approve", number, token=dora)
    assert own.returncode == 8 and "needs role approver" in own.stderr
    nameless = cli("approvals", "approve", number)
    assert nameless.returncode == 8 and "SLIPWAY_TOKEN" in nameless.stderr
    assert "approved" in cli.ok("approvals", "approve", number, "--comment", "ok", token=abe)
    policy = json.loads(cli.ok("deployments", "policy", "iris-prod", "--production", token=admin))
    assert policy["production"] is True

    refused = cli("deploy", "iris-prod", "iris@2")
    assert refused.returncode == 9 and "approved promotion request" in refused.stderr
    second = cli.ok("approvals", "request", "iris-prod", "iris@2", "--comment", "v2", token=dora)
    number = re.search(r"request #(\d+)", second).group(1)
    shown = cli.ok("approvals", "show", number, token=ci)
    assert "iris@2" in shown and "against" in shown and "iris@1" in shown
    evidence = json.loads(cli.ok("approvals", "show", number, "--json", token=ci))
    assert evidence["evidence"]["candidate"]["metrics"] == {"accuracy": 0.97}
    cli.ok("approvals", "approve", number, token=abe)
    assert "iris@2" in cli.ok("deploy", "iris-prod", "iris@2")
    assert "iris@1" in cli.ok("deploy", "iris-prod", "iris@1")  # rollback, no approval
    listed = cli.ok("approvals", "list", token=ci)
    assert listed.count("promoted") == 2

    cli.ok("deployments", "policy", "iris-prod", "--require-token", "--audit-payload", "full",
           "--key", "customer_id", token=admin)  # fmt: skip
    checkpoint = tmp_path / "checkpoint.json"
    cli.ok("audit", "checkpoint", "--out", str(checkpoint), token=admin)
    verified = cli.ok("audit", "verify", "--checkpoint", str(checkpoint), token=admin)
    assert "audit log verified" in verified
    shown = cli("audit", "verify", token=admin).stderr  # the step and the records it read
    assert re.match(r"✓ verifying the audit log: \d+ records", shown), shown
    queried = cli.ok("audit", "query", "--deployment", "iris-prod", "--json", token=admin)
    actions = [json.loads(line)["action"] for line in queried.splitlines() if line.strip()]
    assert "deployment.version_changed" in actions and "promotion.approved" in actions
    exported = tmp_path / "audit.jsonl"
    cli.ok("audit", "export", str(exported), token=admin)
    lines = exported.read_text().splitlines()
    assert len(lines) > 10 and all(len(json.loads(line)["hash"]) == 64 for line in lines)
    assert admin not in exported.read_text() and dora not in exported.read_text()
    assert "purged 0 records" in cli.ok("audit", "purge", "--older-than", "365d", token=admin)

    tokens = cli.ok("tokens", "list", token=admin)
    assert dora not in tokens and dora[:12] in tokens
    token_id = next(
        line.split()[1] for line in tokens.splitlines() if dora[:12] in line
    )  # table rows: │ id │ user │ token │ ...
    cli.ok("tokens", "revoke", token_id, token=admin)
    revoked = cli("approvals", "list", token=dora)
    assert revoked.returncode == 8 and "revoked" in revoked.stderr


def test_commands_that_change_the_registry_act_as_the_tokens_holder(
    tmp_path: Path, store_url: str, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SLIPWAY_TOKEN set, every changing command needs the deployer role, and the audit
    log names the token's holder; a viewer's attempt changes nothing."""
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    cli.ok("users", "add", "dora", "--role", "deployer", token=admin)
    cli.ok("users", "add", "vic", "--role", "viewer", token=admin)
    dora = token_in(cli.ok("tokens", "create", "dora", token=admin))
    vic = token_in(cli.ok("tokens", "create", "vic", token=admin))
    changes = [
        ("models", "register", "iris", str(model_file)),
        ("deploy", "iris-prod", "iris@1"),
        ("models", "register", "iris", str(model_file)),
        ("rollout", "start", "iris-prod", "2"),
        ("rollout", "pause", "iris-prod"),
        ("rollout", "abort", "iris-prod"),
        ("deploy", "iris-prod", "iris@2"),
        ("rollback", "iris-prod"),
        ("alerts", "add", "slow", "--kind", "latency_p99", "--threshold", "0.5"),
        ("alerts", "delete", "slow"),
    ]
    before = cli.ok("audit", "query", "--json", token=admin)
    for command in changes:
        refused = cli(*command, token=vic)
        assert refused.returncode == 8 and "needs role deployer" in refused.stderr, command
        assert cli.ok("audit", "query", "--json", token=admin) == before, command
        cli.ok(*command, token=dora)
        before = cli.ok("audit", "query", "--json", token=admin)
    assert re.search(r"iris-prod\s*│\s*iris\s*│\s*1\s*│", cli.ok("deployments", "list"))
    records = [json.loads(line) for line in cli.ok("audit", "query", "--json", "--limit",
                                                     "1000", token=admin).splitlines()]  # fmt: skip
    issued = max(r["seq"] for r in records if r["action"] == "token.issued")
    changed = {r["action"]: r["actor"] for r in records if r["seq"] > issued}
    assert changed == {
        "version.registered": "dora",
        "deployment.created": "dora",
        "deployment.traffic_changed": "dora",
        "rollout.started": "dora",
        "rollout.paused": "dora",
        "rollout.aborted": "dora",
        "deployment.version_changed": "dora",
        "alert_rule.added": "dora",
        "alert_rule.deleted": "dora",
    }
    cli.ok("alerts", "add", "local", "--kind", "error_rate", "--threshold", "0.1")
    added = json.loads(cli.ok("audit", "query", "--json", token=admin).splitlines()[-1])
    assert added["action"] == "alert_rule.added" and added["actor"].startswith("local:")


GOVERNANCE_READS = [
    ("readiness", "iris@1"),
    ("readiness", "iris-prod"),
    ("deployments", "policy", "iris-prod"),
    ("approvals", "policy", "iris"),
    ("approvals", "list"),
    ("approvals", "show", "1"),
    ("audit", "query"),
    ("audit", "verify"),
    ("tokens", "list"),
    ("users", "list"),
]


def test_commands_that_read_governance_data_refuse_an_invalid_or_expired_token(
    tmp_path: Path, store_url: str, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SLIPWAY_TOKEN they run as the local login; with one, it must be valid."""
    import datetime as dt

    from slipway.governance.identities import create_user, issue_token
    from slipway.registry.store import SqlStore

    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    cli.ok("models", "register", "iris", str(model_file))
    cli.ok("deploy", "iris-prod", "iris@1")
    cli.ok("approvals", "request", "iris-prod", "iris@1", token=admin)
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    with SqlStore(store_url, clock=lambda: ten_days_ago) as past:
        create_user(past, "old", "admin", actor="test")
        expired = issue_token(past, "old", expires_in=dt.timedelta(days=1), actor="test").token
    unknown = "slw_" + "A" * 43
    for command in GOVERNANCE_READS:
        for token in (unknown, expired):
            refused = cli(*command, token=token)
            assert refused.returncode == 8, (command, refused)
            (line,) = refused.stderr.strip().splitlines()
            assert line.startswith("error:") and refused.stdout == "", (command, refused)
        assert cli(*command, token=admin).returncode != 8, command
        assert cli(*command).returncode != 8, command


def test_a_field_both_redacted_and_a_business_key_is_refused(
    tmp_path: Path, store_url: str, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A business key is copied raw into every record: naming a redacted field as one would
    undo the redaction."""
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    cli.ok("models", "register", "iris", str(model_file))
    cli.ok("deploy", "iris-prod", "iris@1")
    cli.ok("deployments", "policy", "iris-prod", "--audit-payload", "redact", "--redact", "ssn",
           token=admin)  # fmt: skip
    before = cli.ok("deployments", "policy", "iris-prod", token=admin)
    for args in (
        ("--key", "ssn"),  # against the redact list already set
        ("--redact", "email", "--key", "email", "--key", "customer_id"),
    ):
        refused = cli("deployments", "policy", "iris-prod", *args, token=admin)
        assert refused.returncode == 2, refused
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("error:") and "both redacted and a business key" in line
        assert cli.ok("deployments", "policy", "iris-prod", token=admin) == before
    shown = json.loads(cli.ok("deployments", "policy", "iris-prod", "--key", "customer_id",
                              token=admin))  # fmt: skip
    assert shown["inference"]["keys"] == ["customer_id"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("tokens", "create", "admin", "--expires-in", "99999999999d"), id="huge"),
        pytest.param(("tokens", "create", "admin", "--expires-in", "3000000d"), id="past-9999"),
        pytest.param(("tokens", "create", "admin", "--expires-in", "101y"), id="unknown-unit"),
        pytest.param(("audit", "purge", "--older-than", "1000000d"), id="purge-before-year-1"),
    ],
)
def test_durations_out_of_range_are_one_line_errors(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    before = cli.ok("audit", "query", "--json", token=admin)
    done = cli(*args, token=admin)
    assert done.returncode == 2, done
    assert done.stderr.startswith("error:") and "Traceback" not in done.stderr
    assert cli.ok("audit", "query", "--json", token=admin) == before  # nothing was written


def test_the_last_enabled_admin_is_kept(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    before = cli.ok("audit", "query", "--json", token=admin)
    for args in (("users", "disable", "admin"), ("users", "set-role", "admin", "deployer")):
        for token in (admin, None):  # the token's holder, or local:<login> without one
            refused = cli(*args, token=token)
            assert refused.returncode == 4, refused
            assert refused.stderr.startswith("error:") and refused.stderr.count("\n") == 1
            assert "no enabled admin" in refused.stderr
    assert cli.ok("audit", "query", "--json", token=admin) == before  # nothing was written
    cli.ok("users", "add", "ada", "--role", "admin", token=admin)
    cli.ok("users", "disable", "admin", token=admin)
    refused = cli("users", "set-role", "ada", "viewer")
    assert refused.returncode == 4 and "no enabled admin" in refused.stderr


def test_init_recovers_a_registry_whose_only_admin_is_disabled(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import update

    from slipway.registry.db import UserRow
    from slipway.registry.store import SqlStore

    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    old = token_in(cli.ok("init"))
    with SqlStore(store_url) as store, store.engine.begin() as conn:  # as an older release let it
        conn.execute(update(UserRow).where(UserRow.name == "admin").values(disabled=True))
    assert cli("users", "list", token=old).returncode == 8
    again = cli.ok("init")
    assert "no enabled admin" in again and "admin-2" in again and "shown only now" in again
    new = token_in(again)
    rows = [
        [cell.strip() for cell in line.split("│")[1:5]]
        for line in cli.ok("users", "list", token=new).splitlines()
        if line.startswith("│")
    ]
    assert rows == [["admin", "user", "admin", "yes"], ["admin-2", "user", "admin", ""]]
    assert cli("users", "list", token=old).returncode == 8  # the disabled admin stays disabled
    lines = cli.ok("audit", "query", "--json", token=new).splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["action"], r["actor"]) for r in records[-2:]] == [
        ("user.created", "slipway init"),
        ("token.issued", "slipway init"),
    ]
    assert not TOKEN.search(cli.ok("init"))


def test_a_token_lifetime_is_at_most_100_years(store_url: str) -> None:
    import datetime as dt

    from slipway.errors import InvalidInput
    from slipway.governance.identities import create_user, issue_token
    from slipway.registry.store import SqlStore

    with SqlStore(store_url) as store:
        create_user(store, "dora", "deployer", actor="admin")
        with pytest.raises(InvalidInput, match="100 years"):
            issue_token(store, "dora", expires_in=dt.timedelta(days=36526), actor="admin")
        assert issue_token(store, "dora", expires_in=dt.timedelta(days=36525), actor="admin")


def test_a_failed_export_or_checkpoint_leaves_the_previous_file_whole(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports and checkpoints are written to a temporary name and renamed: a refused or failed
    run leaves what was there before, and no half-written file or temporary beside it."""
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    out = tmp_path / "out"
    out.mkdir()
    exported, mark = out / "audit.jsonl", out / "head.json"
    cli.ok("audit", "export", str(exported), token=admin)
    cli.ok("audit", "checkpoint", "--out", str(mark), token=admin)
    before = exported.read_bytes(), mark.read_bytes()
    assert before[0].count(b"\n") == 2  # user.created, token.issued

    failed = cli("audit", "export", str(exported), "--deployment", "../x", token=admin)
    assert failed.returncode == 2 and "invalid deployment name" in failed.stderr
    assert exported.read_bytes() == before[0]
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl", "head.json"]

    cli.ok("users", "add", "dora", token=admin)  # the head moves on
    cli.ok("audit", "export", str(exported), token=admin)
    cli.ok("audit", "checkpoint", "--out", str(mark), token=admin)
    assert exported.read_bytes().count(b"\n") == 3 and mark.read_bytes() != before[1]
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl", "head.json"]


@pytest.mark.parametrize(
    "mark",
    [
        pytest.param({"seq": -1, "hash": "ab" * 32, "at": "2026-01-01T00:00:00Z"}, id="seq"),
        pytest.param({"seq": 1, "hash": "x", "at": "2026-01-01T00:00:00Z"}, id="hash"),
        pytest.param({"seq": 1, "hash": "AB" * 32, "at": "2026-01-01T00:00:00Z"}, id="upper"),
    ],
)
def test_a_malformed_checkpoint_is_refused_not_passed(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch, mark: dict
) -> None:
    """`audit verify --checkpoint` checks what it is given: a checkpoint that no chain can hold
    is a mistake (exit 2), never an 'audit log verified'."""
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    admin = token_in(cli.ok("init"))
    path = tmp_path / "mark.json"
    path.write_text(json.dumps(mark))
    done = cli("audit", "verify", "--checkpoint", str(path), token=admin)
    assert done.returncode == 2, done
    assert "is not one from `slipway audit checkpoint`" in done.stderr


def test_approvals_show_prints_the_whole_diff_against_production(
    tmp_path: Path, store_url: str, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(tmp_path / "home", store_url, monkeypatch)
    cli.ok("models", "register", "iris", str(model_file), "--param", "C=1.0",
           "--training-data", "s3://bucket/jan.parquet")  # fmt: skip
    cli.ok("models", "register", "iris", str(model_file), "--param", "C=2.0",
           "--training-data", "s3://bucket/feb.parquet")  # fmt: skip
    cli.ok("deploy", "iris-prod", "iris@1")
    cli.ok("approvals", "request", "iris-prod", "iris@2")
    shown = cli.ok("approvals", "show", "1")
    # What an approver must see changed: the hyperparameter, the training data.
    assert re.search(r"C +│ 1\.0 → 2\.0", shown), shown
    assert re.search(r"training data +│ changed", shown), shown
    assert re.search(r"signature +│ unchanged", shown), shown
