"""Compile a `RulePlan` into SQL against the reflected schema.

One predicate decides which rows a rule may touch::

    eligible = expired AND scope AND NOT held AND past every legal minimum

`expired` compares the rule's timestamp (or, for event-relative rules, an EXISTS
over the event table) with the cutoff; `scope` is the rule's ``where``; `held`
is any active hold; the minimums keep rows whose minimum timestamp is recent or
NULL. The batch statements re-check the whole predicate, so a row that became
held or stopped being expired since its key was selected is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import ReturningDelete

from retention.errors import StoreError
from retention.filters import Condition, Op
from retention.planner import RulePlan
from retention.policy import (
    GeneralizeStrategy,
    HashStrategy,
    Hold,
    MaskEmailStrategy,
    NullStrategy,
    RedactStrategy,
    Strategy,
    TimestampFormat,
)
from retention.stores.schema import Catalog, bind_time, coerce_value, time_kind
from retention.stores.sqlstrategies import SqlStrategy, row_in_sql

__all__ = ["AnySelect", "ArchiveCatalogs", "RuleSql", "SchemaProblem", "compile_rule"]

AnySelect: TypeAlias = sa.Select[*tuple[Any, ...]]

#: The catalog of another store, by name (raises `StoreError` when it cannot be reflected).
ArchiveCatalogs: TypeAlias = Callable[[str], Catalog]


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """A mismatch between a rule and the database, located by its path in the rule."""

    path: tuple[str | int, ...]
    message: str
    warning: bool = False


class RuleSchemaError(StoreError):
    """The database does not match the rule; carries every problem found."""

    def __init__(self, rule: str, problems: Sequence[SchemaProblem]) -> None:
        self.problems = list(problems)
        super().__init__(f"rule {rule}: " + "; ".join(p.message for p in problems))


@dataclass(frozen=True, slots=True)
class ChildSql:
    """A `delete_first` table whose rows referencing a batch's parents, directly or through
    other listed tables, are deleted first."""

    table: sa.Table
    #: Its one foreign key column into the rule's table or another listed table.
    column: sa.Column[Any]
    #: The primary key that `column` references (in the rule's table or in `parent`).
    referred: sa.Column[Any]
    #: The listed table it references; None when it references the rule's table.
    parent: ChildSql | None = None
    #: Delete with a join instead of ``IN (SELECT ...)`` (MySQL/MariaDB: a subquery in a
    #: single-table DELETE scans the whole table on every batch; a join uses the index).
    join: bool = False

    def references(self, keys: Sequence[Any] | sa.BindParameter[Any]) -> sa.ColumnElement[bool]:
        """This table's rows whose chain of foreign keys ends at the parent `keys`:
        ``fk IN (:keys)``, or for deeper levels ``fk IN (SELECT key FROM parent WHERE ...)``."""
        if self.parent is None:
            return self.column.in_(keys)
        return self.column.in_(sa.select(self.referred).where(self.parent.references(keys)))

    def delete_for(self, keys: Sequence[Any] | sa.BindParameter[Any]) -> sa.Delete:
        """Delete the rows that reference the parent `keys` (through the chain; an
        expanding parameter stands for each batch's keys in `plan`)."""
        if not self.join or self.parent is None:
            return sa.delete(self.table).where(self.references(keys))
        links: list[sa.ColumnElement[bool]] = []
        link = self
        while link.parent is not None:
            links.append(link.column == link.referred)
            link = link.parent
        return sa.delete(self.table).where(*links, link.column.in_(keys))


@dataclass(frozen=True)
class RuleSql:
    """The statements and predicates of one rule, bound to reflected tables."""

    plan: RulePlan
    table: sa.Table
    keys: tuple[sa.Column[Any], ...]
    expired: sa.ColumnElement[bool]
    scope: tuple[sa.ColumnElement[bool], ...]
    held: tuple[sa.ColumnElement[bool], ...]
    minimums: tuple[sa.ColumnElement[bool], ...]
    age: sa.ColumnElement[Any]
    age_column: sa.ColumnElement[Any] | None
    age_format: TimestampFormat
    applied_holds: tuple[Hold, ...]
    skipped_holds: tuple[tuple[Hold, str], ...]
    warnings: tuple[SchemaProblem, ...]
    pending: tuple[sa.ColumnElement[bool], ...] = ()
    archive_table: sa.Table | None = None
    children: tuple[ChildSql, ...] = ()
    #: For anonymize rules whose every strategy has an exact SQL form on this dialect
    #: (`retention.stores.sqlstrategies`): those forms, by column.
    in_sql: dict[str, SqlStrategy] | None = None
    #: When a legal minimum on the rule's own timestamp column is tighter than the cutoff:
    #: (that bound, the other minimums). Batches then carry one bound on the column.
    batch_bounds: tuple[sa.ColumnElement[bool], tuple[sa.ColumnElement[bool], ...]] | None = None
    #: Whether batches may range over the leading key column when it is an integer (see
    #: `span_key`); False gives full-key ranges, for a limit walk that takes over from a
    #: span walk (`retention.stores.purge`).
    spans: bool = True

    @property
    def not_held(self) -> sa.ColumnElement[bool]:
        """No active hold covers the row (NULL, i.e. unknown, counts as held)."""
        return sa.not_(sa.or_(*self.held)) if self.held else sa.true()

    @property
    def past_minimums(self) -> sa.ColumnElement[bool]:
        """Every legal minimum on the table has passed for the row."""
        return _all(self.minimums)

    @property
    def candidates(self) -> sa.ColumnElement[bool]:
        """Rows the rule covers that are past the cutoff and not yet done, held or not."""
        return _all((self.expired, *self.scope, *self.pending))

    @property
    def eligible(self) -> sa.ColumnElement[bool]:
        """Rows the rule may touch now."""
        held = (self.not_held,) if self.held else ()
        if self.batch_bounds is not None:
            tight, others = self.batch_bounds
            return _all((tight, *self.scope, *held, *others, *self.pending))
        return _all((self.expired, *self.scope, *held, *self.minimums, *self.pending))

    def count(self) -> AnySelect:
        """One scan: candidates, those not held, those also past minimums, oldest affected;
        for a span walk also the smallest and largest affected value of `span_key` (the
        walk's bounds)."""
        allowed = _all((self.not_held, self.past_minimums))
        spans: list[sa.ColumnElement[Any]] = []
        lead = self.span_key
        if lead is not None:
            spans = [
                sa.func.min(sa.case((allowed, lead))).label("first_key"),
                sa.func.max(sa.case((allowed, lead))).label("last_key"),
            ]
        statement: AnySelect = (
            sa.select(
                sa.func.count().label("candidates"),
                sa.func.sum(sa.case((self.not_held, 1), else_=0)).label("not_held"),
                sa.func.sum(sa.case((allowed, 1), else_=0)).label("affected"),
                sa.func.min(sa.case((allowed, self.age))).label("oldest"),
                *spans,
            )
            .select_from(self.table)
            .where(self.candidates)
        )
        return statement

    @property
    def integer_key(self) -> bool:
        """A single integer primary key (its keys come back as plain ints)."""
        return len(self.keys) == 1 and isinstance(self.keys[0].type, sa.Integer)

    @property
    def span_key(self) -> sa.Column[Any] | None:
        """The column batches take key ranges of: the first primary key column when it is
        an integer (a single integer key, or a composite key such as ``(id, created_at)``);
        None when batches take full keys (the limit walk). A range ``(after, upto]`` on it
        covers every row whose first key column lies in it, whatever the other key columns
        hold, so a first column with repeated values is still walked exactly once."""
        lead = self.keys[0]
        return lead if self.spans and isinstance(lead.type, sa.Integer) else None

    def table_rows(self) -> AnySelect:
        """All rows of the table (for the max_fraction limit)."""
        return sa.select(sa.func.count()).select_from(self.table)

    def key_params(self, name: str, value: Any) -> dict[str, Any]:
        """Bind parameters for a batch bound: a value of `span_key` in a span walk, else a
        key (a tuple for composite keys)."""
        if len(self.keys) == 1 or self.span_key is not None:
            return {name: value}
        return {f"{name}_{i}": part for i, part in enumerate(value)}

    def key_value(self, row: Sequence[Any]) -> Any:
        """The key of a result row whose first columns are the key columns."""
        return row[0] if len(self.keys) == 1 else tuple(row[: len(self.keys)])

    def _compare(self, op: str, name: str) -> sa.ColumnElement[bool]:
        """``key OP :name`` on what batches range over: `span_key` in a span walk, else
        the key; a row-value comparison for other composite keys (index-friendly on
        PostgreSQL, SQLite and MariaDB)."""
        lead = self.span_key
        if lead is not None or len(self.keys) == 1:
            left: Any = self.keys[0]
            right: Any = sa.bindparam(name, type_=self.keys[0].type)
        else:
            left = sa.tuple_(*self.keys)
            right = sa.tuple_(
                *(sa.bindparam(f"{name}_{i}", type_=k.type) for i, k in enumerate(self.keys))
            )
        comparisons: dict[str, sa.ColumnElement[bool]] = {
            ">": left > right,
            "<=": left <= right,
            "=": left == right,
        }
        return comparisons[op]

    def _range(self, first: bool) -> sa.ColumnElement[bool]:
        upper = self._compare("<=", "upto")
        return upper if first else sa.and_(self._compare(">", "after"), upper)

    def last_key(self) -> AnySelect:
        """The largest eligible key: the upper bound of every batch of the run."""
        return (
            sa.select(*self.keys)
            .where(self.eligible)
            .order_by(*(k.desc() for k in self.keys))
            .limit(1)
        )

    def select_keys(
        self, first: bool = False, *, limit: bool = False, lock: bool = False
    ) -> AnySelect:
        """The eligible keys in the key range (`after`, `upto`], in order; with `limit`,
        only the first `n` of them; with `lock`, locked against concurrent change."""
        statement = sa.select(*self.keys).where(self._range(first), self.eligible)
        statement = statement.order_by(*self.keys)
        if limit:
            statement = statement.limit(sa.bindparam("n", type_=sa.Integer))
        return statement.with_for_update() if lock else statement

    def nth_key(self) -> AnySelect:
        """Span walk: the `span_key` value of the `skip`+1-th row after `after` and not
        beyond `upto`, eligible or not, in key order: caps a key range at about that many
        rows (the primary key index alone answers it)."""
        lead = self._span_key()
        return (
            sa.select(lead)
            .where(self._range(False))
            .order_by(*self.keys)
            .limit(1)
            .offset(sa.bindparam("skip", type_=sa.Integer))
        )

    def next_key(self) -> AnySelect:
        """Span walk: the first `span_key` value after `upto`, eligible or not (skips a gap
        in the keys)."""
        return sa.select(sa.func.min(self._span_key())).where(self._compare(">", "upto"))

    def key_through(self) -> AnySelect:
        """The largest key whose `span_key` value is at most `upto`, eligible or not:
        where a limit walk takes over from a span walk that has done the keys up to
        `upto`."""
        lead = self._span_key()
        return (
            sa.select(*self.keys)
            .where(lead <= sa.bindparam("upto", type_=lead.type))
            .order_by(*(k.desc() for k in self.keys))
            .limit(1)
        )

    def _span_key(self) -> sa.Column[Any]:
        lead = self.span_key
        if lead is None:
            raise ValueError(f"{_qualified(self.table)}: batches do not take key ranges")
        return lead

    def delete_batch(
        self, first: bool = False, *, returning: bool = False
    ) -> sa.Delete | ReturningDelete[*tuple[Any, ...]]:
        """Delete the eligible rows in the key range (`after`, `upto`] (returning their
        keys when `returning`)."""
        statement = sa.delete(self.table).where(self._range(first), self.eligible)
        return statement.returning(*self.keys) if returning else statement

    def archive_batch(self, first: bool = False) -> sa.Insert:
        """Copy the eligible rows in (`after`, `upto`] into the archive table."""
        assert self.archive_table is not None
        names = [c.name for c in self.table.columns]
        rows = sa.select(*(self.table.c[n] for n in names)).where(self._range(first), self.eligible)
        copy = sa.insert(self.archive_table).from_select(names, rows).inline()
        return copy.execution_options(preserve_rowcount=True)

    def select_batch(
        self, columns: Sequence[str], first: bool = False, *, lock: bool = False
    ) -> AnySelect:
        """Read the key and `columns` of the eligible rows in (`after`, `upto`], locked
        when `lock` so that they stay eligible until the batch commits."""
        statement = (
            sa.select(*self.keys, *(self.table.c[name] for name in columns))
            .where(self._range(first), self.eligible)
            .order_by(*self.keys)
        )
        return statement.with_for_update() if lock else statement

    @property
    def in_sql_may_fail(self) -> bool:
        """Whether `update_in_sql` may fail on a value (see `SqlStrategy.may_fail`)."""
        return self.in_sql is not None and any(s.may_fail for s in self.in_sql.values())

    def _in_sql_where(self, first: bool) -> list[sa.ColumnElement[bool]]:
        spec = self.plan.rule.anonymize
        assert spec is not None
        assert self.in_sql is not None
        where = [self._range(first), self.eligible, *(s.exact for s in self.in_sql.values())]
        if spec.marker is None:
            where.append(
                sa.or_(*(s.value.is_distinct_from(self.table.c[n]) for n, s in self.in_sql.items()))
            )
        return where

    def update_in_sql(self, first: bool = False, *, returning: bool = True) -> sa.Update:
        """Rewrite, in SQL, the eligible rows in (`after`, `upto`] whose values are all
        inside their strategies' exact domain (`in_sql`), returning their keys when
        `returning`; set the marker to ``marked_at``. Without a marker, rows that would
        not change are left alone, as the Python path skips them."""
        spec = self.plan.rule.anonymize
        assert spec is not None
        assert self.in_sql is not None
        values: dict[str, Any] = {name: s.value for name, s in self.in_sql.items()}
        if spec.marker is not None:
            values[spec.marker] = sa.bindparam("marked_at")
        statement = sa.update(self.table).where(*self._in_sql_where(first)).values(values)
        return statement.returning(*self.keys) if returning else statement

    def select_in_sql(self, first: bool = False) -> AnySelect:
        """The keys of the rows `update_in_sql` rewrites, locked (for databases without
        ``UPDATE ... RETURNING``)."""
        statement = sa.select(*self.keys).where(*self._in_sql_where(first)).order_by(*self.keys)
        return statement.with_for_update()

    def scratch_table(self, columns: Sequence[str]) -> sa.Table:
        """A temporary table holding a batch's keys and the new values of `columns`
        (databases other than PostgreSQL; see `arrays_for_updates`)."""
        keys = [sa.Column(k.name, k.type, primary_key=True) for k in self.keys]
        values = [sa.Column(name, self.table.c[name].type) for name in columns]
        return sa.Table(
            "retention_batch_values",
            sa.MetaData(),
            *keys,
            *values,
            prefixes=["TEMPORARY"],
        )

    def update_from_arrays(
        self, columns: Sequence[str], marker: str | None, first: bool = False
    ) -> sa.Update:
        """PostgreSQL: rewrite `columns` of the eligible rows in (`after`, `upto`] from
        arrays bound as parameters ``values_0``, ``values_1``, ... (the keys, then each
        column), joined through ``unnest``; set `marker` to ``marked_at``."""
        names = [k.name for k in self.keys] + list(columns)
        arrays = [
            sa.cast(sa.bindparam(f"values_{i}"), postgresql.ARRAY(self.table.c[name].type))
            for i, name in enumerate(names)
        ]
        source = sa.func.unnest(*arrays).table_valued(*names).render_derived()
        return self._update_joined(source, columns, marker, first)

    def update_from(
        self, scratch: sa.Table, columns: Sequence[str], marker: str | None, first: bool = False
    ) -> sa.Update:
        """Rewrite `columns` of the eligible rows in (`after`, `upto`] listed in `scratch`
        with its values; set `marker` to the bound parameter ``marked_at``."""
        return self._update_joined(scratch, columns, marker, first)

    def _update_joined(
        self, source: sa.FromClause, columns: Sequence[str], marker: str | None, first: bool
    ) -> sa.Update:
        """UPDATE the eligible rows in the range joined by key to `source`, taking
        `columns` from it (and ``marked_at`` into `marker`)."""
        values: dict[str, Any] = {name: source.c[name] for name in columns}
        if marker is not None:
            values[marker] = sa.bindparam("marked_at")
        joined = [self.table.c[k.name] == source.c[k.name] for k in self.keys]
        statement = sa.update(self.table).where(*joined, self._range(first), self.eligible)
        return statement.values(values)


def arrays_for_updates(dialect: sa.Dialect) -> bool:
    """Whether anonymize batches bind their new values as arrays (`update_from_arrays`)
    instead of writing them to a temporary table first."""
    return dialect.name == "postgresql"


def _in(col: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``col IN (:v1, :v2, ...)`` with one plain parameter per value.

    SQLAlchemy's default "expanding" IN parameter cannot be used with executemany,
    which the anonymize batches use.
    """
    name = getattr(col, "name", None) or "value"
    return col.in_([sa.bindparam(name, v, type_=col.type, unique=True) for v in values])


def _all(parts: Sequence[sa.ColumnElement[bool]]) -> sa.ColumnElement[bool]:
    if not parts:
        return sa.true()
    return parts[0] if len(parts) == 1 else sa.and_(*parts)


def _label(clause: sa.FromClause) -> str:
    element = getattr(clause, "element", clause)
    return _qualified(element) if isinstance(element, sa.Table) else str(clause)


def _qualified(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def compile_rule(
    plan: RulePlan, catalog: Catalog, archives: ArchiveCatalogs | None = None
) -> RuleSql:
    """Bind `plan` to the reflected schema; raise `RuleSchemaError` listing every mismatch.

    A rule archiving into another store reflects its archive table through `archives`;
    without it (callers that only count, such as `check`) the archive side is left
    unbound (`archive_table` None) and cannot be run."""
    rule = plan.rule
    problems: list[SchemaProblem] = []
    warnings: list[SchemaProblem] = []
    try:
        table = catalog.table(rule.table, rule.db_schema)
    except StoreError as exc:
        raise RuleSchemaError(rule.name, [SchemaProblem(("table",), str(exc))]) from None
    dialect = catalog.dialect

    def column(
        tbl: sa.FromClause, name: str, path: tuple[str | int, ...]
    ) -> sa.ColumnElement[Any] | None:
        if name in tbl.c:
            return tbl.c[name]
        known = ", ".join(c.name for c in tbl.columns)
        problems.append(
            SchemaProblem(path, f"column {name!r} not found in {_label(tbl)} (columns: {known})")
        )
        return None

    def time_column(
        base: sa.Table,
        name: str,
        fmt: TimestampFormat,
        path: tuple[str | int, ...],
        tbl: sa.FromClause | None = None,
    ) -> sa.ColumnElement[Any] | None:
        tbl = base if tbl is None else tbl
        col = column(tbl, name, path)
        if col is None:
            return None
        kind = time_kind(col)
        if fmt == "datetime" and kind not in ("datetime", "date"):
            problems.append(
                SchemaProblem(
                    path,
                    f"{_qualified(base)}.{name} is {col.type} and holds no date/time; "
                    "for integer epochs declare format: epoch_seconds or epoch_milliseconds",
                )
            )
            return None
        if fmt != "datetime" and kind != "integer":
            problems.append(
                SchemaProblem(
                    path, f"{_qualified(base)}.{name} is {col.type}, not an integer {fmt}"
                )
            )
            return None
        if not catalog.has_index_on(base, name):
            warnings.append(
                SchemaProblem(
                    path,
                    f"no index starts with {_qualified(base)}.{name}: every run scans the table",
                    warning=True,
                )
            )
        return col

    def conditions(
        tbl: sa.FromClause, conds: Sequence[Condition], path: tuple[str | int, ...]
    ) -> list[sa.ColumnElement[bool]]:
        out: list[sa.ColumnElement[bool]] = []
        for cond in conds:
            col = column(tbl, cond.column, (*path, cond.column))
            if col is None:
                continue
            try:
                out.append(_condition(col, cond, plan, dialect))
            except StoreError as exc:
                problems.append(SchemaProblem((*path, cond.column), str(exc)))
        return out

    keys = tuple(table.primary_key.columns)
    key: sa.Column[Any] | None = keys[0] if len(keys) == 1 else None
    if not keys:
        problems.append(
            SchemaProblem(
                ("table",), f"{_qualified(table)} has no primary key; batches walk the key"
            )
        )

    age_column: sa.ColumnElement[Any] | None = None
    age: sa.ColumnElement[Any] | None = None
    expired: sa.ColumnElement[bool] | None = None
    if rule.timestamp is not None:
        fmt: TimestampFormat = rule.timestamp.format
        age_column = time_column(table, rule.timestamp.column, fmt, ("timestamp",))
        if age_column is not None:
            cutoff = bind_time(age_column, fmt, plan.cutoff, plan.store, dialect)
            expired = age_column < sa.bindparam("cutoff", cutoff, type_=age_column.type)
            age = age_column
    else:
        event = rule.event
        assert event is not None
        fmt = event.format
        try:
            event_base = catalog.table(event.table, event.db_schema)
        except StoreError as exc:
            problems.append(SchemaProblem(("event", "table"), str(exc)))
        else:
            event_table = event_base.alias("event")
            ev_time = time_column(event_base, event.column, fmt, ("event", "column"), event_table)
            joins: list[sa.ColumnElement[bool]] = []
            for local, remote in event.join.items():
                here = column(table, local, ("event", "join", local))
                there = column(event_table, remote, ("event", "join", local))
                if here is not None and there is not None:
                    joins.append(there == here)
            where = conditions(event_table, event.where, ("event", "where"))
            if ev_time is not None:
                cutoff = bind_time(ev_time, fmt, plan.cutoff, plan.store, dialect)
                qualifying = [
                    *joins,
                    ev_time < sa.bindparam("cutoff", cutoff, type_=ev_time.type),
                    *where,
                ]
                expired = sa.exists().where(*qualifying)
                age = sa.select(sa.func.min(ev_time)).where(*qualifying).scalar_subquery()
                age_column = ev_time

    scope = conditions(table, rule.where, ("where",))

    held: list[sa.ColumnElement[bool]] = []
    applied: list[Hold] = []
    skipped: list[tuple[Hold, str]] = []
    for hold in plan.holds:
        if hold.subjects is not None:
            name = hold.subjects.column_for(table.name)
            if name not in table.c:
                skipped.append((hold, f"{_qualified(table)} has no column {name!r}"))
                continue
            subject = table.c[name]
            values = [coerce_value(subject, v, plan.store, dialect) for v in hold.subjects.values]
            held.append(sa.and_(subject.is_not(None), _in(subject, values)))
        else:
            parts = conditions(table, hold.where, ("holds", hold.name, "where"))
            held.append(_all(parts))
        applied.append(hold)

    minimums: list[sa.ColumnElement[bool]] = []
    same_clock: list[tuple[datetime, sa.ColumnElement[bool]]] = []
    other_minimums: list[sa.ColumnElement[bool]] = []
    for applied_min in plan.store_minimums:
        minimum = applied_min.minimum
        if not catalog.same_table((minimum.db_schema, minimum.table), (table.schema, table.name)):
            continue
        col = time_column(
            table, minimum.timestamp.column, minimum.timestamp.format, ("minimums", minimum.name)
        )
        if col is None:
            continue
        value = bind_time(col, minimum.timestamp.format, applied_min.cutoff, plan.store, dialect)
        bound = col < sa.bindparam(f"minimum_{len(minimums)}", value, type_=col.type)
        minimums.append(bound)
        if rule.timestamp is not None and (rule.timestamp.column, rule.timestamp.format) == (
            minimum.timestamp.column,
            minimum.timestamp.format,
        ):
            same_clock.append((applied_min.cutoff, bound))
        else:
            other_minimums.append(bound)
    batch_bounds = None
    if same_clock and expired is not None:
        # One upper bound per column in batch statements: SQLite picks the looser of two
        # bounds on one column (FINDINGS), so only the tightest of cutoff and minimums stays.
        cutoff_at, bound = min(same_clock, key=lambda pair: pair[0])
        batch_bounds = (bound if cutoff_at < plan.cutoff else expired, tuple(other_minimums))

    _check_action(plan, table, key, problems)
    pending = _pending(plan, table)
    archive_table = _archive_table(plan, table, catalog, problems, archives)
    children = _children(plan, table, key, catalog, problems, held)
    _check_children(plan, table, catalog, problems)

    if problems or not keys or expired is None or age is None:
        raise RuleSchemaError(rule.name, problems or [SchemaProblem((), "cannot compile rule")])
    return RuleSql(
        plan=plan,
        table=table,
        keys=keys,
        expired=expired,
        scope=tuple(scope),
        held=tuple(held),
        minimums=tuple(minimums),
        batch_bounds=batch_bounds,
        age=age,
        age_column=age_column,
        age_format=fmt,
        applied_holds=tuple(applied),
        skipped_holds=tuple(skipped),
        warnings=tuple(warnings),
        pending=pending,
        archive_table=archive_table,
        children=children,
        in_sql=_in_sql(plan, table, catalog.conn.dialect),
    )


def _in_sql(plan: RulePlan, table: sa.Table, dialect: sa.Dialect) -> dict[str, SqlStrategy] | None:
    """The rule's strategies as SQL, when every one of them has an exact form here."""
    spec = plan.rule.anonymize
    if spec is None:
        return None
    return row_in_sql(spec.columns, table, dialect)


def _children(
    plan: RulePlan,
    table: sa.Table,
    key: sa.Column[Any] | None,
    catalog: Catalog,
    problems: list[SchemaProblem],
    held: list[sa.ColumnElement[bool]],
) -> tuple[ChildSql, ...]:
    """Reflect the `delete_first` tables and link each, through its one foreign key, to
    the rule's table or to another listed table; a parent with a protected descendant (a
    held row, or one under a legal minimum, at any depth) counts as held.

    The tables are returned in list order, which must delete children before the
    tables they reference."""
    listed = _listed(plan, table, catalog, problems)
    links: dict[str, tuple[sa.Column[Any], sa.Column[Any], str | None]] = {}
    for name, (index, tbl) in listed.items():
        link = _link(tbl, table, key, listed, ("delete_first", index), problems)
        if link is not None:
            links[name] = link
    join = catalog.dialect in ("mysql", "mariadb")
    built: dict[str, ChildSql] = {}
    cycles: set[frozenset[str]] = set()

    def build(name: str, trail: tuple[str, ...]) -> ChildSql | None:
        if name in built or name not in links:
            return built.get(name)
        if name in trail:
            cycle = (*trail[trail.index(name) :], name)
            if frozenset(cycle) not in cycles:
                cycles.add(frozenset(cycle))
                problems.append(
                    SchemaProblem(
                        ("delete_first", min(listed[n][0] for n in cycle)),
                        f"the foreign keys of delete_first tables form a cycle "
                        f"({' -> '.join(cycle)}); none of them leads to {_qualified(table)}",
                    )
                )
            return None
        column, referred, parent_name = links[name]
        parent = None if parent_name is None else build(parent_name, (*trail, name))
        if parent_name is not None and parent is None:
            return None
        built[name] = ChildSql(listed[name][1], column, referred, parent, join)
        return built[name]

    for name in listed:
        build(name, ())
    children = [built[name] for name in listed if name in built]
    below: dict[str | None, list[ChildSql]] = {}
    for child in children:
        below.setdefault(None if child.parent is None else child.parent.table.name, []).append(
            child
        )
    _check_order(listed, children, below, problems)

    def protected(child: ChildSql) -> sa.ColumnElement[bool] | None:
        path: tuple[str | int, ...] = ("delete_first", listed[child.table.name][0])
        parts = _protected_rows(plan, child.table, catalog, path, problems)
        for grandchild in below.get(child.table.name, []):
            deeper = protected(grandchild)
            if deeper is not None:
                parts.append(sa.exists().where(grandchild.column == grandchild.referred, deeper))
        return sa.or_(*parts) if parts else None

    for child in below.get(None, []):
        kept = protected(child)
        if kept is not None:
            held.append(sa.exists().where(child.column == child.referred, kept))
    return tuple(children)


def _listed(
    plan: RulePlan, table: sa.Table, catalog: Catalog, problems: list[SchemaProblem]
) -> dict[str, tuple[int, sa.Table]]:
    """The reflected `delete_first` tables by name, with their index in the list."""
    listed: dict[str, tuple[int, sa.Table]] = {}
    for index, name in enumerate(plan.rule.delete_first):
        path: tuple[str | int, ...] = ("delete_first", index)
        if name == table.name:
            problems.append(SchemaProblem(path, f"{name} is the rule's own table"))
        elif name in listed:
            problems.append(SchemaProblem(path, f"{name} is listed twice"))
        else:
            try:
                listed[name] = (index, catalog.table(name, table.schema))
            except StoreError as exc:
                problems.append(SchemaProblem(path, str(exc)))
    return listed


def _link(
    child: sa.Table,
    table: sa.Table,
    key: sa.Column[Any] | None,
    listed: dict[str, tuple[int, sa.Table]],
    path: tuple[str | int, ...],
    problems: list[SchemaProblem],
) -> tuple[sa.Column[Any], sa.Column[Any], str | None] | None:
    """The one foreign key of `child` into the rule's table or another listed table:
    (its column, the primary key column it references, the listed table it references
    or None for the rule's table); None, with a problem, when there is not exactly one
    such key to a single-column primary key."""
    parents = {name: tbl for name, (_i, tbl) in listed.items() if name != child.name}
    every = sorted(child.foreign_key_constraints, key=_describe)
    found = [
        fk
        for fk in every
        if fk.referred_table.name == table.name or fk.referred_table.name in parents
    ]
    if len(found) != 1:
        others = f" or another delete_first table ({', '.join(parents)})" if parents else ""
        seen = ", ".join(_describe(fk) for fk in found)
        if not found:
            seen = f"none (its foreign keys: {', '.join(map(_describe, every)) or 'none'})"
        problems.append(
            SchemaProblem(
                path,
                f"{_qualified(child)} needs exactly one foreign key to {_qualified(table)}"
                f"{others}; found {seen}",
            )
        )
        return None
    fk = found[0]
    parent_name = None if fk.referred_table.name == table.name else fk.referred_table.name
    parent = table if parent_name is None else parents[parent_name]
    primary = list(parent.primary_key.columns)
    target = key if parent_name is None else (primary[0] if len(primary) == 1 else None)
    if target is None or [e.column.name for e in fk.elements] != [target.name]:
        keys = ", ".join(c.name for c in primary) or "none"
        problems.append(
            SchemaProblem(
                path,
                f"{_qualified(child)}: foreign key {_describe(fk)} must reference the "
                f"single-column primary key of {_qualified(parent)} (primary key: {keys})",
            )
        )
        return None
    return child.c[fk.elements[0].parent.name], target, parent_name


def _describe(fk: sa.ForeignKeyConstraint) -> str:
    """``name (columns) -> table(columns)`` of a reflected foreign key."""
    local = ", ".join(e.parent.name for e in fk.elements)
    remote = ", ".join(e.column.name for e in fk.elements)
    return f"{fk.name or 'unnamed'} ({local}) -> {_qualified(fk.referred_table)}({remote})"


def _check_order(
    listed: dict[str, tuple[int, sa.Table]],
    children: Sequence[ChildSql],
    below: dict[str | None, list[ChildSql]],
    problems: list[SchemaProblem],
) -> None:
    """Rows are deleted in list order, so a table must come before any table it
    references; otherwise name an order that works (`below`: the listed tables that
    reference each table)."""
    late = [
        (child.table.name, child.parent.table.name)
        for child in children
        if child.parent is not None
        and listed[child.table.name][0] > listed[child.parent.table.name][0]
    ]
    if not late:
        return
    order: list[str] = []

    def place(name: str) -> None:
        # Each table where it was listed, its listed descendants moved just before it.
        for kid in below.get(name, []):
            place(kid.table.name)
        if name not in order:
            order.append(name)

    for name in listed:
        place(name)
    child, parent = min(late, key=lambda pair: listed[pair[0]][0])
    problems.append(
        SchemaProblem(
            ("delete_first", listed[child][0]),
            f"{child} references {parent} but is listed after it; delete_first deletes in "
            f"list order, children first: list them as [{', '.join(order)}]",
        )
    )


def _protected_rows(
    plan: RulePlan,
    child: sa.Table,
    catalog: Catalog,
    path: tuple[str | int, ...],
    problems: list[SchemaProblem],
) -> list[sa.ColumnElement[bool]]:
    """Conditions under which a row of `child` must be kept: a hold on one of its
    columns, or a legal minimum on the table that has not passed (or a NULL age)."""
    protected: list[sa.ColumnElement[bool]] = []
    for hold in plan.holds:
        if hold.subjects is not None:
            subject = hold.subjects.column_for(child.name)
            if subject in child.c:
                col = child.c[subject]
                values = [
                    coerce_value(col, v, plan.store, catalog.dialect) for v in hold.subjects.values
                ]
                protected.append(sa.and_(col.is_not(None), _in(col, values)))
    for applied in plan.store_minimums:
        minimum = applied.minimum
        if not catalog.same_table((minimum.db_schema, minimum.table), (child.schema, child.name)):
            continue
        min_col = child.c.get(minimum.timestamp.column)
        if min_col is None:
            problems.append(
                SchemaProblem(
                    path,
                    f"minimum {minimum.name!r}: no column "
                    f"{minimum.timestamp.column!r} in {_qualified(child)}",
                )
            )
            continue
        bound = bind_time(
            min_col, minimum.timestamp.format, applied.cutoff, plan.store, catalog.dialect
        )
        protected.append(sa.or_(min_col.is_(None), min_col >= bound))
    return protected


def _pending(plan: RulePlan, table: sa.Table) -> tuple[sa.ColumnElement[bool], ...]:
    """For anonymize rules: rows not yet de-identified (so done rows are not read again)."""
    spec = plan.rule.anonymize
    if spec is None or any(c not in table.c for c in spec.columns):
        return ()
    if spec.marker is not None:
        return (table.c[spec.marker].is_(None),) if spec.marker in table.c else ()
    parts: list[sa.ColumnElement[bool]] = []
    for name, strategy in spec.columns.items():
        col = table.c[name]
        if isinstance(strategy, NullStrategy):
            parts.append(col.is_not(None))
        elif isinstance(strategy, RedactStrategy):
            parts.append(sa.and_(col.is_not(None), col != strategy.value))
        elif isinstance(strategy, MaskEmailStrategy):
            parts.append(
                sa.and_(
                    col.is_not(None),
                    col != strategy.local,
                    ~col.startswith(f"{strategy.local}@", autoescape=True),
                )
            )
        else:  # the policy requires a marker for the other strategies
            return ()
    return (sa.or_(*parts),)


def _archive_table(
    plan: RulePlan,
    table: sa.Table,
    catalog: Catalog,
    problems: list[SchemaProblem],
    archives: ArchiveCatalogs | None = None,
) -> sa.Table | None:
    spec = plan.rule.archive
    if spec is None:
        return None
    target = catalog
    if plan.archive_store is not None:
        if archives is None:
            return None
        try:
            target = archives(plan.archive_store)
        except StoreError as exc:
            problems.append(SchemaProblem(("archive", "store"), str(exc)))
            return None
    try:
        archive = target.table(spec.table, spec.db_schema)
    except StoreError as exc:
        problems.append(SchemaProblem(("archive", "table"), str(exc)))
        return None
    missing = [c.name for c in table.columns if c.name not in archive.c]
    if missing:
        problems.append(
            SchemaProblem(
                ("archive", "table"),
                f"archive table {_qualified(archive)} lacks columns {', '.join(missing)}",
            )
        )
    if plan.archive_store is not None:
        _check_other_store(table, catalog, archive, target, problems)
    return archive


def _check_other_store(
    table: sa.Table,
    source: Catalog,
    archive: sa.Table,
    catalog: Catalog,
    problems: list[SchemaProblem],
) -> None:
    """Archiving into another store commits the copy before the delete, so a crash can
    leave a copy that the next run writes again: the archive table needs a primary key or
    unique constraint on exactly the source's key columns to hold one copy per row. And it
    must not be the rule's own table reached through a second store name."""
    if (str(source.conn.engine.url), table.schema, table.name) == (
        str(catalog.conn.engine.url),
        archive.schema,
        archive.name,
    ):
        problems.append(
            SchemaProblem(
                ("archive", "table"),
                f"archive table {_qualified(archive)} in store {catalog.store_name!r} is the "
                "rule's own table",
            )
        )
        return
    names = [c.name for c in table.primary_key.columns]
    keys = set(names)
    if not keys:
        return  # reported for the rule's own table
    unique = [{c.name for c in archive.primary_key.columns}]
    unique += [
        set(u.get("column_names") or [])
        for u in catalog.inspector.get_unique_constraints(archive.name, schema=archive.schema)
    ]
    unique += [
        {name for name in i.get("column_names") or [] if name}
        for i in catalog.inspector.get_indexes(archive.name, schema=archive.schema)
        if i.get("unique")
    ]
    if keys not in unique:
        problems.append(
            SchemaProblem(
                ("archive", "table"),
                f"archive table {_qualified(archive)} in store {catalog.store_name!r} needs a "
                f"primary key or unique constraint on ({', '.join(names)}), the key of "
                f"{_qualified(table)}: a batch is copied and committed there before it is "
                "deleted here, and a copy left by an interrupted run is replaced by key",
            )
        )


def _check_children(
    plan: RulePlan, table: sa.Table, catalog: Catalog, problems: list[SchemaProblem]
) -> None:
    """Deleting rows that tables outside the rule reference is refused, naming the
    foreign keys: for the rule's table and for every `delete_first` table. Covered are
    the key each listed table is deleted through, and with accept_cascade the keys that
    are ON DELETE CASCADE or SET NULL."""
    if plan.rule.action == "anonymize":
        return
    listed = plan.rule.delete_first
    deleted: dict[str, tuple[str | int, ...]] = {table.name: ("table",)}
    for index, name in enumerate(listed):
        deleted.setdefault(name, ("delete_first", index))
    accepted = plan.rule.accept_cascade
    refusing: dict[str, list[str]] = {}
    for child in catalog.inspector.get_table_names(schema=table.schema):
        for fk in catalog.inspector.get_foreign_keys(child, schema=table.schema):
            target = fk.get("referred_table")
            if target not in deleted or (child in listed and child != target):
                continue
            ondelete = str((fk.get("options") or {}).get("ondelete") or "NO ACTION").upper()
            name = fk.get("name") or f"{child}({', '.join(fk['constrained_columns'])})"
            if accepted and ondelete in ("CASCADE", "SET NULL"):
                continue
            refusing.setdefault(target, []).append(f"{name} on {child} (ON DELETE {ondelete})")
    for target, path in deleted.items():
        if target in refusing:
            where = f"{table.schema}.{target}" if table.schema else target
            problems.append(
                SchemaProblem(
                    path,
                    f"rows of {where} are referenced by foreign keys "
                    f"{'; '.join(refusing[target])}: list the child tables in delete_first, "
                    "or set accept_cascade: true when every one is ON DELETE CASCADE / SET NULL",
                )
            )


def _check_action(
    plan: RulePlan, table: sa.Table, key: sa.Column[Any] | None, problems: list[SchemaProblem]
) -> None:
    """Anonymized columns must exist and must not be keys; the marker must be a timestamp."""
    spec = plan.rule.anonymize
    if spec is None:
        return
    foreign = {c.parent.name for c in table.foreign_keys}
    for name in spec.columns:
        path: tuple[str | int, ...] = ("anonymize", "columns", name)
        if name not in table.c:
            problems.append(
                SchemaProblem(path, f"column {name!r} not found in {_qualified(table)}")
            )
        elif name in {c.name for c in table.primary_key.columns}:
            problems.append(
                SchemaProblem(path, f"{name!r} is the primary key; it cannot be anonymized")
            )
        elif name in foreign:
            problems.append(
                SchemaProblem(
                    path, f"{name!r} is a foreign key (a join key); it cannot be anonymized"
                )
            )
        else:
            why = _strategy_misfit(spec.columns[name], table.c[name])
            if why:
                problems.append(SchemaProblem(path, why))
    if spec.marker is not None:
        path = ("anonymize", "marker")
        if spec.marker not in table.c:
            problems.append(
                SchemaProblem(
                    path, f"marker column {spec.marker!r} not found in {_qualified(table)}"
                )
            )
        elif time_kind(table.c[spec.marker]) != "datetime":
            problems.append(
                SchemaProblem(path, f"marker column {spec.marker!r} must be a DATETIME")
            )


def _strategy_misfit(strategy: Strategy, col: sa.ColumnElement[Any]) -> str | None:
    """Why `strategy` cannot write into `col`, if it cannot."""
    if isinstance(strategy, NullStrategy):
        nullable = getattr(col, "nullable", True)
        return None if nullable else f"{col.name!r} is NOT NULL; it cannot be set to NULL"
    if isinstance(strategy, GeneralizeStrategy):
        if time_kind(col) in ("datetime", "date"):
            return None
        return f"'generalize' needs a date or timestamp column; {col.name!r} is {col.type}"
    if not isinstance(col.type, sa.String):
        return f"{strategy.strategy!r} writes text; {col.name!r} is {col.type}"
    if isinstance(strategy, RedactStrategy):
        longest = len(strategy.value)
    elif isinstance(strategy, HashStrategy):
        longest = strategy.length or 64
    elif isinstance(strategy, MaskEmailStrategy):
        longest = len(strategy.local) + 1
    else:
        longest = 0  # a truncated address is never longer than the original
    if col.type.length is not None and longest > col.type.length:
        return (
            f"{strategy.strategy!r} may write {longest} characters; {col.name!r} holds "
            f"{col.type.length}"
        )
    return None


def _condition(col: sa.ColumnElement[Any], cond: Condition, plan: RulePlan, dialect: str) -> Any:
    def value(v: Any) -> Any:
        return coerce_value(col, v, plan.store, dialect)

    if cond.op is Op.IS_NULL:
        return col.is_(None) if cond.value else col.is_not(None)
    if cond.op in (Op.IN, Op.NOT_IN):
        assert isinstance(cond.value, tuple)
        values = [value(v) for v in cond.value]
        return _in(col, values) if cond.op is Op.IN else sa.not_(_in(col, values))
    operand = value(cond.value)
    return {
        Op.EQ: col == operand,
        Op.NE: col != operand,
        Op.LT: col < operand,
        Op.LTE: col <= operand,
        Op.GT: col > operand,
        Op.GTE: col >= operand,
    }[cond.op]
