"""End to end on the demo store: `run` with each shipped policy changes exactly what an
independent, row-by-row evaluation of the policy says, on SQLite, PostgreSQL and MariaDB;
and `plan` counts the same on all three databases."""

from __future__ import annotations

import calendar
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.anonymize import anonymize_value
from retention.cli import cli
from retention.demo import DEMO_TABLES, build_demo
from retention.filters import Condition, Op
from retention.loader import load_policy
from retention.planner import plan_rule
from retention.policy import MaskEmailStrategy, NullStrategy, Policy, RedactStrategy, Rule
from retention.runner import RunOptions, run_once
from tests.conftest import NOW

POLICIES = Path(__file__).resolve().parents[1] / "policies"
ENV = {"RETENTION_AUDIT_KEY": "demo-test-key", "RETENTION_HASH_KEY": "demo-hash-key"}
Rows = dict[str, dict[int, dict[str, Any]]]
MARKED = "<marked>"


def _snapshot(url: str) -> Rows:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine, only=list(DEMO_TABLES))
    out: Rows = {}
    with engine.connect() as conn:
        for name in DEMO_TABLES:
            table = meta.tables[name]
            out[name] = {r.id: r._asdict() for r in conn.execute(sa.select(table))}
    engine.dispose()
    return out


# --- an independent evaluator: SQL's three-valued logic, row by row, in Python --------------

Truth = bool | None  # None is SQL's UNKNOWN


def _and(values: list[Truth]) -> Truth:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _compare(value: Any, cond: Condition) -> Truth:
    if cond.op is Op.IS_NULL:
        return (value is None) == bool(cond.value)
    if value is None:
        return None
    operand: Any = cond.value
    if isinstance(value, datetime) and isinstance(operand, str):
        operand = datetime.fromisoformat(operand)
    checks: dict[Op, Callable[[], bool]] = {
        Op.EQ: lambda: value == operand,
        Op.NE: lambda: value != operand,
        Op.IN: lambda: value in operand,
        Op.NOT_IN: lambda: value not in operand,
        Op.LT: lambda: value < operand,
        Op.LTE: lambda: value <= operand,
        Op.GT: lambda: value > operand,
        Op.GTE: lambda: value >= operand,
    }
    return checks[cond.op]()


def _before(value: Any, fmt: str, cutoff: datetime) -> Truth:
    if value is None:
        return None
    floored = cutoff.replace(microsecond=0)
    if fmt == "epoch_milliseconds":
        return bool(
            value < calendar.timegm(cutoff.utctimetuple()) * 1000 + cutoff.microsecond // 1000
        )
    if fmt == "epoch_seconds":
        return bool(value < calendar.timegm(cutoff.utctimetuple()))
    return bool(value < floored.replace(tzinfo=None))


def _pending(rule: Rule, row: dict[str, Any]) -> Truth:
    spec = rule.anonymize
    if spec is None:
        return True
    if spec.marker:
        return row[spec.marker] is None
    parts: list[Truth] = []
    for column, strategy in spec.columns.items():
        value = row[column]
        if isinstance(strategy, NullStrategy):
            parts.append(value is not None)
        elif isinstance(strategy, RedactStrategy):
            parts.append(None if value is None else value != strategy.value)
        elif isinstance(strategy, MaskEmailStrategy):
            parts.append(
                None
                if value is None
                else value != strategy.local and not value.startswith(f"{strategy.local}@")
            )
    if any(p is True for p in parts):
        return True
    return None if any(p is None for p in parts) else False


