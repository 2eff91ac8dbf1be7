"""`retention run` removes exactly what an independent computation says, on SQLite,
PostgreSQL and MariaDB; holds, minimums and limits keep rows; the audit trail
counts what was removed."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from retention.loader import LoadedPolicy, load_text
from retention.runner import RunOptions, RunReport, run_once
from retention.stores.purge import BatchDone
from tests.conftest import NOW, audit_records, outbox_records
from tests.test_plan_counts import ACCOUNTS, EVENTS, HELD_ACCOUNTS, POLICY, _fill, _naive

ENV = {"RETENTION_AUDIT_KEY": "test-audit-key"}
REDACTED = "[redacted]"


def _rows(url: str) -> tuple[dict[int, dict[str, Any]], dict[int, datetime | None]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        events = {r.id: r._asdict() for r in conn.execute(sa.select(EVENTS))}
        closed = {r.id: r.closed_at for r in conn.execute(sa.select(ACCOUNTS))}
    engine.dispose()
    return events, closed


def _expected_after(
    events: dict[int, dict[str, Any]], closed: dict[int, datetime | None]
) -> dict[int, dict[str, Any]]:
    """Apply the test policy's four rules, in order, in plain Python."""
    rows = {k: dict(v) for k, v in events.items()}
    min_cut = _naive(NOW - timedelta(days=150))

    def protected(e: dict[str, Any]) -> bool:
        return (
            e["account_id"] in HELD_ACCOUNTS
            or e["created_at"] is None
            or (e["created_at"] >= min_cut)
        )

    for key, e in list(rows.items()):
        if (
            e["created_at"] is not None
            and e["created_at"] < _naive(NOW - timedelta(days=90))
            and e["kind"] in ("debug", "login")
            and not protected(e)
        ):
            del rows[key]
    for key, e in list(rows.items()):
        if (
            e["ts_ms"] < int((NOW - timedelta(days=30)).timestamp() * 1000)
            and e["kind"] != "security"
            and not protected(e)
        ):
            del rows[key]
    for key, e in list(rows.items()):
        if e["day"] < date(2026, 5, 23) and e["kind"] != "billing" and not protected(e):
            del rows[key]
    for e in rows.values():
        closed_at = closed.get(e["account_id"])
        if (
            closed_at is not None
            and closed_at < _naive(NOW - timedelta(days=30))
            and not protected(e)
        ):
            e["kind"] = REDACTED
    return rows


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Policies here are loaded as ``test.yaml`` in the working directory, so their default
    audit store (``test.audit.db``) lands in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def _loaded(url: str, policy: str | None = None) -> LoadedPolicy:
    return load_text(policy or POLICY.format(url=url), "test.yaml", env={})


def _run(url: str, policy: str | None = None, **options: Any) -> RunReport:
    return run_once(_loaded(url, policy), NOW, RunOptions(as_of=NOW, **options), env=ENV)


def _audit_rows(url: str, policy: str | None = None) -> list[dict[str, Any]]:
    assert not outbox_records(url), "the run left audit records in the outbox"
    return [r._asdict() for r in audit_records(_loaded(url, policy))]


def test_run_changes_exactly_the_expired_unprotected_rows(db_url: str) -> None:
    _fill(db_url)
    events, closed = _rows(db_url)
    expected = _expected_after(events, closed)
    report = _run(db_url)
    assert report.exit_code == 0, [(o.rule, o.error) for o in report.outcomes]
    after, _ = _rows(db_url)
    assert after == expected
    removed = len(events) - len(after)
    anonymized = sum(1 for e in after.values() if e["kind"] == REDACTED)
    assert removed > 100
    assert anonymized > 0
    assert sum(o.rows for o in report.outcomes) == removed + anonymized


