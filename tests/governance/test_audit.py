"""The audit chain: every control-plane change is in it, it cannot be edited in place, and
verification names the first record that was changed, removed or inserted."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import DBAPIError

from slipway.governance import audit
from slipway.governance.identities import create_user, issue_token
from slipway.registry.db import AuditRecordRow
from slipway.registry.records import BatchingConfig
from slipway.registry.store import SqlStore

from ..registry.samples import DIGEST, SIGNATURE


def fill(store: SqlStore, versions: int = 3) -> None:
    for _ in range(versions):
        store.register_version("churn", format="onnx", digest=DIGEST, size=1, signature=SIGNATURE)
    store.create_deployment("churn-prod", "churn", 1, actor="alice")
    store.set_deployment_version("churn-prod", 2, actor="bob")
    store.update_deployment("churn-prod", batching=BatchingConfig(max_batch_size=8), actor="bob")


def raw(url: str, *statements: str) -> None:
    """Run SQL straight on the database, as someone with database access would."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def without_triggers(url: str, *statements: str) -> None:
    """Tamper as a database owner would: switch the append-only triggers off first."""
    if url.startswith("sqlite"):
        drop = [
            f"DROP TRIGGER {name}"
            for name in ("audit_records_no_update", "audit_records_no_delete")
        ]
        raw(url, *drop, *statements)
    else:
        raw(
            url,
            "ALTER TABLE audit_records DISABLE TRIGGER USER",
            *statements,
            "ALTER TABLE audit_records ENABLE TRIGGER USER",
        )


def test_every_control_plane_change_is_a_chained_record(store: SqlStore) -> None:
    fill(store)
    create_user(store, "carol", "deployer", actor="admin")
    issue_token(store, "carol", actor="admin")
    records = audit.query(store, kind="control", limit=None)
    actions = [r.action for r in records]
    assert actions == [
        "version.registered",
        "version.registered",
        "version.registered",
        "deployment.created",
        "deployment.version_changed",
        "deployment.updated",
        "user.created",
        "token.issued",
    ]
    assert [r.seq for r in records] == list(range(1, 9))
    changed = records[4]
    assert changed.actor == "bob" and changed.deployment == "churn-prod"
    assert changed.data["before"]["version"] == 1 and changed.data["after"]["version"] == 2
    for before, after in zip(records, records[1:], strict=False):
        assert after.prev_hash == before.hash
    assert records[0].prev_hash == "0" * 64
    issued = records[-1]
    assert "hash" not in issued.data and issued.data["prefix"].startswith("slw_")
    result = audit.verify(store)
    assert result.ok and result.records == 8 and result.head_hash == records[-1].hash


