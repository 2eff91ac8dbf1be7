"""Executing one rule on a SQL store: keyset batches, one short transaction each.

Two walks, chosen by the table's primary key (`walk_of`):

* ``span`` (a single integer key): the count query already gave the smallest and
  largest eligible key; each batch takes the next key range ``(after, after + span]``
  and deletes the eligible rows in it with one statement that returns their keys.
  The span adapts toward the target transaction time and is capped so that a batch
  holds at most ``max_size`` rows at the density just seen; a range with no row at
  all jumps to the next existing key.
* ``limit`` (composite or non-integer keys): each batch reads the next ``size``
  eligible keys after the previous batch's end, then deletes that key range.

Either way the walk never restarts from the head of the table, every batch has both
bounds, every statement re-checks the full predicate, and the batch's audit record is
written in the same transaction (`PurgeOptions.record`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from retention.anonymize import anonymize_row, is_anonymized
from retention.audit.records import BatchRecord, key_digest
from retention.policy import Batch
from retention.stores.partitions import Partition, drop_partition, droppable_partitions
from retention.stores.rulesql import RuleSql, arrays_for_updates

__all__ = ["BatchDone", "PurgeOptions", "RuleResult", "Walk", "purge", "walk_of"]

Walk = Literal["span", "limit"]


class BatchMismatch(sa.exc.InvalidRequestError):
    """A batch's statements disagreed about its rows; the batch was rolled back."""


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


def _no_record(_conn: sa.Connection, _record: BatchRecord) -> None:
    raise RuntimeError("PurgeOptions.record is not set: batches must be audited")


@dataclass(frozen=True)
class PurgeOptions:
    """Everything `purge` needs besides the rule's SQL and a connection."""

    run_id: str
    host: str
    rule_hash: str
    digest_key: bytes
    #: Writes a batch's audit record inside the batch's open transaction.
    record: Callable[[sa.Connection, BatchRecord], None] = _no_record
    #: Called on the rule's connection, outside any transaction, after each commit.
    committed: Callable[[sa.Connection], None] = lambda _conn: None
    hash_keys: Mapping[str, bytes] = field(default_factory=dict)
    should_stop: Callable[[], bool] = lambda: False
    on_batch: Callable[[BatchDone], None] = lambda _done: None
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class KeySpan:
    """The smallest and largest eligible key, from the rule's count query."""

    first: int
    last: int


#: Keys per ``IN (...)`` list when deleting children (SQLite allows 32766 parameters).
_IN_CHUNK = 1000

#: Batches aim a little under the target so that the slowest stay within it.
_AIM = 0.8


def walk_of(sql: RuleSql) -> Walk:
    """How batches walk the table: key ranges for a single integer key, else key lists."""
    return "span" if sql.integer_key else "limit"


def _factor(batch: Batch, seconds: float) -> float:
    """How much to grow (or shrink) the next batch toward the target time."""
    target = batch.target_ms / 1000 * _AIM
    return 2.0 if seconds <= 0 else min(2.0, max(0.25, target / seconds))


def _next_size(batch: Batch, size: int, seconds: float) -> int:
    """Adapt the batch size toward the target transaction time, within bounds."""
    return max(batch.min_size, min(batch.max_size, int(size * _factor(batch, seconds))))


def _next_span(batch: Batch, span: int, rows: int, seconds: float) -> int:
    """Adapt a key-range width toward the target time; where eligible rows are sparse,
    widen it so that a batch still gathers about min_size rows. (A range never holds
    more than max_size rows: `_walk_span` caps wide ranges by counting keys.)"""
    wanted = span * _factor(batch, seconds)
    if rows:
        wanted = max(wanted, min(batch.min_size * span / rows, span * 2))
    return max(1, int(wanted))


def _key_text(value: Any) -> str | None:
    return None if value is None else str(value)


def purge(
    sql: RuleSql, conn: sa.Connection, options: PurgeOptions, span: KeySpan | None = None
) -> RuleResult:
    """Run one rule to completion (or until stopped, or out of time budget) on `conn`.

    `span` is the eligible key range from the count query (single integer keys); without
    it the range is read here.
    """
    plan = sql.plan
    result = RuleResult(plan.rule.name, plan.rule.action)
    started = time.monotonic()
    budget = (
        plan.batch.time_budget.as_timedelta().total_seconds() if plan.batch.time_budget else None
    )

    def stop() -> bool:
        if options.should_stop():
            result.stopped = "signal"
        elif budget is not None and time.monotonic() - started >= budget:
            result.stopped = "time budget"
        return result.stopped is not None

    _drop_partitions(sql, conn, options, result)
    scratch = _scratch(sql, conn)
    try:
        if walk_of(sql) == "span":
            _walk_span(sql, conn, options, result, stop, scratch, span)
        else:
            _walk_limit(sql, conn, options, result, stop, scratch)
    finally:
        if scratch is not None:
            with conn.begin():
                scratch.drop(conn, checkfirst=True)
    result.seconds = time.monotonic() - started
    return result


