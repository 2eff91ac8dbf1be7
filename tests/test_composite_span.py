"""A composite primary key led by an integer column, such as ``(id, created_at)`` (which
PostgreSQL requires of a table partitioned on ``created_at``), is walked by ranges of
that column: one ``DELETE ... RETURNING`` per batch, every row whose first key column
falls in the range handled whatever its other key columns hold, the audit digest over
the full key tuples. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.loader import LoadedPolicy, load_text
from retention.planner import build_plan
from retention.runner import RunOptions, RunReport, run_once
from retention.stores.purge import walk_of
from retention.stores.rulesql import compile_rule
from retention.stores.schema import Catalog
from tests.conftest import NOW, audit_records, outbox_records
from tests.test_plan_counts import _naive

ENV = {"RETENTION_AUDIT_KEY": "test-audit-key"}
HELD_ACCOUNT = 3
CUT = _naive(NOW - timedelta(days=365))
#: The legal minimum on settled_at: rows settled on or after it (or never) are kept.
MIN_CUT = _naive(NOW - timedelta(days=400))
#: The id that `_fill(crowd=n)` gives n more rows, all of them eligible.
CROWDED_ID = 150

Key = tuple[int, datetime]


def _ledger(name: str, meta: sa.MetaData) -> sa.Table:
    return sa.Table(
        name,
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime, primary_key=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("settled_at", sa.DateTime, nullable=True),
        sa.Index(f"ix_{name}_created_at", "created_at"),
    )


def _rows(crowd: int = 0) -> list[dict[str, Any]]:
    """300 ids over 900 days; every sixth id has a second row at another time (often one
    expired and one not), and `crowd` more rows share `CROWDED_ID`."""
    rows = []
    for i in range(1, 301):
        times = [_naive(NOW - timedelta(days=(i * 37) % 900, hours=i % 24))]
        if i % 6 == 0:
            times.append(_naive(NOW - timedelta(days=(i * 53) % 900, hours=(i % 24) + 1)))
        for n, created in enumerate(times):
            settled = None if (i + n) % 17 == 0 else created + timedelta(days=(i + n) % 5 * 40)
            rows.append(
                {"id": i, "created_at": created, "account_id": i % 13, "settled_at": settled}
            )
    for n in range(crowd):
        created = _naive(NOW - timedelta(days=420, hours=n))
        rows.append(
            {
                "id": CROWDED_ID,
                "created_at": created,
                "account_id": 1,
                "settled_at": created + timedelta(days=1),
            }
        )
    return rows


def _fill(url: str, *tables: str, crowd: int = 0) -> list[dict[str, Any]]:
    meta = sa.MetaData()
    rows = _rows(crowd)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for name in tables or ("ledger",):
                table = _ledger(name, meta)
                table.create(conn)
                conn.execute(table.insert(), rows)
    finally:
        engine.dispose()
    return rows


def _removable(row: dict[str, Any]) -> bool:
    """The policy below, in plain Python."""
    return (
        row["created_at"] < CUT
        and row["account_id"] != HELD_ACCOUNT
        and row["settled_at"] is not None
        and row["settled_at"] < MIN_CUT
    )


def _keys(url: str, table: str = "ledger") -> set[Key]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ledger = sa.Table(table, sa.MetaData(), autoload_with=conn)
            return {(r.id, r.created_at) for r in conn.execute(sa.select(ledger))}
    finally:
        engine.dispose()


RULE = """\
  - name: {table}-1y
    promise: "ledger rows 1 year"
    source: {{policy: t, clause: "1"}}
    store: app
    table: {table}
    timestamp: created_at
    period: 1 year
    batch: {batch}
"""


def _policy(url: str, **batches: str) -> str:
    tables = batches or {"ledger": "{size: 7, min_size: 3, max_size: 11}"}
    minimums = "".join(
        f"""\
  - name: settled-{table}
    reason: "accounting"
    store: app
    table: {table}
    timestamp: settled_at
    period: 400 days
"""
        for table in tables
    )
    return f"""\
version: 1
stores: {{app: {{url: "{url}"}}}}
holds:
  - {{name: h, reason: "litigation", subjects: {{column: account_id, values: [{HELD_ACCOUNT}]}}}}
