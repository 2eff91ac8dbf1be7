"""Read-only previews of a plan: what each rule would do, counted in the database.

Connections come from `retention.stores.sql.read_only`, which the database
itself keeps from writing, and only SELECT statements are executed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter

from retention.errors import StoreError
from retention.planner import Plan, RulePlan, limit_breach
from retention.stores.archive import (
    ReadOnlyCatalogs,
    batch_columns,
    copy_statements,
    delete_moved,
    non_key_columns,
)
from retention.stores.partitions import droppable_partitions
from retention.stores.purge import walk_of
from retention.stores.rulesql import (
    ArchiveCatalogs,
    RuleSchemaError,
    RuleSql,
    arrays_for_updates,
    compile_rule,
)
from retention.stores.schema import Catalog, from_db_time
from retention.stores.sql import read_only

__all__ = ["RuleEstimate", "Statement", "preview", "statements_for"]


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement a run executes, as the database of `store` would receive it."""

    step: str
    sql: str
    params: dict[str, Any]
    store: str


@dataclass(frozen=True)
class RuleEstimate:
    """A rule's plan with read-only counts, or the error that stops it."""

    plan: RulePlan
    candidates: int = 0
    held: int = 0
    protected_by_minimum: int = 0
    affected: int = 0
    table_rows: int = 0
    oldest: datetime | None = None
    statements: tuple[Statement, ...] = ()
    applied_holds: tuple[str, ...] = ()
    skipped_holds: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None
    limit_exceeded: str | None = field(default=None)
    #: Whole partitions a run would detach and drop: (name, rows).
    partitions: tuple[tuple[str, int], ...] = ()

    @property
    def path(self) -> str:
        """How the rule's rows go: 'partitions+batched' or 'batched'."""
        return "partitions+batched" if self.partitions else "batched"

    @property
    def estimated_batches(self) -> int:
        """Batches of the initial batch size needed for the affected rows."""
        return math.ceil(self.affected / self.plan.batch.size) if self.affected else 0


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


#: Parameters that change from batch to batch; shown as such in a plan.
PER_BATCH = "(per batch)"
_BATCH_PARAMS = ("after", "upto", "last", "n", "marked_at", "values", "keys")


def _per_batch(name: str) -> bool:
    return any(name == p or name.startswith(f"{p}_") for p in _BATCH_PARAMS)


def _placeholder(bind: BindParameter[Any]) -> Any:
    """A per-batch value to render `bind` with: a list of one (row) value for an
    expanding ``IN`` list, so that it shows as ``IN (?)`` rather than as an empty list."""
    if not bind.expanding:
        return None
    parts = getattr(bind.type, "types", None)
    return [tuple(None for _ in parts)] if parts else [None]


def _statement(step: str, stmt: sa.ClauseElement, dialect: sa.Dialect, store: str) -> Statement:
    compiled = stmt.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    binds = {bind.key: bind for bind in compiled.binds.values()}
    per_batch = {n: _placeholder(binds[n]) for n in compiled.params if _per_batch(n)}
    expanded = compiled.construct_expanded_state(per_batch)
    params = {
        k: PER_BATCH if _per_batch(k) else _json_value(v) for k, v in expanded.parameters.items()
    }
    return Statement(step, expanded.statement, params, store)


def _children_first(sql: RuleSql) -> list[tuple[str, sa.ClauseElement]]:
    """The `delete_first` deletes of each batch, in order (the batch's keys per batch)."""
    keys: sa.BindParameter[Any] = sa.bindparam("keys", expanding=True)
    return [(f"delete_first:{c.table.name}", c.delete_for(keys)) for c in sql.children]


