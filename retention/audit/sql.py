"""Audit records in a SQL database, appended in the caller's transaction.

`append` runs inside the batch's own transaction, so a batch and its audit
record commit or roll back together. Appends are serialised by locking the
single row of the chain-head table, which also carries the last hash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from retention.audit.records import GENESIS, BatchRecord, chain_hash

__all__ = ["AuditTables", "ChainBreak", "append", "ensure_tables", "records", "verify"]

#: Microsecond timestamps everywhere (MySQL/MariaDB DATETIME drops them otherwise, which
#: would change the records' hashes).
Instant = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class AuditTables:
    """The audit tables for one prefix (default ``retention_``)."""

    def __init__(self, prefix: str = "retention_") -> None:
        self.metadata = sa.MetaData()
        self.records = sa.Table(
            f"{prefix}audit",
            self.metadata,
            sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
            sa.Column("run_id", sa.String(36), nullable=False),
            sa.Column("rule", sa.String(80), nullable=False, index=True),
            sa.Column("rule_hash", sa.String(64), nullable=False),
            sa.Column("store", sa.String(80), nullable=False),
            sa.Column("table_name", sa.String(128), nullable=False),
            sa.Column("action", sa.String(16), nullable=False),
            sa.Column("cutoff", Instant, nullable=False),
            sa.Column("batch", sa.Integer, nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("key_min", sa.String(128)),
            sa.Column("key_max", sa.String(128)),
            sa.Column("key_digest", sa.String(64)),
            sa.Column("started_at", Instant, nullable=False),
            sa.Column("committed_at", Instant, nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("dry_run", sa.Boolean, nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("error", sa.Text),
            sa.Column("detail", sa.Text),
            sa.Column("prev_hash", sa.String(64), nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.UniqueConstraint(
                "run_id", "rule", "table_name", "batch", "outcome", name=f"{prefix}audit_batch_uq"
            ),
        )
        self.head = sa.Table(
            f"{prefix}audit_head",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("hash", sa.String(64), nullable=False),
        )


def ensure_tables(conn: sa.Connection, tables: AuditTables) -> None:
    """Create the audit tables and the chain head if missing (idempotent); on PostgreSQL
    also the triggers that make the records table append-only."""
    tables.metadata.create_all(conn, checkfirst=True)
    exists = conn.execute(sa.select(tables.head.c.id).where(tables.head.c.id == 1)).first()
    if exists is None:
        conn.execute(tables.head.insert().values(id=1, seq=0, hash=GENESIS))
    if conn.dialect.name == "postgresql":
        _append_only(conn, tables.records.name)


def _append_only(conn: sa.Connection, table: str) -> None:
    """Triggers refusing UPDATE, DELETE and TRUNCATE of audit records (PostgreSQL).

    They stop mistakes and casual edits by anyone but the table's owner, who can
    disable them; `verify` still catches what an owner changes. Other databases rely
    on grants (see the README).
    """
    function = f"{table}_append_only"
    quoted = conn.dialect.identifier_preparer.quote
    present = conn.exec_driver_sql(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%(t)s) "
        "AND tgname IN (%(row)s, %(all)s)",
        {"t": table, "row": f"{table}_no_change", "all": f"{table}_no_truncate"},
    ).scalar()
    if present == 2:
        return
    conn.execute(
        sa.text(
            f"CREATE OR REPLACE FUNCTION {quoted(function)}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'the audit trail is append-only: % on % refused', "
            "TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; END $$"
        )
    )
    for name, timing in (
        (f"{table}_no_change", "BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW"),
        (f"{table}_no_truncate", "BEFORE TRUNCATE ON {t} FOR EACH STATEMENT"),
    ):
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quoted(name)} ON {quoted(table)}")
        conn.exec_driver_sql(
            f"CREATE TRIGGER {quoted(name)} {timing.format(t=quoted(table))} "
            f"EXECUTE FUNCTION {quoted(function)}()"
        )


def _naive_utc(record: BatchRecord) -> dict[str, Any]:
    row = asdict(record)
    for name in ("cutoff", "started_at", "committed_at"):
        row[name] = row[name].replace(tzinfo=None)
    return row


def append(conn: sa.Connection, tables: AuditTables, record: BatchRecord) -> str:
    """Append `record` to the chain inside the caller's open transaction; return its hash."""
    head = tables.head
    locked = sa.select(head.c.seq, head.c.hash).where(head.c.id == 1)
    if conn.dialect.name != "sqlite":
        locked = locked.with_for_update()
    previous = conn.execute(locked).one()
    digest = chain_hash(previous.hash, record)
    conn.execute(
        tables.records.insert().values(**_naive_utc(record), prev_hash=previous.hash, hash=digest)
    )
    conn.execute(head.update().where(head.c.id == 1).values(seq=previous.seq + 1, hash=digest))
    return digest


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first record at which the chain does not hold, and why."""

    seq: int
    reason: str


_FIELDS = list(BatchRecord.__dataclass_fields__)


def _record(row: Any) -> BatchRecord:
    values = {name: getattr(row, name) for name in _FIELDS}
    for name in ("cutoff", "started_at", "committed_at"):
        values[name] = values[name].replace(tzinfo=UTC)
    values["dry_run"] = bool(values["dry_run"])
    return BatchRecord(**values)


def verify(conn: sa.Connection, tables: AuditTables) -> tuple[int, ChainBreak | None]:
    """Walk the trail in order; return (records checked, the first break or None).

    An edited record no longer matches its hash; a deleted, inserted or reordered one
    no longer links to its predecessor's hash; a truncated tail no longer matches the
    chain head.
    """
    previous = GENESIS
    count = 0
    last_seq = 0
    for row in conn.execute(sa.select(tables.records).order_by(tables.records.c.seq)):
        count += 1
        if row.prev_hash != previous:
            return count, ChainBreak(row.seq, "does not link to the record before it")
        if chain_hash(previous, _record(row)) != row.hash:
            return count, ChainBreak(row.seq, "its content does not match its hash")
        previous, last_seq = row.hash, row.seq
    head = conn.execute(sa.select(tables.head).where(tables.head.c.id == 1)).first()
    if head is not None and (head.hash != previous or head.seq != count):
        return count, ChainBreak(last_seq, "the trail ends before the chain head (records removed)")
    return count, None


def records(
    conn: sa.Connection,
    tables: AuditTables,
    *,
    rules: Sequence[str] = (),
    run_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Audit records in chain order, filtered by rule, run and commit time (UTC)."""
    table = tables.records
    query = sa.select(table).order_by(table.c.seq)
    if rules:
        query = query.where(table.c.rule.in_(list(rules)))
    if run_id:
        query = query.where(table.c.run_id == run_id)
    if since:
        query = query.where(table.c.committed_at >= since.astimezone(UTC).replace(tzinfo=None))
    if until:
        query = query.where(table.c.committed_at < until.astimezone(UTC).replace(tzinfo=None))
    for row in conn.execute(query):
        out = row._asdict()
        for name in ("cutoff", "started_at", "committed_at"):
            out[name] = out[name].replace(tzinfo=UTC)
        out["dry_run"] = bool(out["dry_run"])
        yield out
