"""Archiving into a table of another store: copy and commit there, then delete here.

Rows cannot leave one database and arrive in another in one transaction, so each
batch of a rule with ``archive: {store: OTHER, table: ...}`` orders its two
transactions so that no row is ever deleted before its copy has committed:

1. in the rule's transaction, read the batch's eligible rows with every column,
   locked (key-range bounded, the full predicate re-checked);
2. in a transaction on the archive store, delete the archived rows with the same
   keys (an interrupted earlier run may have copied some of them), insert the
   rows, check that every key is there once, and COMMIT;
3. in the rule's still-open transaction, delete exactly those keys with the full
   predicate re-checked; unless every copied row went, roll back (the archive keeps
   a harmless extra copy); append the batch's audit record; COMMIT.

A crash between the two commits leaves the rows in both places; the next run copies
them again, replacing the copies, and deletes them. Values travel through Python:
timestamps are re-expressed for the archive column (zone-aware or not, and each
store's `naive_timezone`), other values are passed as the drivers read them.

`purge` runs the batches (`retention.stores.purge`); this module holds the archive
side: its statements, the writer, and read-only catalogs of archive stores.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from retention.errors import StoreError
from retention.policy import SqlStore, Store
from retention.stores.rulesql import AnySelect, RuleSql
from retention.stores.schema import Catalog, from_db_time, time_kind, to_db_time, zone_aware
from retention.stores.sql import read_only

__all__ = [
    "IN_CHUNK",
    "ArchiveWriter",
    "CopyStatements",
    "ReadOnlyCatalogs",
    "batch_columns",
    "copy_statements",
    "delete_moved",
    "keys_in",
    "non_key_columns",
]

#: Keys per ``IN (...)`` list (SQLite allows 32766 parameters per statement).
IN_CHUNK = 1000


def keys_in(columns: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[bool]:
    """``key IN (:keys)`` (a row value for composite keys); ``keys`` is bound per
    statement as a list of key values (tuples for composite keys)."""
    if len(columns) == 1:
        return columns[0].in_(sa.bindparam("keys", expanding=True))
    return sa.tuple_(*columns).in_(sa.bindparam("keys", expanding=True))


def non_key_columns(sql: RuleSql) -> list[str]:
    """The source table's columns other than its key, in table order."""
    keys = {k.name for k in sql.keys}
    return [c.name for c in sql.table.columns if c.name not in keys]


def batch_columns(sql: RuleSql) -> list[str]:
    """The columns a batch reads (`RuleSql.select_batch`) and copies: the key, then the
    others."""
    return [k.name for k in sql.keys] + non_key_columns(sql)


def delete_moved(sql: RuleSql) -> sa.Delete:
    """Delete the rows of `keys` whose copies have committed in the archive store, with
    the rule's full predicate re-checked (a row that stopped being eligible stays)."""
    return sa.delete(sql.table).where(keys_in(sql.keys), sql.eligible)


@dataclass(frozen=True)
class CopyStatements:
    """What a batch runs on the archive store, in one transaction."""

    #: Delete archived rows with the batch's keys (copies an interrupted run left).
    remove: sa.Delete
    #: Insert the batch's rows, their values bound as ``values_0``, ``values_1``, ...
    insert: sa.Insert
    #: Count the archived rows with the batch's keys: must equal the batch's rows.
    check: AnySelect


def copy_statements(archive: sa.Table, names: Sequence[str], keys: int) -> CopyStatements:
    """The archive store's statements for batches of the columns `names`, whose first
    `keys` are the key."""
    key_columns = [archive.c[name] for name in names[:keys]]
    insert = sa.insert(archive).values(
        {
            name: sa.bindparam(f"values_{i}", type_=archive.c[name].type)
            for i, name in enumerate(names)
        }
    )
    check = sa.select(sa.func.count()).select_from(archive).where(keys_in(key_columns))
    return CopyStatements(sa.delete(archive).where(keys_in(key_columns)), insert, check)


