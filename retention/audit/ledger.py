"""The run ledger: one row per rule run, unique per (rule, scheduled slot).

It lives in the policy's audit store, in ``<prefix>runs``. A scheduler that wants
to run rule R for slot S first *claims* (R, S) by inserting its row; the unique
key lets exactly one of any number of replicas win, so each slot runs once. The
winner then records how the run ended with `finish`. The ledger is also what the
daemon reads after downtime (the last slot that ran) and what ``check`` reads for
a rule's last successful run.

Statuses: ``running`` (claimed, not finished), ``ok``, ``failed``, ``limit`` (a
safety limit stopped the rule before it touched a row), ``stopped`` (stopped at a
batch boundary by a signal), ``skipped`` (claimed, but the process was stopping
before the rule started). A ``running`` row whose process died is turned into
``failed`` by the next run of the rule that holds the rule's lock (`abandon`).

Every instant is stored as naive UTC with microseconds (``DATETIME(6)`` on
MySQL/MariaDB) and returned timezone-aware (UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

__all__ = [
    "STATUSES",
    "LedgerRun",
    "LedgerTables",
    "Status",
    "abandon",
    "claim",
    "ensure",
    "finish",
    "last_slot",
    "last_success",
    "last_successes",
    "runs",
]

Status = Literal["running", "ok", "failed", "limit", "stopped", "skipped"]
STATUSES: tuple[Status, ...] = ("running", "ok", "failed", "limit", "stopped", "skipped")

#: Microsecond instants on every backend (MySQL/MariaDB DATETIME drops them otherwise).
Instant = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class LedgerTables:
    """The ledger table for one prefix (``<prefix>runs``)."""

    def __init__(self, prefix: str = "retention_") -> None:
        self.metadata = sa.MetaData()
        self.runs = sa.Table(
            f"{prefix}runs",
            self.metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
            sa.Column("rule", sa.String(80), nullable=False),
            sa.Column("slot", Instant, nullable=False),
            sa.Column("run_id", sa.String(36), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False, default=0),
            sa.Column("cutoff", Instant),
            sa.Column("started_at", Instant, nullable=False),
            sa.Column("finished_at", Instant),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("error", sa.Text),
            sa.UniqueConstraint("rule", "slot", name=f"{prefix}runs_slot_uq"),
        )


@dataclass(frozen=True, slots=True)
class LedgerRun:
    """One row of the ledger, instants aware (UTC)."""

    rule: str
    slot: datetime
    run_id: str
    status: str
    rows: int
    cutoff: datetime | None
    started_at: datetime
    finished_at: datetime | None
    host: str
    error: str | None


def _naive(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("ledger instants must be timezone-aware")
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: Any) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite without type information (aggregates)
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _run(row: Any) -> LedgerRun:
    slot, started = _aware(row.slot), _aware(row.started_at)
    assert slot is not None
    assert started is not None
    return LedgerRun(
        rule=row.rule,
        slot=slot,
        run_id=row.run_id,
        status=row.status,
        rows=int(row.rows or 0),
        cutoff=_aware(row.cutoff),
        started_at=started,
        finished_at=_aware(row.finished_at),
        host=row.host,
        error=row.error,
    )


def ensure(conn: sa.Connection, tables: LedgerTables) -> None:
    """Create the ledger table if missing (idempotent), in the caller's transaction."""
    tables.metadata.create_all(conn, checkfirst=True)


