"""Per-rule locks held in a database, so that any number of replicas never run one
rule at the same time.

Where: in the policy's **audit store**, next to the run ledger, not in the rule's
own store. Every replica of a policy shares that one database by construction
(it is where each slot is claimed); a rule on a file store has no database of its
own to lock in; and a rule's lock and its ledger claim then fail or succeed
together when that database is unreachable.

How, by dialect:

- PostgreSQL: a session advisory lock, ``pg_try_advisory_lock(key)``, the key a
  stable signed 64-bit hash (SHA-256) of the lock name.
- MySQL/MariaDB: ``GET_LOCK(name, 0)``; names longer than 64 characters are
  shortened to a prefix plus a hash.
- SQLite (and as the portable fallback): a lease row in ``<prefix>locks``, taken
  with ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at < :now OR holder =
  :me RETURNING token``; each take increments the row's token (a fencing token),
  and a heartbeat thread renews the lease while it is held.

Session locks (the first two) live on one dedicated connection, held from
acquisition to release, and are released explicitly in ``finally``: a pooled
connection returned to the pool would otherwise keep the lock. If the release
itself fails the connection is invalidated (closed, not pooled), which ends the
session and so the lock. A process that dies loses its connection, and the
database drops its session locks; a dead holder's lease expires after its TTL.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

__all__ = [
    "Lock",
    "LockTables",
    "advisory_key",
    "ensure",
    "mysql_lock_name",
    "rule_lock",
    "rule_lock_name",
]

MYSQL_NAME_MAX = 64
#: How often a held session lock's connection is checked (at most) by `Lock.lost`.
CHECK_EVERY = 2.0

Clock = Callable[[], datetime]

Instant = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LockTables:
    """The lease table for one prefix (``<prefix>locks``)."""

    def __init__(self, prefix: str = "retention_") -> None:
        self.metadata = sa.MetaData()
        self.leases = sa.Table(
            f"{prefix}locks",
            self.metadata,
            sa.Column("name", sa.String(255), primary_key=True),
            sa.Column("holder", sa.String(255), nullable=False),
            sa.Column("token", sa.BigInteger, nullable=False),
            sa.Column("expires_at", Instant, nullable=False),
        )


def ensure(conn: sa.Connection, tables: LockTables) -> None:
    """Create the lease table if missing (only SQLite, or other fallback dialects, use it)."""
    tables.metadata.create_all(conn, checkfirst=True)


def rule_lock_name(prefix: str, rule: str) -> str:
    """The lock name of `rule` for the audit tables with `prefix`."""
    return f"{prefix}rule:{rule}"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit PostgreSQL advisory-lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def mysql_lock_name(name: str) -> str:
    """`name` itself when it fits MySQL's 64 characters, else a prefix plus its hash."""
    if len(name) <= MYSQL_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: MYSQL_NAME_MAX - 17]}~{digest}"


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class Lock:
    """A lock attempt: `acquired` says whether this process holds it.

    `token` is the fencing token of a lease (increasing with every take), None for
    session locks. `lost()` reports, cheaply, whether a held lock may have been lost
    (its connection broke, or its lease could not be renewed): a run should stop.
    """

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.acquired = False
        self.token: int | None = None
        self._lost = False
        self._conn: sa.Connection | None = None
        self._checked = time.monotonic()
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def lost(self) -> bool:
        """True once the lock is known to be lost (checked at most every few seconds)."""
        if not self.acquired or self._lost:
            return self._lost
        if self._conn is not None and time.monotonic() - self._checked >= CHECK_EVERY:
            self._checked = time.monotonic()
            try:
                self._conn.exec_driver_sql("SELECT 1").scalar()
                self._conn.commit()
            except sa.exc.DBAPIError:
                self._lost = True
                self._conn.invalidate()
        return self._lost


def _session_lock(engine: sa.Engine, name: str) -> Lock:
    dialect = engine.dialect.name
    lock = Lock(name, "advisory" if dialect == "postgresql" else "get_lock")
    conn = engine.connect()
    try:
        if dialect == "postgresql":
            got = conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(name)}
            ).scalar()
        else:
            got = conn.execute(
                sa.text("SELECT GET_LOCK(:name, 0)"), {"name": mysql_lock_name(name)}
            ).scalar()
        conn.commit()
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    if got is True or got == 1:
        lock.acquired = True
        lock._conn = conn
    else:
        conn.close()
    return lock


