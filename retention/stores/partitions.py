"""PostgreSQL range partitions: drop the ones wholly past the cutoff instead of deleting rows.

A table range-partitioned on the rule's timestamp column can lose whole partitions
whose upper bound is at or before the cutoff, when every row in them is eligible
(no hold, legal minimum, filter or pending-state keeps one). Each drop runs in one
transaction: lock the partition, re-check that no row must stay, DETACH, DROP,
and append the audit record. What remains (the partition straddling the cutoff)
is purged in batches as usual.
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

__all__ = ["Partition", "drop_partition", "droppable_partitions", "range_partitions"]

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


def droppable_partitions(sql: RuleSql, conn: sa.Connection) -> list[tuple[Partition, int]]:
    """Partitions wholly past the cutoff in which every row is eligible, with their rows."""
    partitions = range_partitions(sql, conn)
    if not partitions:
        return []
    column = sql.table.c[sql.plan.rule.age_column]
    cutoff = bind_time(column, "datetime", sql.plan.cutoff, sql.plan.store, "postgresql")
    out = []
    for part in partitions:
        if not isinstance(part.high, datetime) or part.high > _comparable(part.high, cutoff):
            continue
        keep = conn.execute(
            sa.select(sa.func.count())
            .select_from(sql.table)
            .where(_inside(sql, part), sa.not_(sa.func.coalesce(sql.eligible, sa.false())))
        ).scalar_one()
        if keep == 0:
            rows = conn.execute(
                sa.select(sa.func.count()).select_from(sql.table).where(_inside(sql, part))
            ).scalar_one()
            out.append((part, int(rows)))
    return out


def _comparable(bound: datetime, cutoff: Any) -> Any:
    """The cutoff in the same kind (aware or naive) as a partition bound."""
    if isinstance(cutoff, datetime) and (bound.tzinfo is None) != (cutoff.tzinfo is None):
        return cutoff.replace(tzinfo=None) if bound.tzinfo is None else cutoff
    return cutoff


def drop_partition(
    sql: RuleSql, conn: sa.Connection, part: Partition, audit: Callable[[int], None]
) -> int | None:
    """Detach and drop `part` in one transaction if, under lock, every row is still eligible;
    `audit(rows)` appends the record inside that transaction. Returns the rows dropped, or
    None when the partition must stay after all."""
    parent = _parent(sql)
    with conn.begin():
        conn.exec_driver_sql(f"LOCK TABLE {part.qualified} IN ACCESS EXCLUSIVE MODE")
        keep = conn.execute(
            sa.select(sa.func.count())
            .select_from(sql.table)
            .where(_inside(sql, part), sa.not_(sa.func.coalesce(sql.eligible, sa.false())))
        ).scalar_one()
        if keep:
            return None
        rows = int(conn.exec_driver_sql(f"SELECT count(*) FROM {part.qualified}").scalar_one())
        conn.exec_driver_sql(f"ALTER TABLE {parent} DETACH PARTITION {part.qualified}")
        conn.exec_driver_sql(f"DROP TABLE {part.qualified}")
        audit(rows)
    return rows
