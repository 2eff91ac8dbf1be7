"""PostgreSQL range partitions wholly past the cutoff are detached and dropped (audited
with their row counts); a partition holding a held row is purged row by row instead."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.loader import load_text
from retention.planner import build_plan
from retention.runner import RunOptions, run_once
from retention.stores.partitions import drop_partition, droppable_partitions, range_partitions
from retention.stores.preview import preview
from retention.stores.rulesql import RuleSql, compile_rule
from retention.stores.schema import Catalog
from tests.conftest import NOW, audit_records, outbox_records

MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06"]
POLICY = """\
version: 1
stores: {{app: {{url: "{url}"}}}}
holds:
  - {{name: h, reason: "litigation", subjects: {{column: account_id, values: [99]}}}}
rules:
  - name: events-1y
    promise: "events 1 year"
    source: {{policy: t, clause: "1"}}
    store: app
    table: pevents
    timestamp: created_at
    period: 1 year
"""


def _create(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE pevents (id bigint NOT NULL, account_id int NOT NULL, "
            "created_at timestamp NOT NULL, PRIMARY KEY (id, created_at)) "
            "PARTITION BY RANGE (created_at)"
        )
        conn.exec_driver_sql("CREATE INDEX ON pevents (created_at)")
        bounds = [*MONTHS, "2025-07"]
        for low, high in itertools.pairwise(bounds):
            name = "pevents_" + low.replace("-", "_")
            conn.exec_driver_sql(
                f"CREATE TABLE {name} PARTITION OF pevents "
                f"FOR VALUES FROM ('{low}-01') TO ('{high}-01')"
            )
        conn.exec_driver_sql(
            "CREATE TABLE pevents_rest PARTITION OF pevents "
            "FOR VALUES FROM ('2025-07-01') TO (MAXVALUE)"
        )
        # 10 rows a day from 2025-01-01 to 2026-01-31; account 99 (held) only in March.
        conn.exec_driver_sql(
            "INSERT INTO pevents SELECT g, CASE WHEN g = 700 THEN 99 ELSE mod(g, 50) END, "
            "timestamp '2025-01-01' + (g * interval '2 hours 24 minutes') "
            "FROM generate_series(0, 3959) AS g"
        )
    engine.dispose()


def _count(url: str, where: str = "") -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.exec_driver_sql(f"SELECT count(*) FROM pevents {where}").scalar_one()
    engine.dispose()
    return int(n)


@pytest.mark.postgres
def test_whole_expired_partitions_are_dropped_and_the_rest_purged(
    postgres_url: str, tmp_path: Path
) -> None:
    _create(postgres_url)
    loaded = load_text(POLICY.format(url=postgres_url), str(tmp_path / "p.yaml"), env={})
    cutoff = (NOW - timedelta(days=365)).replace(tzinfo=None)
    expected_left = _count(postgres_url, f"WHERE created_at >= '{cutoff}' OR account_id = 99")
    estimate = next(iter(preview(build_plan(loaded.policy, NOW), None)))
    # March holds the held row; June straddles nothing (it ends 2025-07-01 < cutoff 2025-11-23).
    assert estimate.path == "partitions+batched"
    assert [name for name, _ in estimate.partitions] == [
        "pevents_2025_01",
        "pevents_2025_02",
        "pevents_2025_04",
        "pevents_2025_05",
        "pevents_2025_06",
    ]
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": "k"})
    assert report.exit_code == 0, report.outcomes[0].error
    result = report.outcomes[0].result
    assert result is not None
    assert result.partitions == 5
    assert _count(postgres_url) == expected_left
    assert _count(postgres_url, "WHERE account_id = 99") == 1
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        tables = {
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT relname FROM pg_class "
                "WHERE starts_with(relname::text, 'pevents_') AND relkind = 'r'"
            )
        }
    engine.dispose()
    records = audit_records(loaded)
    assert not outbox_records(postgres_url)
    assert tables == {"pevents_2025_03", "pevents_rest"}
    dropped = [r for r in records if r.action == "drop_partition"]
    assert sorted(r.table_name for r in dropped) == [
        "pevents_2025_01",
        "pevents_2025_02",
        "pevents_2025_04",
        "pevents_2025_05",
        "pevents_2025_06",
    ]
    assert sum(r.rows for r in records) == 3960 - expected_left


@pytest.mark.postgres
def test_an_anonymize_rule_rewrites_rows_and_never_drops_a_partition(
    postgres_url: str, tmp_path: Path
) -> None:
    """Dropping partitions is for delete rules only: de-identified rows must stay."""
    _create(postgres_url)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE pevents ADD COLUMN ip text DEFAULT '192.0.2.1'")
    engine.dispose()
    policy = POLICY.format(url=postgres_url) + (
        "    action: anonymize\n    anonymize: {columns: {ip: {strategy: 'null'}}}\n"
    )
    loaded = load_text(policy, str(tmp_path / "p.yaml"), env={})
    cutoff = (NOW - timedelta(days=365)).replace(tzinfo=None)
    expired = _count(postgres_url, f"WHERE created_at < '{cutoff}' AND account_id <> 99")
    estimate = next(iter(preview(build_plan(loaded.policy, NOW), None)))
    assert (estimate.path, estimate.affected) == ("batched", expired)
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": "k"})
    assert report.exit_code == 0, report.outcomes[0].error
    assert report.outcomes[0].result is not None
    assert report.outcomes[0].result.partitions == 0
    assert _count(postgres_url) == 3960
    assert _count(postgres_url, "WHERE ip IS NULL") == expired > 1000


KEPT_BY = {
    # A row outside the rule's filters in February keeps that partition.
    "filter": (
        "    where: {account_id: {ne: 98}}\n",
        "INSERT INTO pevents VALUES (5000, 98, '2025-02-10 08:00')",
        ["pevents_2025_01", "pevents_2025_04", "pevents_2025_05", "pevents_2025_06"],
        "WHERE created_at >= '{cutoff}' OR account_id IN (98, 99)",
    ),
    # A legal minimum of 18 months (to 2025-05-23 12:00) keeps May's last rows and June.
    "minimum": (
        "minimums:\n  - {name: m, reason: law, store: app, table: pevents, "
        "timestamp: created_at, period: 18 months}\n",
        None,
        ["pevents_2025_01", "pevents_2025_02", "pevents_2025_04"],
        "WHERE created_at >= '2025-05-23 12:00' OR account_id = 99",
    ),
}


def _statements(seen: list[str]) -> Callable[..., None]:
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    return record


@pytest.mark.postgres
@pytest.mark.parametrize("reason", sorted(KEPT_BY))
def test_a_partition_with_a_row_that_must_stay_is_purged_row_by_row(
    postgres_url: str, tmp_path: Path, reason: str
) -> None:
    """A row outside the rule's filters, or under a legal minimum, keeps its partition
    (as the held row keeps March); `plan` and `run` agree on the partitions dropped."""
    addition, extra_row, expected_drops, left_where = KEPT_BY[reason]
    _create(postgres_url)
    if extra_row:
        engine = sa.create_engine(postgres_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(extra_row)
        engine.dispose()
    policy = POLICY.format(url=postgres_url)
    if addition.startswith("minimums"):
        policy = policy.replace("rules:\n", addition + "rules:\n", 1)
    else:
        policy += addition
    loaded = load_text(policy, str(tmp_path / "p.yaml"), env={})
    cutoff = (NOW - timedelta(days=365)).replace(tzinfo=None)
    expected_left = _count(postgres_url, left_where.format(cutoff=cutoff))
    estimate = next(iter(preview(build_plan(loaded.policy, NOW), None)))
    assert estimate.error is None
    assert [name for name, _ in estimate.partitions] == expected_drops

    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": "k"})

    assert report.exit_code == 0, report.outcomes[0].error
    assert _count(postgres_url) == expected_left
    records = audit_records(loaded)
    dropped = sorted(r.table_name for r in records if r.action == "drop_partition")
    assert dropped == expected_drops
    assert [r.rows for r in records if r.action == "drop_partition"] == [
        rows for _, rows in estimate.partitions
    ]


@pytest.mark.postgres
def test_each_candidate_partition_is_scanned_once_by_plan_and_once_by_run(
    postgres_url: str, tmp_path: Path
) -> None:
    """Partitions wholly past the cutoff are picked by their bounds; deciding whether one
    can go, and counting its rows for the audit record, is one query per partition (the
    rule's count query apart, which reads every candidate row of the table once)."""
    _create(postgres_url)
    loaded = load_text(POLICY.format(url=postgres_url), str(tmp_path / "p.yaml"), env={})
    candidates = 6  # January to June end by 2025-07-01, before the cutoff; March stays
    seen: list[str] = []
    record = _statements(seen)
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        estimate = next(iter(preview(build_plan(loaded.policy, NOW), None)))
        planned, seen[:] = list(seen), []
        report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": "k"})
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert report.exit_code == 0, report.outcomes[0].error
    assert len(estimate.partitions) == 5

    def scans(statements: list[str]) -> list[str]:
        return [s for s in statements if "part_high" in s]

    assert len(scans(planned)) == candidates
    assert len(scans(seen)) == candidates
    assert all("FILTER (WHERE" in s for s in scans(seen))
    assert not [s for s in seen if s.lower().startswith('select count(*) from "')]


def _compiled(url: str, tmp_path: Path) -> tuple[RuleSql, sa.Engine]:
    loaded = load_text(POLICY.format(url=url), str(tmp_path / "p.yaml"), env={})
    plan = build_plan(loaded.policy, NOW)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sql = compile_rule(plan.rules[0], Catalog(conn, "app"))
    return sql, engine


def _attached(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'pevents'::regclass"
            )
        }