@pytest.mark.parametrize("placement", ["beside the policy", "in the rule's store"])
def test_audit_trail_counts_what_the_run_changed(db_url: str, placement: str) -> None:
    """Whether records commit with their batch (audit store = the rule's store) or go
    through the outbox to the default SQLite file, the trail counts every change."""
    _fill(db_url)
    policy = POLICY.format(url=db_url)
    if placement == "in the rule's store":
        policy += "audit:\n  store: app\n"
    before, _ = _rows(db_url)
    report = _run(db_url, policy)
    after, _ = _rows(db_url)
    audit = _audit_rows(db_url, policy)
    assert Path("test.audit.db").exists() == (placement == "beside the policy")
    by_rule: dict[str, int] = {}
    for record in audit:
        assert record["run_id"] == report.run_id
        by_rule[record["rule"]] = by_rule.get(record["rule"], 0) + record["rows"]
    deleted = sum(by_rule.get(r, 0) for r in ("debug-90d", "ms-30d", "day-6mo"))
    assert deleted == len(before) - len(after)
    assert by_rule["after-closure"] == sum(1 for e in after.values() if e["kind"] == REDACTED)
    hashes = [r["hash"] for r in sorted(audit, key=lambda r: r["seq"])]
    prevs = [r["prev_hash"] for r in sorted(audit, key=lambda r: r["seq"])]
    assert prevs[1:] == hashes[:-1]


def test_second_run_rewrites_no_anonymized_row_and_converges(db_url: str) -> None:
    _fill(db_url)
    _run(db_url)
    first, closed = _rows(db_url)
    report = _run(db_url)
    rows = {o.rule: o.rows for o in report.outcomes}
    assert rows["after-closure"] == 0
    # Redacting `kind` took two rows out of the 'security' hold; the second run sees that.
    assert _rows(db_url)[0] == _expected_after(first, closed)
    third = _run(db_url)
    assert [o.rows for o in third.outcomes] == [0, 0, 0, 0]


def test_small_batches_walk_the_same_rows_as_one_batch(db_url: str) -> None:
    _fill(db_url)
    events, closed = _rows(db_url)
    policy = POLICY.format(url=db_url).replace(
        "rules:\n", "defaults:\n  batch: {size: 7, min_size: 3, max_size: 11}\nrules:\n", 1
    )
    report = _run(db_url, policy)
    batches = [o.result.batches if o.result else 0 for o in report.outcomes]
    assert all(n > 3 for n in batches[:3]), batches
    assert _rows(db_url)[0] == _expected_after(events, closed)


def test_each_batch_digest_is_the_keyed_hash_of_exactly_the_keys_it_removed(db_url: str) -> None:
    """The audit record's key range and digest name the batch's removed keys: the
    HMAC-SHA256, under the audit key, of each key's repr and a newline, in key order."""
    _fill(db_url)
    before = set(_rows(db_url)[0])
    policy = POLICY.format(url=db_url).replace(
        "rules:\n", "defaults:\n  batch: {size: 7, min_size: 3, max_size: 11}\nrules:\n", 1
    )
    report = _run(db_url, policy, rules=("debug-90d",))
    assert report.exit_code == 0
    removed = before - set(_rows(db_url)[0])
    records = [r for r in _audit_rows(db_url, policy) if r["rule"] == "debug-90d"]
    assert len(records) > 3
    secret = ENV["RETENTION_AUDIT_KEY"].encode()
    covered: set[int] = set()
    for record in records:
        keys = sorted(k for k in removed if int(record["key_min"]) <= k <= int(record["key_max"]))
        assert record["rows"] == len(keys)
        text = "".join(f"{key!r}\n" for key in keys)
        assert record["key_digest"] == hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()
        covered.update(keys)
    assert covered == removed


def test_a_safety_limit_stops_the_rule_before_it_touches_a_row(db_url: str) -> None:
    _fill(db_url)
    before, _ = _rows(db_url)
    policy = POLICY.format(url=db_url).replace(
        "rules:\n", "defaults:\n  limits: {max_fraction: 0.01}\nrules:\n", 1
    )
    report = _run(db_url, policy)
    assert report.exit_code == 3
    assert {o.status for o in report.outcomes} == {"limit"}
    assert _rows(db_url)[0] == before
    forced = _run(db_url, policy, force=True)
    assert forced.exit_code == 0
    assert len(_rows(db_url)[0]) < len(before)


def test_max_rows_override_applies_to_every_rule(db_url: str) -> None:
    _fill(db_url)
    before, _ = _rows(db_url)
    report = _run(db_url, max_rows=5)
    assert report.exit_code == 3
    assert _rows(db_url)[0] == before


