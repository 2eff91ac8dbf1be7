"""`action: archive` into a table of another store: each batch is copied and committed in
the archive store, then deleted from the rule's store with its audit record. Exactly the
eligible rows move, with their values intact across SQLite, PostgreSQL and MariaDB; a
failure or crash between the two commits leaves rows in both places, never in neither,
and the next run ends with exactly one copy of each."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.dialects import mysql

from retention.cli import cli
from retention.loader import LoadedPolicy, load_policy
from retention.runner import RunOptions, RunReport, run_once
from tests.conftest import (
    MARIADB_URL,
    NOW,
    POSTGRES_URL,
    _server,
    audit_records,
    audited_rows,
    outbox_records,
    reset_database,
)

ENV = {"RETENTION_AUDIT_KEY": "archive-test-key"}

#: Microseconds survive on every database (MariaDB's DATETIME keeps none by default).
TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: An absolute instant: timestamptz on PostgreSQL, TIMESTAMP (stored in UTC) on MariaDB.
INSTANT = sa.DateTime(timezone=True).with_variant(mysql.TIMESTAMP(fsp=6), "mysql", "mariadb")


def _columns(key: bool = True) -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Integer, primary_key=key, autoincrement=False, nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("created_at", TIME, nullable=False, index=True),
        sa.Column("amount", sa.Numeric(12, 2), nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=True),
        sa.Column("flag", sa.Boolean, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("seen_at", INSTANT, nullable=True),
    ]


ITEMS = sa.Table("items", sa.MetaData(), *_columns())
ARCHIVE = sa.Table("items_archive", sa.MetaData(), *_columns())

HELD = 3
KINDS = ("login", "debug", "billing", "security")
ROWS = 240
#: A row archived long ago, by another run: it must stay as it is.
OLD_ARCHIVED = {
    "id": 100_000,
    "account_id": 9,
    "kind": "debug",
    "created_at": datetime(2020, 1, 2, 3, 4, 5, 600_000),
    "amount": Decimal("1.50"),
    "payload": b"old",
    "flag": False,
    "note": "archived in 2021",
    "seen_at": None,
}

POLICY = """\
version: 1
stores:
  app: {{url: "{src}"}}
  cold: {{url: "{dst}"}}
minimums:
  - name: items-150d
    reason: "items are kept 150 days"
    store: app
    table: items
    timestamp: created_at
    period: 150 days
holds:
  - name: litigation
    reason: "litigation"
    subjects: {{column: account_id, values: [{held}]}}
rules:
  - name: items-archive
    promise: "debug and login items leave the database after 90 days"
    source: {{policy: test, clause: "1"}}
    store: app
    table: items
    timestamp: created_at
    period: 90 days
    where: {{kind: {{in: [debug, login]}}}}
    action: archive
    archive: {{store: cold, table: {archive}}}
    batch: {{size: {size}, min_size: 5, max_size: {size}{pause}}}
"""


# --- databases ------------------------------------------------------------------------------


def _other_database(url: str) -> str:
    """The second database on the same server (``h2_archive`` -> ``h2_archive_dst``)."""
    parsed = sa.make_url(url)
    return parsed.set(database=f"{parsed.database}_dst").render_as_string(hide_password=False)


def _url(kind: str, role: str, tmp_path: Path) -> str:
    """A fresh, empty database of `kind` for the rule's store (`role` "src") or the
    archive store ("dst"); on a server the archive gets the second database."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'{role}.db'}"
    url = _server(POSTGRES_URL if kind == "postgresql" else MARIADB_URL)
    if role != "src":
        url = _other_database(url)
        _create_database(url)
    reset_database(url)
    return url


def _create_database(url: str) -> None:
    """Create the database at `url` on its (reachable) server unless it exists: a fresh CI
    machine has only the suite's own database."""
    parsed = sa.make_url(url)
    name = parsed.database
    assert name
    if parsed.get_backend_name() == "postgresql":
        server = parsed.set(database="postgres")
        exists = "SELECT 1 FROM pg_database WHERE datname = :name"
        create = f'CREATE DATABASE "{name}"'
    else:
        server = parsed.set(database="")
        exists = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"
        create = f"CREATE DATABASE `{name}`"
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text(exists), {"name": name}).first() is None:
                conn.execute(sa.text(create))
    finally:
        engine.dispose()


