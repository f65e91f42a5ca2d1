"""Fixtures shared by the whole suite.

Databases: ``sqlite_url`` (a file in ``tmp_path``), ``pg_url`` (the PostgreSQL server, once per
session), ``pg_fresh_url`` (a new, empty database on it for one test, dropped afterwards) and
``store_url``, which runs a test once per backend (ids ``sqlite`` and ``postgres``).
``pg_outage`` takes the ``pg_fresh_url`` database down and brings it back.

PostgreSQL comes from ``SLIPWAY_TEST_PG_URL`` or else ``scripts/postgres.sh``. Without one, the
postgres tests are skipped with a loud line; set ``SLIPWAY_TEST_PG_REQUIRED=1`` (CI) to make that
a failure instead.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite registry URL for a database file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'registry.db'}"


def _no_postgres(request: pytest.FixtureRequest, why: str) -> NoReturn:
    line = f"!!!!! POSTGRESQL TESTS NOT RUN: {why} !!!!!"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(line, red=True, bold=True)
    if os.environ.get("SLIPWAY_TEST_PG_REQUIRED"):
        pytest.fail(line, pytrace=False)
    pytest.skip(line)


def _conninfo(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string for psycopg."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> str:
    """URL of a PostgreSQL server and database we may create databases from (session-wide)."""
    url = os.environ.get("SLIPWAY_TEST_PG_URL", "").strip()
    if not url:
        try:
            found = subprocess.run(
                ["bash", str(REPO / "scripts" / "postgres.sh")],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _no_postgres(request, f"scripts/postgres.sh did not run: {exc}")
        if found.returncode != 0 or not found.stdout.strip():
            _no_postgres(request, f"scripts/postgres.sh found no server: {found.stderr.strip()}")
        url = found.stdout.strip().splitlines()[-1]
    try:
        import psycopg

        psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5).close()
    except Exception as exc:  # any failure here means "no usable server"
        _no_postgres(request, f"cannot connect to {url}: {exc}")
    return url


@pytest.fixture
def pg_fresh_url(pg_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped (connections and all) afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"slipway_test_{secrets.token_hex(6)}"
    with psycopg.connect(_conninfo(pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_conninfo(pg_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_outage(pg_url: str, pg_fresh_url: str) -> Iterator[Callable[[bool], None]]:
    """``pg_outage(True)``: the ``pg_fresh_url`` database drops every connection and refuses new
    ones, as a database that went down; ``pg_outage(False)``: it is back (also at teardown)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(pg_fresh_url).database

    def outage(down: bool) -> None:
        with psycopg.connect(_conninfo(pg_url), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not down).lower()}')
            if down:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    try:
        yield outage
    finally:
        outage(False)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh registry database URL, once per backend."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_fresh_url"))
