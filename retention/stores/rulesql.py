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

from collections.abc import Sequence
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

__all__ = ["AnySelect", "RuleSql", "SchemaProblem", "compile_rule"]

AnySelect: TypeAlias = sa.Select[*tuple[Any, ...]]


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
    """A child table whose rows referencing a batch's parents are deleted first."""

    table: sa.Table
    column: sa.Column[Any]

    def delete_for(self, keys: Sequence[Any]) -> sa.Delete:
        """Delete the child rows that reference the parent `keys`."""
        return sa.delete(self.table).where(self.column.in_(keys))


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
    #: When a legal minimum on the rule's own timestamp column is tighter than the cutoff:
    #: (that bound, the other minimums). Batches then carry one bound on the column.
    batch_bounds: tuple[sa.ColumnElement[bool], tuple[sa.ColumnElement[bool], ...]] | None = None

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
        for a single integer key also the smallest and largest affected key (the walk's
        bounds)."""
        allowed = _all((self.not_held, self.past_minimums))
        spans: list[sa.ColumnElement[Any]] = []
        if self.integer_key:
            spans = [
                sa.func.min(sa.case((allowed, self.keys[0]))).label("first_key"),
                sa.func.max(sa.case((allowed, self.keys[0]))).label("last_key"),
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
        """A single integer primary key: batches are key ranges of adaptive width."""
        return len(self.keys) == 1 and isinstance(self.keys[0].type, sa.Integer)

    def table_rows(self) -> AnySelect:
        """All rows of the table (for the max_fraction limit)."""
        return sa.select(sa.func.count()).select_from(self.table)

    @property
    def key(self) -> sa.Column[Any]:
        """The primary key column of a single-column key."""
        if len(self.keys) != 1:
            raise ValueError(f"{_qualified(self.table)} has a composite primary key")
        return self.keys[0]

    def key_params(self, name: str, value: Any) -> dict[str, Any]:
        """Bind parameters for a key value (a tuple for composite keys)."""
        if len(self.keys) == 1:
            return {name: value}
        return {f"{name}_{i}": part for i, part in enumerate(value)}

    def key_value(self, row: Sequence[Any]) -> Any:
        """The key of a result row whose first columns are the key columns."""
        return row[0] if len(self.keys) == 1 else tuple(row[: len(self.keys)])

    def _compare(self, op: str, name: str) -> sa.ColumnElement[bool]:
        """``key OP :name``; a row-value comparison for composite keys (index-friendly on
        PostgreSQL, SQLite and MariaDB)."""
        if len(self.keys) == 1:
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
        """The `skip`+1-th key after `after` and not beyond `upto`, eligible or not: caps a
        key range at that many rows (the primary key index alone answers it)."""
        return (
            sa.select(self.key)
            .where(self._range(False))
            .order_by(self.key)
            .limit(1)
            .offset(sa.bindparam("skip", type_=sa.Integer))
        )

    def next_key(self) -> AnySelect:
        """The first key after `upto`, eligible or not (skips a gap in the keys)."""
        return sa.select(sa.func.min(self.key)).where(self._compare(">", "upto"))

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
        values: dict[str, Any] = {name: source.c[name] for name in columns}
        if marker is not None:
            values[marker] = sa.bindparam("marked_at")
        joined = [self.table.c[k.name] == source.c[k.name] for k in self.keys]
        statement = sa.update(self.table).where(*joined, self._range(first), self.eligible)
        return statement.values(values)

    def update_from(
        self, scratch: sa.Table, columns: Sequence[str], marker: str | None, first: bool = False
    ) -> sa.Update:
        """Rewrite `columns` of the eligible rows in (`after`, `upto`] listed in `scratch`
        with its values; set `marker` to the bound parameter ``marked_at``."""
        values: dict[str, Any] = {name: scratch.c[name] for name in columns}
        if marker is not None:
            values[marker] = sa.bindparam("marked_at")
        joined = [self.table.c[k.name] == scratch.c[k.name] for k in self.keys]
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


def compile_rule(plan: RulePlan, catalog: Catalog) -> RuleSql:
    """Bind `plan` to the reflected schema; raise `RuleSchemaError` listing every mismatch."""
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
    for applied_min in plan.minimums:
        minimum = applied_min.minimum
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
    archive_table = _archive_table(plan, table, catalog, problems)
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
    )


def _children(
    plan: RulePlan,
    table: sa.Table,
    key: sa.Column[Any] | None,
    catalog: Catalog,
    problems: list[SchemaProblem],
    held: list[sa.ColumnElement[bool]],
) -> tuple[ChildSql, ...]:
    """Reflect `delete_first` children; a parent with a protected child counts as held."""
    out: list[ChildSql] = []
    for index, name in enumerate(plan.rule.delete_first):
        path: tuple[str | int, ...] = ("delete_first", index)
        try:
            child = catalog.table(name, table.schema)
        except StoreError as exc:
            problems.append(SchemaProblem(path, str(exc)))
            continue
        links = [
            fk
            for fk in child.foreign_keys
            if fk.column.table.name == table.name and key is not None and fk.column.name == key.name
        ]
        if len(links) != 1:
            problems.append(
                SchemaProblem(
                    path,
                    f"{_qualified(child)} needs exactly one foreign key to "
                    f"{_qualified(table)}'s primary key (found {len(links)})",
                )
            )
            continue
        column = links[0].parent
        protected: list[sa.ColumnElement[bool]] = []
        for hold in plan.holds:
            if hold.subjects is not None:
                subject = hold.subjects.column_for(child.name)
                if subject in child.c:
                    col = child.c[subject]
                    values = [
                        coerce_value(col, v, plan.store, catalog.dialect)
                        for v in hold.subjects.values
                    ]
                    protected.append(sa.and_(col.is_not(None), _in(col, values)))
        for applied in plan.store_minimums:
            minimum = applied.minimum
            if (minimum.db_schema, minimum.table) != (child.schema, child.name):
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
        if protected and key is not None:
            held.append(sa.exists().where(column == key, sa.or_(*protected)))
        out.append(ChildSql(child, column))
    return tuple(out)


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
    plan: RulePlan, table: sa.Table, catalog: Catalog, problems: list[SchemaProblem]
) -> sa.Table | None:
    spec = plan.rule.archive
    if spec is None:
        return None
    if spec.store not in (None, plan.store_name):
        problems.append(
            SchemaProblem(
                ("archive", "store"),
                "archiving into another store is not supported yet; archive into a table "
                "of the same store",
            )
        )
        return None
    try:
        archive = catalog.table(spec.table, spec.db_schema)
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
    return archive


def _check_children(
    plan: RulePlan, table: sa.Table, catalog: Catalog, problems: list[SchemaProblem]
) -> None:
    """Deleting parents whose children no rule covers is refused, naming the foreign keys."""
    if plan.rule.action == "anonymize":
        return
    accepted = plan.rule.accept_cascade
    refusing: list[str] = []
    for child in catalog.inspector.get_table_names(schema=table.schema):
        if child in plan.rule.delete_first:
            continue
        for fk in catalog.inspector.get_foreign_keys(child, schema=table.schema):
            if fk.get("referred_table") != table.name:
                continue
            ondelete = str((fk.get("options") or {}).get("ondelete") or "NO ACTION").upper()
            name = fk.get("name") or f"{child}({', '.join(fk['constrained_columns'])})"
            if accepted and ondelete in ("CASCADE", "SET NULL"):
                continue
            refusing.append(f"{name} on {child} (ON DELETE {ondelete})")
    if refusing:
        problems.append(
            SchemaProblem(
                ("table",),
                f"rows of {_qualified(table)} are referenced by foreign keys "
                f"{'; '.join(refusing)}: list the child tables in delete_first, or set "
                "accept_cascade: true when every one is ON DELETE CASCADE / SET NULL",
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
