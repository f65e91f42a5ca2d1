"""Schema migrations for the registry database, run in code on every store open.

No ``alembic.ini`` is needed: :func:`migrate` builds the Alembic configuration here, pointing at
this package, and hands its own connection to ``env.py``. To add a revision, copy the newest file
in ``versions/``, bump ``revision``/``down_revision``, and describe the change in the docstring.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from slipway.errors import SchemaTooNew
from slipway.registry.db import WRITE_OPTION

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any constant works; it only has to be the same for every Slipway process on one server.
_PG_LOCK_KEY = 0x5_11_94_A7


def alembic_config(script_location: Path | str = SCRIPT_LOCATION) -> Config:
    """An Alembic configuration for the registry migrations, built without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("path_separator", "os")
    return config


def head_revision(script_location: Path | str = SCRIPT_LOCATION) -> str:
    """The newest revision this code knows."""
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


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False