def test_a_failing_rule_does_not_stop_the_others(db_url: str) -> None:
    _fill(db_url)
    policy = POLICY.format(url=db_url).replace(
        "table: events\n    timestamp: day", "table: nope\n    timestamp: day"
    )
    report = _run(db_url, policy)
    assert report.exit_code == 1
    statuses = {o.rule: o.status for o in report.outcomes}
    assert statuses == {
        "debug-90d": "ok",
        "ms-30d": "ok",
        "day-6mo": "failed",
        "after-closure": "ok",
    }
    failed = next(o for o in report.outcomes if o.status == "failed")
    assert "table 'nope' not found" in (failed.error or "")


def test_deleting_referenced_parents_is_refused_naming_the_foreign_key(
    db_url: str, tmp_path: Path
) -> None:
    meta = sa.MetaData()
    parent = sa.Table(
        "parent",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime, index=True),
    )
    sa.Table(
        "child",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("parent.id", name="child_parent_fk")),
    )
    engine = sa.create_engine(db_url)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(parent.insert(), [{"id": 1, "created_at": _naive(NOW - timedelta(days=400))}])
    engine.dispose()
    policy = f"""\
version: 1
stores: {{app: {{url: "{db_url}"}}}}
rules:
  - name: parents
    promise: "parents 1 year"
    source: {{policy: t, clause: "1"}}
    store: app
    table: parent
    timestamp: created_at
    period: 1 year
"""
    report = _run(db_url, policy)
    assert report.exit_code == 1
    assert "child_parent_fk on child" in (report.outcomes[0].error or "")
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parent)).scalar_one() == 1
    engine.dispose()


@pytest.mark.parametrize("missing", ["RETENTION_AUDIT_KEY"])
def test_run_refuses_without_the_audit_key(sqlite_url: str, missing: str) -> None:
    from retention.errors import UsageError

    _fill(sqlite_url)
    loaded = load_text(POLICY.format(url=sqlite_url), "test.yaml", env={})
    with pytest.raises(UsageError, match=missing):
        run_once(loaded, NOW, RunOptions(as_of=NOW), env={})


def test_archive_copies_then_deletes_exactly_the_eligible_rows(db_url: str) -> None:
    _fill(db_url)
    archive = EVENTS.to_metadata(sa.MetaData(), name="events_archive")
    engine = sa.create_engine(db_url)
    archive.create(engine)
    engine.dispose()
    events, _ = _rows(db_url)
    policy = POLICY.format(url=db_url)
    head, _, _ = policy.partition("holds:\n")
    policy = head + (
        "holds:\n"
        "  - name: litigation\n"
        "    reason: litigation\n"
        "    subjects: {column: account_id, values: [3, 5]}\n"
        "rules:\n"
        "  - name: archive-90d\n"
        "    promise: archive debug events after 90 days\n"
        "    source: {policy: test, clause: '5'}\n"
        "    store: app\n"
        "    table: events\n"
        "    timestamp: created_at\n"
        "    period: 90 days\n"
        "    where: {kind: {in: [debug, login]}}\n"
        "    action: archive\n"
        "    archive: {table: events_archive}\n"
        "    batch: {size: 13, min_size: 5, max_size: 20}\n"
    )
    report = _run(db_url, policy)
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    after, _ = _rows(db_url)
    min_cut = _naive(NOW - timedelta(days=150))
    expected_gone = {
        k
        for k, e in events.items()
        if e["created_at"] is not None
        and e["created_at"] < min_cut
        and e["kind"] in ("debug", "login")
        and e["account_id"] not in HELD_ACCOUNTS
    }
    assert set(events) - set(after) == expected_gone
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        archived = {r.id: r._asdict() for r in conn.execute(sa.select(archive))}
    engine.dispose()
    assert archived == {k: events[k] for k in expected_gone}
    assert report.outcomes[0].rows == len(expected_gone) > 20


