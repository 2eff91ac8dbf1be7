"""Legal holds kept in the audit store, managed at run time (`retention hold ...`).

A stored hold has the same shape as a hold in the policy file (name, reason, optional
expiry, and a scope: subject key values, or a rule and a filter). Active stored holds
are handed to the loader as extra holds, so they are validated exactly like the
file's and apply to `plan`, `run`, `check` and `report` alike. Adding or releasing
one appends an audit record in the same transaction; the subject key values
themselves appear in the record only as a keyed digest.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retention.audit.records import BatchRecord, key_digest
from retention.audit.sql import Instant, append, ensure_tables
from retention.audit.store import AuditStore, opened
from retention.errors import UsageError
from retention.loader import LoadedPolicy, load_policy

__all__ = ["HoldTable", "StoredHold", "add", "load_with_holds", "release", "stored_holds"]


class HoldTable:
    """The ``<prefix>holds`` table of the audit store."""

    def __init__(self, prefix: str = "retention_") -> None:
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            f"{prefix}holds",
            self.metadata,
            sa.Column("name", sa.String(80), primary_key=True),
            sa.Column("definition", sa.Text, nullable=False),
            sa.Column("created_by", sa.String(255), nullable=False),
            sa.Column("created_at", Instant, nullable=False),
            sa.Column("released_by", sa.String(255)),
            sa.Column("released_at", Instant),
        )


@dataclass(frozen=True)
class StoredHold:
    """A hold as kept in the audit store."""

    name: str
    definition: dict[str, Any]
    created_by: str
    created_at: datetime
    released_by: str | None
    released_at: datetime | None

    @property
    def active(self) -> bool:
        """Not released (an expiry date, if any, is applied by the planner)."""
        return self.released_at is None


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def stored_holds(conn: sa.Connection, table: HoldTable) -> list[StoredHold]:
    """Every stored hold, released ones included, oldest first."""
    if not sa.inspect(conn).has_table(table.table.name):
        return []
    rows = conn.execute(sa.select(table.table).order_by(table.table.c.created_at))
    return [
        StoredHold(
            r.name,
            json.loads(r.definition),
            r.created_by,
            _aware(r.created_at) or datetime.min.replace(tzinfo=UTC),
            r.released_by,
            _aware(r.released_at),
        )
        for r in rows
    ]


def load_with_holds(path: str | Path, env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Load the policy at `path` with the active holds of its audit store added."""
    loaded = load_policy(path, env)
    extra = _active_definitions(loaded)
    return load_policy(path, env, extra) if extra else loaded


def _active_definitions(loaded: LoadedPolicy) -> list[dict[str, Any]]:
    table = HoldTable(loaded.policy.audit.table_prefix)
    with opened(loaded, create=False) as audit, audit.engine.connect() as conn:
        return [h.definition for h in stored_holds(conn, table) if h.active]


def _record(
    audit: AuditStore, action: str, name: str, definition: Mapping[str, Any], digest_key: bytes
) -> BatchRecord:
    """The audit record of a hold change: its scope, with subject values only digested."""
    now = datetime.now(UTC)
    scope = dict(definition)
    subjects = scope.get("subjects")
    values: Sequence[Any] = ()
    if isinstance(subjects, Mapping):
        values = list(subjects.get("values", ()))
        scope["subjects"] = {**subjects, "values": f"{len(values)} values (digest in key_digest)"}
    return BatchRecord(
        run_id=str(uuid.uuid4()),
        rule=str(definition.get("rule") or "-"),
        rule_hash="-",
        store=audit.store or "audit",
        table_name=name,
        action=action,
        cutoff=now,
        batch=0,
        rows=0,
        key_min=None,
        key_max=None,
        key_digest=key_digest(values, digest_key) if values else None,
        started_at=now,
        committed_at=now,
        host=socket.gethostname(),
        dry_run=False,
        outcome="committed",
        detail=json.dumps(scope, sort_keys=True, default=str),
    )


def add(
    path: str | Path,
    definition: Mapping[str, Any],
    who: str,
    digest_key: bytes,
    env: Mapping[str, str] | None = None,
) -> LoadedPolicy:
    """Validate `definition` against the policy (with every active hold) and store it.

    Raises `PolicyError` (from the loader) when the hold is invalid, `UsageError` when
    its name is taken. Returns the policy with the new hold applied.
    """
    loaded = load_policy(path, env)
    name = str(definition.get("name", ""))
    if any(h.name == name for h in loaded.policy.holds):
        raise UsageError(f"hold {name!r} already exists (in the policy file)")
    table = HoldTable(loaded.policy.audit.table_prefix)
    with opened(loaded, create=False) as audit, audit.engine.connect() as conn:
        stored = stored_holds(conn, table)
    if any(h.name == name for h in stored):
        raise UsageError(f"hold {name!r} already exists (in the audit store; names are kept)")
    current = [h.definition for h in stored if h.active]
    applied = load_policy(path, env, [*current, dict(definition)])
    with opened(loaded) as audit, audit.engine.begin() as conn:
        ensure_tables(conn, audit.tables)
        table.metadata.create_all(conn, checkfirst=True)
        taken = conn.execute(
            sa.select(table.table.c.name).where(table.table.c.name == name)
        ).first()
        if taken is not None:
            raise UsageError(f"hold {name!r} already exists (in the audit store; names are kept)")
        conn.execute(
            table.table.insert().values(
                name=name,
                definition=json.dumps(dict(definition), sort_keys=True, default=str),
                created_by=who,
                created_at=datetime.now(UTC).replace(tzinfo=None),
            )
        )
        append(conn, audit.tables, _record(audit, "hold_add", name, definition, digest_key))
    return applied


def release(
    path: str | Path, name: str, who: str, digest_key: bytes, env: Mapping[str, str] | None = None
) -> None:
    """Release the stored hold `name` (kept, marked released, and audited)."""
    loaded = load_policy(path, env)
    if any(h.name == name for h in loaded.policy.holds):
        raise UsageError(f"hold {name!r} is in the policy file: remove it there")
    table = HoldTable(loaded.policy.audit.table_prefix)
    with opened(loaded) as audit, audit.engine.begin() as conn:
        table.metadata.create_all(conn, checkfirst=True)
        row = conn.execute(sa.select(table.table).where(table.table.c.name == name)).first()
        if row is None:
            raise UsageError(f"no stored hold named {name!r}")
        if row.released_at is not None:
            raise UsageError(f"hold {name!r} was already released")
        conn.execute(
            table.table.update()
            .where(table.table.c.name == name)
            .values(released_by=who, released_at=datetime.now(UTC).replace(tzinfo=None))
        )
        definition = json.loads(row.definition)
        append(conn, audit.tables, _record(audit, "hold_release", name, definition, digest_key))