minimums:
{minimums}rules:
""" + "".join(RULE.format(table=table, batch=batch) for table, batch in tables.items())


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The policies' audit store (``test.audit.db``) lands in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def _loaded(policy: str) -> LoadedPolicy:
    return load_text(policy, "test.yaml", env={})


def _run(policy: str) -> RunReport:
    return run_once(_loaded(policy), NOW, RunOptions(as_of=NOW), env=ENV)


@contextmanager
def _statements(table: str) -> Iterator[list[str]]:
    """The SQL statements on `table` that any engine sends meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if table in statement:
            seen.append(" ".join(statement.split()))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


#: The limit walk's comparison of whole keys, as every dialect here renders it.
_ROW_VALUE = "(ledger.id, ledger.created_at) >"
_RETURNING = re.compile(r"RETURNING (ledger\.)?id, (ledger\.)?created_at$")


def _first_id(key_text: str) -> int:
    """The first key column in a record's key_min/key_max (the repr of a key tuple)."""
    match = re.match(r"\((\d+), ", key_text)
    assert match, key_text
    return int(match[1])


def _walk(url: str, policy: str) -> tuple[list[str], str]:
    """The key columns of the policy's first rule and the walk its batches take."""
    plan = build_plan(_loaded(policy).policy, NOW)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            sql = compile_rule(plan.rules[0], Catalog(conn, "app"))
    finally:
        engine.dispose()
    return [k.name for k in sql.keys], walk_of(sql)


def test_an_integer_led_composite_key_takes_the_span_walk(db_url: str) -> None:
    _fill(db_url)
    assert _walk(db_url, _policy(db_url)) == (["id", "created_at"], "span")


def test_exactly_the_expected_rows_are_deleted_with_one_statement_per_batch(db_url: str) -> None:
    rows = _fill(db_url)
    before = {(r["id"], r["created_at"]) for r in rows}
    expected = {(r["id"], r["created_at"]) for r in rows if not _removable(r)}
    # The data exercises what it should: ids with one row removed and another kept, rows
    # kept only by the hold, rows kept only by the legal minimum.
    fates: dict[int, set[bool]] = {}
    for r in rows:
        fates.setdefault(r["id"], set()).add(_removable(r))
    assert sum(1 for f in fates.values() if f == {True, False}) > 5
    held = [r for r in rows if r["account_id"] == HELD_ACCOUNT]
    assert any(_removable({**r, "account_id": 0}) for r in held)
    assert any(
        r["created_at"] < CUT
        and r["account_id"] != HELD_ACCOUNT
        and r["settled_at"] is not None
        and r["settled_at"] >= MIN_CUT
        for r in rows
    )

    with _statements("ledger") as statements:
        report = _run(_policy(db_url))

    assert report.exit_code == 0, report.outcomes[0].error
    assert _keys(db_url) == expected
    result = report.outcomes[0].result
    assert result is not None
    assert result.rows == len(before - expected)
    assert result.batches > 10
    # Each batch is one DELETE of a range of ids (a range found empty costs one more)
    # returning every key column; no key list is selected and no statement compares
    # whole keys (the limit walk's row values).
    deletes = [s for s in statements if s.upper().startswith("DELETE")]
    assert len(deletes) >= result.batches
    assert all(_RETURNING.search(s) for s in deletes), deletes[0]
    assert not [s for s in statements if _ROW_VALUE in s]


def test_audit_rows_are_the_deleted_rows_and_each_digest_is_the_hmac_of_its_key_tuples(
    db_url: str,
) -> None:
    rows = _fill(db_url)
    before = {(r["id"], r["created_at"]) for r in rows}
    policy = _policy(db_url)

    report = _run(policy)

    assert report.exit_code == 0, report.outcomes[0].error
    removed = before - _keys(db_url)
    assert not outbox_records(db_url)
    records = [r._asdict() for r in audit_records(_loaded(policy))]
    assert len(records) > 5
    assert {r["action"] for r in records} == {"delete"}
    assert sum(r["rows"] for r in records) == len(removed)
    secret = ENV["RETENTION_AUDIT_KEY"].encode()
    covered: set[Key] = set()
    for record in records:
        low, high = _first_id(record["key_min"]), _first_id(record["key_max"])
        keys = sorted(k for k in removed if low <= k[0] <= high)
        assert record["rows"] == len(keys)
        assert record["key_min"] == str(keys[0])
        assert record["key_max"] == str(keys[-1])
        text = "".join(f"{key!r}\n" for key in keys)
        assert record["key_digest"] == hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()
        assert not covered & set(keys)
        covered.update(keys)
    assert covered == removed
    # A batch never holds more than max_size rows, even where ids repeat.
    assert max(r["rows"] for r in records) <= 11


