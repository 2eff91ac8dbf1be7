"""`retention check`: are the promises kept right now? Read-only.

A row is overdue when it should have been removed more than the rule's grace
ago: it is eligible under the rule planned at ``now - grace``. Held rows and
rows under a legal minimum are reported as such, never as overdue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from retention.errors import StoreError
from retention.planner import plan_rule
from retention.policy import Policy, SqlStore
from retention.stores.rulesql import RuleSchemaError, compile_rule
from retention.stores.schema import Catalog, from_db_time
from retention.stores.sql import read_only

__all__ = ["PromiseStatus", "check_promises", "uncovered_personal_columns"]

_PERSONAL = re.compile(
    r"(e_?mail|(^|_)ip(_|$)|ip_?addr|phone|mobile|(^|_)name$|first_?name|last_?name|full_?name"
    r"|address|street|postcode|zip_?code|birth|dob|ssn|passport)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PromiseStatus:
    """One rule's promise, judged at `now`."""

    rule: str
    promise: str
    overdue: int = 0
    held: int = 0
    minimum: int = 0
    oldest_overdue: datetime | None = None
    error: str | None = None

    @property
    def kept(self) -> bool:
        """True when nothing is overdue and the rule could be checked."""
        return self.error is None and self.overdue == 0


def check_promises(policy: Policy, now: datetime, base_dir: Path | None) -> Iterator[PromiseStatus]:
    """Judge every enabled rule's promise at `now`, one read-only connection per store."""
    rules = [r for r in policy.rules if r.enabled]
    for store_name in dict.fromkeys(r.store for r in rules):
        store = policy.stores[store_name]
        assert isinstance(store, SqlStore)
        try:
            with read_only(store, base_dir, store_name) as conn:
                catalog = Catalog(conn, store_name)
                for rule in (r for r in rules if r.store == store_name):
                    grace = policy.effective_grace(rule)
                    late = plan_rule(policy, rule, grace.before(now))
                    try:
                        sql = compile_rule(late, catalog)
                    except RuleSchemaError as exc:
                        yield PromiseStatus(rule.name, rule.promise, error=str(exc))
                        continue
                    row = conn.execute(sql.count()).one()
                    candidates, not_held = int(row.candidates or 0), int(row.not_held or 0)
                    affected = int(row.affected or 0)
                    yield PromiseStatus(
                        rule.name,
                        rule.promise,
                        overdue=affected,
                        held=candidates - not_held,
                        minimum=not_held - affected,
                        oldest_overdue=from_db_time(
                            row.oldest, sql.age_column, sql.age_format, store, catalog.dialect
                        ),
                    )
        except StoreError as exc:
            for rule in (r for r in rules if r.store == store_name):
                yield PromiseStatus(rule.name, rule.promise, error=str(exc))


def uncovered_personal_columns(policy: Policy, base_dir: Path | None) -> list[str]:
    """``store.table.column`` of columns that look like personal data in tables no rule covers."""
    covered = {(r.store, r.table) for r in policy.rules}
    covered |= {(r.store, r.event.table) for r in policy.rules if r.event}
    found: list[str] = []
    for name, store in policy.stores.items():
        if not isinstance(store, SqlStore) or name not in {r.store for r in policy.rules}:
            continue
        with read_only(store, base_dir, name) as conn:
            inspector = sa.inspect(conn)
            for table in inspector.get_table_names():
                if (name, table) in covered or table.startswith(policy.audit.table_prefix):
                    continue
                for column in inspector.get_columns(table):
                    if _PERSONAL.search(column["name"]):
                        found.append(f"{name}.{table}.{column['name']}")
    return found
