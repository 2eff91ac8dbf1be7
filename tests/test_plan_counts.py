"""`plan` counts equal an independent computation, on SQLite, PostgreSQL and MariaDB,
and `plan` changes nothing."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from retention.loader import load_text
from retention.planner import build_plan
from retention.stores.preview import RuleEstimate, preview
from tests.conftest import NOW

META = sa.MetaData()
ACCOUNTS = sa.Table(
    "accounts",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("closed_at", sa.DateTime, nullable=True, index=True),
)
EVENTS = sa.Table(
    "events",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("account_id", sa.Integer, nullable=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=True, index=True),
    sa.Column("ts_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("day", sa.Date, nullable=False, index=True),
)
KINDS = ("login", "debug", "billing", "security")
HELD_ACCOUNTS = (3, 5)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0)


def _fill(url: str, seed: int = 11) -> None:
    rnd = random.Random(seed)
    accounts = [
        {
            "id": i,
            "closed_at": _naive(NOW - timedelta(days=rnd.randint(0, 120), hours=rnd.randint(0, 23)))
            if rnd.random() < 0.6
            else None,
        }
        for i in range(1, 31)
    ]
    events = []
    for i in range(1, 801):
        moment = NOW - timedelta(days=rnd.randint(0, 400), seconds=rnd.randint(0, 86399))
        events.append(
            {
                "id": i,
                "account_id": rnd.choice([None, *range(1, 35)]),
                "kind": rnd.choice(KINDS),
                "created_at": _naive(moment) if rnd.random() > 0.03 else None,
                "ts_ms": int(moment.timestamp() * 1000),
                "day": moment.date(),
            }
        )
    # Rows exactly on the cutoffs: strictly-before semantics keeps them.
    events.append(
        {
            "id": 900,
            "account_id": 1,
            "kind": "debug",
            "created_at": _naive(NOW - timedelta(days=90)),
            "ts_ms": int((NOW - timedelta(days=30)).timestamp() * 1000),
            "day": (NOW - timedelta(days=200)).date(),
        }
    )
    engine = sa.create_engine(url)
    META.create_all(engine)
    with engine.begin() as conn:
        conn.execute(ACCOUNTS.insert(), accounts)
        conn.execute(EVENTS.insert(), events)
    engine.dispose()


POLICY = """\
version: 1
stores:
  app: {{url: "{url}"}}
minimums:
  - name: keep-billing-150d
    reason: "tax law"
    store: app
    table: events
    timestamp: created_at
    period: 150 days
holds:
  - name: litigation
    reason: "litigation hold"
    subjects: {{column: account_id, values: [3, 5], tables: {{accounts: id}}}}
  - name: security-incident
    reason: "incident 42"
    rule: ms-30d
    where: {{kind: security}}
  - name: lapsed
    reason: "old case"
    expires: 2020-01-01
    rule: debug-90d
rules:
  - name: debug-90d
    promise: "debug events 90 days"
    source: {{policy: test, clause: "1"}}
    store: app
    table: events
    timestamp: created_at
    period: 90 days
    where: {{kind: {{in: [debug, login]}}}}
  - name: ms-30d
    promise: "events 30 days (epoch ms)"
    source: {{policy: test, clause: "2"}}
    store: app
    table: events
    timestamp: {{column: ts_ms, format: epoch_milliseconds}}
    period: 30 days
  - name: day-6mo
    promise: "events 6 months by day"
    source: {{policy: test, clause: "3"}}
    store: app
    table: events
    timestamp: day
    period: 6 months
    where: {{kind: {{ne: billing}}}}
  - name: after-closure
    promise: "30 days after the account is closed"
    source: {{policy: test, clause: "4"}}
    store: app
    table: events
    event: {{table: accounts, column: closed_at, join: {{account_id: id}}}}
    period: 30 days
    action: anonymize
    anonymize: {{columns: {{kind: redact}}}}
