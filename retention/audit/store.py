"""The audit store: the one database that holds a policy's audit trail, run ledger and
run-time holds.

It is the SQL store named by ``audit.store`` in the policy, else a SQLite file next to
the policy file (``<policy stem>.audit.db``). Batches on that same store append their
audit record in the batch's own transaction; batches on any other store write it to an
outbox table in *their* database, in the batch's transaction, and the record is then
forwarded here (see `retention.audit.outbox`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from retention.audit.sql import AuditTables, ensure_tables
from retention.loader import LoadedPolicy
from retention.policy import SqlStore
from retention.stores.sql import open_engine

__all__ = ["AuditStore", "audit_file", "open_audit"]


def audit_file(loaded: LoadedPolicy) -> Path:
    """The default audit database: ``<policy stem>.audit.db`` beside the policy file."""
    return loaded.base_dir / f"{Path(loaded.file).stem}.audit.db"


@dataclass
class AuditStore:
    """An open audit store: its engine, its tables and the store name it shares, if any."""

    engine: sa.Engine
    tables: AuditTables
    #: Name of the policy store that holds the trail, or None for the default SQLite file.
    store: str | None
    #: Printable location (URL without password, or the file path).
    where: str

    def shares(self, store_name: str) -> bool:
        """True when rules on `store_name` commit their audit records in-transaction here."""
        return self.store is not None and self.store == store_name

    def ensure(self) -> None:
        """Create the audit tables if missing. Processes starting together may race to
        create them; the loser's error is retried once the winner's tables exist."""
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    ensure_tables(conn, self.tables)
                return
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()


def open_audit(loaded: LoadedPolicy, *, create: bool = True) -> AuditStore:
    """Open the policy's audit store (creating its tables unless `create` is False)."""
    policy = loaded.policy
    tables = AuditTables(policy.audit.table_prefix)
    name = policy.audit.store
    if name is not None:
        store = policy.stores[name]
        if not isinstance(store, SqlStore):  # reference_issues refuses this at load time
            raise TypeError(f"audit store {name!r} is not a SQL store")
        engine = open_engine(store, loaded.base_dir)
        where = engine.url.render_as_string(hide_password=True)
    else:
        path = audit_file(loaded)
        engine = open_engine(SqlStore(url=f"sqlite:///{path}"), None, create=True)
        where = str(path)
    audit = AuditStore(engine, tables, name, where)
    if create:
        audit.ensure()
    return audit


@contextmanager
def opened(loaded: LoadedPolicy, *, create: bool = True) -> Iterator[AuditStore]:
    """`open_audit` as a context manager that disposes the engine on exit."""
    audit = open_audit(loaded, create=create)
    try:
        yield audit
    finally:
        audit.dispose()
