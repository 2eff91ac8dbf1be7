"""Per-rule locks on SQLite (lease with a fencing token), PostgreSQL (advisory lock)
and MariaDB (GET_LOCK): one holder at a time, released explicitly even though the
connection goes back to a pool, and released by the database when its holder dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from retention.locks import (
    LockTables,
    advisory_key,
    mysql_lock_name,
    rule_lock,
    rule_lock_name,
)

TABLES = LockTables("t_")


def _pool(engine: sa.Engine) -> sa.pool.QueuePool:
    assert isinstance(engine.pool, sa.pool.QueuePool)
    return engine.pool


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, pool_size=5)
    yield engine
    engine.dispose()


def test_a_held_lock_refuses_a_second_holder_until_released(engine: sa.Engine) -> None:
    name = rule_lock_name("t_", "logs")
    with rule_lock(engine, name, holder="a", tables=TABLES) as first:
        assert first.acquired
        with rule_lock(engine, name, holder="b", tables=TABLES) as second:
            assert not second.acquired
        with rule_lock(engine, rule_lock_name("t_", "other"), holder="b", tables=TABLES) as other:
            assert other.acquired
        assert not first.lost()
    with rule_lock(engine, name, holder="b", tables=TABLES) as again:
        assert again.acquired
    assert _pool(engine).checkedout() == 0


def test_release_happens_even_when_the_body_raises(engine: sa.Engine) -> None:
    name = "t_rule:boom"
    acquired = []

    def body() -> None:
        with rule_lock(engine, name, holder="a", tables=TABLES) as lock:
            acquired.append(lock.acquired)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        body()
    assert acquired == [True]
    with rule_lock(engine, name, holder="b", tables=TABLES) as lock:
        assert lock.acquired


def test_pooled_connections_do_not_keep_the_lock(engine: sa.Engine) -> None:
    """After release the pooled connection is reused: another engine (another process's
    view) can take the lock, so the pooled session does not hold it."""
    name = "t_rule:pooled"
    with rule_lock(engine, name, holder="a", tables=TABLES) as lock:
        assert lock.acquired
    assert _pool(engine).checkedin() >= 1
    other = sa.create_engine(engine.url)
    try:
        with rule_lock(other, name, holder="b", tables=TABLES) as lock:
            assert lock.acquired
    finally:
        other.dispose()


def test_sqlite_lease_tokens_increase_and_an_expired_lease_can_be_taken(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    ttl = timedelta(minutes=5)
    tokens = []
    try:
        for holder in ("a", "b", "a"):
            with rule_lock(
                engine, "t_rule:x", holder=holder, tables=TABLES, ttl=ttl, clock=lambda: now[0]
            ) as lock:
                assert lock.acquired
                tokens.append(lock.token)
        # A holder that never released (it died): nobody gets the lease until it expires.
        from retention import locks

        dead = locks._lease_take(engine, TABLES, "t_rule:y", "dead", now[0], ttl)
        with rule_lock(
            engine, "t_rule:y", holder="b", tables=TABLES, ttl=ttl, clock=lambda: now[0]
        ) as lock:
            assert not lock.acquired
        now[0] += ttl + timedelta(seconds=1)
        with rule_lock(
            engine, "t_rule:y", holder="b", tables=TABLES, ttl=ttl, clock=lambda: now[0]
        ) as lock:
            assert lock.acquired
            assert dead is not None
            assert lock.token == dead + 1
    finally:
        engine.dispose()
    assert tokens == [1, 2, 3]


def test_sqlite_lease_is_renewed_while_held_and_reports_loss(sqlite_url: str) -> None:
    """A heartbeat renews the lease every ttl/3; when the row is taken over (the lease
    expired elsewhere), renewal fails and `lost()` turns True."""
    engine = sa.create_engine(sqlite_url)
    ttl = timedelta(seconds=1)
    try:
        with rule_lock(engine, "t_rule:z", holder="a", tables=TABLES, ttl=ttl) as lock:
            assert lock.acquired
            time.sleep(1.5)  # longer than the ttl: only renewals keep it
            with rule_lock(engine, "t_rule:z", holder="b", tables=TABLES, ttl=ttl) as other:
                assert not other.acquired
            assert not lock.lost()
            with engine.begin() as conn:  # another holder takes the row over
                conn.execute(
                    TABLES.leases.update().values(holder="thief", token=TABLES.leases.c.token + 1)
                )
            deadline = time.monotonic() + 5
            while not lock.lost() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert lock.lost()
    finally:
        engine.dispose()


def test_lock_names_fit_each_database() -> None:
    long = "retention_rule:" + "x" * 100
    assert len(mysql_lock_name(long)) == 64
    assert mysql_lock_name(long) != mysql_lock_name(long + "y")
    assert mysql_lock_name("retention_rule:logs") == "retention_rule:logs"
    key = advisory_key("retention_rule:logs")
    assert -(2**63) <= key < 2**63
    assert key == advisory_key("retention_rule:logs")
    assert key != advisory_key("retention_rule:logs2")


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_the_database_releases_a_session_lock_when_its_holder_is_killed(
    server: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{'postgres' if server == 'postgresql' else 'mariadb'}_url")
    script = textwrap.dedent(
        f"""
        import sys, time, sqlalchemy as sa
        from retention.locks import rule_lock
        engine = sa.create_engine({url!r})
        with rule_lock(engine, "t_rule:killed", holder="child") as lock:
            print("held" if lock.acquired else "busy", flush=True)
            time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    engine = sa.create_engine(url)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with rule_lock(engine, "t_rule:killed", holder="parent") as lock:
            assert not lock.acquired
        child.kill()
        child.wait(timeout=10)
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        acquired = False
        while not acquired and datetime.now(UTC) < deadline:
            with rule_lock(engine, "t_rule:killed", holder="parent") as lock:
                acquired = lock.acquired
        assert acquired
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
        engine.dispose()


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_broken_lock_connection_is_reported_lost(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = request.getfixturevalue(f"{'postgres' if server == 'postgresql' else 'mariadb'}_url")
    from retention import locks

    monkeypatch.setattr(locks, "CHECK_EVERY", 0.0)
    engine = sa.create_engine(url)
    admin = sa.create_engine(url)
    try:
        with rule_lock(engine, "t_rule:lost", holder="a") as lock:
            assert lock.acquired
            assert not lock.lost()
            assert lock._conn is not None
            with admin.connect() as conn:
                if server == "postgresql":
                    pid = lock._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                    lock._conn.commit()
                    conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                else:
                    pid = lock._conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
                    lock._conn.commit()
                    conn.exec_driver_sql(f"KILL {int(pid)}")  # type: ignore[arg-type]
            assert lock.lost()
    finally:
        engine.dispose()
        admin.dispose()
