"""Executing one rule on a SQL store: keyset batches, one short transaction each.

The walk: find the largest eligible key once (the upper bound of the whole run),
then repeatedly find the key that ends the next batch of N eligible rows after
the previous batch's end, and delete (or rewrite) the eligible rows in that key
range, re-checking the full predicate. The walk never restarts from the head of
the table, and every batch has both bounds. The batch's audit record is appended
in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from retention.anonymize import anonymize_row, is_anonymized
from retention.audit.records import BatchRecord, key_digest
from retention.audit.sql import AuditTables, append
from retention.policy import Batch
from retention.stores.partitions import Partition, drop_partition, droppable_partitions
from retention.stores.rulesql import RuleSql

__all__ = ["BatchDone", "PurgeOptions", "RuleResult", "purge"]


@dataclass(frozen=True, slots=True)
class BatchDone:
    """What one committed batch did."""

    rule: str
    batch: int
    rows: int
    size: int
    seconds: float
    key_min: Any
    key_max: Any


@dataclass
class RuleResult:
    """The outcome of one rule's run."""

    rule: str
    action: str
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    stopped: str | None = None
    longest_batch: float = 0.0
    partitions: int = 0


@dataclass(frozen=True)
class PurgeOptions:
    """Everything `purge` needs besides the rule's SQL and a connection."""

    run_id: str
    host: str
    rule_hash: str
    audit: AuditTables
    digest_key: bytes
    hash_keys: Mapping[str, bytes] = field(default_factory=dict)
    should_stop: Callable[[], bool] = lambda: False
    on_batch: Callable[[BatchDone], None] = lambda _done: None
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)


#: Keys per ``IN (...)`` list when deleting children (SQLite allows 32766 parameters).
_IN_CHUNK = 1000


def _next_size(batch: Batch, size: int, seconds: float) -> int:
    """Adapt the batch size toward the target transaction time, within bounds."""
    target = batch.target_ms / 1000
    factor = 2.0 if seconds <= 0 else min(2.0, max(0.5, target / seconds))
    return max(batch.min_size, min(batch.max_size, int(size * factor)))


def _key_text(value: Any) -> str | None:
    return None if value is None else str(value)


def purge(sql: RuleSql, conn: sa.Connection, options: PurgeOptions) -> RuleResult:
    """Run one rule to completion (or until stopped, or out of time budget) on `conn`."""
    plan = sql.plan
    rule = plan.rule
    result = RuleResult(rule.name, rule.action)
    started = time.monotonic()
    budget = (
        plan.batch.time_budget.as_timedelta().total_seconds() if plan.batch.time_budget else None
    )

    _drop_partitions(sql, conn, options, result)
    with conn.begin():
        found = conn.execute(sql.last_key()).first()
    if found is None:
        return result
    last = sql.key_value(found)

    after: Any = None
    size = plan.batch.size
    while True:
        if options.should_stop():
            result.stopped = "signal"
            break
        if budget is not None and time.monotonic() - started >= budget:
            result.stopped = "time budget"
            break
        batch_started = time.monotonic()
        started_at = options.wall_clock()
        with conn.begin():
            params = {
                **sql.key_params("last", last),
                **({} if after is None else sql.key_params("after", after)),
                "skip": size - 1,
            }
            bound = conn.execute(sql.next_bound(first=after is None), params).first()
            upto = last if bound is None else sql.key_value(bound)
            rows, keys, child_rows = _apply(sql, conn, options, after, upto, started_at)
            batch = result.batches + 1
            for child_table, deleted in child_rows:
                append(
                    conn,
                    options.audit,
                    _record(sql, options, batch, child_table, "delete", deleted, keys, started_at),
                )
            if rows:
                append(
                    conn,
                    options.audit,
                    _record(
                        sql, options, batch, sql.table.name, rule.action, rows, keys, started_at
                    ),
                )
        seconds = time.monotonic() - batch_started
        if rows:
            result.batches += 1
            result.rows += rows
            result.longest_batch = max(result.longest_batch, seconds)
            options.on_batch(BatchDone(rule.name, result.batches, rows, size, seconds, after, upto))
        after = upto
        size = _next_size(plan.batch, size, seconds)
        if upto == last:
            break
        if plan.batch.pause_ms:
            time.sleep(plan.batch.pause_ms / 1000)
    result.seconds = time.monotonic() - started
    return result


