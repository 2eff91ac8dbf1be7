"""The run ledger on SQLite, PostgreSQL and MariaDB: a (rule, slot) is claimed once,
whoever asks; finishing records the outcome; microseconds survive; readers filter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from retention.audit import ledger
from tests.conftest import NOW

TABLES = ledger.LedgerTables("t_")
SLOT = datetime(2026, 11, 23, 3, 0, 0, 123456, tzinfo=UTC)


def _pool(engine: sa.Engine) -> sa.pool.QueuePool:
    assert isinstance(engine.pool, sa.pool.QueuePool)
    return engine.pool


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        ledger.ensure(conn, TABLES)
    yield engine
    engine.dispose()


def test_ensure_is_idempotent_and_names_the_table_after_the_prefix(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        ledger.ensure(conn, TABLES)
        assert sa.inspect(conn).has_table("t_runs")


def test_a_slot_is_claimed_once_and_a_lost_claim_leaves_no_failed_transaction(
    engine: sa.Engine,
) -> None:
    assert ledger.claim(engine, TABLES, "logs", SLOT, "run-1", "a:1", NOW) is True
    assert ledger.claim(engine, TABLES, "logs", SLOT, "run-2", "b:2", NOW) is False
    # The same slot of another rule, and the next slot of this one, are free.
    assert ledger.claim(engine, TABLES, "other", SLOT, "run-3", "b:2", NOW) is True
    assert ledger.claim(engine, TABLES, "logs", SLOT + timedelta(hours=1), "run-4", "b:2", NOW)
    with engine.connect() as conn:
        rows = ledger.runs(conn, TABLES, rules=["logs"])
    assert [(r.slot, r.run_id, r.status, r.host) for r in rows] == [
        (SLOT, "run-1", "running", "a:1"),
        (SLOT + timedelta(hours=1), "run-4", "running", "b:2"),
    ]
    assert _pool(engine).checkedout() == 0


def test_concurrent_claims_of_one_slot_have_exactly_one_winner(engine: sa.Engine) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(ledger.claim(engine, TABLES, "logs", SLOT, f"run-{i}", f"h:{i}", NOW))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_finish_records_the_outcome_with_microseconds(engine: sa.Engine) -> None:
    ledger.claim(engine, TABLES, "logs", SLOT, "claim-id", "a:1", NOW)
    cutoff = NOW - timedelta(days=90, microseconds=7)
    finished = NOW + timedelta(seconds=3, microseconds=42)
    assert ledger.finish(
        engine, TABLES, "logs", SLOT, "ok", 1234, cutoff, finished, None, run_id="audit-run"
    )
    with engine.connect() as conn:
        (run,) = ledger.runs(conn, TABLES)
    assert run == ledger.LedgerRun(
        rule="logs",
        slot=SLOT,
        run_id="audit-run",
        status="ok",
        rows=1234,
        cutoff=cutoff,
        started_at=NOW,
        finished_at=finished,
        host="a:1",
        error=None,
    )


def test_finish_does_not_overwrite_a_run_declared_abandoned(engine: sa.Engine) -> None:
    ledger.claim(engine, TABLES, "logs", SLOT, "dead", "a:1", NOW)
    ledger.claim(engine, TABLES, "logs", SLOT + timedelta(hours=1), "alive", "b:2", NOW)
    assert ledger.abandon(engine, TABLES, "logs", NOW, keep="alive") == 1
    assert not ledger.finish(engine, TABLES, "logs", SLOT, "ok", 5, None, NOW)
    with engine.connect() as conn:
        statuses = [(r.run_id, r.status) for r in ledger.runs(conn, TABLES)]
        (dead,) = [r for r in ledger.runs(conn, TABLES) if r.run_id == "dead"]
    assert statuses == [("dead", "failed"), ("alive", "running")]
    assert dead.error is not None
    assert dead.error.startswith("abandoned")


def test_last_slot_and_last_success(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert ledger.last_slot(conn, TABLES, "logs") is None
        assert ledger.last_success(conn, TABLES, "logs") is None
    for hours, status in ((0, "ok"), (1, "ok"), (2, "failed")):
        slot = SLOT + timedelta(hours=hours)
        ledger.claim(engine, TABLES, "logs", slot, f"r{hours}", "a:1", NOW)
        ledger.finish(engine, TABLES, "logs", slot, status, hours, None, NOW)  # type: ignore[arg-type]
    ledger.claim(engine, TABLES, "other", SLOT + timedelta(hours=5), "x", "a:1", NOW)
    with engine.connect() as conn:
        assert ledger.last_slot(conn, TABLES, "logs") == SLOT + timedelta(hours=2)
        success = ledger.last_success(conn, TABLES, "logs")
    assert success is not None
    assert (success.slot, success.run_id) == (SLOT + timedelta(hours=1), "r1")


def test_runs_filters_by_rule_and_slot(engine: sa.Engine) -> None:
    for hours in range(4):
        for rule in ("a", "b"):
            ledger.claim(
                engine, TABLES, rule, SLOT + timedelta(hours=hours), f"{rule}{hours}", "h", NOW
            )
    with engine.connect() as conn:
        picked = ledger.runs(conn, TABLES, rules=["b"], since=SLOT + timedelta(hours=2))
        everything = ledger.runs(conn, TABLES)
    assert [r.run_id for r in picked] == ["b2", "b3"]
    assert [r.run_id for r in everything] == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]


def test_naive_instants_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.claim(engine, TABLES, "logs", SLOT.replace(tzinfo=None), "r", "h", NOW)