def _scratch(sql: RuleSql, conn: sa.Connection) -> sa.Table | None:
    """The temporary table anonymize batches write their new values through."""
    spec = sql.plan.rule.anonymize
    if sql.plan.rule.action != "anonymize" or spec is None or arrays_for_updates(conn.dialect):
        return None
    scratch = sql.scratch_table(list(spec.columns))
    with conn.begin():
        scratch.drop(conn, checkfirst=True)
        scratch.create(conn)
    return scratch


def _walk_span(
    sql: RuleSql,
    conn: sa.Connection,
    options: PurgeOptions,
    result: RuleResult,
    stop: Callable[[], bool],
    scratch: sa.Table | None,
    span: KeySpan | None,
) -> None:
    batch = sql.plan.batch
    if span is None:
        with conn.begin():
            found = conn.execute(sql.count()).one()
        if found.first_key is None:
            return
        span = KeySpan(int(found.first_key), int(found.last_key))
    after, last, width = span.first - 1, span.last, batch.size
    while after < last and not stop():
        upto = min(after + width, last)
        if upto - after > batch.max_size:
            with conn.begin():
                capped = conn.execute(
                    sql.nth_key(), {"after": after, "upto": upto, "skip": batch.max_size - 1}
                ).scalar()
            upto = upto if capped is None else int(capped)
        seconds, rows, _end = _batch(sql, conn, options, result, scratch, after, upto, width)
        width = _next_span(batch, width, rows, seconds)
        if rows == 0:
            with conn.begin():
                following = conn.execute(sql.next_key(), {"upto": upto}).scalar()
            if following is None:
                return
            upto = max(upto, int(following) - 1)
        after = upto
        if batch.pause_ms and after < last:
            time.sleep(batch.pause_ms / 1000)


