"""PostgreSQL range partitions: drop the ones wholly past the cutoff instead of deleting rows.

A delete rule's table range-partitioned on its timestamp column can lose whole partitions
whose upper bound is at or before the cutoff, when every row in them is eligible
(no hold, legal minimum, filter or pending-state keeps one). A run takes the
candidates by their bounds alone (`expired_partitions`) and decides each in its drop
transaction: lock the partition against writes, one scan counting the rows that must
stay and all rows (`_tally`), then, if none must stay, DETACH, DROP and the audit
record. What remains (the partition straddling the cutoff, and any partition a row
must stay in) is purged in batches as usual. `plan` counts the same way, one scan per
candidate (`droppable_partitions`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from retention.stores.rulesql import RuleSql
from retention.stores.schema import bind_time

__all__ = [
    "Partition",
    "drop_partition",
    "droppable_partitions",
    "expired_partitions",
    "range_partitions",
]

_BOUND = re.compile(r"FOR VALUES FROM \((?P<low>.+?)\) TO \((?P<high>.+?)\)$")


@dataclass(frozen=True, slots=True)
class Partition:
    """One leaf range partition; `low` is None for MINVALUE."""

    schema: str
    name: str
    low: Any
    high: Any

    @property
    def qualified(self) -> str:
        """``"schema"."name"``, quoted."""
        return f"{_quote(self.schema)}.{_quote(self.name)}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parent(sql: RuleSql) -> str:
    table = sql.table
    return f"{_quote(table.schema)}.{_quote(table.name)}" if table.schema else _quote(table.name)


def _value(text: str) -> Any:
    text = text.strip()
    if text.upper() in ("MINVALUE", "MAXVALUE"):
        return None if text.upper() == "MINVALUE" else "MAXVALUE"
    literal = text.strip("'")
    literal = re.sub(r"([+-]\d\d)$", r"\1:00", literal)
    try:
        return datetime.fromisoformat(literal)
    except ValueError:
        return "UNKNOWN"


def range_partitions(sql: RuleSql, conn: sa.Connection) -> list[Partition]:
    """Leaf partitions of the rule's table when it is range-partitioned on exactly the
    rule's timestamp column (PostgreSQL only); otherwise none."""
    rule = sql.plan.rule
    if (
        conn.dialect.name != "postgresql"
        or rule.timestamp is None
        or rule.timestamp.format != "datetime"
    ):
        return []
    table = _parent(sql)
    key = conn.execute(
        sa.text(
            "SELECT pg_get_partkeydef(c.oid) FROM pg_class c "
            "WHERE c.oid = to_regclass(:t) AND c.relkind = 'p'"
        ),
        {"t": table},
    ).scalar()
    if key is None or key.replace('"', "") != f"RANGE ({rule.timestamp.column})":
        return []
    rows = conn.execute(
        sa.text(
            "SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE i.inhparent = to_regclass(:t) AND c.relkind = 'r' ORDER BY c.relname"
        ),
        {"t": table},
    ).all()
    out = []
    for schema, name, bound in rows:
        match = _BOUND.match(bound or "")
        if match:
            out.append(Partition(schema, name, _value(match["low"]), _value(match["high"])))
    return out


def _inside(sql: RuleSql, part: Partition) -> sa.ColumnElement[bool]:
    column = sql.table.c[sql.plan.rule.age_column]
    parts = [column < sa.bindparam("part_high", part.high, type_=column.type)]
    if part.low is not None:
        parts.append(column >= sa.bindparam("part_low", part.low, type_=column.type))
    return sa.and_(*parts)


def expired_partitions(sql: RuleSql, conn: sa.Connection) -> list[Partition]:
    """Partitions wholly past the cutoff (upper bound at or before it), by their bounds
    alone: the candidates for a drop. Whether a row in one must stay is for `_tally`.
    Only for `delete` rules: an archive rule must copy its rows, an anonymize rule keeps them."""
    if sql.plan.rule.action != "delete":
        return []
    partitions = range_partitions(sql, conn)
    if not partitions:
        return []
    column = sql.table.c[sql.plan.rule.age_column]
    cutoff = bind_time(column, "datetime", sql.plan.cutoff, sql.plan.store, "postgresql")
    return [
        part
        for part in partitions
        if isinstance(part.high, datetime) and part.high <= _comparable(part.high, cutoff)
    ]


def _tally(sql: RuleSql, conn: sa.Connection, part: Partition) -> tuple[int, int]:
    """One scan of `part`: (rows that must stay, all rows). A row must stay unless it is
    eligible: held, under a legal minimum, outside the rule's filters, not past the
    cutoff, or already done (anonymize) all keep it, and so does a predicate that is NULL."""
    must_stay = sa.not_(sa.func.coalesce(sql.eligible, sa.false()))
    keep, rows = conn.execute(
        sa.select(sa.func.count().filter(must_stay), sa.func.count())
        .select_from(sql.table)
        .where(_inside(sql, part))
    ).one()
    return int(keep), int(rows)


def droppable_partitions(sql: RuleSql, conn: sa.Connection) -> list[tuple[Partition, int]]:
    """Partitions wholly past the cutoff in which every row is eligible, with their rows
    (for `plan`; a run decides again, under lock, in `drop_partition`)."""
    out = []
    for part in expired_partitions(sql, conn):
        keep, rows = _tally(sql, conn, part)
        if keep == 0:
            out.append((part, rows))
    return out


def _comparable(bound: datetime, cutoff: Any) -> Any:
    """The cutoff in the same kind (aware or naive) as a partition bound."""
    if isinstance(cutoff, datetime) and (bound.tzinfo is None) != (cutoff.tzinfo is None):
        return cutoff.replace(tzinfo=None) if bound.tzinfo is None else cutoff
    return cutoff


def drop_partition(
    sql: RuleSql, conn: sa.Connection, part: Partition, audit: Callable[[int], None]
) -> int | None:
    """Detach and drop `part` in one transaction if every row in it is eligible; `audit(rows)`
    appends the record inside that transaction. Returns the rows dropped, or None when a
    row must stay (the partition is then left to the batches).

    The decision is one scan (`_tally`) under a SHARE lock: no row can be written until the
    transaction ends, yet readers go on while the partition is counted, and a partition
    that must stay is never locked exclusively. DETACH then takes the ACCESS EXCLUSIVE
    locks (the partition's and the parent's) for the detach, the drop and the commit."""
    parent = _parent(sql)
    with conn.begin():
        conn.exec_driver_sql(f"LOCK TABLE {part.qualified} IN SHARE MODE")
        keep, rows = _tally(sql, conn, part)
        if keep:
            return None
        conn.exec_driver_sql(f"ALTER TABLE {parent} DETACH PARTITION {part.qualified}")
        conn.exec_driver_sql(f"DROP TABLE {part.qualified}")
        audit(rows)
    return rows
