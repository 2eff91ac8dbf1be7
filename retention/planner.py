"""The planner: Policy + now -> Plan. Pure; no clock, no I/O, no SQL.

A `RulePlan` carries every decision about one rule's run: its cutoff, the
holds and legal minimums that protect rows from it, and its effective batch,
limit and schedule settings. Store adapters turn it into statements; `plan`
prints it with read-only counts; `run` executes the same object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from retention.errors import UsageError
from retention.periods import Period
from retention.policy import (
    Batch,
    Hold,
    Limits,
    Minimum,
    Policy,
    Rule,
    Schedule,
    SqlStore,
)

__all__ = [
    "AppliedMinimum",
    "MinimumConflict",
    "Plan",
    "RulePlan",
    "build_plan",
    "limit_breach",
    "minimum_conflicts",
]


@dataclass(frozen=True, slots=True)
class AppliedMinimum:
    """A legal minimum that protects rows of a rule's table.

    Rows whose minimum timestamp is at or after `cutoff`, or NULL, are kept.
    """

    minimum: Minimum
    cutoff: datetime


@dataclass(frozen=True, slots=True)
class RulePlan:
    """Everything decided about one rule's run at `now`."""

    rule: Rule
    store_name: str
    store: SqlStore
    now: datetime
    cutoff: datetime
    overdue_cutoff: datetime
    batch: Batch
    limits: Limits
    schedule: Schedule
    timezone: str
    holds: tuple[Hold, ...]
    lapsed_holds: tuple[Hold, ...]
    #: Legal minimums that may be on the rule's table (a left-out schema may be any);
    #: compiling against the store keeps those on the same table.
    minimums: tuple[AppliedMinimum, ...]
    #: Legal minimums on every table of the rule's store (children need them too).
    store_minimums: tuple[AppliedMinimum, ...] = ()
    #: The other store this rule archives into (`archive_store` names it), if any.
    archive_target: SqlStore | None = None

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.rule.name

    @property
    def archive_store(self) -> str | None:
        """The other store this rule archives into; None when it archives into a table of
        its own store, or does not archive."""
        spec = self.rule.archive
        if spec is None or spec.store in (None, self.store_name):
            return None
        return spec.store


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules selected for one run, in policy order, each planned at the same `now`."""

    now: datetime
    rules: tuple[RulePlan, ...]
    disabled: tuple[str, ...] = ()


def build_plan(policy: Policy, now: datetime, only: Sequence[str] = ()) -> Plan:
    """Plan the rules named in `only` (all rules when empty) at the aware instant `now`.

    Disabled rules are left out unless named explicitly. Raises `UsageError` for
    an unknown rule name.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    known = {rule.name for rule in policy.rules} | {rule.name for rule in policy.file_rules}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UsageError(
            f"unknown rule {', '.join(map(repr, unknown))}; rules: {', '.join(sorted(known))}"
        )
    selected = [r for r in policy.rules if (r.name in only if only else r.enabled)]
    disabled = tuple(r.name for r in policy.rules if not only and not r.enabled)
    return Plan(now, tuple(plan_rule(policy, rule, now) for rule in selected), disabled)


def plan_rule(policy: Policy, rule: Rule, now: datetime) -> RulePlan:
    """Plan one rule at `now`."""
    store = policy.stores[rule.store]
    if not isinstance(store, SqlStore):
        raise UsageError(f"rule {rule.name}: rules on 'files' stores are not supported yet")
    cutoff = rule.period.before(now)
    archive_target = None
    if rule.archive is not None and rule.archive.store not in (None, rule.store):
        target = policy.stores[rule.archive.store]
        if not isinstance(target, SqlStore):
            raise UsageError(f"rule {rule.name}: archives on 'files' stores are not supported")
        archive_target = target
    scoped = [h for h in policy.holds if h.subjects is not None or h.rule == rule.name]
    store_minimums = tuple(
        AppliedMinimum(m, m.period.before(now)) for m in policy.minimums if m.store == rule.store
    )
    minimums = tuple(a for a in store_minimums if _may_be_same_table(a.minimum, rule))
    return RulePlan(
        rule=rule,
        store_name=rule.store,
        store=store,
        now=now,
        cutoff=cutoff,
        overdue_cutoff=policy.effective_grace(rule).before(cutoff),
        batch=policy.effective_batch(rule),
        limits=policy.effective_limits(rule),
        schedule=policy.effective_schedule(rule),
        timezone=policy.effective_timezone(rule),
        holds=tuple(h for h in scoped if h.active(now)),
        lapsed_holds=tuple(h for h in scoped if not h.active(now)),
        minimums=minimums,
        store_minimums=store_minimums,
        archive_target=archive_target,
    )


@dataclass(frozen=True, slots=True)
class MinimumConflict:
    """A rule that would remove rows a legal minimum protects (the minimum wins)."""

    rule_index: int
    minimum: Minimum
    message: str


def minimum_conflicts(policy: Policy, now: datetime) -> list[MinimumConflict]:
    """Rules whose period undercuts a legal minimum on their table, judged at `now`."""
    conflicts: list[MinimumConflict] = []
    for index, rule in enumerate(policy.rules):
        for minimum in policy.minimums:
            if minimum.store != rule.store or not _may_be_same_table(minimum, rule):
                continue
            same_clock = rule.timestamp is not None and rule.timestamp.column == (
                minimum.timestamp.column
            )
            if same_clock and not _shorter(rule.period, minimum.period, now):
                continue
            why = (
                f"period {rule.period} is shorter than the legal minimum {minimum.name!r} "
                f"({minimum.period} on {minimum.timestamp.column})"
                if same_clock
                else f"its clock is not {minimum.table}.{minimum.timestamp.column}, so it may "
                f"reach rows younger than the legal minimum {minimum.name!r} ({minimum.period})"
            )
            conflicts.append(
                MinimumConflict(index, minimum, f"{why}; those rows are kept ({minimum.reason})")
            )
    return conflicts


def _may_be_same_table(minimum: Minimum, rule: Rule) -> bool:
    """Whether `minimum` may be on the rule's table. A left-out schema is the database's
    default, unknown here: it may be any schema (compiling against the store decides)."""
    schemas = (minimum.db_schema, rule.db_schema)
    return minimum.table == rule.table and (None in schemas or schemas[0] == schemas[1])


def _shorter(period: Period, other: Period, now: datetime) -> bool:
    return period.before(now) > other.before(now)


def limit_breach(limits: Limits, affected: int, table_rows: int) -> str | None:
    """Why a run affecting `affected` of `table_rows` rows would break a safety limit."""
    if limits.max_rows is not None and affected > limits.max_rows:
        return f"{affected} rows exceed max_rows {limits.max_rows}"
    if (
        limits.max_fraction is not None
        and table_rows
        and affected / table_rows > limits.max_fraction
    ):
        return (
            f"{affected} of {table_rows} rows ({affected / table_rows:.1%}) exceed "
            f"max_fraction {limits.max_fraction:.0%}"
        )
    return None