def _release_session(lock: Lock, engine: sa.Engine) -> None:
    conn = lock._conn
    if conn is None:
        return
    lock._conn = None
    try:
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(lock.name)}
            )
        else:
            conn.execute(
                sa.text("SELECT RELEASE_LOCK(:name)"), {"name": mysql_lock_name(lock.name)}
            )
        conn.commit()
    except sa.exc.SQLAlchemyError:
        # The connection broke: closing it ends the session, and with it the lock.
        conn.invalidate()
    except BaseException:
        # The session may still hold the lock: never give it back to the pool.
        conn.invalidate()
        raise
    finally:
        conn.close()


def _lease_take(
    engine: sa.Engine, tables: LockTables, name: str, holder: str, now: datetime, ttl: timedelta
) -> int | None:
    table = tables.leases
    statement = (
        sqlite.insert(table)
        .values(name=name, holder=holder, token=1, expires_at=_naive(now + ttl))
        .on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": holder, "token": table.c.token + 1, "expires_at": _naive(now + ttl)},
            where=sa.or_(table.c.expires_at < _naive(now), table.c.holder == holder),
        )
        .returning(table.c.token)
    )
    with engine.begin() as conn:
        token: Any = conn.execute(statement).scalar()
    return None if token is None else int(token)


def _lease_renew(
    engine: sa.Engine, tables: LockTables, lock: Lock, holder: str, now: datetime, ttl: timedelta
) -> bool:
    table = tables.leases
    with engine.begin() as conn:
        result = conn.execute(
            table.update()
            .where(table.c.name == lock.name)
            .where(table.c.holder == holder)
            .where(table.c.token == lock.token)
            .values(expires_at=_naive(now + ttl))
        )
    return bool(result.rowcount == 1)


def _lease_release(
    engine: sa.Engine, tables: LockTables, lock: Lock, holder: str, now: datetime
) -> None:
    # Expire the row rather than delete it: the token keeps increasing across holders.
    table = tables.leases
    with engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.name == lock.name)
            .where(table.c.holder == holder)
            .where(table.c.token == lock.token)
            .values(expires_at=_naive(now - timedelta(microseconds=1)))
        )


def _lease_lock(
    engine: sa.Engine,
    tables: LockTables,
    name: str,
    holder: str,
    ttl: timedelta,
    clock: Clock,
) -> Lock:
    lock = Lock(name, "lease")
    token = _lease_take(engine, tables, name, holder, clock(), ttl)
    if token is None:
        return lock
    lock.acquired, lock.token = True, token
    interval = ttl.total_seconds() / 3

    def heartbeat() -> None:
        while not lock._stop_heartbeat.wait(interval):
            try:
                renewed = _lease_renew(engine, tables, lock, holder, clock(), ttl)
            except sa.exc.DBAPIError:
                renewed = False
            if not renewed:
                lock._lost = True
                return

    lock._heartbeat = threading.Thread(target=heartbeat, name=f"lease:{name}", daemon=True)
    lock._heartbeat.start()
    return lock


@contextmanager
def rule_lock(
    engine: sa.Engine,
    name: str,
    *,
    holder: str,
    tables: LockTables | None = None,
    ttl: timedelta = timedelta(minutes=5),
    clock: Clock = _utcnow,
) -> Iterator[Lock]:
    """Try once, without waiting, to take the lock `name` in `engine`'s database.

    Yields a `Lock` whose `acquired` tells whether this process holds it; the lock is
    released on exit, whatever happens inside. `holder` identifies this process in
    lease rows (e.g. ``host:pid:run``); `ttl` and `clock` apply to leases only.
    """
    dialect = engine.dialect.name
    tables = tables or LockTables()
    if dialect in ("postgresql", "mysql", "mariadb"):
        lock = _session_lock(engine, name)
        try:
            yield lock
        finally:
            if lock.acquired:
                _release_session(lock, engine)
        return
    with engine.begin() as conn:
        ensure(conn, tables)
    lock = _lease_lock(engine, tables, name, holder, ttl, clock)
    try:
        yield lock
    finally:
        if lock.acquired:
            lock._stop_heartbeat.set()
            if lock._heartbeat is not None:
                lock._heartbeat.join()
            _lease_release(engine, tables, lock, holder, clock())