def _walk_limit(
    sql: RuleSql,
    conn: sa.Connection,
    options: PurgeOptions,
    result: RuleResult,
    stop: Callable[[], bool],
    scratch: sa.Table | None,
) -> None:
    batch = sql.plan.batch
    with conn.begin():
        found = conn.execute(sql.last_key()).first()
    if found is None:
        return
    last = sql.key_value(found)
    after: Any = None
    size = batch.size
    while not stop():
        seconds, _rows, end = _batch(
            sql, conn, options, result, scratch, after, last, size, limit=True
        )
        size = _next_size(batch, size, seconds)
        if end is None or end == last:
            return
        after = end
        if batch.pause_ms:
            time.sleep(batch.pause_ms / 1000)


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
            options.record(
                conn,
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
        options.committed(conn)
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


def _batch(
    sql: RuleSql,
    conn: sa.Connection,
    options: PurgeOptions,
    result: RuleResult,
    scratch: sa.Table | None,
    after: Any,
    upto: Any,
    size: int,
    *,
    limit: bool = False,
) -> tuple[float, int, Any]:
    """One batch in one transaction with its audit record: the eligible rows in the key
    range (`after`, `upto`] (`after` None: from the start), or with `limit` the first
    `size` eligible keys in it (else `size` is the range's width, for reporting).
    Return (seconds, rows, the key that ended the batch, or None when no eligible key
    was left)."""
    started = time.monotonic()
    started_at = options.wall_clock()
    first = after is None
    lower = {} if first else sql.key_params("after", after)
    rule = sql.plan.rule
    with conn.begin():
        keys: list[Any] | None = None
        if limit:
            bounds = {**lower, **sql.key_params("upto", upto), "n": size}
            keys = _keys_of(
                sql, conn.execute(sql.select_keys(first, limit=True, lock=True), bounds)
            )
            if not keys:
                return time.monotonic() - started, 0, None
            upto = keys[-1]
        bounds = {**lower, **sql.key_params("upto", upto)}
        child_rows: list[tuple[str, int]] = []
        if rule.action == "anonymize":
            rows, done = _anonymize(sql, conn, options, scratch, first, bounds, started_at)
        else:
            rows, done, child_rows = _delete(sql, conn, first, bounds, keys)
        number = result.batches + 1
        for child_table, deleted in child_rows:
            record = _record(sql, options, number, child_table, "delete", deleted, done, started_at)
            options.record(conn, record)
        if rows:
            record = _record(
                sql, options, number, sql.table.name, rule.action, rows, done, started_at
            )
            options.record(conn, record)
    seconds = time.monotonic() - started
    if rows:
        options.committed(conn)
        result.batches += 1
        result.rows += rows
        result.longest_batch = max(result.longest_batch, seconds)
        options.on_batch(BatchDone(rule.name, result.batches, rows, size, seconds, after, upto))
    return seconds, rows, upto


def _delete(
    sql: RuleSql,
    conn: sa.Connection,
    first: bool,
    bounds: dict[str, Any],
    keys: list[Any] | None,
) -> tuple[int, list[Any], list[tuple[str, int]]]:
    """Delete (archiving first if the rule says so) the eligible rows in the batch's
    range; return (rows, their keys in order, rows deleted from each child table)."""
    child_rows: list[tuple[str, int]] = []
    if sql.children:
        if keys is None:
            keys = _keys_of(sql, conn.execute(sql.select_keys(first, lock=True), bounds))
        for child in sql.children:
            deleted_children = 0
            for start in range(0, len(keys), _IN_CHUNK):
                chunk = keys[start : start + _IN_CHUNK]
                deleted_children += conn.execute(child.delete_for(chunk)).rowcount
            if deleted_children:
                child_rows.append((child.table.name, deleted_children))
    archived = None
    if sql.plan.rule.action == "archive":
        archived = conn.execute(sql.archive_batch(first=first), bounds).rowcount
    if conn.dialect.delete_returning:
        returned = conn.execute(sql.delete_batch(first, returning=True), bounds)
        deleted = sorted(_keys_of(sql, returned))
        if keys is not None and deleted != sorted(keys):
            raise BatchMismatch(
                f"{len(deleted)} rows deleted where {len(keys)} keys were locked; rolled back"
            )
    else:
        if keys is None:
            keys = _keys_of(sql, conn.execute(sql.select_keys(first, lock=True), bounds))
        count = conn.execute(sql.delete_batch(first), bounds).rowcount
        if count != len(keys):
            raise BatchMismatch(f"{count} rows deleted where {len(keys)} keys were locked")
        deleted = keys
    if archived is not None and archived != len(deleted):
        raise BatchMismatch(f"{archived} rows archived but {len(deleted)} deleted; rolled back")
    return len(deleted), deleted, child_rows


def _anonymize(
    sql: RuleSql,
    conn: sa.Connection,
    options: PurgeOptions,
    scratch: sa.Table | None,
    first: bool,
    bounds: dict[str, Any],
    now: datetime,
) -> tuple[int, list[Any]]:
    """Rewrite the batch's eligible rows: read them (locked), compute the new values in
    Python, and apply them with one UPDATE joined to them (bound as arrays on
    PostgreSQL, else through the scratch table)."""
    spec = sql.plan.rule.anonymize
    assert spec is not None
    columns = list(spec.columns)
    rows = conn.execute(sql.select_batch(columns, first, lock=True), bounds).all()
    updates: list[dict[str, Any]] = []
    keys: list[Any] = []
    width = len(sql.keys)
    names = [k.name for k in sql.keys]
    for row in rows:
        current = dict(zip(columns, row[width:], strict=True))
        if spec.marker is None and all(is_anonymized(spec.columns[c], current[c]) for c in columns):
            continue
        new = anonymize_row(spec.columns, current, keys=options.hash_keys)
        new.update(zip(names, row[:width], strict=True))
        updates.append(new)
        keys.append(sql.key_value(row))
    if not updates:
        return 0, []
    params = {**bounds, "marked_at": now.replace(tzinfo=None)}
    if scratch is None:
        order = names + columns
        params.update({f"values_{i}": [u[n] for u in updates] for i, n in enumerate(order)})
        statement = sql.update_from_arrays(columns, spec.marker, first)
    else:
        conn.execute(sa.delete(scratch))
        conn.execute(scratch.insert(), updates)
        statement = sql.update_from(scratch, columns, spec.marker, first)
    changed = conn.execute(statement, params).rowcount
    if changed != len(updates):
        raise BatchMismatch(f"{changed} rows rewritten where {len(updates)} were locked")
    return changed, keys


def _keys_of(sql: RuleSql, result: sa.CursorResult[Any]) -> list[Any]:
    """The keys in a result whose first columns are the key columns, fetched at once
    (row-by-row iteration costs more than the DELETE on large batches)."""
    if len(sql.keys) == 1:
        return list(result.scalars().all())
    return [tuple(row[: len(sql.keys)]) for row in result.all()]