def _ids(url: str, table: sa.Table) -> list[int]:
    """The `id` values of `table`, sorted."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = sorted(r[0] for r in conn.execute(sa.select(table.c.id)))
    engine.dispose()
    return ids


def _invoices_and_payments() -> tuple[sa.Table, sa.Table]:
    """`inv` and its child `pay` (foreign key pay_inv_fk), in a new MetaData."""
    meta = sa.MetaData()
    parent = sa.Table(
        "inv",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False, index=True),
    )
    child = sa.Table(
        "pay",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("inv_id", sa.Integer, sa.ForeignKey("inv.id", name="pay_inv_fk"), index=True),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("paid_at", sa.DateTime, nullable=True),
    )
    return parent, child


def test_delete_first_removes_children_and_keeps_parents_with_protected_children(
    db_url: str,
) -> None:
    parent, child = _invoices_and_payments()
    old = _naive(NOW - timedelta(days=500))
    recent = _naive(NOW - timedelta(days=10))
    engine = sa.create_engine(db_url)
    parent.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            parent.insert(),
            [{"id": i, "account_id": i, "issued_at": old} for i in range(1, 7)],
        )
        conn.execute(
            child.insert(),
            [
                {"id": 10, "inv_id": 1, "account_id": 1, "paid_at": old},  # deletable
                {"id": 11, "inv_id": 1, "account_id": 1, "paid_at": old},  # deletable
                {"id": 20, "inv_id": 2, "account_id": 2, "paid_at": recent},  # under minimum
                {"id": 30, "inv_id": 3, "account_id": 3, "paid_at": old},  # held subject
                {"id": 40, "inv_id": 4, "account_id": 4, "paid_at": None},  # unknown age: kept
            ],
        )
    engine.dispose()
    policy = f"""\
version: 1
stores: {{app: {{url: "{db_url}"}}}}
minimums:
  - {{name: pay-90d, reason: "tax", store: app, table: pay, timestamp: paid_at, period: 90 days}}
holds:
  - {{name: h, reason: "litigation", subjects: {{column: account_id, values: [3]}}}}
rules:
  - name: invoices-1y
    promise: "invoices 1 year"
    source: {{policy: t, clause: "1"}}
    store: app
    table: inv
    timestamp: issued_at
    period: 1 year
    delete_first: [pay]
"""
    report = _run(db_url, policy)
    assert report.exit_code == 0, report.outcomes[0].error
    parents, children = _ids(db_url, parent), _ids(db_url, child)
    assert parents == [2, 3, 4]
    assert children == [20, 30, 40]
    audit = _audit_rows(db_url)
    assert sorted((r["table_name"], r["rows"]) for r in audit) == [("inv", 3), ("pay", 2)]


@pytest.mark.parametrize("named", ["rule", "minimums"])
def test_a_minimum_applies_whether_or_not_the_default_schema_is_named(
    db_url: str, named: str
) -> None:
    """A left-out schema is the database's default one: a minimum on `inv` protects a
    rule on `<default>.inv` (and its delete_first child), and the other way round."""
    parent, child = _invoices_and_payments()
    engine = sa.create_engine(db_url)
    parent.metadata.create_all(engine)
    default = sa.inspect(engine).default_schema_name
    with engine.begin() as conn:
        conn.execute(
            parent.insert(),
            [
                {"id": 1, "account_id": 1, "issued_at": _naive(NOW - timedelta(days=900))},
                {"id": 2, "account_id": 2, "issued_at": _naive(NOW - timedelta(days=500))},
                {"id": 3, "account_id": 3, "issued_at": _naive(NOW - timedelta(days=900))},
            ],
        )
        conn.execute(
            child.insert(),
            [
                {
                    "id": 10,
                    "inv_id": 1,
                    "account_id": 1,
                    "paid_at": _naive(NOW - timedelta(days=900)),
                },
                {
                    "id": 30,
                    "inv_id": 3,
                    "account_id": 3,
                    "paid_at": _naive(NOW - timedelta(days=10)),
                },
            ],
        )
    engine.dispose()
    on_rule = f"schema: {default}, " if named == "rule" else ""
    on_minimums = f"schema: {default}, " if named == "minimums" else ""
    policy = f"""\
version: 1
stores: {{app: {{url: "{db_url}"}}}}
minimums:
  - {{name: inv-2y, reason: tax, store: app, {on_minimums}table: inv, timestamp: issued_at,
     period: 2 years}}
  - {{name: pay-90d, reason: tax, store: app, {on_minimums}table: pay, timestamp: paid_at,
     period: 90 days}}