def test_small_batches_walk_the_same_rows_as_one_batch(db_url: str) -> None:
    rows = _fill(db_url, "ledger_small", "ledger_one")
    policy = _policy(
        db_url,
        ledger_small="{size: 2, min_size: 1, max_size: 3}",
        ledger_one="{size: 100000, min_size: 100000, max_size: 100000}",
    )

    report = _run(policy)

    assert report.exit_code == 0, [o.error for o in report.outcomes]
    small, one = (o.result for o in report.outcomes)
    assert small is not None
    assert one is not None
    assert one.batches == 1
    assert small.batches > 20
    assert small.rows == one.rows == sum(1 for r in rows if _removable(r))
    assert _keys(db_url, "ledger_small") == _keys(db_url, "ledger_one")
    assert _keys(db_url, "ledger_one") == {
        (r["id"], r["created_at"]) for r in rows if not _removable(r)
    }


def test_a_first_column_value_with_more_rows_than_a_batch_goes_on_with_the_limit_walk(
    db_url: str,
) -> None:
    """Id 150 holds 12 rows, more than max_size (5): a range cannot be cut through it, so
    the span walk hands over to the limit walk there; no batch exceeds max_size and the
    same rows go."""
    rows = _fill(db_url, crowd=10)
    assert sum(1 for r in rows if r["id"] == CROWDED_ID and _removable(r)) > 5
    policy = _policy(db_url, ledger="{size: 4, min_size: 2, max_size: 5}")

    with _statements("ledger") as statements:
        report = _run(policy)

    assert report.exit_code == 0, report.outcomes[0].error
    assert _keys(db_url) == {(r["id"], r["created_at"]) for r in rows if not _removable(r)}
    records = [r._asdict() for r in audit_records(_loaded(policy))]
    assert sum(r["rows"] for r in records) == sum(1 for r in rows if _removable(r))
    assert max(r["rows"] for r in records) <= 5
    first_ids = [_first_id(r["key_min"]) for r in records]
    assert first_ids == sorted(first_ids)
    assert [s for s in statements if _ROW_VALUE in s]  # the limit walk ran


def test_a_composite_key_led_by_text_keeps_the_limit_walk(db_url: str) -> None:
    meta = sa.MetaData()
    codes = sa.Table(
        "codes",
        meta,
        sa.Column("code", sa.String(20), primary_key=True),
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    )
    rows = [
        {"code": f"c{i % 9}", "n": i, "created_at": _naive(NOW - timedelta(days=i * 11 % 700))}
        for i in range(120)
    ]
    engine = sa.create_engine(db_url)
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(codes.insert(), rows)
    finally:
        engine.dispose()
    policy = f"""\
version: 1
stores: {{app: {{url: "{db_url}"}}}}
defaults:
  batch: {{size: 4, min_size: 2, max_size: 6}}
rules:
  - name: codes-1y
    promise: "codes 1 year"
    source: {{policy: t, clause: "1"}}
    store: app
    table: codes
    timestamp: created_at
    period: 1 year
"""
    assert _walk(db_url, policy) == (["code", "n"], "limit")

    report = _run(policy)

    assert report.exit_code == 0, report.outcomes[0].error
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            left = {(r.code, r.n) for r in conn.execute(sa.select(codes))}
    finally:
        engine.dispose()
    assert left == {(r["code"], r["n"]) for r in rows if r["created_at"] >= CUT}
    assert report.outcomes[0].rows == sum(1 for r in rows if r["created_at"] < CUT)