@pytest.mark.postgres
def test_a_row_that_must_stay_arriving_after_plan_keeps_the_partition(
    postgres_url: str, tmp_path: Path
) -> None:
    """`plan` found February droppable; a held row written there since is seen by the
    decision under lock, and the partition stays, unaudited."""
    _create(postgres_url)
    sql, engine = _compiled(postgres_url, tmp_path)
    try:
        with engine.connect() as conn:
            droppable = {p.name: p for p, _ in droppable_partitions(sql, conn)}
        february = droppable["pevents_2025_02"]
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO pevents VALUES (6000, 99, '2025-02-03 10:00')")
        audited: list[int] = []
        with engine.connect() as conn:
            assert drop_partition(sql, conn, february, audited.append) is None
            assert drop_partition(sql, conn, droppable["pevents_2025_01"], audited.append) == 310
        assert audited == [310]
        assert "pevents_2025_02" in _attached(engine)
        assert "pevents_2025_01" not in _attached(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_decision_blocks_writers_to_the_partition_but_not_readers(
    postgres_url: str, tmp_path: Path
) -> None:
    """While `drop_partition` counts a partition, its rows cannot change (a write waits)
    but reads go on; March, which keeps a held row, is never locked exclusively."""
    _create(postgres_url)
    sql, engine = _compiled(postgres_url, tmp_path)
    with engine.connect() as conn:
        march = next(p for p in range_partitions(sql, conn) if p.name == "pevents_2025_03")
    seen: dict[str, Any] = {}

    def probe(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "part_high" not in statement:
            return
        other = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
        try:
            with other.connect() as conn:
                conn.exec_driver_sql("SET lock_timeout = '200ms'")
                seen["read"] = conn.exec_driver_sql(
                    "SELECT count(*) FROM pevents_2025_03"
                ).scalar_one()
                conn.rollback()
                conn.exec_driver_sql("SET lock_timeout = '200ms'")
                with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                    conn.exec_driver_sql("INSERT INTO pevents VALUES (7000, 1, '2025-03-20 10:00')")
                seen["write"] = "blocked"
        finally:
            other.dispose()

    try:
        with engine.connect() as conn:
            sa.event.listen(conn, "after_cursor_execute", probe)
            assert drop_partition(sql, conn, march, lambda _rows: None) is None
        assert seen == {"read": 310, "write": "blocked"}
        assert "pevents_2025_03" in _attached(engine)
    finally:
        engine.dispose()