rules:
  - {{name: invoices-1y, promise: p, source: {{policy: t, clause: "1"}}, store: app,
     {on_rule}table: inv, timestamp: issued_at, period: 1 year, delete_first: [pay]}}
"""
    report = _run(db_url, policy)
    assert report.exit_code == 0, report.outcomes[0].error
    parents, children = _ids(db_url, parent), _ids(db_url, child)
    assert (parents, children) == ([2, 3], [30])


@pytest.mark.postgres
def test_a_minimum_without_a_schema_leaves_a_table_of_another_schema_alone(
    postgres_url: str,
) -> None:
    """`inv` in the minimum is public.inv: a rule on ledger.inv is not held back by it."""
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS ledger CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA ledger")
        for schema in ("public", "ledger"):
            conn.exec_driver_sql(
                f"CREATE TABLE {schema}.inv (id int PRIMARY KEY, issued_at timestamp)"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {schema}.inv VALUES (1, %(old)s), (2, %(old)s)",
                {"old": _naive(NOW - timedelta(days=500))},
            )
    policy = f"""\
version: 1
stores: {{app: {{url: "{postgres_url}"}}}}
minimums:
  - {{name: inv-2y, reason: tax, store: app, table: inv, timestamp: issued_at, period: 2 years}}
rules:
  - {{name: ledger-1y, promise: p, source: {{policy: t, clause: "1"}}, store: app,
     schema: ledger, table: inv, timestamp: issued_at, period: 1 year}}
  - {{name: public-1y, promise: p, source: {{policy: t, clause: "1"}}, store: app,
     table: inv, timestamp: issued_at, period: 1 year}}
"""
    try:
        report = _run(postgres_url, policy)
        assert report.exit_code == 0, [o.error for o in report.outcomes]
        with engine.connect() as conn:
            left = {
                schema: conn.exec_driver_sql(f"SELECT count(*) FROM {schema}.inv").scalar()
                for schema in ("public", "ledger")
            }
        assert left == {"public": 2, "ledger": 0}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA ledger CASCADE")
        engine.dispose()


def test_a_composite_primary_key_is_walked_by_its_integer_first_column(db_url: str) -> None:
    """Key (account_id, group_id): batches are ranges of account_id, each holding every
    group of its accounts (5 rows an account, at most 6 rows a batch); anonymize and
    delete rules (see tests/test_composite_span.py for the walk itself)."""
    meta = sa.MetaData()
    member = sa.Table(
        "member",
        meta,
        sa.Column("account_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("group_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(100), nullable=True),
        sa.Column("joined_at", sa.DateTime, nullable=False, index=True),
    )
    rows = [
        {
            "account_id": a,
            "group_id": g,
            "email": f"user{a}.{g}@Example.com",
            "joined_at": _naive(NOW - timedelta(days=(a * 7 + g * 13) % 400)),
        }
        for a in range(1, 30)
        for g in range(1, 6)
    ]
    engine = sa.create_engine(db_url)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(member.insert(), rows)
    engine.dispose()
    policy = f"""\
version: 1
stores: {{app: {{url: "{db_url}"}}}}
holds:
  - {{name: h, reason: "litigation", subjects: {{column: account_id, values: [3]}}}}
defaults:
  batch: {{size: 4, min_size: 2, max_size: 6}}
rules:
  - name: mask-90d
    promise: "mask member e-mails after 90 days"
    source: {{policy: t, clause: "1"}}
    store: app
    table: member
    timestamp: joined_at
    period: 90 days
    action: anonymize
    anonymize: {{columns: {{email: mask_email}}}}
  - name: members-180d
    promise: "members 180 days"
    source: {{policy: t, clause: "2"}}
    store: app
    table: member
    timestamp: joined_at
    period: 180 days
