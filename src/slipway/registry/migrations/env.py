"""Alembic environment: runs on the connection that :func:`slipway.registry.migrations.migrate`
passes in, inside its transaction."""

from __future__ import annotations

from alembic import context

from slipway.registry.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the registry migrations run in code: call slipway.registry.migrations.migrate(engine),"
        " or open a slipway.registry.store.SqlStore, which does"
    )

# render_as_batch: SQLite cannot ALTER most things, so later revisions rebuild tables instead.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
