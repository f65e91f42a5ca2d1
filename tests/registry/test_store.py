from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from slipway.errors import (
    DeploymentNotFound,
    InvalidInput,
    InvalidName,
    ModelNotFound,
    VersionConflict,
    VersionNotFound,
)
from slipway.registry.records import (
    BatchingConfig,
    CategoricalProfile,
    NewVersion,
    NumericProfile,
    Profile,
    VersionMeta,
)
from slipway.registry.store import SqlStore

from .samples import DIGEST, SIGNATURE

PROFILE = Profile(
    rows=3,
    features=[
        NumericProfile(
            name="age",
            count=3,
            mean=2.0,
            std=1.0,
            min=1.0,
            max=3.0,
            quantiles=[1.0, 2.0, 3.0],
            edges=[1.0, 2.0, 3.0],
            counts=[1, 2],
        ),
        CategoricalProfile(name="plan", count=3, frequencies={"a": 2, "b": 1}),
    ],
    predictions=[CategoricalProfile(name="label", count=3, frequencies={"0": 1, "1": 2})],
)


def _register(store: SqlStore, model: str = "churn", **kwargs: object) -> int:
    record = store.register_version(
        model,
        format="onnx",
        digest=DIGEST,
        size=10,
        signature=SIGNATURE,
        **kwargs,  # type: ignore[arg-type]
    )
    return record.number


def test_register_creates_model_and_numbers_versions(store: SqlStore) -> None:
    meta = VersionMeta(
        description="first",
        training_data="s3://bucket/train.parquet",
        training_data_sha256="cd" * 32,
        hyperparameters={"C": 1.0, "layers": [3, 4], "solver": "lbfgs"},
        metrics={"auc": 0.91},
        tags={"team": "growth"},
    )
    first = store.register_version(
        "churn",
        format="onnx",
        digest=DIGEST,
        size=123,
        signature=SIGNATURE,
        meta=meta,
        profile=PROFILE,
        actor="alice",
        model_description="who leaves",
    )
    assert (first.model, first.number, first.ref) == ("churn", 1, "churn@1")
    assert first.created_by == "alice"
    assert _register(store) == 2

    again = store.get_version("churn", 1)
    assert again == first  # everything survives the JSON round trip, profile union included
    assert again.meta == meta and again.profile == PROFILE and again.signature == SIGNATURE
    assert store.get_version("churn").number == 2
    assert store.get_version("churn", None).profile is None
    assert [v.number for v in store.list_versions("churn")] == [1, 2]

    model = store.get_model("churn")
    assert (model.name, model.description, model.latest_version) == ("churn", "who leaves", 2)
    event = store.events("churn@1")[0]
    assert (event.kind, event.actor) == ("version.registered", "alice")
    assert event.data["digest"] == DIGEST


def test_list_models(store: SqlStore) -> None:
    assert store.list_models() == []
    _register(store, "zeta")
    _register(store, "alpha")
    _register(store, "alpha")
    listed = store.list_models()
    assert [(m.name, m.latest_version) for m in listed] == [("alpha", 2), ("zeta", 1)]


