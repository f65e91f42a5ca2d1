"""Schema migrations for the registry database, run in code on every store open.

No ``alembic.ini`` is needed: :func:`migrate` builds the Alembic configuration here, pointing at
this package, and hands its own connection to ``env.py``. To add a revision, copy the newest file
in ``versions/``, bump ``revision``/``down_revision``, describe the change in the docstring, and
set :data:`HEAD` to the new revision (a test checks that it names the newest file).

Alembic is imported only when a database is not at :data:`HEAD`: every CLI command and server
opens the store, and a database already up to date (nearly always) needs one query, not the
tens of MiB and tenths of a second that importing Alembic and reading the scripts cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from slipway.errors import RegistryUnavailable, SchemaTooNew
from slipway.registry.db import WRITE_OPTION

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPT_LOCATION = Path(__file__).resolve().parent
HEAD = "0006"  # the newest revision in versions/
# Any constant works; it only has to be the same for every Slipway process on one server.
_PG_LOCK_KEY = 0x5_11_94_A7


def alembic_config(script_location: Path | str = SCRIPT_LOCATION) -> Config:
    """An Alembic configuration for the registry migrations, built without an ini file."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("path_separator", "os")
    return config


def head_revision(script_location: Path | str = SCRIPT_LOCATION) -> str:
    """The newest revision this code knows, read from the scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(script_location)).get_current_head()
    assert head is not None, "the migrations package has no revisions"
    return head


def migrate(engine: Engine, *, script_location: Path | str = SCRIPT_LOCATION) -> str:
    """Upgrade the database behind ``engine`` to the newest revision; return that revision.

    Safe to call from many processes at once: PostgreSQL takes an advisory lock, SQLite an
    immediate (write) transaction, and the whole upgrade is one transaction on both. Raises
    :class:`~slipway.errors.SchemaTooNew` when the database is at a revision this code does not
    know, which means a newer Slipway has migrated it.
    """
    if Path(script_location) == SCRIPT_LOCATION and _at_head(engine):
        return HEAD
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config(script_location)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None, "the migrations package has no revisions"
    with engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            current = MigrationContext.configure(conn).get_current_heads()
            for revision in current:
                if not _known(script, revision):
                    raise SchemaTooNew(revision, head)
            if current == (head,):
                return head
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    return head


def _at_head(engine: Engine) -> bool:
    """Whether the database is at :data:`HEAD` already (one query; a missing table: no)."""
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except (DBAPIError, RegistryUnavailable):
        # No alembic_version table yet (a new database), or SQLite busy while another process
        # creates it (switching a new file to WAL is not covered by the busy timeout): the
        # locked path below decides, and waits its turn.
        return False
    return found == [HEAD]


def _known(script: ScriptDirectory, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False