def evaluate(policy: Policy, tables: Rows) -> Rows:
    """Apply every enabled rule in order to a copy of `tables`."""
    state = {name: {k: dict(v) for k, v in rows.items()} for name, rows in tables.items()}
    for rule in policy.rules:
        if not rule.enabled:
            continue
        plan = plan_rule(policy, rule, NOW)
        rows = state[rule.table]
        index: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        if rule.event is not None:
            for ev in state[rule.event.table].values():
                index.setdefault(tuple(ev[rc] for rc in rule.event.join.values()), []).append(ev)
        for key, row in list(rows.items()):
            if rule.timestamp is not None:
                expired = _before(row[rule.timestamp.column], rule.timestamp.format, plan.cutoff)
            else:
                event = rule.event
                assert event is not None
                local = tuple(row[lc] for lc in event.join)
                matches = [] if None in local else index.get(local, [])
                expired = any(
                    _and(
                        [_before(ev[event.column], event.format, plan.cutoff)]
                        + [_compare(ev[c.column], c) for c in event.where]
                    )
                    is True
                    for ev in matches
                )
            scope = _and([expired] + [_compare(row[c.column], c) for c in rule.where])
            scope = _and([scope, _pending(rule, row)])
            if scope is not True:
                continue
            held: list[Truth] = []
            for hold in plan.holds:
                if hold.subjects is not None:
                    column = hold.subjects.column_for(rule.table)
                    if column in row:
                        value = row[column]
                        held.append(False if value is None else value in hold.subjects.values)
                else:
                    held.append(_and([_compare(row[c.column], c) for c in hold.where]))
            if any(h is not False for h in held):
                continue
            minimums = [
                _before(row[m.minimum.timestamp.column], m.minimum.timestamp.format, m.cutoff)
                for m in plan.minimums
            ]
            if _and(minimums) is not True:
                continue
            if rule.action in ("delete", "archive"):
                del rows[key]
            else:
                spec = rule.anonymize
                assert spec is not None
                for column, strategy in spec.columns.items():
                    row[column] = anonymize_value(
                        strategy, row[column], key=ENV["RETENTION_HASH_KEY"].encode()
                    )
                if spec.marker:
                    row[spec.marker] = MARKED
    return state


def _mark(policy: Policy, tables: Rows) -> Rows:
    """Replace marker timestamps (set from the wall clock) by a placeholder."""
    markers = {
        (r.table, r.anonymize.marker) for r in policy.rules if r.anonymize and r.anonymize.marker
    }
    for table, column in markers:
        for row in tables[table].values():
            if row[column] is not None:
                row[column] = MARKED
    return tables


def _check_run(url: str, name: str) -> None:
    build_demo(url, NOW)
    loaded = load_policy(POLICIES / f"{name}.yaml", env={"RETENTION_DB_URL": url})
    before = _snapshot(url)
    expected = evaluate(loaded.policy, before)
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env=ENV)
    assert report.exit_code == 0, [(o.rule, o.error) for o in report.outcomes if o.error]
    after = _mark(loaded.policy, _snapshot(url))
    for table in DEMO_TABLES:
        assert after[table] == expected[table], f"{name}: {table} differs"
    changed = sum(len(before[t]) - len(after[t]) for t in DEMO_TABLES)
    assert changed > 1000
    assert sum(o.rows for o in report.outcomes) >= changed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["infraux", "andron", "aurigen", "indigo"])
def test_run_on_sqlite_changes_exactly_what_the_policy_says(sqlite_url: str, name: str) -> None:
    _check_run(sqlite_url, name)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("name", ["infraux", "aurigen"])
def test_run_on_postgres_changes_exactly_what_the_policy_says(postgres_url: str, name: str) -> None:
    _check_run(postgres_url, name)


@pytest.mark.slow
@pytest.mark.mariadb
@pytest.mark.parametrize("name", ["infraux", "aurigen"])
def test_run_on_mariadb_changes_exactly_what_the_policy_says(mariadb_url: str, name: str) -> None:
    _check_run(mariadb_url, name)


def _plan_counts(url: str, name: str) -> dict[str, dict[str, int]]:
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            "-c",
            str(POLICIES / f"{name}.yaml"),
            "--as-of",
            NOW.isoformat(),
            "--format",
            "json",
        ],
        env={"RETENTION_DB_URL": url},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    return {r["rule"]: r["rows"] for r in document["rules"]}


@pytest.mark.slow
def test_plan_counts_agree_on_sqlite_postgres_and_mariadb(
    sqlite_url: str, postgres_url: str, mariadb_url: str
) -> None:
    for url in (sqlite_url, postgres_url, mariadb_url):
        build_demo(url, NOW)
    for name in ("infraux", "andron", "aurigen", "indigo"):
        reference = _plan_counts(sqlite_url, name)
        assert sum(r["affected"] for r in reference.values()) > 1000
        assert _plan_counts(postgres_url, name) == reference, name
        assert _plan_counts(mariadb_url, name) == reference, name