def statements_for(
    sql: RuleSql, dialect: sa.Dialect, archive_dialect: sa.Dialect | None = None
) -> tuple[Statement, ...]:
    """The statements a run of the rule executes, in order, for display (the batch
    statements once, with their per-batch parameters marked). A rule archiving into
    another store adds that store's statements, compiled for `archive_dialect`; they
    commit there before the rule's delete."""
    plan = sql.plan
    steps: list[tuple[str, sa.ClauseElement]] = [("count", sql.count())]
    if walk_of(sql) == "limit":
        steps += [
            ("last_key", sql.last_key()),
            ("batch_keys", sql.select_keys(limit=True, lock=True)),
        ]
    action = plan.rule.action
    if action == "anonymize":
        spec = plan.rule.anonymize
        assert spec is not None
        columns = list(spec.columns)
        update = (
            sql.update_from_arrays(columns, spec.marker)
            if arrays_for_updates(dialect)
            else sql.update_from(sql.scratch_table(columns), columns, spec.marker)
        )
        if sql.in_sql is not None:
            if not dialect.update_returning:
                steps.append(("select_in_sql", sql.select_in_sql()))
            returning = dialect.update_returning
            steps.append(("update_in_sql", sql.update_in_sql(returning=returning)))
        steps += [("select_batch", sql.select_batch(columns, lock=True)), ("update_batch", update)]
    elif plan.archive_store is not None:
        steps.append(("select_batch", sql.select_batch(non_key_columns(sql), lock=True)))
        out = [_statement(step, stmt, dialect, plan.store_name) for step, stmt in steps]
        if sql.archive_table is not None and archive_dialect is not None:
            copy = copy_statements(sql.archive_table, batch_columns(sql), len(sql.keys))
            out += [
                _statement(step, stmt, archive_dialect, plan.archive_store)
                for step, stmt in (
                    ("archive_delete", copy.remove),
                    ("archive_insert", copy.insert),
                    ("archive_check", copy.check),
                )
            ]
        out += [
            _statement(step, stmt, dialect, plan.store_name) for step, stmt in _children_first(sql)
        ]
        return (*out, _statement("delete_batch", delete_moved(sql), dialect, plan.store_name))
    else:
        steps += _children_first(sql)
        if action == "archive":
            steps.append(("archive_batch", sql.archive_batch()))
        steps.append(("delete_batch", sql.delete_batch(returning=dialect.delete_returning)))
    return tuple(_statement(step, stmt, dialect, plan.store_name) for step, stmt in steps)


def _int(value: Any) -> int:
    return int(value or 0)


def _estimate(plan: RulePlan, catalog: Catalog, archives: ArchiveCatalogs) -> RuleEstimate:
    try:
        sql = compile_rule(plan, catalog, archives)
    except RuleSchemaError as exc:
        return RuleEstimate(plan, error=str(exc))
    row = catalog.conn.execute(sql.count()).one()
    table_rows = _int(catalog.conn.execute(sql.table_rows()).scalar())
    candidates, not_held, affected = _int(row.candidates), _int(row.not_held), _int(row.affected)
    oldest = from_db_time(row.oldest, sql.age_column, sql.age_format, plan.store, catalog.dialect)
    partitions = tuple((p.name, rows) for p, rows in droppable_partitions(sql, catalog.conn))
    return RuleEstimate(
        plan=plan,
        candidates=candidates,
        held=candidates - not_held,
        protected_by_minimum=not_held - affected,
        affected=affected,
        table_rows=table_rows,
        oldest=oldest,
        statements=statements_for(
            sql,
            catalog.conn.dialect,
            archives(plan.archive_store).conn.dialect if plan.archive_store else None,
        ),
        applied_holds=tuple(h.name for h in sql.applied_holds),
        skipped_holds=tuple((h.name, why) for h, why in sql.skipped_holds),
        warnings=tuple(w.message for w in sql.warnings),
        limit_exceeded=limit_breach(plan.limits, affected, table_rows),
        partitions=partitions,
    )


def preview(plan: Plan, base_dir: Path | None) -> Iterator[RuleEstimate]:
    """Count, without writing anything, what each rule of `plan` would affect.

    Rules are grouped by store, one read-only connection per store (and one per store
    that rules archive into). A rule whose table does not match the policy yields an
    estimate carrying the error.
    """
    by_store: dict[str, list[RulePlan]] = {}
    for rule_plan in plan.rules:
        by_store.setdefault(rule_plan.store_name, []).append(rule_plan)
    results: dict[str, RuleEstimate] = {}
    targets = {
        p.archive_store: p.archive_target
        for p in plan.rules
        if p.archive_store is not None and p.archive_target is not None
    }
    with ReadOnlyCatalogs(targets, base_dir) as archives:
        for store_name, rule_plans in by_store.items():
            try:
                with read_only(rule_plans[0].store, base_dir, store_name) as conn:
                    catalog = Catalog(conn, store_name)
                    for rule_plan in rule_plans:
                        results[rule_plan.name] = _estimate(rule_plan, catalog, archives)
            except StoreError as exc:
                for rule_plan in rule_plans:
                    results.setdefault(rule_plan.name, RuleEstimate(rule_plan, error=str(exc)))
    for rule_plan in plan.rules:
        yield results[rule_plan.name]