"""
    report = _run(db_url, policy)
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    cut90, cut180 = _naive(NOW - timedelta(days=90)), _naive(NOW - timedelta(days=180))
    expected = {}
    for r in rows:
        key = (r["account_id"], r["group_id"])
        if r["account_id"] == 3 or r["joined_at"] >= cut90:
            expected[key] = r["email"]
        elif r["joined_at"] >= cut180:
            expected[key] = "redacted@example.com"
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        actual = {(r.account_id, r.group_id): r.email for r in conn.execute(sa.select(member))}
    engine.dispose()
    assert actual == expected
    assert report.outcomes[0].result is not None
    assert report.outcomes[0].result.batches > 5


def _slow_policy(url: str, batch: str) -> str:
    head, _, _ = POLICY.format(url=url).partition("minimums:\n")
    return head + (
        "rules:\n"
        "  - name: ms-30d\n"
        "    promise: events 30 days\n"
        "    source: {policy: test, clause: '2'}\n"
        "    store: app\n"
        "    table: events\n"
        "    timestamp: {column: ts_ms, format: epoch_milliseconds}\n"
        "    period: 30 days\n"
        f"    batch: {batch}\n"
    )


def test_a_time_budget_stops_the_rule_and_the_next_run_goes_on(sqlite_url: str) -> None:
    _fill(sqlite_url)
    policy = _slow_policy(
        sqlite_url, "{size: 5, min_size: 5, max_size: 5, pause_ms: 100, time_budget: 1 second}"
    )
    first = _run(sqlite_url, policy)
    result = first.outcomes[0].result
    assert result is not None
    assert result.stopped == "time budget"
    assert 0 < result.rows < first.outcomes[0].planned
    relaxed = policy.replace("time_budget: 1 second", "time_budget: 1 hour")
    second = _run(sqlite_url, relaxed.replace("pause_ms: 100", "pause_ms: 0"))
    assert second.outcomes[0].result is not None
    assert second.outcomes[0].result.rows == first.outcomes[0].planned - result.rows


def test_batch_size_adapts_toward_the_target_time_within_bounds(sqlite_url: str) -> None:
    _fill(sqlite_url)
    loaded = load_text(
        _slow_policy(sqlite_url, "{size: 8, min_size: 4, max_size: 64, target_ms: 10000}"),
        "t.yaml",
        env={},
    )
    done: list[BatchDone] = []
    run_once(loaded, NOW, RunOptions(as_of=NOW), env=ENV, on_batch=done.append)
    # Batches far under a 10 s target double each time (an integer key: the width of the
    # key range); wider ranges than max_size are cut to max_size keys, so no batch ever
    # holds more rows than that.
    assert [d.size for d in done[:5]] == [8, 16, 32, 64, 128]
    assert max(d.rows for d in done) <= 64
    assert sum(d.rows for d in done) == 801 - len(_rows(sqlite_url)[0])


def test_run_refuses_when_the_database_clock_disagrees(sqlite_url: str) -> None:
    from retention.errors import StoreError

    _fill(sqlite_url)
    loaded = load_text(POLICY.format(url=sqlite_url), "test.yaml", env={})
    skewed = datetime.now(UTC) + timedelta(hours=2)  # this machine's clock, two hours fast
    with pytest.raises(StoreError, match=r"differ by 72\d\d s, more than max_clock_skew"):
        run_once(loaded, skewed, RunOptions(), env=ENV)
    assert len(_rows(sqlite_url)[0]) == 801


def test_each_rule_runs_once_per_slot_and_the_ledger_records_it(sqlite_url: str) -> None:
    from retention.audit.ledger import LedgerTables, runs
    from retention.audit.store import opened

    _fill(sqlite_url)
    slot = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    first = _run(sqlite_url, slot=slot)
    assert {o.status for o in first.outcomes} == {"ok"}
    before, _ = _rows(sqlite_url)
    # A second replica (or a retried cron job) firing for the same slot changes nothing.
    second = _run(sqlite_url, slot=slot)
    assert {o.status for o in second.outcomes} == {"skipped"}
    assert second.exit_code == 0
    assert _rows(sqlite_url)[0] == before
    with opened(_loaded(sqlite_url)) as audit, audit.engine.connect() as conn:
        ledger = list(runs(conn, LedgerTables()))
    assert sorted((r.rule, r.status, r.rows) for r in ledger) == sorted(
        (o.rule, "ok", o.rows) for o in first.outcomes
    )
    assert {r.slot for r in ledger} == {slot}
    assert all(r.finished_at is not None and r.run_id == first.run_id for r in ledger)
    # Another slot runs again.
    assert {o.status for o in _run(sqlite_url, slot=slot + timedelta(days=1)).outcomes} == {"ok"}
