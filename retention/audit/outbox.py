"""The outbox: audit records of batches whose table is not in the audit store.

A batch on such a store writes its record into ``<prefix>outbox`` in its *own*
database, inside the batch's transaction, so the record exists exactly when the
batch committed. `forward` then appends pending records to the audit store's chain
and removes them from the outbox. A crash between the two leaves the record in the
outbox (forwarded by the next run), or in both (the audit store's unique key on run,
rule, table and batch recognises it, and the outbox copy is dropped).
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from retention.audit.records import BatchRecord
from retention.audit.sql import AuditTables, append

__all__ = ["Outbox", "forward", "pending", "put"]

_TIMES = ("cutoff", "started_at", "committed_at")


class Outbox:
    """The outbox table for one prefix, in a rule's own database."""

    def __init__(self, prefix: str = "retention_") -> None:
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            f"{prefix}outbox",
            self.metadata,
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            sa.Column("record", sa.Text, nullable=False),
        )

    def ensure(self, conn: sa.Connection) -> None:
        """Create the outbox table if missing."""
        self.metadata.create_all(conn, checkfirst=True)

    def exists(self, conn: sa.Connection) -> bool:
        """Whether this database has an outbox table at all."""
        return sa.inspect(conn).has_table(self.table.name)


def _encode(record: BatchRecord) -> str:
    return record.canonical()


def _decode(text: str) -> BatchRecord:
    values: dict[str, Any] = json.loads(text)
    for name in _TIMES:
        values[name] = datetime.fromisoformat(values[name])
    known = {f.name for f in fields(BatchRecord)}
    return BatchRecord(**{k: v for k, v in values.items() if k in known})


def put(conn: sa.Connection, outbox: Outbox, record: BatchRecord) -> None:
    """Write `record` to the outbox inside the caller's open transaction."""
    conn.execute(outbox.table.insert().values(record=_encode(record)))


def pending(conn: sa.Connection, outbox: Outbox) -> int:
    """Records in the outbox not yet forwarded (0 when there is no outbox table)."""
    if not outbox.exists(conn):
        return 0
    return int(conn.execute(sa.select(sa.func.count()).select_from(outbox.table)).scalar() or 0)


def forward(
    source: sa.Connection,
    outbox: Outbox,
    audit: sa.Engine,
    tables: AuditTables,
    *,
    check: bool = True,
) -> int:
    """Move every pending record from `source`'s outbox into the audit store's chain, in
    order; return how many were appended. `source` must not be inside a transaction.
    With `check` False the outbox table is known to exist."""
    if check:
        with source.begin():
            if not outbox.exists(source):
                return 0
    moved = 0
    table = outbox.table
    while True:
        with source.begin():
            rows = source.execute(sa.select(table).order_by(table.c.id).limit(500)).all()
        if not rows:
            return moved
        for row in rows:
            record = _decode(row.record)
            with audit.begin() as conn:
                if not _already(conn, tables, record):
                    append(conn, tables, record)
                    moved += 1
            with source.begin():
                source.execute(table.delete().where(table.c.id == row.id))


def _already(conn: sa.Connection, tables: AuditTables, record: BatchRecord) -> bool:
    c = tables.records.c
    found = conn.execute(
        sa.select(c.seq).where(
            c.run_id == record.run_id,
            c.rule == record.rule,
            c.table_name == record.table_name,
            c.batch == record.batch,
            c.outcome == record.outcome,
        )
    ).first()
    return found is not None
