"""Shared fixtures: real SQLite, PostgreSQL and MariaDB databases.

Server tests skip when the server is absent, except in CI (``CI`` set), where
they fail: CI must prove they ran. Point them elsewhere with
``RETENTION_TEST_POSTGRES_URL`` / ``RETENTION_TEST_MARIADB_URL``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.audit.outbox import Outbox
from retention.audit.store import opened
from retention.loader import LoadedPolicy

POSTGRES_URL = os.environ.get(
    "RETENTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "RETENTION_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
IN_CI = bool(os.environ.get("CI"))

#: A fixed instant every test passes in as "now"; no test reads the clock.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

_reachable: dict[str, str | None] = {}


def _server(url: str) -> str:
    """Return `url` when its server answers; skip (locally) or fail (in CI) otherwise."""
    if url not in _reachable:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            _reachable[url] = None
        except sa.exc.DBAPIError as exc:
            _reachable[url] = str(exc).splitlines()[0]
        finally:
            engine.dispose()
    problem = _reachable[url]
    if problem is not None:
        message = f"database server unreachable at {sa.make_url(url).render_as_string()}: {problem}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


def reset_database(url: str) -> None:
    """Drop every table (and view) in the database at `url`."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            meta = sa.MetaData()
            meta.reflect(conn)
            for table in reversed(meta.sorted_tables):
                table.drop(conn)
            if conn.dialect.name == "postgresql":
                for (name,) in conn.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                ):
                    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
            if conn.dialect.name == "mysql":
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test database, emptied before the test."""
    url = _server(POSTGRES_URL)
    reset_database(url)
    return url


@pytest.fixture
def mariadb_url() -> str:
    """The MariaDB test database, emptied before the test."""
    url = _server(MARIADB_URL)
    reset_database(url)
    return url


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each of SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = _server(POSTGRES_URL if request.param == "postgresql" else MARIADB_URL)
    reset_database(url)
    yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI, refuse a run that would not exercise PostgreSQL and MariaDB at all."""
    if not IN_CI or config.getoption("collectonly"):
        return
    marks = {m.name for item in items for m in item.iter_markers()}
    missing = {"postgres", "mariadb"} - marks
    if missing and len(items) > 20:
        raise pytest.UsageError(f"CI run selects no {' or '.join(sorted(missing))} tests")


def audit_records(loaded: LoadedPolicy) -> list[Any]:
    """Every record in the policy's audit store (not its outboxes), in chain order."""
    with opened(loaded, create=False) as audit, audit.engine.connect() as conn:
        if not sa.inspect(conn).has_table(audit.tables.records.name):
            return []
        return list(
            conn.execute(sa.select(audit.tables.records).order_by(audit.tables.records.c.seq))
        )


def outbox_records(url: str) -> list[Any]:
    """Audit records waiting in the outbox of the database at `url` (not yet forwarded)."""
    outbox = Outbox()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not outbox.exists(conn):
                return []
            return [json.loads(r.record) for r in conn.execute(sa.select(outbox.table))]
    finally:
        engine.dispose()


def audited_rows(loaded: LoadedPolicy, url: str, tables: tuple[str, ...] = ()) -> int:
    """Rows the audit trail says were removed or rewritten: the audit store's records plus
    any still in the outbox at `url` (optionally only records on `tables`)."""
    unique: dict[tuple[Any, ...], int] = {}
    for record in [r._asdict() for r in audit_records(loaded)] + outbox_records(url):
        if record["outcome"] == "committed" and (not tables or record["table_name"] in tables):
            # A crash after forwarding but before clearing the outbox leaves a record in
            # both; the audit store's unique key (run, rule, table, batch) names it once.
            key = (record["run_id"], record["rule"], record["table_name"], record["batch"])
            unique[key] = int(record["rows"])
    return sum(unique.values())