"""


def _expected(url: str, rule: str) -> tuple[int, int, int]:
    """(affected, held, minimum) computed in Python from the raw rows."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        events = [r._asdict() for r in conn.execute(sa.select(EVENTS))]
        closed = {r.id: r.closed_at for r in conn.execute(sa.select(ACCOUNTS))}
    engine.dispose()
    min_cut = _naive(NOW.replace(year=NOW.year) - timedelta(days=150))
    affected = held = minimum = 0
    for e in events:
        if rule == "debug-90d":
            candidate = (
                e["created_at"] is not None
                and e["created_at"] < _naive(NOW - timedelta(days=90))
                and e["kind"] in ("debug", "login")
            )
            is_held = e["account_id"] in HELD_ACCOUNTS
        elif rule == "ms-30d":
            candidate = e["ts_ms"] < int((NOW - timedelta(days=30)).timestamp() * 1000)
            is_held = e["account_id"] in HELD_ACCOUNTS or e["kind"] == "security"
        elif rule == "day-6mo":
            candidate = e["day"] < date(2026, 5, 23) and e["kind"] != "billing"
            is_held = e["account_id"] in HELD_ACCOUNTS
        else:
            closed_at = closed.get(e["account_id"])
            candidate = closed_at is not None and closed_at < _naive(NOW - timedelta(days=30))
            is_held = e["account_id"] in HELD_ACCOUNTS
        if not candidate:
            continue
        if is_held:
            held += 1
        elif e["created_at"] is None or e["created_at"] >= min_cut:
            minimum += 1
        else:
            affected += 1
    return affected, held, minimum


def _estimates(url: str) -> dict[str, RuleEstimate]:
    loaded = load_text(POLICY.format(url=url), "test.yaml", env={})
    plan = build_plan(loaded.policy, NOW)
    return {e.plan.name: e for e in preview(plan, None)}


def test_plan_counts_equal_an_independent_computation(db_url: str) -> None:
    _fill(db_url)
    estimates = _estimates(db_url)
    for rule in ("debug-90d", "ms-30d", "day-6mo", "after-closure"):
        est = estimates[rule]
        assert est.error is None
        assert (est.affected, est.held, est.protected_by_minimum) == _expected(db_url, rule), rule
    assert estimates["debug-90d"].affected > 0
    assert estimates["ms-30d"].held > estimates["debug-90d"].held
    assert estimates["after-closure"].affected > 0
    assert estimates["ms-30d"].applied_holds == ("litigation", "security-incident")
    assert [h.name for h in estimates["debug-90d"].plan.lapsed_holds] == ["lapsed"]


def test_plan_reports_the_oldest_affected_timestamp(db_url: str) -> None:
    _fill(db_url)
    est = _estimates(db_url)["debug-90d"]
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        oldest = conn.execute(
            sa.select(sa.func.min(EVENTS.c.created_at)).where(
                EVENTS.c.kind.in_(["debug", "login"]),
                EVENTS.c.created_at < _naive(NOW - timedelta(days=150)),
                sa.or_(EVENTS.c.account_id.is_(None), EVENTS.c.account_id.not_in(HELD_ACCOUNTS)),
            )
        ).scalar_one()
    engine.dispose()
    assert est.oldest == oldest.replace(tzinfo=UTC)


def _checksums(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        for table in (ACCOUNTS, EVENTS):
            rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
            out[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    engine.dispose()
    return out


def test_plan_changes_nothing(db_url: str, tmp_path: Path) -> None:
    _fill(db_url)
    before = _checksums(db_url)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(url=db_url))
    result = CliRunner().invoke(
        cli, ["plan", "-c", str(policy), "--as-of", NOW.isoformat(), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert '"affected"' in result.output
    assert _checksums(db_url) == before


def test_plan_connection_refuses_writes(db_url: str) -> None:
    from retention.policy import SqlStore
    from retention.stores.sql import read_only

    _fill(db_url)
    with read_only(SqlStore(url=db_url), None) as conn, pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.delete(EVENTS))
    assert _checksums(db_url)["events"] == _checksums(db_url)["events"]
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar_one() == 801
    engine.dispose()