def ticking(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that moves a minute forward on every reading."""
    moments = itertools.count()
    return lambda: start + dt.timedelta(minutes=next(moments))


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE audit_records SET actor = 'mallory' WHERE seq = 3", id="update"),
        pytest.param("DELETE FROM audit_records WHERE seq = 3", id="delete-one"),
        pytest.param("DELETE FROM audit_records", id="delete-all"),
        pytest.param("UPDATE audit_purges SET through_seq = 99", id="update-purges"),
        pytest.param("DELETE FROM audit_purges", id="delete-purges"),
    ],
)
def test_triggers_refuse_update_and_delete(store_url: str, statement: str) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with SqlStore(store_url, clock=ticking(start)) as store:
        fill(store)
        purged = audit.purge(store, before=start + dt.timedelta(minutes=2), actor="admin")
        assert purged.deleted == 1  # record 1, so audit_purges has a row to attack too
        with pytest.raises(DBAPIError, match="append-only"):
            raw(store_url, statement)
        assert audit.verify(store).ok


@pytest.mark.postgres
def test_truncate_is_refused_on_postgres(pg_fresh_url: str) -> None:
    with SqlStore(pg_fresh_url) as store:
        fill(store)
    with pytest.raises(DBAPIError, match="append-only"):
        raw(pg_fresh_url, "TRUNCATE audit_records")


@pytest.mark.parametrize(
    ("tamper", "seq", "reason"),
    [
        pytest.param(
            "UPDATE audit_records SET data = replace(data, '\"version\":1', '\"version\":3')"
            " WHERE seq = 5",
            5,
            "changed",
            id="edited-payload",
        ),
        pytest.param(
            "UPDATE audit_records SET actor = 'nobody' WHERE seq = 4", 4, "changed", id="actor"
        ),
        pytest.param("DELETE FROM audit_records WHERE seq = 3", 3, "missing", id="removed"),
        pytest.param(
            "UPDATE audit_records SET seq = seq + 100 WHERE seq = 6", 6, "missing", id="moved"
        ),
    ],
)
def test_verify_names_the_first_broken_record(
    store: SqlStore, store_url: str, tamper: str, seq: int, reason: str
) -> None:
    fill(store)
    assert audit.verify(store).ok
    without_triggers(store_url, tamper)
    result = audit.verify(store)
    assert not result.ok and result.broken_seq == seq and reason in (result.reason or "")
    assert result.records == seq - 1  # everything before it verified
    with pytest.raises(Exception, match=f"audit record {seq} breaks the chain"):
        result.raise_if_broken()


def test_a_forged_record_with_a_recomputed_hash_breaks_the_link(
    store: SqlStore, store_url: str
) -> None:
    from slipway.registry.audit import AuditEntry, chain_hash

    fill(store)
    # Rewrite record 2 and give it a correct hash of its own: record 3 no longer links to it.
    two = audit.query(store, limit=None)[1]
    forged = AuditEntry(two.at, two.kind, two.action, two.subject, "mallory", two.deployment,
                        two.request_id, '{"forged":true}')  # fmt: skip
    digest = chain_hash(two.prev_hash, 2, forged)
    without_triggers(
        store_url,
        f"UPDATE audit_records SET actor = 'mallory', data = '{{\"forged\":true}}',"
        f" hash = '{digest}' WHERE seq = 2",
    )
    result = audit.verify(store)
    assert result.broken_seq == 3 and "prev_hash" in (result.reason or "")


def test_verify_reports_its_progress_up_to_the_records_it_checked(store: SqlStore) -> None:
    fill(store)
    seen: list[int] = []
    result = audit.verify(store, on_progress=seen.append)
    assert result.ok and result.records > 0
    assert seen == sorted(seen) and seen[-1] == result.records


def test_checkpoints_catch_a_truncated_tail(store: SqlStore, store_url: str) -> None:
    fill(store)
    mark = audit.checkpoint(store)
    assert mark.seq == 6
    assert audit.verify(store, checkpoints=[mark]).ok
    without_triggers(store_url, "DELETE FROM audit_records WHERE seq >= 5")
    assert audit.verify(store).ok  # the rest still links up ...
    result = audit.verify(store, checkpoints=[mark])  # ... but the checkpoint knows better
    assert result.broken_seq == 5 and "removed from the end" in (result.reason or "")


def test_purge_keeps_the_rest_verifiable(store_url: str) -> None:
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    with SqlStore(store_url, clock=lambda: now[0]) as store:
        fill(store)  # six records on 2026-01-01
        now[0] = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        store.set_deployment_version("churn-prod", 3, actor="bob")  # record 7
        result = audit.purge(store, before=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), actor="admin")
        assert (result.through_seq, result.deleted) == (6, 6)
        kept = audit.query(store, limit=None)
        assert [r.seq for r in kept] == [7, 8]
        purged = kept[-1]
        assert purged.action == "audit.purged" and purged.actor == "admin"
        assert purged.data["through_seq"] == 6 and purged.data["deleted"] == 6
        check = audit.verify(store)
        assert check.ok and check.first_seq == 7 and check.records == 2
        # Still append-only past the purged prefix.
        with pytest.raises(DBAPIError, match="append-only"):
            raw(store_url, "DELETE FROM audit_records WHERE seq = 7")
        # Purging again later, and everything, still leaves a verifiable log.
        now[0] = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
        audit.purge(store, before=now[0], actor="admin")
        assert audit.verify(store).ok
        store.set_deployment_version("churn-prod", 1, actor="bob")
        assert audit.verify(store).ok


def test_a_purge_without_its_record_is_detected(store: SqlStore, store_url: str) -> None:
    fill(store)
    anchor = audit.query(store, limit=None)[2].hash
    # Someone inserts a purge mark by hand and deletes records 1-3 under it.
    raw(
        store_url,
        f"INSERT INTO audit_purges (through_seq, anchor_hash, at) VALUES (3, '{anchor}',"
        " CURRENT_TIMESTAMP)",
        "DELETE FROM audit_records WHERE seq <= 3",
    )
    result = audit.verify(store)
    assert not result.ok and "no audit.purged record" in (result.reason or "")


def test_query_and_export(store: SqlStore) -> None:
    fill(store)
    records = audit.query(store, deployment="churn-prod", limit=None)
    assert [r.action for r in records] == [
        "deployment.created",
        "deployment.version_changed",
        "deployment.updated",
    ]
    first = records[0].at
    assert audit.query(store, deployment="churn-prod", since=first + dt.timedelta(hours=1)) == []
    assert (
        len(audit.query(store, deployment="churn-prod", until=first + dt.timedelta(hours=1))) == 3
    )
    lines = list(audit.export_jsonl(audit.iter_records(store)))
    assert len(lines) == 6
    import json

    exported = [json.loads(line) for line in lines]
    assert exported[0]["seq"] == 1 and len(exported[0]["hash"]) == 64


WRITER = r"""
import sys, time
from slipway.governance.recorder import PredictionRecorder
from slipway.registry.store import SqlStore
from slipway.registry.records import Signature, TensorSpec

store = SqlStore(sys.argv[1])
signature = Signature(
    inputs=[TensorSpec("x", "FP32", [-1, 4])], outputs=[TensorSpec("y", "INT64", [-1])]
)
recorder = PredictionRecorder(store, lambda name: None, batch_size=50)
n = 0
while True:
    n += 1
    store.register_version("churn", format="onnx", digest="ab" * 32, size=n, signature=signature)
    batch = [(time.time(), "churn-prod", 1, "ok", 0.001, b'{"id": "r%d-%d"}' % (n, i), b"{}",
              None, None, 10) for i in range(50)]
    recorder.write(batch)
    print(n, flush=True)
"""


def test_kill_9_while_writing_leaves_a_verifiable_chain(store_url: str, tmp_path) -> None:
    SqlStore(store_url).close()  # migrated before the writer starts
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay in (0.5, 1.3):
        process = subprocess.Popen(
            [sys.executable, str(script), store_url],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        process.stdout.readline()  # at least one round is committed
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        with SqlStore(store_url) as store:
            result = audit.verify(store)
            assert result.ok, result
            with store.engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(AuditRecordRow)).scalar()
            assert result.records == count and count >= 51


def test_events_from_before_the_upgrade_start_the_chain(store_url: str) -> None:
    from alembic import command

    from slipway.registry.db import make_engine
    from slipway.registry.migrations import alembic_config

    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:  # a registry as the previous release left it
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            for n in (1, 2):
                conn.exec_driver_sql(
                    "INSERT INTO events (at, kind, subject, actor, data) VALUES"
                    f" ('2025-01-0{n} 00:00:00', 'version.registered', 'churn@{n}', 'ann',"
                    f" '{{\"number\": {n}}}')"
                )
    finally:
        engine.dispose()
    with SqlStore(store_url) as store:  # upgrades to the head revision
        fill(store)
        records = audit.query(store, limit=None)
        assert [(r.subject, r.actor) for r in records[:2]] == [
            ("churn@1", "ann"),
            ("churn@2", "ann"),
        ]
        assert records[1].data == {"number": 2}
        assert audit.verify(store).ok and len(records) == 8