def test_lookups_of_missing_things(store: SqlStore) -> None:
    with pytest.raises(ModelNotFound):
        store.get_model("nope")
    with pytest.raises(ModelNotFound):
        store.get_version("nope")
    with pytest.raises(ModelNotFound):
        store.list_versions("nope")
    _register(store)
    with pytest.raises(VersionNotFound) as info:
        store.get_version("churn", 7)
    assert (info.value.model, info.value.version) == ("churn", 7)
    with pytest.raises(DeploymentNotFound):
        store.get_deployment("nope")
    with pytest.raises(InvalidName):
        store.get_model("../etc")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"digest": "xyz"}, id="bad-digest"),
        pytest.param({"digest": DIGEST.upper()}, id="uppercase-digest"),
        pytest.param({"size": -1}, id="negative-size"),
        pytest.param({"format": ""}, id="empty-format"),
        pytest.param({"meta": VersionMeta(metrics={"auc": math.nan})}, id="nan-metric"),
        pytest.param({"meta": VersionMeta(metrics={"auc": "high"})}, id="text-metric"),  # type: ignore[dict-item]
        pytest.param({"meta": VersionMeta(metrics={"auc": np.float32(0.9)})}, id="numpy-metric"),  # type: ignore[dict-item]
        pytest.param({"meta": VersionMeta(tags={"team": 1})}, id="number-tag"),  # type: ignore[dict-item]
        pytest.param({"meta": VersionMeta(description=None)}, id="no-description"),  # type: ignore[arg-type]
    ],
)
def test_register_rejects_bad_input(store: SqlStore, kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {
        "format": "onnx",
        "digest": DIGEST,
        "size": 1,
        "signature": SIGNATURE,
    }
    values.update(kwargs)
    with pytest.raises(InvalidInput):
        store.register_version("churn", **values)  # type: ignore[arg-type]
    assert store.list_models() == []


def test_register_rejects_bad_model_name(store: SqlStore) -> None:
    with pytest.raises(InvalidName):
        _register(store, "a/b")


def test_timestamps_are_aware_utc(store_url: str) -> None:
    # The clock answers in UTC+02:00; the store keeps the instant and answers in UTC.
    local = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with SqlStore(store_url, clock=lambda: local) as store:
        _register(store)
        store.create_deployment("prod", "churn", 1)
        for at in (
            store.get_version("churn").created_at,
            store.get_model("churn").created_at,
            store.get_deployment("prod").updated_at,
            store.events()[0].at,
        ):
            assert at == local
            assert at.utcoffset() == dt.timedelta(0)
            assert at.hour == 10


def test_naive_clock_is_refused(store_url: str) -> None:
    with SqlStore(store_url, clock=lambda: dt.datetime(2024, 1, 1)) as store:
        with pytest.raises(ValueError, match="timezone-aware"):
            _register(store)
        assert store.list_models() == []


def test_deployment_lifecycle(store: SqlStore) -> None:
    for _ in range(3):
        _register(store)
    created = store.create_deployment("churn-prod", "churn", 1, actor="alice")
    assert (created.model, created.version, created.previous_version) == ("churn", 1, None)
    assert created.generation == 1
    assert created.batching == BatchingConfig()
    assert store.get_deployment("churn-prod") == created
    assert store.deployments_state() == (("churn-prod", 1),)

    moved = store.set_deployment_version("churn-prod", 3, actor="bob")
    assert (moved.version, moved.previous_version, moved.generation) == (3, 1, 2)
    assert moved.created_at == created.created_at

    # Same version again: nothing changes, nothing is recorded.
    assert store.set_deployment_version("churn-prod", 3) == moved
    with pytest.raises(VersionNotFound):
        store.set_deployment_version("churn-prod", 9)
    assert store.get_deployment("churn-prod") == moved

    rolled_back = store.set_deployment_version("churn-prod", 1)
    assert (rolled_back.version, rolled_back.previous_version) == (1, 3)
    assert rolled_back.generation == 3

    batching = BatchingConfig(max_batch_size=8, max_batch_delay_ms=5.0, max_queue_rows=64)
    updated = store.update_deployment("churn-prod", batching=batching, actor="carol")
    assert (updated.batching, updated.generation, updated.version) == (batching, 4, 1)
    assert store.update_deployment("churn-prod", batching=batching) == updated
    assert store.update_deployment("churn-prod") == updated
    assert store.list_deployments() == [updated]
    assert store.deployments_state() == (("churn-prod", 4),)

    events = store.events("deployment:churn-prod")
    assert [e.kind for e in events] == [
        "deployment.updated",
        "deployment.version_changed",
        "deployment.version_changed",
        "deployment.created",
    ]
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    change = events[2]
    assert change.actor == "bob"
    assert change.data["before"]["version"] == 1 and change.data["after"]["version"] == 3
    assert change.data["after"]["previous_version"] == 1
    assert events[0].data["after"]["batching"]["max_batch_size"] == 8
    assert events[3].data["after"]["name"] == "churn-prod"
    assert len(store.events(limit=2)) == 2

    store.delete_deployment("churn-prod", actor="dave")
    with pytest.raises(DeploymentNotFound):
        store.get_deployment("churn-prod")
    with pytest.raises(DeploymentNotFound):
        store.delete_deployment("churn-prod")
    assert store.deployments_state() == ()
    deleted = store.events("deployment:churn-prod", limit=1)[0]
    assert (deleted.kind, deleted.actor) == ("deployment.deleted", "dave")
    assert deleted.data["before"]["generation"] == 4

    # Re-created under the same name: the generation keeps counting, so a replica that polled
    # before the delete still sees a change.
    again = store.create_deployment("churn-prod", "churn", 2)
    assert again.generation == 5 and again.previous_version is None


def test_create_deployment_errors(store: SqlStore) -> None:
    with pytest.raises(ModelNotFound):
        store.create_deployment("prod", "churn", 1)
    _register(store)
    with pytest.raises(VersionNotFound):
        store.create_deployment("prod", "churn", 2)
    store.create_deployment("prod", "churn", 1)
    with pytest.raises(VersionConflict, match="already exists"):
        store.create_deployment("prod", "churn", 1)
    with pytest.raises(InvalidName):
        store.create_deployment("prod/x", "churn", 1)
    with pytest.raises(InvalidInput):
        store.create_deployment("other", "churn", 0)
    for beyond in (2**31, 2**63):  # past the column: refused, not a database overflow
        with pytest.raises(InvalidInput, match="from 1 to 2147483647"):
            store.create_deployment("other", "churn", beyond)
        with pytest.raises(InvalidInput, match="from 1 to 2147483647"):
            store.get_version("churn", beyond)
    with pytest.raises(InvalidInput):
        store.create_deployment("other", "churn", 1, batching=BatchingConfig(max_batch_size=0))
    with pytest.raises(DeploymentNotFound):
        store.set_deployment_version("missing", 1)
    with pytest.raises(DeploymentNotFound):
        store.update_deployment("missing", batching=BatchingConfig())
    assert [d.name for d in store.list_deployments()] == ["prod"]


def test_deployments_are_per_model(store: SqlStore) -> None:
    _register(store, "churn")
    _register(store, "fraud")
    _register(store, "fraud")
    store.create_deployment("b-churn", "churn", 1)
    store.create_deployment("a-fraud", "fraud", 2)
    # churn has no version 2: a deployment only moves within its own model.
    with pytest.raises(VersionNotFound):
        store.set_deployment_version("b-churn", 2)
    assert [(d.name, d.model) for d in store.list_deployments()] == [
        ("a-fraud", "fraud"),
        ("b-churn", "churn"),
    ]
    assert store.deployments_state() == (("a-fraud", 1), ("b-churn", 1))


def test_several_versions_are_recorded_all_or_none(store: SqlStore) -> None:
    _register(store, "fraud")

    def new(model: str, **kwargs: object) -> NewVersion:
        fields: dict = {"format": "onnx", "digest": DIGEST, "size": 10, "signature": SIGNATURE}
        return NewVersion(model=model, **{**fields, **kwargs})

    failing = [
        pytest.param([new("churn"), new("fraud", number=1), new("churn")], VersionConflict,
                     id="number-taken"),
        pytest.param([new("churn"), new("churn", number=1)], VersionConflict, id="clash-in-batch"),
        pytest.param([new("churn"), new("fraud", digest="x")], InvalidInput, id="bad-digest"),
        pytest.param([new("churn"), new("bad/name")], InvalidName, id="bad-name"),
    ]  # fmt: skip
    for case in failing:
        batch, error = case.values
        with pytest.raises(error):
            store.register_versions(batch, actor="importer")
        assert [m.name for m in store.list_models()] == ["fraud"], case.id
        assert [e.subject for e in store.events()] == ["fraud@1"], case.id
    recorded = store.register_versions(
        [new("churn"), new("fraud"), new("churn", number=7)], actor="importer"
    )
    assert [v.ref for v in recorded] == ["churn@1", "fraud@2", "churn@7"]
    assert [e.subject for e in store.events()] == ["churn@7", "fraud@2", "churn@1", "fraud@1"]
    assert store.register_versions([]) == []


def test_events_newest_first_with_limit(store: SqlStore) -> None:
    for _ in range(5):
        _register(store)
    events = store.events()
    assert [e.subject for e in events] == [f"churn@{n}" for n in range(5, 0, -1)]
    assert [e.subject for e in store.events(limit=2)] == ["churn@5", "churn@4"]
    assert store.events("churn@3")[0].data["number"] == 3
    assert store.events("nothing") == []
    with pytest.raises(InvalidInput):
        store.events(limit=0)


def test_events_filtered_by_kind_reach_past_newer_events_of_other_kinds(store: SqlStore) -> None:
    _register(store)
    store.create_deployment("churn-prod", "churn", 1)
    for _ in range(3):
        _register(store)
    assert [e.kind for e in store.events(limit=2)] == ["version.registered"] * 2
    (created,) = store.events(kinds=("deployment.created", "deployment.deleted"), limit=2)
    assert created.subject == "deployment:churn-prod"
    assert [e.subject for e in store.events("churn@2", kinds=["version.registered"])] == ["churn@2"]
    assert store.events("churn@2", kinds=["deployment.created"]) == []
    assert len(store.events(kinds=["version.registered"], limit=None)) == 4  # all of them


def test_unsupported_url() -> None:
    with pytest.raises(InvalidInput, match="unsupported database URL"):
        SqlStore("mysql://localhost/db")
    with pytest.raises(InvalidInput):
        SqlStore("not a url")


def test_sqlite_uses_wal_and_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "registry.db"
    with SqlStore(f"sqlite:///{path}") as store:
        assert path.exists()
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_in_memory_sqlite_works() -> None:
    with SqlStore("sqlite://") as store:
        _register(store)
        assert store.get_version("churn").number == 1


@pytest.mark.parametrize("sha", ["nothex", "cd" * 31, "CD" * 32, "sha256:" + "cd" * 32])
def test_a_training_data_hash_that_is_not_a_sha256_is_refused(store: SqlStore, sha: str) -> None:
    with pytest.raises(InvalidInput, match="training data sha256"):
        _register(store, meta=VersionMeta(training_data_sha256=sha))
    assert store.list_models() == []


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param({"metrics": {"auc": math.inf}}, id="infinite-metric"),
        pytest.param({"metrics": {"auc": "high"}}, id="text-metric"),
        pytest.param({"tags": {"team": 1}}, id="number-tag"),
    ],
)
def test_metadata_that_cannot_be_stored_is_refused_before_the_artifact(
    tmp_path: Path, meta: dict[str, object]
) -> None:
    from onnx import TensorProto, helper

    from slipway.local import Registry
    from slipway.settings import Settings

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "identity.onnx"
    path.write_bytes(model.SerializeToString())
    with Registry(Settings.from_env({"SLIPWAY_HOME": str(tmp_path / "home")})) as registry:
        with pytest.raises(InvalidInput, match="metadata"):
            registry.register_onnx("m", path, **meta)
        assert registry.store.list_models() == []
        stored = registry.artifacts.root / "sha256"
        assert not stored.exists() or not any(stored.rglob("*"))