def _marks(src: str, dst: str) -> list[pytest.MarkDecorator]:
    names = {"postgresql": pytest.mark.postgres, "mariadb": pytest.mark.mariadb}
    return [names[k] for k in dict.fromkeys((src, dst)) if k in names]


PAIRS = [
    ("sqlite", "postgresql"),
    ("postgresql", "mariadb"),
    ("mariadb", "sqlite"),
    ("postgresql", "postgresql"),
    ("mariadb", "mariadb"),
    ("sqlite", "sqlite"),
]


@pytest.fixture(
    params=[pytest.param(p, id=f"{p[0]}-to-{p[1]}", marks=_marks(*p)) for p in PAIRS],
)
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(rule's store URL, archive store URL), both fresh and empty."""
    src, dst = request.param
    return _url(src, "src", tmp_path), _url(dst, "dst", tmp_path)


@pytest.fixture
def sqlite_pair(tmp_path: Path) -> tuple[str, str]:
    return _url("sqlite", "src", tmp_path), _url("sqlite", "dst", tmp_path)


def _engine(url: str) -> sa.Engine:
    """An engine whose sessions read and write MariaDB TIMESTAMPs in UTC, as retention's do."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "mysql":

        @sa.event.listens_for(engine, "connect")
        def _utc(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET time_zone = '+00:00'")

    return engine


def _execute(url: str, *statements: Any) -> None:
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                if isinstance(statement, str):
                    conn.exec_driver_sql(statement)
                else:
                    conn.execute(*statement)
    finally:
        engine.dispose()


def _fill(url: str, now: datetime, seed: int = 5) -> dict[int, dict[str, Any]]:
    """Create and fill ``items``; return its rows. Ages stay far from the cutoff (90 days)
    and the legal minimum (150 days), so the clock may move while a test runs."""
    rnd = random.Random(seed)
    base = now.astimezone(UTC).replace(tzinfo=None)
    rows = []
    for i in range(1, ROWS + 1):
        days = rnd.choice([rnd.randint(0, 60), rnd.randint(100, 140), rnd.randint(200, 900)])
        created = base - timedelta(days=days, seconds=rnd.randint(0, 86399))
        created = created.replace(microsecond=rnd.randint(0, 999_999))
        rows.append(
            {
                "id": i,
                "account_id": rnd.randint(1, 8),
                "kind": rnd.choice(KINDS),
                "created_at": created,
                "amount": Decimal(rnd.randint(-9_999_999, 9_999_999)) / 100
                if rnd.random() > 0.1
                else None,
                "payload": bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 40)))
                if rnd.random() > 0.1
                else None,
                "flag": rnd.choice([True, False, None]),
                "note": rnd.choice([None, "", "café ✓ 'quoted' \\ line\nbreak", "x" * 300]),
                "seen_at": (created + timedelta(hours=rnd.randint(1, 500))).replace(tzinfo=UTC)
                if rnd.random() > 0.2
                else None,
            }
        )
    engine = _engine(url)
    ITEMS.create(engine)
    with engine.begin() as conn:
        conn.execute(ITEMS.insert(), rows)
    engine.dispose()
    return _snapshot(url, "items")


def _create_archive(
    url: str, table: sa.Table = ARCHIVE, rows: Sequence[dict[str, Any]] = ()
) -> None:
    engine = _engine(url)
    table.create(engine)
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    engine.dispose()


def _plain(value: Any) -> Any:
    """A value as every database returns it: instants as naive UTC, booleans as 0/1."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _snapshot(url: str, table: str) -> dict[int, dict[str, Any]]:
    """Every row of `table`, by id, as read through its reflected columns."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            return {
                row.id: {k: _plain(v) for k, v in row._asdict().items()}
                for row in conn.execute(sa.select(reflected))
            }
    finally:
        engine.dispose()


def _eligible(rows: dict[int, dict[str, Any]], now: datetime) -> set[int]:
    """The policy, computed in plain Python: debug and login items older than the 150-day
    legal minimum (which is longer than the 90-day period), except the held account's."""
    minimum = now.astimezone(UTC).replace(tzinfo=None) - timedelta(days=150)
    return {
        key
        for key, row in rows.items()
        if row["kind"] in ("debug", "login")
        and row["created_at"] < minimum
        and row["account_id"] != HELD
    }


def _policy(
    tmp_path: Path,
    src: str,
    dst: str,
    *,
    size: int = 17,
    pause_ms: int = 0,
    archive: str = "items_archive",
) -> Path:
    path = tmp_path / "policy.yaml"
    pause = f", pause_ms: {pause_ms}" if pause_ms else ""
    path.write_text(
        POLICY.format(src=src, dst=dst, held=HELD, archive=archive, size=size, pause=pause)
    )
    return path


def _table_policy(
    tmp_path: Path,
    src: str,
    dst: str,
    table: str,
    timestamp: str = "created_at",
    *,
    period: str = "90 days",
    zone: str = "UTC",
    batch: str = "{}",
) -> Path:
    """A policy with one rule archiving `table` into ``TABLE_archive`` of the store at
    `dst`; the rule's store keeps naive times in `zone`."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        f'version: 1\nstores:\n  app: {{url: "{src}", naive_timezone: {zone}}}\n'
        f'  cold: {{url: "{dst}"}}\n'
        f"rules:\n  - name: {table}\n    promise: p\n    source: {{policy: t, clause: '1'}}\n"
        f"    store: app\n    table: {table}\n    timestamp: {timestamp}\n    period: {period}\n"
        f"    action: archive\n    archive: {{store: cold, table: {table}_archive}}\n"
        f"    batch: {batch}\n"
    )
    return path


def _prepare(src: str, dst: str, tmp_path: Path) -> tuple[dict[int, dict[str, Any]], Path]:
    """Fill the rule's store at `NOW`, create the empty archive table; return the rows
    and the policy file."""
    before = _fill(src, NOW)
    _create_archive(dst)
    return before, _policy(tmp_path, src, dst)


def _run(policy: Path, now: datetime = NOW, **kwargs: Any) -> RunReport:
    loaded = load_policy(policy, env={})
    return run_once(loaded, now, RunOptions(as_of=now), env=ENV, **kwargs)


def _loaded(policy: Path) -> LoadedPolicy:
    return load_policy(policy, env={})


def _batch_records(policy: Path) -> list[dict[str, Any]]:
    return [
        r._asdict()
        for r in audit_records(_loaded(policy))
        if r.batch > 0 and r.outcome == "committed"
    ]


def _verify(policy: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "verify", "-c", str(policy)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "chain intact" in result.output


# --- a run moves exactly the eligible rows -----------------------------------------------


def test_archive_into_another_store_moves_exactly_the_eligible_rows(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = pair
    before = _fill(src, NOW)
    _create_archive(dst, rows=[OLD_ARCHIVED])
    archive_before = _snapshot(dst, "items_archive")
    policy = _policy(tmp_path, src, dst)
    moved = _eligible(before, NOW)
    protected = {
        k
        for k, r in before.items()
        if r["kind"] in ("debug", "login")
        and r["created_at"] < NOW.replace(tzinfo=None) - timedelta(days=90)
        and k not in moved
    }
    assert len(moved) > 25, "the data set tests nothing"
    assert len(protected) > 10, "no hold or legal minimum is tested"

    report = _run(policy)

    assert report.exit_code == 0, [o.error for o in report.outcomes]
    assert report.outcomes[0].rows == len(moved)
    assert _snapshot(src, "items") == {k: r for k, r in before.items() if k not in moved}
    assert _snapshot(dst, "items_archive") == archive_before | {k: before[k] for k in moved}
    records = _batch_records(policy)
    assert len(records) > 3, "the run was not batched"
    assert sum(r["rows"] for r in records) == len(moved)
    assert {r["table_name"] for r in records} == {"items"}
    assert {r["action"] for r in records} == {"archive"}
    assert [json.loads(r["detail"]) for r in records] == [
        {"archive": {"store": "cold", "table": "items_archive", "schema": None}}
    ] * len(records)
    assert not outbox_records(src)
    _verify(policy)


def test_a_second_run_moves_nothing_and_keeps_the_archive(
    sqlite_pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = sqlite_pair
    before, policy = _prepare(src, dst, tmp_path)
    _run(policy)
    archived = _snapshot(dst, "items_archive")
    report = _run(policy)
    assert (report.exit_code, report.outcomes[0].rows) == (0, 0)
    assert (
        _snapshot(dst, "items_archive")
        == archived
        == {k: before[k] for k in _eligible(before, NOW)}
    )


COMPOSITE = sa.Table(
    "visits",
    sa.MetaData(),
    sa.Column("account_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seen_at", TIME, primary_key=True),
    sa.Column("page", sa.String(40), nullable=False),
)


@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param(("sqlite", "postgresql"), marks=pytest.mark.postgres, id="sqlite-to-pg"),
        pytest.param(
            ("postgresql", "mariadb"),
            marks=[pytest.mark.postgres, pytest.mark.mariadb],
            id="pg-to-mariadb",
        ),
        pytest.param(("mariadb", "sqlite"), marks=pytest.mark.mariadb, id="mariadb-to-sqlite"),
    ],
)
def test_a_composite_key_with_a_timestamp_is_walked_and_matched_in_the_archive(
    kinds: tuple[str, str], tmp_path: Path
) -> None:
    """Composite keys take the `limit` walk; the archive finds earlier copies by key values
    that crossed databases (a timestamp with microseconds among them)."""
    src, dst = _url(kinds[0], "src", tmp_path), _url(kinds[1], "dst", tmp_path)
    base = NOW.replace(tzinfo=None)
    rows = [
        {
            "account_id": i % 5,
            "seen_at": base - timedelta(days=10 * i, microseconds=i * 7919),
            "page": f"/p/{i}",
        }
        for i in range(1, 61)
    ]
    _execute(src, (sa.schema.CreateTable(COMPOSITE),), (COMPOSITE.insert(), rows))
    archive = COMPOSITE.to_metadata(sa.MetaData(), name="visits_archive")
    cutoff = base - timedelta(days=90)
    expired = [r for r in rows if r["seen_at"] < cutoff]
    # An interrupted run already copied two of them.
    _create_archive(dst, archive, rows=[expired[0], expired[-1]])
    policy = _table_policy(
        tmp_path, src, dst, "visits", "seen_at", batch="{size: 7, min_size: 5, max_size: 7}"
    )
    report = _run(policy)
    assert report.exit_code == 0, report.outcomes[0].error

    def keyed(url: str, table: str) -> set[tuple[Any, ...]]:
        engine = _engine(url)
        with engine.connect() as conn:
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            found = {(r.account_id, r.seen_at, r.page) for r in conn.execute(sa.select(reflected))}
        engine.dispose()
        return found

    every = {(r["account_id"], r["seen_at"], r["page"]) for r in rows}
    gone = {(r["account_id"], r["seen_at"], r["page"]) for r in expired}
    assert keyed(src, "visits") == every - gone
    assert keyed(dst, "visits_archive") == gone
    assert audited_rows(_loaded(policy), src) == len(gone) == report.outcomes[0].rows


ZONED = sa.Table(
    "zoned",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("seen_at", INSTANT, nullable=True),
)


@pytest.mark.parametrize(
    "dst_kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_timestamps_keep_their_instant_between_stores_in_different_zones(
    dst_kind: str, tmp_path: Path
) -> None:
    """The rule's store keeps naive times in Europe/Berlin, the archive store in UTC: a
    copy names the same instant (across a daylight-saving change too), to the microsecond."""
    src, dst = _url("sqlite", "src", tmp_path), _url(dst_kind, "dst", tmp_path)
    berlin = ZoneInfo("Europe/Berlin")
    local = [
        datetime(2025, 3, 30, 1, 59, 59, 999_999),  # the last instant of winter time
        datetime(2025, 3, 30, 3, 0, 0, 1),  # summer time
        datetime(2025, 7, 1, 12, 0, 0, 250_000),
    ]
    rows = [
        {"id": i, "created_at": moment, "seen_at": moment.replace(tzinfo=berlin)}
        for i, moment in enumerate(local, start=1)
    ]
    _execute(src, (sa.schema.CreateTable(ZONED),), (ZONED.insert(), rows))
    _create_archive(dst, ZONED.to_metadata(sa.MetaData(), name="zoned_archive"))
    policy = _table_policy(tmp_path, src, dst, "zoned", zone="Europe/Berlin")
    report = _run(policy)
    assert report.exit_code == 0, report.outcomes[0].error
    utc = [m.replace(tzinfo=berlin).astimezone(UTC).replace(tzinfo=None) for m in local]
    assert _snapshot(dst, "zoned_archive") == {
        i: {"id": i, "created_at": moment, "seen_at": moment}
        for i, moment in enumerate(utc, start=1)
    }
    assert utc[1] - utc[0] == timedelta(microseconds=2)


# --- interruptions and failures ------------------------------------------------------------


def test_a_rerun_after_a_crash_between_the_two_commits_ends_with_one_copy_of_each(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    """A run that died after committing the archive side of its batches left copies of
    those rows in the archive while they are still in the source (one copy is stale: the
    row changed since). The next run copies them again and deletes them."""
    src, dst = pair
    before = _fill(src, NOW)
    moved = sorted(_eligible(before, NOW))
    copied = moved[: len(moved) // 3]
    left = [before[k] for k in copied]
    left[0] = left[0] | {"note": "as it was when the crashed run copied it"}
    _create_archive(dst, rows=[OLD_ARCHIVED, *left])
    policy = _policy(tmp_path, src, dst)

    report = _run(policy)

    assert report.exit_code == 0, report.outcomes[0].error
    assert _snapshot(src, "items") == {k: r for k, r in before.items() if k not in moved}
    archived = _snapshot(dst, "items_archive")
    assert archived == {OLD_ARCHIVED["id"]: _snapshot_of(OLD_ARCHIVED)} | {
        k: before[k] for k in moved
    }
    assert audited_rows(_loaded(policy), src) == len(moved)
    _verify(policy)


def _snapshot_of(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


_REFUSE_DELETE = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE DELETE ON items WHEN old.id = {id} "
        "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by test'; END $$",
        "CREATE TRIGGER refuse BEFORE DELETE ON items FOR EACH ROW "
        "WHEN (old.id = {id}) EXECUTE FUNCTION refuse()",
    ],
    "mysql": [
        "CREATE TRIGGER refuse BEFORE DELETE ON items FOR EACH ROW "
        "BEGIN IF old.id = {id} THEN SIGNAL SQLSTATE '45000' "
        "SET MESSAGE_TEXT = 'refused by test'; END IF; END"
    ],
}


def test_a_delete_failing_after_the_archive_commit_keeps_both_then_a_rerun_finishes(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    """A trigger makes the source DELETE of one batch fail after its copy committed in the
    archive store: the rule fails, that batch's rows are in both stores (nothing lost,
    nothing audited for it); once the trigger is gone, a re-run leaves one copy each."""
    src, dst = pair
    before = _fill(src, NOW)
    _create_archive(dst)
    moved = sorted(_eligible(before, NOW))
    stuck = moved[len(moved) // 2]
    dialect = sa.make_url(src).get_dialect().name
    _execute(src, *(s.format(id=stuck) for s in _REFUSE_DELETE[dialect]))
    policy = _policy(tmp_path, src, dst)

    failed = _run(policy)

    assert failed.exit_code == 1
    assert "refused by test" in (failed.outcomes[0].error or "")
    source = _snapshot(src, "items")
    archived = _snapshot(dst, "items_archive")
    assert set(moved) <= set(source) | set(archived), "a row was lost"
    assert stuck in source, "the refused delete went through"
    assert stuck in archived, "the failed batch was not copied first"
    assert set(before) - set(source) <= set(archived)
    assert set(source) - set(moved) == set(before) - set(moved)
    assert audited_rows(_loaded(policy), src) == len(before) - len(source)
    assert archived == {k: before[k] for k in archived}

    _execute(src, "DROP TRIGGER refuse" + (" ON items" if dialect == "postgresql" else ""))
    report = _run(policy)

    assert report.exit_code == 0, report.outcomes[0].error
    assert _snapshot(src, "items") == {k: r for k, r in before.items() if k not in moved}
    assert _snapshot(dst, "items_archive") == {k: before[k] for k in moved}
    assert audited_rows(_loaded(policy), src) == len(moved)
    _verify(policy)


def _cli_run(policy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retention", "run", "-c", str(policy)],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_archive_that_refuses_the_rows_leaves_the_source_untouched_and_exits_1(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    """The archive table has a NOT NULL column the source does not fill: the first copy
    fails, nothing is deleted or archived, and `retention run` exits 1."""
    src, dst = pair
    now = datetime.now(UTC)
    before = _fill(src, now)
    strict = sa.Table(
        "items_archive",
        sa.MetaData(),
        *_columns(),
        sa.Column("archived_by", sa.String(20), nullable=False),
    )
    _create_archive(dst, strict)
    policy = _policy(tmp_path, src, dst)

    done = _cli_run(policy)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "archived_by" in done.stdout + done.stderr
    assert _snapshot(src, "items") == before
    assert _snapshot(dst, "items_archive") == {}
    assert _batch_records(policy) == []


def test_an_archive_table_dropped_after_compiling_fails_the_rule_before_a_delete(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = pair
    before, policy = _prepare(src, dst, tmp_path)

    def drop(_plan: Any, _rows: int) -> None:  # after compile and count, before batch 1
        _execute(dst, "DROP TABLE items_archive")

    report = _run(policy, on_start=drop)

    assert report.exit_code == 1
    assert report.outcomes[0].status == "failed"
    assert _snapshot(src, "items") == before
    assert _batch_records(policy) == []


# --- validate and plan ------------------------------------------------------------------------


def _validate(policy: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["validate", "-c", str(policy), "--connect"])
    # Errors are listed, then repeated in the closing summary: each counts once here.
    lines = dict.fromkeys(line for line in result.output.splitlines() if "archive" in line)
    return result.exit_code, list(lines)


def test_validate_connect_accepts_a_good_archive_store(
    sqlite_pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = sqlite_pair
    _fill(src, NOW)
    _create_archive(dst)
    code, lines = _validate(_policy(tmp_path, src, dst))
    assert (code, lines) == (0, [])


def test_validate_connect_locates_archive_store_problems(
    sqlite_pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = sqlite_pair
    _fill(src, NOW)
    keyless = sa.Table("keyless", sa.MetaData(), *_columns(key=False))
    narrow = sa.Table(
        "narrow", sa.MetaData(), *[c for c in _columns() if c.name not in ("note", "flag")]
    )
    unique = sa.Table(
        "unique_id",
        sa.MetaData(),
        sa.Column("archive_id", sa.Integer, primary_key=True),
        *_columns(key=False),
        sa.UniqueConstraint("id"),
    )
    for table in (keyless, narrow, unique):
        _create_archive(dst, table)
    where = f"{tmp_path / 'policy.yaml'}:26:35"

    assert _validate(_policy(tmp_path, src, dst, archive="keyless")) == (
        2,
        [
            f"{where}: rules[0].archive.table: archive table keyless in store 'cold' needs a "
            "primary key or unique constraint on (id), the key of items: a batch is copied "
            "and committed there before it is deleted here, and a copy left by an "
            "interrupted run is replaced by key"
        ],
    )
    assert _validate(_policy(tmp_path, src, dst, archive="narrow")) == (
        2,
        [f"{where}: rules[0].archive.table: archive table narrow lacks columns flag, note"],
    )
    assert _validate(_policy(tmp_path, src, dst, archive="unique_id")) == (0, [])
    code, lines = _validate(_policy(tmp_path, src, dst, archive="absent"))
    assert code == 2
    assert lines == [
        f"{where}: rules[0].archive.table: table 'absent' not found in store 'cold' "
        "(tables: keyless, narrow, unique_id)"
    ]
    assert _validate(_policy(tmp_path, src, src, archive="items")) == (
        2,
        [
            f"{where}: rules[0].archive.table: archive table items in store 'cold' is the "
            "rule's own table"
        ],
    )
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    code, lines = _validate(_policy(tmp_path, src, missing))
    assert code == 2
    assert lines == [
        f"{tmp_path / 'policy.yaml'}:26:22: rules[0].archive.store: SQLite database "
        f"{tmp_path / 'nowhere.db'} does not exist"
    ]


def test_plan_shows_which_statements_run_in_which_store(
    sqlite_pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = sqlite_pair
    before, policy = _prepare(src, dst, tmp_path)
    args = ["plan", "-c", str(policy), "--as-of", NOW.isoformat()]
    result = CliRunner().invoke(cli, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    rule = json.loads(result.output)["rules"][0]
    assert rule["archive"] == {"store": "cold", "schema": None, "table": "items_archive"}
    assert rule["rows"]["affected"] == len(_eligible(before, NOW))
    steps = [(s["step"], s["store"], s["sql"].split()[0]) for s in rule["sql"]]
    assert steps == [
        ("count", "app", "SELECT"),
        ("select_batch", "app", "SELECT"),
        ("archive_delete", "cold", "DELETE"),
        ("archive_insert", "cold", "INSERT"),
        ("archive_check", "cold", "SELECT"),
        ("delete_batch", "app", "DELETE"),
    ]
    assert (rule["sql"][2]["sql"], rule["sql"][2]["params"]) == (
        "DELETE FROM items_archive WHERE items_archive.id IN (?)",
        {"keys_1": "(per batch)"},
    )
    insert = rule["sql"][3]
    assert "INSERT INTO items_archive (id, account_id, kind, created_at" in insert["sql"]
    assert set(insert["params"].values()) == {"(per batch)"}
    text = CliRunner().invoke(cli, [*args, "--sql"])
    assert text.exit_code == 0, text.output
    flat = " ".join(text.output.split())
    assert (
        "items-archive: archives into items_archive in store cold: each batch is read and "
        "locked in app, copied into cold (replacing copies an interrupted run left) and "
        "committed there, then deleted in app and committed with its audit record"
    ) in flat
    assert "archive_insert (store cold)" in flat


# --- other paths -------------------------------------------------------------------------------


def test_delete_first_children_go_with_their_archived_parents(
    sqlite_pair: tuple[str, str], tmp_path: Path
) -> None:
    src, dst = sqlite_pair
    before = _fill(src, NOW)
    lines = sa.Table(
        "item_lines",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=False, index=True),
    )
    sa.Table("items", lines.metadata, sa.Column("id", sa.Integer, primary_key=True))
    _execute(
        src,
        (sa.schema.CreateTable(lines),),
        (lines.insert(), [{"id": i, "item_id": k} for i, k in enumerate(before, start=1)]),
    )
    _create_archive(dst)
    policy = _policy(tmp_path, src, dst)
    policy.write_text(policy.read_text() + "    delete_first: [item_lines]\n")
    moved = _eligible(before, NOW)

    report = _run(policy)

    assert report.exit_code == 0, report.outcomes[0].error
    assert set(_snapshot(src, "items")) == set(before) - moved
    assert {r["item_id"] for r in _snapshot(src, "item_lines").values()} == set(before) - moved
    assert set(_snapshot(dst, "items_archive")) == moved
    assert audited_rows(_loaded(policy), src, ("items",)) == len(moved)
    assert audited_rows(_loaded(policy), src, ("item_lines",)) == len(moved)


@pytest.mark.postgres
def test_a_partitioned_source_is_archived_row_by_row_never_by_dropping_partitions(
    tmp_path: Path,
) -> None:
    """Whole expired partitions are dropped only by delete rules: an archive rule copies
    every row."""
    src, dst = _url("postgresql", "src", tmp_path), _url("sqlite", "dst", tmp_path)
    _execute(
        src,
        "CREATE TABLE parts (id int NOT NULL, created_at timestamp NOT NULL, "
        "PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)",
        "CREATE TABLE parts_old PARTITION OF parts "
        "FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')",
        "CREATE TABLE parts_new PARTITION OF parts FOR VALUES FROM ('2021-01-01') TO (MAXVALUE)",
        "INSERT INTO parts SELECT g, timestamp '2020-01-01' + g * interval '1 day' "
        "FROM generate_series(0, 99) AS g",
    )
    archive = sa.Table(
        "parts_archive",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", TIME, primary_key=True),
    )
    _create_archive(dst, archive)
    policy = _table_policy(tmp_path, src, dst, "parts", period="1 year")
    report = _run(policy)
    assert report.exit_code == 0, report.outcomes[0].error
    assert report.outcomes[0].result is not None
    assert report.outcomes[0].result.partitions == 0
    assert len(_snapshot(dst, "parts_archive")) == 100
    assert _snapshot(src, "parts") == {}


# --- SIGKILL ----------------------------------------------------------------------------------


def _kill_mid_run(policy: Path, src: str, rows: int, delay: float) -> None:
    """Start ``retention run``; once the source has lost a row (the run is past its
    start-up, whatever the machine's load), wait `delay` seconds more and SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "retention", "run", "-c", str(policy)],
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = _engine(src)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            with engine.connect() as conn:
                left = conn.execute(sa.text("SELECT count(*) FROM items")).scalar_one()
            if left < rows:
                break
            time.sleep(0.02)
    finally:
        engine.dispose()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param(("sqlite", "sqlite"), id="sqlite-to-sqlite"),
        pytest.param(
            ("postgresql", "mariadb"),
            marks=[pytest.mark.postgres, pytest.mark.mariadb],
            id="pg-to-mariadb",
        ),
    ],
)
def test_sigkill_mid_run_never_loses_a_row_and_a_rerun_finishes(
    kinds: tuple[str, str], tmp_path: Path
) -> None:
    """After each kill every eligible row is in the source, the archive or both (a copy
    committed whose delete did not); the audit trail counts exactly the rows gone from the
    source; the final run leaves one archived copy of each and nothing else touched."""
    src, dst = _url(kinds[0], "src", tmp_path), _url(kinds[1], "dst", tmp_path)
    now = datetime.now(UTC)
    before = _fill(src, now)
    _create_archive(dst)
    moved = _eligible(before, now)
    policy = _policy(tmp_path, src, dst, size=5, pause_ms=25)
    landed = 0
    for delay in (0.0, 0.3, 0.6):
        _kill_mid_run(policy, src, len(_snapshot(src, "items")), delay)
        source = _snapshot(src, "items")
        archived = _snapshot(dst, "items_archive")
        assert set(before) - moved <= set(source), "a protected row was deleted"
        assert moved <= set(source) | set(archived), "a row was lost"
        assert archived == {k: before[k] for k in archived}
        assert audited_rows(_loaded(policy), src) == len(before) - len(source)
        landed += 0 < len(before) - len(source) < len(moved)
    assert landed >= 1, "no kill landed mid-run; the test proved nothing"
    done = _cli_run(policy)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert _snapshot(src, "items") == {k: r for k, r in before.items() if k not in moved}
    assert _snapshot(dst, "items_archive") == {k: before[k] for k in moved}
    assert audited_rows(_loaded(policy), src) == len(moved)
    assert not outbox_records(src)
    _verify(policy)