def _drop_partitions(
    sql: RuleSql, conn: sa.Connection, options: PurgeOptions, result: RuleResult
) -> None:
    """Drop whole partitions past the cutoff first (PostgreSQL range partitions)."""
    with conn.begin():
        candidates = droppable_partitions(sql, conn)
    for part, _rows in candidates:
        if options.should_stop():
            return
        started = time.monotonic()
        started_at = options.wall_clock()
        batch = result.batches + 1

        def audit(
            rows: int, part: Partition = part, batch: int = batch, started_at: datetime = started_at
        ) -> None:
            record = _record(sql, options, batch, part.name, "drop_partition", rows, [], started_at)
            append(
                conn,
                options.audit,
                replace(
                    record,
                    key_min=_key_text(part.low),
                    key_max=_key_text(part.high),
                    key_digest=None,
                ),
            )

        dropped = drop_partition(sql, conn, part, audit)
        if dropped is None:
            continue
        seconds = time.monotonic() - started
        result.batches += 1
        result.partitions += 1
        result.rows += dropped
        result.longest_batch = max(result.longest_batch, seconds)
        options.on_batch(
            BatchDone(sql.plan.rule.name, result.batches, dropped, 0, seconds, part.low, part.high)
        )


def _record(
    sql: RuleSql,
    options: PurgeOptions,
    batch: int,
    table: str,
    action: str,
    rows: int,
    parent_keys: list[Any],
    started_at: datetime,
) -> BatchRecord:
    """The audit record of one batch on `table`; for child tables the keys are the parents'."""
    plan = sql.plan
    return BatchRecord(
        run_id=options.run_id,
        rule=plan.rule.name,
        rule_hash=options.rule_hash,
        store=plan.store_name,
        table_name=table,
        action=action,
        cutoff=plan.cutoff,
        batch=batch,
        rows=rows,
        key_min=_key_text(parent_keys[0]) if parent_keys else None,
        key_max=_key_text(parent_keys[-1]) if parent_keys else None,
        key_digest=key_digest(parent_keys, options.digest_key),
        started_at=started_at,
        committed_at=options.wall_clock(),
        host=options.host,
        dry_run=False,
        outcome="committed",
    )


def _apply(
    sql: RuleSql,
    conn: sa.Connection,
    options: PurgeOptions,
    after: Any,
    upto: Any,
    now: datetime,
) -> tuple[int, list[Any], list[tuple[str, int]]]:
    """Delete or rewrite the eligible rows in (`after`, `upto`]; return (rows, their keys,
    rows deleted from each child table first)."""
    first = after is None
    bounds = {
        **sql.key_params("upto", upto),
        **({} if first else sql.key_params("after", after)),
    }
    action = sql.plan.rule.action
    if action == "anonymize":
        rows, keys = _anonymize(sql, conn, options, first, bounds, now)
        return rows, keys, []
    keys = [sql.key_value(row) for row in conn.execute(sql.select_keys(first=first), bounds)]
    if not keys:
        return 0, [], []
    child_rows: list[tuple[str, int]] = []
    for child in sql.children:
        deleted_children = 0
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            deleted_children += conn.execute(child.delete_for(chunk)).rowcount
        if deleted_children:
            child_rows.append((child.table.name, deleted_children))
    if action == "archive":
        conn.execute(sql.archive_batch(first=first), bounds)
    deleted = conn.execute(sql.delete_batch(first=first), bounds).rowcount
    return deleted, keys, child_rows


def _anonymize(
    sql: RuleSql,
    conn: sa.Connection,
    options: PurgeOptions,
    first: bool,
    bounds: dict[str, Any],
    now: datetime,
) -> tuple[int, list[Any]]:
    spec = sql.plan.rule.anonymize
    assert spec is not None
    columns = list(spec.columns)
    rows = conn.execute(sql.select_batch(columns, first=first), bounds).all()
    updates: list[dict[str, Any]] = []
    keys: list[Any] = []
    width = len(sql.keys)
    for row in rows:
        current = dict(zip(columns, row[width:], strict=True))
        if spec.marker is None and all(is_anonymized(spec.columns[c], current[c]) for c in columns):
            continue
        new = anonymize_row(spec.columns, current, keys=options.hash_keys)
        params = {f"new_{c}": v for c, v in new.items()}
        if spec.marker is not None:
            params[f"new_{spec.marker}"] = now.replace(tzinfo=None)
        key = sql.key_value(row)
        params.update(sql.key_params("key_value", key))
        updates.append(params)
        keys.append(key)
    if not updates:
        return 0, []
    written = list(spec.columns) + ([spec.marker] if spec.marker else [])
    result = conn.execute(sql.update_row(written), updates)
    return max(result.rowcount, 0) if result.rowcount is not None else len(updates), keys
