from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from slipway.errors import SchemaTooNew
from slipway.registry.db import metadata
from slipway.registry.migrations import HEAD, SCRIPT_LOCATION, head_revision, migrate
from slipway.registry.store import SqlStore

from .samples import DIGEST, SIGNATURE

TABLES = {"models", "versions", "deployments", "events", "alembic_version"}

REVISION_LATER = '''"""Add models.owner (test-only revision)."""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("owner")
'''


def _revision(url: str) -> tuple[str, ...]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()


def test_fresh_database_is_upgraded_to_head(store_url: str) -> None:
    SqlStore(store_url).close()
    assert _revision(store_url) == (head_revision(),)
    engine = create_engine(store_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_migrations_match_the_table_classes(store_url: str) -> None:
    SqlStore(store_url).close()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_reopening_is_idempotent_and_keeps_data(store_url: str) -> None:
    with SqlStore(store_url) as store:
        store.register_version("churn", format="onnx", digest=DIGEST, size=1, signature=SIGNATURE)
    for _ in range(2):
        with SqlStore(store_url) as store:
            assert store.get_version("churn").number == 1
    assert _revision(store_url) == (head_revision(),)


def test_unknown_revision_is_refused(store_url: str) -> None:
    SqlStore(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()
    with pytest.raises(SchemaTooNew) as info:
        SqlStore(store_url)
    assert (info.value.found, info.value.known) == ("f00d", head_revision())
    assert "upgrade Slipway" in str(info.value)


def test_older_database_is_upgraded_and_then_too_new_for_old_code(
    store_url: str, tmp_path: Path
) -> None:
    # A later release: this package's revisions plus a 9999.
    later = tmp_path / "migrations"
    shutil.copytree(SCRIPT_LOCATION, later, ignore=shutil.ignore_patterns("__pycache__"))
    head = head_revision()
    (later / "versions" / "v9999_owner.py").write_text(REVISION_LATER.replace("{head}", head))

    with SqlStore(store_url) as store:  # the database as this release leaves it
        store.register_version("churn", format="onnx", digest=DIGEST, size=1, signature=SIGNATURE)

    engine = create_engine(store_url)
    try:
        assert migrate(engine, script_location=later) == "9999"
        columns = {c["name"] for c in inspect(engine).get_columns("models")}
        assert "owner" in columns
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM models")).scalars().all() == ["churn"]
        assert migrate(engine, script_location=later) == "9999"  # again: nothing to do
    finally:
        engine.dispose()
    assert _revision(store_url) == ("9999",)

    # This release cannot know what 9999 changed, so it refuses the database.
    with pytest.raises(SchemaTooNew) as info:
        SqlStore(store_url)
    assert (info.value.found, info.value.known) == ("9999", head)


def test_concurrent_first_open_migrates_once(store_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_store() -> None:
        try:
            barrier.wait()
            SqlStore(store_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _revision(store_url) == (head_revision(),)


def test_head_constant_names_the_newest_revision() -> None:
    assert head_revision() == HEAD


def test_opening_an_up_to_date_store_does_not_import_alembic(tmp_path: Path) -> None:
    # Every CLI command and server opens the store: at HEAD it costs one query, no Alembic.
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    SqlStore(url).close()  # created and migrated here
    script = (
        "import sys\n"
        "from slipway.registry.store import SqlStore\n"
        f"SqlStore({url!r}).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_events_are_indexed_by_kind(store_url: str) -> None:
    """The dashboard and readiness ask for the newest events of some kinds across every
    subject: on a registry with a long history that must not read the whole table."""
    engine = create_engine(store_url)
    try:
        migrate(engine)
        names = {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("events")}
    finally:
        engine.dispose()
    assert names["ix_events_kind_id"] == ["kind", "id"]