def test_text_postgresql_cannot_hold_is_invalid_input(store: SqlStore) -> None:
    _register(store)
    store.create_deployment("churn-prod", "churn", 1)
    if store.engine.dialect.name == "sqlite":  # SQLite holds NUL: a filter just matches nothing
        assert store.events("churn@1\x00") == []
        return
    with pytest.raises(InvalidInput, match=r"NUL \(\\x00\)") as caught:
        store.events("churn@1\x00")
    assert "psycopg" not in caught.value.message and "SQL" not in caught.value.message
    assert [e.subject for e in store.events()][0] == "deployment:churn-prod"  # still usable


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))), id="year-1"),
        pytest.param(
            dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            id="year-9999",
        ),
    ],
)
def test_a_time_with_no_utc_equivalent_is_invalid_input(store: SqlStore, at: dt.datetime) -> None:
    _register(store)
    store.create_deployment("churn-prod", "churn", 1)
    with pytest.raises(InvalidInput, match="out of range"):
        store.deployment_version_at("churn-prod", at)


@pytest.mark.postgres
def test_a_database_that_goes_away_is_registry_unavailable_until_it_is_back(
    pg_fresh_url: str, pg_outage: Callable[[bool], None]
) -> None:
    from slipway.errors import RegistryUnavailable

    with SqlStore(pg_fresh_url) as store:
        _register(store)
        pg_outage(True)
        with pytest.raises(RegistryUnavailable) as caught:
            store.list_models()
        message = caught.value.message
        assert "psycopg" not in message and "127.0.0.1" not in message
        assert "SLIPWAY_DATABASE_URL" in message and caught.value.retry_after_s > 0
        with pytest.raises(RegistryUnavailable):  # a write too
            _register(store)
        pg_outage(False)
        assert [m.latest_version for m in store.list_models()] == [1]
        assert _register(store) == 2