@dataclass(frozen=True)
class ArchiveWriter:
    """The archive side of a rule that archives into another store.

    `conn` is a connection to the archive store, outside any transaction between
    batches; `copy` runs one transaction on it per batch."""

    sql: RuleSql
    conn: sa.Connection
    store_name: str
    store: SqlStore
    source_dialect: str

    @property
    def table(self) -> sa.Table:
        """The reflected archive table."""
        if self.sql.archive_table is None:
            raise StoreError(f"rule {self.sql.plan.name}: the archive table is not reflected")
        return self.sql.archive_table

    @property
    def detail(self) -> str:
        """The audit record's `detail` of a cross-store batch: where its rows went."""
        spec = self.sql.plan.rule.archive
        schema = spec.db_schema if spec is not None else None
        target = {"store": self.store_name, "table": self.table.name, "schema": schema}
        return json.dumps({"archive": target}, sort_keys=True, separators=(",", ":"))

    def copy(self, rows: Sequence[Sequence[Any]]) -> None:
        """Write `rows` (read with the columns of `batch_columns`, in order) into the
        archive table and commit: archived rows with the same keys are deleted first, so a
        copy an interrupted run left is replaced, never doubled. Raises `StoreError`,
        having committed nothing, unless each key is then in the archive exactly once (a
        key column narrower than the source's, such as fewer fractional seconds, fails
        here, before anything is deleted)."""
        names = batch_columns(self.sql)
        width = len(self.sql.keys)
        values = [self._values(names, row) for row in rows]
        keys = [
            v["values_0"] if width == 1 else tuple(v[f"values_{i}"] for i in range(width))
            for v in values
        ]
        statements = copy_statements(self.table, names, width)
        chunks = [keys[start : start + IN_CHUNK] for start in range(0, len(keys), IN_CHUNK)]
        with self.conn.begin():
            for chunk in chunks:
                self.conn.execute(statements.remove, {"keys": chunk})
            self.conn.execute(statements.insert, values)
            there = sum(
                int(self.conn.execute(statements.check, {"keys": chunk}).scalar_one())
                for chunk in chunks
            )
            if there != len(keys):
                raise StoreError(
                    f"archive store {self.store_name!r}: {there} rows with the batch's keys in "
                    f"{self.table.name} after copying {len(keys)}; nothing committed"
                )

    def _values(self, names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
        source, target = self.sql.table, self.table
        return {
            f"values_{i}": self._portable(value, source.c[name], target.c[name])
            for i, (name, value) in enumerate(zip(names, row, strict=True))
        }

    def _portable(self, value: Any, source: sa.Column[Any], target: sa.Column[Any]) -> Any:
        """`value`, read from `source`, as a value for the archive column `target`."""
        if value is None:
            return None
        kind, dialect = target.type, self.conn.dialect.name
        if isinstance(value, datetime) and time_kind(target) == "datetime":
            if (
                value.tzinfo is None
                and not zone_aware(source, self.source_dialect)
                and not zone_aware(target, dialect)
                and self.sql.plan.store.naive_timezone == self.store.naive_timezone
            ):
                return value  # the same wall time in the same zone: no round trip
            instant = from_db_time(
                value, source, "datetime", self.sql.plan.store, self.source_dialect
            )
            assert instant is not None
            return to_db_time(target, instant, self.store, dialect)
        if isinstance(value, memoryview):
            return bytes(value)
        if isinstance(kind, sa.Boolean) and isinstance(value, int):
            return bool(value)
        if isinstance(value, bool) and isinstance(kind, sa.Integer):
            return int(value)
        if isinstance(value, uuid.UUID) and not isinstance(kind, sa.Uuid):
            return str(value)
        if isinstance(value, dict | list) and not isinstance(kind, sa.JSON):
            return json.dumps(value)
        return value


class ReadOnlyCatalogs:
    """Catalogs of archive stores for read-only callers (`validate --connect`, `plan`):
    each store is opened read-only on first use; `close` (or leaving the `with` block)
    closes them all. Calling it with a store's name returns its catalog (`ArchiveCatalogs`)
    or raises `StoreError`."""

    def __init__(self, stores: Mapping[str, Store], base_dir: Path | None) -> None:
        self._stores, self._base_dir = stores, base_dir
        self._stack = ExitStack()
        self._catalogs: dict[str, Catalog | StoreError] = {}

    def __call__(self, name: str) -> Catalog:
        if name not in self._catalogs:
            store = self._stores.get(name)
            try:
                if not isinstance(store, SqlStore):
                    raise StoreError(f"store {name!r} is not a SQL store")
                conn = self._stack.enter_context(read_only(store, self._base_dir, name))
                self._catalogs[name] = Catalog(conn, name)
            except StoreError as exc:
                self._catalogs[name] = exc
        found = self._catalogs[name]
        if isinstance(found, StoreError):
            raise found
        return found

    def close(self) -> None:
        """Close every store opened so far."""
        self._stack.close()

    def __enter__(self) -> ReadOnlyCatalogs:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()