def _insert(dialect: str, table: sa.Table) -> Any:
    """An INSERT that does nothing (and raises nothing) when (rule, slot) exists."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["rule", "slot"])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["rule", "slot"])
    if dialect in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    return table.insert()


def claim(
    engine: sa.Engine,
    tables: LedgerTables,
    rule: str,
    slot: datetime,
    run_id: str,
    host: str,
    now: datetime,
) -> bool:
    """Claim (rule, slot) for this run: True when this call inserted the row, False when
    another run holds it. Never raises on the duplicate and leaves no failed
    transaction behind (the insert commits or rolls back in its own transaction)."""
    values = {
        "rule": rule,
        "slot": _naive(slot),
        "run_id": run_id,
        "status": "running",
        "rows": 0,
        "started_at": _naive(now),
        "host": host,
    }
    with engine.connect() as conn:
        dialect = conn.dialect.name
        statement = _insert(dialect, tables.runs).values(**values)
        try:
            with conn.begin():
                if dialect in ("postgresql", "sqlite"):
                    inserted = conn.execute(statement.returning(tables.runs.c.id)).first()
                    return inserted is not None
                return bool(conn.execute(statement).rowcount == 1)
        except sa.exc.IntegrityError:
            return False


def finish(
    engine: sa.Engine,
    tables: LedgerTables,
    rule: str,
    slot: datetime,
    status: Status,
    rows: int,
    cutoff: datetime | None,
    finished_at: datetime,
    error: str | None = None,
    *,
    run_id: str | None = None,
) -> bool:
    """Record how the run of (rule, slot) ended; True when a ``running`` row was updated.

    Only a row still ``running`` is changed, so a run that was declared abandoned by
    another replica cannot overwrite that verdict. `run_id`, when given, replaces the
    claimed run id (the runner's own id for the run)."""
    table = tables.runs
    changes: dict[str, Any] = {
        "status": status,
        "rows": rows,
        "cutoff": _naive(cutoff),
        "finished_at": _naive(finished_at),
        "error": error,
    }
    if run_id is not None:
        changes["run_id"] = run_id
    with engine.begin() as conn:
        result = conn.execute(
            table.update()
            .where(table.c.rule == rule)
            .where(table.c.slot == _naive(slot))
            .where(table.c.status == "running")
            .values(**changes)
        )
    return bool(result.rowcount == 1)


def abandon(engine: sa.Engine, tables: LedgerTables, rule: str, now: datetime, *, keep: str) -> int:
    """Mark `rule`'s ``running`` rows other than run `keep` as failed; return how many.

    Call it only while holding the rule's lock: no other live process can then be
    running the rule, so those rows belong to processes that died mid-run."""
    table = tables.runs
    with engine.begin() as conn:
        result = conn.execute(
            table.update()
            .where(table.c.rule == rule)
            .where(table.c.status == "running")
            .where(table.c.run_id != keep)
            .values(
                status="failed",
                finished_at=_naive(now),
                error="abandoned: the process running it stopped without finishing it",
            )
        )
    return int(result.rowcount or 0)


def last_success(conn: sa.Connection, tables: LedgerTables, rule: str) -> LedgerRun | None:
    """The latest-slot ``ok`` run of `rule`, or None."""
    table = tables.runs
    row = conn.execute(
        sa.select(table)
        .where(table.c.rule == rule)
        .where(table.c.status == "ok")
        .order_by(table.c.slot.desc())
        .limit(1)
    ).first()
    return None if row is None else _run(row)


def last_successes(
    conn: sa.Connection, tables: LedgerTables, rules: Sequence[str]
) -> dict[str, LedgerRun]:
    """`last_success` of each of `rules` that has one (none when there is no ledger yet)."""
    if not sa.inspect(conn).has_table(tables.runs.name):
        return {}
    found = {rule: last_success(conn, tables, rule) for rule in rules}
    return {rule: run for rule, run in found.items() if run is not None}


def last_slot(conn: sa.Connection, tables: LedgerTables, rule: str) -> datetime | None:
    """The latest slot of `rule` in the ledger, whatever its status, or None."""
    table = tables.runs
    row = conn.execute(
        sa.select(table.c.slot).where(table.c.rule == rule).order_by(table.c.slot.desc()).limit(1)
    ).first()
    return None if row is None else _aware(row.slot)


def runs(
    conn: sa.Connection,
    tables: LedgerTables,
    *,
    rules: Sequence[str] = (),
    since: datetime | None = None,
) -> list[LedgerRun]:
    """Ledger rows in slot order (then rule), filtered by rule and slot >= `since`."""
    table = tables.runs
    query = sa.select(table).order_by(table.c.slot, table.c.rule)
    if rules:
        query = query.where(table.c.rule.in_(list(rules)))
    if since is not None:
        query = query.where(table.c.slot >= _naive(since))
    return [_run(row) for row in conn.execute(query)]