def test_a_sqlite_file_locked_past_the_busy_timeout_is_registry_unavailable(
    tmp_path: Path,
) -> None:
    import sqlite3

    from slipway.errors import RegistryUnavailable

    path = tmp_path / "registry.db"
    with SqlStore(f"sqlite:///{path}?timeout=0.2") as store:
        _register(store)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, held
        try:
            with pytest.raises(RegistryUnavailable) as caught:
                _register(store)
            assert caught.value.reason == "database is locked"
            assert [m.latest_version for m in store.list_models()] == [1]  # WAL: reads go on
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert _register(store) == 2


def test_a_missing_table_on_sqlite_stays_a_database_error(tmp_path: Path) -> None:
    from sqlalchemy.exc import OperationalError

    with SqlStore(f"sqlite:///{tmp_path / 'registry.db'}") as store:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE alert_events"))
        with (
            pytest.raises(OperationalError, match="no such table"),
            store.engine.connect() as conn,
        ):
            conn.execute(text("SELECT * FROM alert_events"))


@pytest.mark.parametrize(
    "timeout",
    [pytest.param("abc", id="text"), pytest.param("-1", id="negative"),
     pytest.param("nan", id="nan")],
)  # fmt: skip
def test_a_bad_sqlite_busy_timeout_is_invalid_input(tmp_path: Path, timeout: str) -> None:
    with pytest.raises(InvalidInput, match=r"\?timeout=SECONDS"):
        SqlStore(f"sqlite:///{tmp_path / 'registry.db'}?timeout={timeout}")
