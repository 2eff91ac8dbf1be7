"""Engines for SQL stores: URL resolution, session settings, read-only connections.

Every connection runs with its session time zone set to UTC (PostgreSQL
``TimeZone``, MySQL/MariaDB ``time_zone``), so zone-aware columns read and
compare in UTC whatever the server's default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from retention.errors import StoreError
from retention.policy import SqlStore

__all__ = ["open_engine", "read_only", "redact", "resolve_url"]


def resolve_url(url: str, base_dir: Path | None) -> URL:
    """Parse `url`; a relative SQLite path is taken relative to `base_dir` (the policy's folder)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"invalid SQLAlchemy URL {redact(url)!r}") from None
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and base_dir is not None
        and not Path(database).is_absolute()
    ):
        parsed = parsed.set(database=str((base_dir / database).resolve()))
    return parsed


def redact(url: str | URL) -> str:
    """`url` with its password hidden, safe to print and log."""
    try:
        parsed = sa.make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        return "<invalid url>"
    return parsed.render_as_string(hide_password=True)


def _session_setup(dialect: str, read_only: bool) -> list[str]:
    statements: list[str] = []
    if dialect == "postgresql":
        statements.append("SET TIME ZONE 'UTC'")
        if read_only:
            statements.append("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    elif dialect in ("mysql", "mariadb"):
        statements.append("SET time_zone = '+00:00'")
        if read_only:
            statements.append("SET SESSION TRANSACTION READ ONLY")
    elif dialect == "sqlite" and read_only:
        statements.append("PRAGMA query_only = 1")
    return statements


def open_engine(
    store: SqlStore, base_dir: Path | None, *, read_only: bool = False, create: bool = False
) -> sa.Engine:
    """An engine for `store`. Read-only engines use one unpooled connection per use,
    each put in read-only mode by the database itself. A missing SQLite file is an error
    unless `create` (the audit store's own file)."""
    url = resolve_url(store.url, base_dir)
    backend = url.get_backend_name()
    if backend == "sqlite" and not create and url.database and url.database != ":memory:":
        try:
            exists = Path(url.database).exists()
        except OSError as exc:  # a folder on the way that this process may not enter
            raise StoreError(f"SQLite database {url.database}: {exc.strerror}") from None
        if not exists:
            raise StoreError(f"SQLite database {url.database} does not exist")
    kwargs: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
    if read_only:
        kwargs["poolclass"] = sa.pool.NullPool
    try:
        engine = sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use {redact(url)}: {exc}") from None
    setup = _session_setup(engine.dialect.name, read_only)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for statement in setup:
                cursor.execute(statement)
        finally:
            cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()

    return engine


@contextmanager
def read_only(store: SqlStore, base_dir: Path | None, name: str = "") -> Iterator[sa.Connection]:
    """A connection the database itself refuses to write through; rolled back at the end."""
    engine = open_engine(store, base_dir, read_only=True)
    try:
        with engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()
    except sa.exc.OperationalError as exc:
        label = f"store {name!r}" if name else "store"
        raise StoreError(f"{label} ({redact(engine.url)}): {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
