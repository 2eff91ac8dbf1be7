"""The demo store: deterministic, identical on every database, and shaped for the seed policies.

Cutoffs are written out as literal instants (NOW minus the policy periods) and
rows are counted with plain SQL, independently of retention's planner and of the
demo module's own table objects.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.demo import (
    DEMO_TABLES,
    HOLD_SUBJECTS,
    METADATA,
    SUSPICIOUS_IP,
    build_demo,
    build_demo_backups,
    demo_files,
    demo_rows,
)
from tests.conftest import NOW

EXPECTED_COUNTS = {
    "accounts": 3000,
    "profiles": 3000,
    "sessions": 6006,
    "telemetry_events": 12006,
    "access_logs": 8006,
    "security_logs": 3030,
    "workflow_runs": 5006,
    "invoices": 5164,
    "payments": 4876,
    "deletion_requests": 50,
}

#: sha256 of each table's rows ordered by id (see `_digest`), for seed 7 at NOW.
EXPECTED_DIGESTS: dict[str, str] = {
    "accounts": "58e8b9781915e6d7fbec28e98024ef07fc167b15660ab6dad143a3d0bb5ad888",
    "profiles": "4beb1e0a164f082877d58ef188053c4fe7245645db5ba296160cf01abcf63370",
    "sessions": "df2c1c576acd8279f8591436fec97c199be9b6c3e84abd763fbbb5a415e6aec5",
    "telemetry_events": "a7b29c250efe7c90bd12a622bda19b9ff8e337235cb9f99ff53879d15c906409",
    "access_logs": "f55f6d7708baa6fa703d369e284cbf6137548005b60bb918eb77cfbc85833a3b",
    "security_logs": "29f3d443afba8211a4934dcd5ba5cb10b2ea27624eaa8356401ac585ea04bff1",
    "workflow_runs": "e8db2e850d1b38040cbacb380f8ea24ba94578bb641525bd57773a596a18b248",
    "invoices": "0492773ec29863a89a7d4b8576b770250d05bd18313e36bdfedc4d96a69a4eef",
    "payments": "7a12f008ba9f11b9206159a1ae2a68d7704f0e745c8c4ee601070c05fe17db3f",
    "deletion_requests": "cc2e48af87c35e9f73497c30d3c284f581bdc9a1e2345a8dd5eaaca619746c00",
}

# NOW (2026-11-23 12:00 UTC) minus the periods the seed policies use, as naive UTC.
CUTOFFS: dict[str, Any] = {
    "d1": datetime(2026, 11, 22, 12),  # 1 day (grace of "immediately")
    "d7": datetime(2026, 11, 16, 12),  # 7 days (grace of "promptly")
    "d30": datetime(2026, 10, 24, 12),  # 30 days
    "d90": datetime(2026, 8, 25, 12),  # 90 days
    "m12": datetime(2025, 11, 23, 12),  # 12 months
    "m24": datetime(2024, 11, 23, 12),  # 24 months
    "y6": datetime(2020, 11, 23, 12),  # 6 years
    "y7": datetime(2019, 11, 23, 12),  # 7 years
    "y8": datetime(2018, 11, 23, 12),  # 8 years
    "m12_ms": 1_763_899_200_000,  # 12 months, epoch milliseconds
}

_CLOSED = "SELECT id FROM accounts WHERE status = 'closed' AND closed_at {op} :{cut}"
_VERIFIED = "SELECT account_id FROM deletion_requests WHERE status = 'verified'"
_MINORS = "SELECT id FROM accounts WHERE minor_reported_at IS NOT NULL"
_CHILDREN = (
    "profiles",
    "sessions",
    "telemetry_events",
    "access_logs",
    "security_logs",
    "workflow_runs",
    "invoices",
    "payments",
)


def _split(table: str, condition: str) -> tuple[str, str]:
    """Two counts: rows of `table` matching `condition`, and the rest (NULLs included)."""
    older = f"SELECT COUNT(*) FROM {table} WHERE {condition}"
    younger = f"SELECT COUNT(*) FROM {table} WHERE NOT ({condition}) OR ({condition}) IS NULL"
    return older, younger


def _event_split(table: str, accounts_sql: str) -> tuple[str, str]:
    """Rows of `table` whose account is / is not in `accounts_sql` (NULL accounts: not)."""
    older = f"SELECT COUNT(*) FROM {table} WHERE account_id IN ({accounts_sql})"
    younger = (
        f"SELECT COUNT(*) FROM {table} WHERE account_id IS NULL "
        f"OR account_id NOT IN ({accounts_sql})"
    )
    return older, younger


#: Each check: (count of rows past the cutoff, count of rows not past it).
SPLITS: dict[str, tuple[str, str]] = {
    "accounts closed, 30 days": (
        _CLOSED.format(op="<", cut="d30").replace("SELECT id", "SELECT COUNT(*)"),
        _CLOSED.format(op=">=", cut="d30").replace("SELECT id", "SELECT COUNT(*)"),
    ),
    "accounts closed, 24 months": (
        _CLOSED.format(op="<", cut="m24").replace("SELECT id", "SELECT COUNT(*)"),
        _CLOSED.format(op=">=", cut="m24").replace("SELECT id", "SELECT COUNT(*)"),
    ),
    "accounts closed / active": (
        "SELECT COUNT(*) FROM accounts WHERE status = 'closed'",
        "SELECT COUNT(*) FROM accounts WHERE status = 'active' AND closed_at IS NULL",
    ),
    "minors reported, 1 day": (
        "SELECT COUNT(*) FROM accounts WHERE minor_reported_at < :d1",
        "SELECT COUNT(*) FROM accounts WHERE minor_reported_at >= :d1",
    ),
    "minors reported, 7 days": (
        "SELECT COUNT(*) FROM accounts WHERE minor_reported_at < :d7",
        "SELECT COUNT(*) FROM accounts WHERE minor_reported_at >= :d7",
    ),
    "sessions, 12 months": _split("sessions", "created_at < :m12"),
    "telemetry, 12 months (epoch ms)": _split("telemetry_events", "ts_ms < :m12_ms"),
    "access logs, 90 days": _split("access_logs", "created_at < :d90"),
    "access logs, 12 months": _split("access_logs", "created_at < :m12"),
    "anonymous access logs, 90 days": (
        "SELECT COUNT(*) FROM access_logs WHERE account_id IS NULL AND created_at < :d90",
        "SELECT COUNT(*) FROM access_logs WHERE account_id IS NULL AND created_at >= :d90",
    ),
    "security logs, 90 days": _split("security_logs", "created_at < :d90"),
    "security logs, 12 months": _split("security_logs", "created_at < :m12"),
    "suspicious ip security logs, 90 days": (
        "SELECT COUNT(*) FROM security_logs WHERE ip = :ip AND created_at < :d90",
        "SELECT COUNT(*) FROM security_logs WHERE ip = :ip AND created_at >= :d90",
    ),
    "workflow runs, 12 months": _split("workflow_runs", "started_at < :m12"),
    "invoices, 6 years": _split("invoices", "issued_at < :y6"),
    "invoices, 7 years": _split("invoices", "issued_at < :y7"),
    "invoices, 8 years": _split("invoices", "issued_at < :y8"),
    "payments, 6 years": _split("payments", "paid_at < :y6"),
    "payments, 7 years": _split("payments", "paid_at < :y7"),
    "payments, 8 years": _split("payments", "paid_at < :y8"),
    "verified deletion requests, 30 days": (
        "SELECT COUNT(*) FROM deletion_requests WHERE status = 'verified' AND verified_at < :d30",
        "SELECT COUNT(*) FROM deletion_requests WHERE status = 'verified' AND verified_at >= :d30",
    ),
    "verified deletion requests, requested 30 days": (
        "SELECT COUNT(*) FROM deletion_requests WHERE status = 'verified' AND requested_at < :d30",
        "SELECT COUNT(*) FROM deletion_requests WHERE status = 'verified' AND requested_at >= :d30",
    ),
    "unverified deletion requests (pending, rejected)": (
        "SELECT COUNT(*) FROM deletion_requests WHERE status = 'pending' AND verified_at IS NULL",
        "SELECT COUNT(*) FROM deletion_requests WHERE status = 'rejected' AND verified_at IS NULL",
    ),
    **{
        f"{table} of accounts closed, 30 days": _event_split(
            table, _CLOSED.format(op="<", cut="d30")
        )
        for table in _CHILDREN
    },
    **{
        f"{table} of accounts closed, 24 months": _event_split(
            table, _CLOSED.format(op="<", cut="m24")
        )
        for table in ("profiles", "invoices", "payments")
    },
    **{f"{table} of verified requests": _event_split(table, _VERIFIED) for table in _CHILDREN},
    **{f"{table} of minors": _event_split(table, _MINORS) for table in _CHILDREN},
}

EXPECTED_SPLITS: dict[str, tuple[int, int]] = {
    "accounts closed, 30 days": (532, 59),
    "accounts closed, 24 months": (214, 377),
    "accounts closed / active": (591, 2409),
    "minors reported, 1 day": (11, 1),
    "minors reported, 7 days": (9, 3),
    "sessions, 12 months": (2353, 3653),
    "telemetry, 12 months (epoch ms)": (4800, 7206),
    "access logs, 90 days": (5284, 2722),
    "access logs, 12 months": (3222, 4784),
    "anonymous access logs, 90 days": (786, 409),
    "security logs, 90 days": (2018, 1012),
    "security logs, 12 months": (1238, 1792),
    "suspicious ip security logs, 90 days": (13, 11),
    "workflow runs, 12 months": (1952, 3054),
    "invoices, 6 years": (577, 4587),
    "invoices, 7 years": (249, 4915),
    "invoices, 8 years": (62, 5102),
    "payments, 6 years": (545, 4331),
    "payments, 7 years": (235, 4641),
    "payments, 8 years": (57, 4819),
    "verified deletion requests, 30 days": (23, 10),
    "verified deletion requests, requested 30 days": (25, 8),
    "unverified deletion requests (pending, rejected)": (8, 9),
    "profiles of accounts closed, 30 days": (532, 2468),
    "sessions of accounts closed, 30 days": (421, 5585),
    "telemetry_events of accounts closed, 30 days": (676, 11330),
    "access_logs of accounts closed, 30 days": (397, 7609),
    "security_logs of accounts closed, 30 days": (153, 2877),
    "workflow_runs of accounts closed, 30 days": (370, 4636),
    "invoices of accounts closed, 30 days": (577, 4587),
    "payments of accounts closed, 30 days": (547, 4329),
    "profiles of accounts closed, 24 months": (214, 2786),
    "invoices of accounts closed, 24 months": (194, 4970),
    "payments of accounts closed, 24 months": (180, 4696),
    "profiles of verified requests": (33, 2967),
    "sessions of verified requests": (79, 5927),
    "telemetry_events of verified requests": (164, 11842),
    "access_logs of verified requests": (85, 7921),
    "security_logs of verified requests": (30, 3000),
    "workflow_runs of verified requests": (79, 4927),
    "invoices of verified requests": (75, 5089),
    "payments of verified requests": (71, 4805),
    "profiles of minors": (12, 2988),
    "sessions of minors": (39, 5967),
    "telemetry_events of minors": (51, 11955),
    "access_logs of minors": (36, 7970),
    "security_logs of minors": (10, 3020),
    "workflow_runs of minors": (20, 4986),
    "invoices of minors": (11, 5153),
    "payments of minors": (10, 4866),
}


def _bound(sql: str, **params: Any) -> sa.TextClause:
    """`sql` with the cutoffs it names bound with their SQL types."""
    values = {**CUTOFFS, **params}
    binds = [
        sa.bindparam(name, value, type_=sa.DateTime() if isinstance(value, datetime) else None)
        for name, value in values.items()
        if re.search(rf":{name}\b", sql)
    ]
    return sa.text(sql).bindparams(*binds)


@functools.cache
def _rows_at_now() -> dict[str, list[dict[str, Any]]]:
    """demo_rows(NOW), generated once for the module (callers must not modify it)."""
    return demo_rows(NOW)


def _normal(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of rows (in the given order) as JSON, datetimes as ISO strings."""
    normal = [{key: _normal(value) for key, value in row.items()} for row in rows]
    return hashlib.sha256(json.dumps(normal, sort_keys=True).encode()).hexdigest()


