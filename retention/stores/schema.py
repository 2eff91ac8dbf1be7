"""Reflecting a SQL store and judging its columns: what kind of time a column holds,
how a cutoff is bound against it, and how filter values are coerced to its type."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from retention.errors import StoreError
from retention.filters import Scalar
from retention.policy import SqlStore, TimestampFormat

__all__ = [
    "Catalog",
    "TimeKind",
    "bind_time",
    "coerce_value",
    "from_db_time",
    "time_kind",
    "to_db_time",
    "zone_aware",
]

TimeKind = Literal["datetime", "date", "integer", "other"]


def time_kind(column: sa.ColumnElement[Any]) -> TimeKind:
    """What a column can hold, as far as age is concerned."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return "datetime"
    if isinstance(kind, sa.Date):
        return "date"
    if isinstance(kind, sa.Integer) or (
        isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Float) and kind.scale == 0
    ):
        return "integer"
    return "other"


def zone_aware(column: sa.ColumnElement[Any], dialect: str) -> bool:
    """True when the database stores the column as an absolute instant (read back in UTC)."""
    kind = column.type
    if getattr(kind, "timezone", False):
        return True
    # MySQL/MariaDB TIMESTAMP is stored in UTC and shown in the session zone, which
    # retention sets to UTC on every connection.
    return dialect in ("mysql", "mariadb") and type(kind).__name__ == "TIMESTAMP"


def bind_time(
    column: sa.ColumnElement[Any],
    fmt: TimestampFormat,
    instant: datetime,
    store: SqlStore,
    dialect: str,
) -> Any:
    """The value to compare `column < value` against so that it means "before `instant`".

    Rounding always goes toward keeping rows: the value is floored to whole seconds
    (or milliseconds, or the start of the day for DATE columns).
    """
    if fmt == "epoch_seconds":
        return calendar.timegm(instant.utctimetuple())
    if fmt == "epoch_milliseconds":
        return calendar.timegm(instant.utctimetuple()) * 1000 + instant.microsecond // 1000
    floored = instant.replace(microsecond=0)
    if time_kind(column) == "date":
        return floored.astimezone(ZoneInfo(store.naive_timezone)).date()
    return to_db_time(column, floored, store, dialect)


def to_db_time(
    column: sa.ColumnElement[Any], instant: datetime, store: SqlStore, dialect: str
) -> datetime:
    """The aware `instant` as a value of the date/time `column`, to write or compare: aware
    where the driver keeps the zone (PostgreSQL zone-aware columns), UTC wall time for other
    zone-aware columns, else wall time in the store's `naive_timezone`. Nothing is rounded."""
    if zone_aware(column, dialect):
        if dialect in ("mysql", "mariadb", "sqlite"):
            return instant.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
        return instant
    return instant.astimezone(ZoneInfo(store.naive_timezone)).replace(tzinfo=None)


def from_db_time(
    value: Any,
    column: sa.ColumnElement[Any] | None,
    fmt: TimestampFormat,
    store: SqlStore,
    dialect: str,
) -> datetime | None:
    """Turn a timestamp read from the database into an aware UTC datetime."""
    if value is None:
        return None
    utc = ZoneInfo("UTC")
    if fmt == "epoch_seconds":
        return datetime.fromtimestamp(int(value), utc)
    if fmt == "epoch_milliseconds":
        return datetime.fromtimestamp(int(value) / 1000, utc)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise StoreError(f"cannot read {value!r} as a timestamp")
    if value.tzinfo is not None:
        return value.astimezone(utc)
    zone = (
        utc
        if column is not None and zone_aware(column, dialect)
        else ZoneInfo(store.naive_timezone)
    )
    return value.replace(tzinfo=zone).astimezone(utc)


def coerce_value(
    column: sa.ColumnElement[Any], value: Scalar, store: SqlStore, dialect: str
) -> Any:
    """Coerce a filter value from YAML to the column's type, so it binds portably."""
    kind = column.type
    if isinstance(value, bool):
        return value
    if isinstance(kind, sa.String):
        return value.isoformat() if isinstance(value, date) else str(value)
    if isinstance(kind, sa.Integer) and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise StoreError(f"{value!r} is not an integer (column {column.name})") from None
    if isinstance(kind, sa.DateTime | sa.Date):
        moment: Any = value
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise StoreError(
                    f"{value!r} is not an ISO 8601 date (column {column.name})"
                ) from None
        if (
            isinstance(kind, sa.DateTime)
            and isinstance(moment, date)
            and not isinstance(moment, datetime)
        ):
            moment = datetime.combine(moment, time())
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            return bind_time(column, "datetime", moment, store, dialect)
        return moment
    return value


@dataclass
class Catalog:
    """Tables of one store, reflected on first use through one connection."""

    conn: sa.Connection
    store_name: str
    _tables: dict[tuple[str | None, str], sa.Table] = field(default_factory=dict)
    _inspector: sa.Inspector | None = None

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name (sqlite, postgresql, mysql, mariadb)."""
        return self.conn.dialect.name

    @property
    def inspector(self) -> sa.Inspector:
        """A schema inspector bound to the connection."""
        if self._inspector is None:
            self._inspector = sa.inspect(self.conn)
        return self._inspector

    def same_table(self, a: tuple[str | None, str], b: tuple[str | None, str]) -> bool:
        """Whether two (schema, table) names, a schema left out meaning the connection's
        default schema, name the same table."""
        default = self.inspector.default_schema_name
        return (a[0] or default, a[1]) == (b[0] or default, b[1])

    def table(self, name: str, schema: str | None = None) -> sa.Table:
        """The reflected table, or `StoreError` naming what does exist."""
        key = (schema, name)
        if key not in self._tables:
            if not self.inspector.has_table(name, schema=schema):
                known = ", ".join(sorted(self.inspector.get_table_names(schema=schema))) or "none"
                where = f"{schema}.{name}" if schema else name
                raise StoreError(
                    f"table {where!r} not found in store {self.store_name!r} (tables: {known})"
                )
            self._tables[key] = sa.Table(
                name, sa.MetaData(), schema=schema, autoload_with=self.conn
            )
        return self._tables[key]

    def has_index_on(self, table: sa.Table, column: str) -> bool:
        """True when some index (or the primary key) starts with `column`."""
        pk = [c.name for c in table.primary_key.columns]
        if pk[:1] == [column]:
            return True
        for index in self.inspector.get_indexes(table.name, schema=table.schema):
            names = index.get("column_names") or []
            if names[:1] == [column]:
                return True
        for constraint in self.inspector.get_unique_constraints(table.name, schema=table.schema):
            if (constraint.get("column_names") or [])[:1] == [column]:
                return True
        return False
