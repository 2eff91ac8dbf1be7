"""PostgreSQL range partitions wholly past the cutoff are detached and dropped (audited
with their row counts); a partition holding a held row is purged row by row instead."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.loader import load_text
from retention.planner import build_plan
from retention.runner import RunOptions, run_once
from retention.stores.preview import preview
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