def _read_back(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every demo table's rows ordered by id, through tables reflected from the database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for name in DEMO_TABLES:
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                result = conn.execute(sa.select(table).order_by(table.c.id))
                out[name] = [dict(row) for row in result.mappings()]
            return out
    finally:
        engine.dispose()


def _scalars(url: str, statements: Mapping[str, sa.TextClause]) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {key: int(conn.execute(stmt).scalar_one()) for key, stmt in statements.items()}
    finally:
        engine.dispose()


# --- without a database --------------------------------------------------------------


def test_demo_tables_lists_every_table_parents_first() -> None:
    assert set(DEMO_TABLES) == set(METADATA.tables)
    for position, name in enumerate(DEMO_TABLES):
        parents = {fk.column.table.name for fk in METADATA.tables[name].foreign_keys}
        assert parents <= set(DEMO_TABLES[:position]), name


def test_every_retention_timestamp_column_is_indexed() -> None:
    timestamps = {
        "accounts": {"created_at", "closed_at", "minor_reported_at"},
        "profiles": {"updated_at"},
        "sessions": {"created_at"},
        "telemetry_events": {"ts_ms"},
        "access_logs": {"created_at"},
        "security_logs": {"created_at"},
        "workflow_runs": {"started_at"},
        "invoices": {"issued_at"},
        "payments": {"paid_at"},
        "deletion_requests": {"requested_at", "verified_at"},
    }
    indexed = {
        name: {next(iter(index.columns)).name for index in table.indexes}
        for name, table in METADATA.tables.items()
    }
    for name, columns in timestamps.items():
        assert columns <= indexed[name], name


def test_demo_rows_follow_now_not_the_clock() -> None:
    """Moving `now` by a day moves every timestamp by exactly a day and changes nothing else."""
    base = _rows_at_now()
    later = demo_rows(NOW + timedelta(days=1))
    for name in DEMO_TABLES:
        assert len(base[name]) == len(later[name]), name
        for before, after in zip(base[name], later[name], strict=True):
            for column, value in before.items():
                if isinstance(value, datetime):
                    assert after[column] - value == timedelta(days=1), (name, column)
                elif column == "ts_ms":
                    assert after[column] - value == 86_400_000
                elif column in {"log_text", "number"}:
                    continue  # these embed a date
                else:
                    assert after[column] == value, (name, column)


def test_demo_timestamps_are_naive_utc_whole_seconds() -> None:
    rows = _rows_at_now()
    naive_now = NOW.replace(tzinfo=None)
    for name in DEMO_TABLES:
        for row in rows[name]:
            for value in row.values():
                if isinstance(value, datetime):
                    assert value.tzinfo is None
                    assert value.microsecond == 0
                    assert value <= naive_now


def test_other_seeds_give_other_data_and_scale_multiplies_it() -> None:
    assert _digest(demo_rows(NOW, seed=8)["accounts"]) != EXPECTED_DIGESTS["accounts"]
    doubled = demo_rows(NOW, scale=2)
    assert len(doubled["accounts"]) == 2 * EXPECTED_COUNTS["accounts"]
    assert len(doubled["telemetry_events"]) == 2 * 12_000 + 6


def test_scale_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        demo_rows(NOW, scale=0)


def test_no_cutoff_reaches_three_quarters_of_a_table() -> None:
    """The policies' limits.max_fraction is 0.75: no first run on the demo may reach it."""
    for check, (older, _) in EXPECTED_SPLITS.items():
        table = SPLITS[check][0].split(" FROM ")[1].split()[0]
        assert older / EXPECTED_COUNTS[table] < 0.75, check


# --- on SQLite, PostgreSQL and MariaDB -------------------------------------------------


def _counts(url: str) -> dict[str, int]:
    return _scalars(url, {t: sa.text(f"SELECT COUNT(*) FROM {t}") for t in DEMO_TABLES})


def test_building_twice_replaces_the_tables_with_the_same_counts(db_url: str) -> None:
    """build_demo returns what the database holds; a second build replaces, not appends."""
    first = build_demo(db_url, NOW)
    assert first == EXPECTED_COUNTS
    assert _counts(db_url) == EXPECTED_COUNTS
    second = build_demo(db_url, NOW)
    assert second == EXPECTED_COUNTS
    assert _counts(db_url) == EXPECTED_COUNTS


def test_rows_are_identical_on_every_database(db_url: str) -> None:
    """Each database returns exactly the generated rows, so all three hold the same data."""
    build_demo(db_url, NOW)
    stored = {name: _digest(rows) for name, rows in _read_back(db_url).items()}
    generated = {name: _digest(rows) for name, rows in _rows_at_now().items()}
    assert stored == generated
    assert stored == EXPECTED_DIGESTS


def test_rows_lie_on_both_sides_of_every_policy_cutoff(db_url: str) -> None:
    build_demo(db_url, NOW)
    statements = {}
    for check, (older, younger) in SPLITS.items():
        statements[f"{check}|older"] = _bound(older, ip=SUSPICIOUS_IP)
        statements[f"{check}|younger"] = _bound(younger, ip=SUSPICIOUS_IP)
    counts = _scalars(db_url, statements)
    splits = {check: (counts[f"{check}|older"], counts[f"{check}|younger"]) for check in SPLITS}
    assert splits == EXPECTED_SPLITS
    assert all(older > 0 and younger > 0 for older, younger in splits.values())


def test_hold_subjects_were_closed_long_ago_and_have_rows_everywhere(db_url: str) -> None:
    build_demo(db_url, NOW)
    statements = {
        "closed before 24 months": _bound(
            "SELECT COUNT(*) FROM accounts WHERE id IN (1042, 2077) "
            "AND status = 'closed' AND closed_at < :m24"
        ),
        **{
            f"{table} {subject}": sa.text(
                f"SELECT COUNT(*) FROM {table} WHERE account_id = {subject}"
            )
            for table in (*_CHILDREN, "deletion_requests")
            for subject in HOLD_SUBJECTS
        },
    }
    assert _scalars(db_url, statements) == {
        "closed before 24 months": 2,
        "profiles 1042": 1,
        "profiles 2077": 1,
        "sessions 1042": 4,
        "sessions 2077": 3,
        "telemetry_events 1042": 4,
        "telemetry_events 2077": 3,
        "access_logs 1042": 2,
        "access_logs 2077": 3,
        "security_logs 1042": 4,
        "security_logs 2077": 2,
        "workflow_runs 1042": 3,
        "workflow_runs 2077": 3,
        "invoices 1042": 3,
        "invoices 2077": 1,
        "payments 1042": 3,
        "payments 2077": 1,
        "deletion_requests 1042": 1,
        "deletion_requests 2077": 1,
    }


def test_build_demo_leaves_other_tables_alone(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    other = sa.Table("not_demo", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    try:
        other.drop(engine, checkfirst=True)
        other.create(engine)
        with engine.begin() as conn:
            conn.execute(other.insert(), [{"id": 1}, {"id": 2}])
        build_demo(db_url, NOW)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM not_demo")).scalar_one() == 2
    finally:
        other.drop(engine, checkfirst=True)
        engine.dispose()


def test_build_demo_creates_the_folder_of_a_sqlite_file(tmp_path: Path) -> None:
    target = tmp_path / "var" / "demo.db"
    build_demo(f"sqlite:///{target}", NOW)
    assert target.is_file()


# --- the backup tree ----------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple[int, datetime]]:
    """path -> (size, naive UTC mtime) of every file below `root`."""
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_size,
            datetime.fromtimestamp(p.stat().st_mtime, UTC).replace(tzinfo=None),
        )
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_build_demo_writes_the_backup_tree_beside_a_sqlite_file(tmp_path: Path) -> None:
    build_demo(f"sqlite:///{tmp_path / 'var' / 'demo.db'}", NOW)
    tree = _tree(tmp_path / "var" / "backups")
    assert tree == {f.path: (f.size, f.mtime) for f in demo_files(NOW)}
    assert len(tree) == 139


def test_demo_files_follow_now_and_the_seed_only() -> None:
    later = NOW + timedelta(days=10)
    assert demo_files(NOW) == demo_files(NOW)
    shifted = {f.path for f in demo_files(later) if f.path.startswith("logs/")}
    assert shifted == {f.path for f in demo_files(NOW) if f.path.startswith("logs/")}
    assert demo_files(NOW, seed=8) != demo_files(NOW)
    assert max(f.mtime for f in demo_files(later)) == later.replace(tzinfo=None)


def test_dumps_are_nightly_for_two_weeks_then_weekly_over_200_days() -> None:
    dumps = [f for f in demo_files(NOW) if re.fullmatch(r"db/db-\d{4}-\d\d-\d\d\.sql\.gz", f.path)]
    days = sorted(date.fromisoformat(f.path[6:16]) for f in dumps)
    today = NOW.date()
    assert days[-15:] == [today - timedelta(days=n) for n in range(14, -1, -1)]
    assert all(d.weekday() == 6 for d in days[:-15])
    assert (today - days[0]).days <= 200 < (today - days[0]).days + 7
    for dump in dumps:  # written a few minutes after 02:00 UTC on the day it is named after
        assert dump.mtime.date() == date.fromisoformat(dump.path[6:16])
        assert dump.mtime.hour == 2
    assert [f.path for f in demo_files(NOW) if f.path.startswith("db/") and f not in dumps] == [
        "db/db-before-migration.sql.gz"
    ]


def test_logs_rotate_weekly_across_the_12_month_and_90_day_cutoffs() -> None:
    logs = {f.path: NOW.replace(tzinfo=None) - f.mtime for f in demo_files(NOW)}
    app = [age for path, age in logs.items() if path.startswith("logs/app.log.")]
    security = [age for path, age in logs.items() if path.startswith("logs/security.log.")]
    assert (len(app), len(security)) == (70, 24)
    assert sum(age > timedelta(days=365) for age in app) == 18
    assert sum(age > timedelta(days=90) for age in security) == 12
    assert logs["logs/app.log"] == timedelta(0)


def test_rebuilding_replaces_a_demo_tree_but_never_another_folder(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    build_demo_backups(root, NOW)
    (root / "db" / "stray.sql.gz").write_bytes(b"x")
    later = NOW + timedelta(days=1)
    counts = build_demo_backups(root, later)
    assert counts == {
        "db": sum(f.path.startswith("db/") for f in demo_files(later)),
        "logs": 96,
    }
    assert _tree(root) == {f.path: (f.size, f.mtime) for f in demo_files(later)}
    assert not (root / "db" / "stray.sql.gz").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a demo backup tree"):
        build_demo_backups(other, NOW)
    assert (other / "keep.txt").read_text() == "mine"
