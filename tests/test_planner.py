"""The planner: Policy + now -> Plan (cutoffs, holds, legal minimums, selected rules)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retention.errors import ExitCode, UsageError
from retention.filters import Condition, Op
from retention.loader import load_text
from retention.planner import RulePlan, build_plan, minimum_conflicts, plan_rule
from retention.policy import Batch, Limits, Policy
from tests.conftest import NOW

# NOW is 2026-11-23 12:00 UTC.
POLICY = """\
version: 1
stores:
  app: {url: "sqlite:///app.db"}
  billing: {url: "sqlite:///billing.db"}
defaults:
  grace: 2 days
  batch: {size: 1000, min_size: 100}
  limits: {max_rows: 5000}
minimums:
  - name: tax-7y
    reason: Tax law
    store: billing
    table: invoices
    timestamp: issued_at
    period: 7 years
holds:
  - name: case-17
    reason: Acme v. Example
    subjects: {column: account_id, values: [1042]}
  - name: incident-9
    reason: Security incident
    rule: sessions-30d
    where: {ip: 203.0.113.9}
  - name: case-3
    reason: Settled case
    rule: sessions-30d
    expires: 2026-06-30
  - name: audit-2025
    reason: Finished audit
    subjects: {column: account_id, values: [7]}
    expires: 2026-11-23T12:00:00Z
rules:
  - name: sessions-30d
    promise: "Sessions: 30 days"
    source: {policy: Privacy, clause: "8"}
    store: app
    table: sessions
    timestamp: created_at
    period: 30 days
    grace: 1 hour
    batch: {pause_ms: 50}
    limits: {max_fraction: 0.5}
    schedule: every 6 hours
    timezone: Europe/Madrid
  - name: invoices-24mo
    promise: "Invoices: 24 months"
    source: {policy: Terms, clause: "4"}
    store: billing
    table: invoices
    timestamp: issued_at
    period: 24 months
  - name: invoices-8y
    promise: "Invoices: 8 years"
    source: {policy: Terms, clause: "4"}
    enabled: false
    store: billing
    table: invoices
    timestamp: issued_at
    period: 8 years
  - name: invoices-after-close
    promise: "Invoices: 1 year after the account closes"
    source: {policy: Terms, clause: "5"}
    store: billing
    table: invoices
    event: {table: accounts, column: closed_at, join: {account_id: id}}
    period: 1 year
  - name: app-invoices-1y
    promise: "Draft invoices: 1 year"
    source: {policy: Terms, clause: "6"}
    store: app
    table: invoices
    timestamp: issued_at
    period: 1 year
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_text(POLICY, "p.yaml", env={}).policy


def planned(policy: Policy, name: str) -> RulePlan:
    return plan_rule(policy, policy.rule(name), NOW)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- cutoffs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cutoff"),
    [
        ("sessions-30d", utc(2026, 10, 24, 12)),
        ("invoices-24mo", utc(2024, 11, 23, 12)),
        ("invoices-8y", utc(2018, 11, 23, 12)),
        ("app-invoices-1y", utc(2025, 11, 23, 12)),
    ],
)
def test_the_cutoff_is_the_period_before_now(policy: Policy, name: str, cutoff: datetime) -> None:
    plan = planned(policy, name)
    assert (plan.now, plan.cutoff) == (NOW, cutoff)


def test_the_overdue_cutoff_is_the_rule_grace_before_the_cutoff(policy: Policy) -> None:
    assert planned(policy, "sessions-30d").overdue_cutoff == utc(2026, 10, 24, 11)


def test_the_overdue_cutoff_uses_the_default_grace_when_the_rule_sets_none(policy: Policy) -> None:
    assert planned(policy, "invoices-24mo").overdue_cutoff == utc(2024, 11, 21, 12)


def test_a_cutoff_from_a_non_utc_now_is_in_utc(policy: Policy) -> None:
    from zoneinfo import ZoneInfo

    now = datetime(2026, 11, 23, 13, 0, tzinfo=ZoneInfo("Europe/Madrid"))
    plan = plan_rule(policy, policy.rule("sessions-30d"), now)
    assert (plan.cutoff, plan.cutoff.tzinfo) == (utc(2026, 10, 24, 12), UTC)


def test_a_naive_now_is_refused(policy: Policy) -> None:
    with pytest.raises(ValueError, match=r"^now must be timezone-aware$"):
        build_plan(policy, datetime(2026, 11, 23, 12))


# --- effective settings ---------------------------------------------------------------------


def test_the_plan_carries_the_rules_effective_settings(policy: Policy) -> None:
    plan = planned(policy, "sessions-30d")
    assert (
        plan.name,
        plan.store_name,
        plan.store.url,
        plan.batch,
        plan.limits,
        str(plan.schedule),
        plan.timezone,
    ) == (
        "sessions-30d",
        "app",
        "sqlite:///app.db",
        Batch(size=1000, min_size=100, pause_ms=50),
        Limits(max_rows=5000, max_fraction=0.5),
        "every 6 hours",
        "Europe/Madrid",
    )


def test_a_rule_without_settings_gets_the_defaults(policy: Policy) -> None:
    plan = planned(policy, "invoices-24mo")
    assert (plan.batch, plan.limits, str(plan.schedule), plan.timezone) == (
        Batch(size=1000, min_size=100),
        Limits(max_rows=5000),
        "0 3 * * *",
        "UTC",
    )


# --- holds ----------------------------------------------------------------------------------


def test_subject_holds_apply_to_every_rule_and_rule_holds_only_to_theirs(policy: Policy) -> None:
    held = {
        name: [hold.name for hold in planned(policy, name).holds]
        for name in ("sessions-30d", "invoices-24mo", "app-invoices-1y")
    }
    assert held == {
        "sessions-30d": ["case-17", "incident-9"],
        "invoices-24mo": ["case-17"],
        "app-invoices-1y": ["case-17"],
    }


def test_a_rule_hold_keeps_its_where(policy: Policy) -> None:
    incident = planned(policy, "sessions-30d").holds[1]
    assert incident.where == (Condition("ip", Op.EQ, "203.0.113.9"),)


def test_expired_holds_are_listed_as_lapsed_not_applied(policy: Policy) -> None:
    lapsed = {
        name: [hold.name for hold in planned(policy, name).lapsed_holds]
        for name in ("sessions-30d", "invoices-24mo")
    }
    assert lapsed == {"sessions-30d": ["case-3", "audit-2025"], "invoices-24mo": ["audit-2025"]}


def test_a_hold_expiry_written_as_a_quoted_string_without_a_zone_is_utc() -> None:
    text = POLICY.replace("    expires: 2026-06-30\n", "    expires: '2026-11-23T12:00:01'\n")
    policy = load_text(text, "p.yaml", env={}).policy
    plan = planned(policy, "sessions-30d")
    assert ([h.name for h in plan.holds], [h.name for h in plan.lapsed_holds]) == (
        ["case-17", "incident-9", "case-3"],
        ["audit-2025"],
    )


def test_a_hold_expiring_exactly_now_has_lapsed_and_one_expiring_later_has_not(
    policy: Policy,
) -> None:
    just_before = plan_rule(policy, policy.rule("invoices-24mo"), utc(2026, 11, 23, 11, 59))
    at_expiry = planned(policy, "invoices-24mo")
    assert ([h.name for h in just_before.holds], [h.name for h in at_expiry.holds]) == (
        ["case-17", "audit-2025"],
        ["case-17"],
    )


# --- legal minimums ----------------------------------------------------------------------------


def test_a_minimum_applies_to_rules_on_its_store_and_table(policy: Policy) -> None:
    applied = {
        name: [(m.minimum.name, m.cutoff) for m in planned(policy, name).minimums]
        for name in ("invoices-24mo", "invoices-after-close", "app-invoices-1y", "sessions-30d")
    }
    assert applied == {
        "invoices-24mo": [("tax-7y", utc(2019, 11, 23, 12))],
        "invoices-after-close": [("tax-7y", utc(2019, 11, 23, 12))],
        "app-invoices-1y": [],  # same table name, other store
        "sessions-30d": [],
    }


def test_a_minimum_does_not_apply_to_a_same_named_table_in_another_schema() -> None:
    text = POLICY.replace(
        "    table: invoices\n    timestamp: issued_at\n    period: 7 years\n",
        "    schema: audit\n    table: invoices\n    timestamp: issued_at\n    period: 7 years\n",
    ).replace(
        "  - name: invoices-24mo\n",
        "  - name: invoices-24mo\n    schema: ledger\n",
    )
    policy = load_text(text, "p.yaml", env={}).policy
    assert planned(policy, "invoices-24mo").minimums == ()
    assert 1 not in [c.rule_index for c in minimum_conflicts(policy, NOW)]


def test_a_minimum_without_a_schema_may_apply_to_a_rule_naming_one() -> None:
    """A left-out schema is the database's default, unknown to the planner: the minimum is
    kept for the rule (compiling against the store decides) and the conflict is flagged."""
    text = POLICY.replace(
        "  - name: invoices-24mo\n", "  - name: invoices-24mo\n    schema: ledger\n"
    )
    policy = load_text(text, "p.yaml", env={}).policy
    assert [m.minimum.name for m in planned(policy, "invoices-24mo").minimums] == ["tax-7y"]
    assert 1 in [c.rule_index for c in minimum_conflicts(policy, NOW)]


def test_minimum_conflicts_flags_rules_that_undercut_a_minimum(policy: Policy) -> None:
    conflicts = minimum_conflicts(policy, NOW)
    assert [(c.rule_index, c.minimum.name, c.message) for c in conflicts] == [
        (
            1,
            "tax-7y",
            "period 24 months is shorter than the legal minimum 'tax-7y' (7 years on issued_at); "
            "those rows are kept (Tax law)",
        ),
        (
            3,
            "tax-7y",
            "its clock is not invoices.issued_at, so it may reach rows younger than the legal "
            "minimum 'tax-7y' (7 years); those rows are kept (Tax law)",
        ),
    ]


@pytest.mark.parametrize(
    ("period", "flagged"),
    [
        ("24 months", True),
        ("83 months", True),
        ("84 months", False),
        ("7 years", False),
        ("8 years", False),
        ("P7Y1D", False),
        ("2555 days", True),
        ("2557 days", False),
    ],
)
def test_a_rule_on_the_minimums_column_conflicts_only_when_shorter(
    period: str, flagged: bool
) -> None:
    # 7 years before NOW spans 2556 days (two leap days: 2020 and 2024).
    text = POLICY.replace("    period: 24 months\n", f"    period: {period}\n")
    policy = load_text(text, "p.yaml", env={}).policy
    assert any(c.rule_index == 1 for c in minimum_conflicts(policy, NOW)) is flagged


def test_a_rule_on_another_column_of_the_minimums_table_is_flagged() -> None:
    text = POLICY.replace(
        "    timestamp: issued_at\n    period: 8 years\n",
        "    timestamp: paid_at\n    period: 8 years\n",
    )
    policy = load_text(text, "p.yaml", env={}).policy
    assert [(c.rule_index, c.message) for c in minimum_conflicts(policy, NOW)][1:] == [
        (
            2,
            "its clock is not invoices.issued_at, so it may reach rows younger than the legal "
            "minimum 'tax-7y' (7 years); those rows are kept (Tax law)",
        ),
        (
            3,
            "its clock is not invoices.issued_at, so it may reach rows younger than the legal "
            "minimum 'tax-7y' (7 years); those rows are kept (Tax law)",
        ),
    ]


# --- selecting rules ------------------------------------------------------------------------------


def test_a_plan_holds_every_enabled_rule_in_policy_order(policy: Policy) -> None:
    plan = build_plan(policy, NOW)
    assert (plan.now, [r.name for r in plan.rules], plan.disabled) == (
        NOW,
        ["sessions-30d", "invoices-24mo", "invoices-after-close", "app-invoices-1y"],
        ("invoices-8y",),
    )


def test_a_disabled_rule_is_planned_when_named(policy: Policy) -> None:
    plan = build_plan(policy, NOW, only=["invoices-8y"])
    assert ([r.name for r in plan.rules], plan.disabled) == (["invoices-8y"], ())


def test_named_rules_are_planned_in_policy_order(policy: Policy) -> None:
    plan = build_plan(policy, NOW, only=["app-invoices-1y", "sessions-30d"])
    assert [r.name for r in plan.rules] == ["sessions-30d", "app-invoices-1y"]


def test_the_plan_is_the_same_as_planning_each_rule(policy: Policy) -> None:
    plan = build_plan(policy, NOW)
    assert plan.rules == tuple(planned(policy, r.name) for r in policy.rules if r.enabled)


def test_an_unknown_rule_name_is_a_usage_error(policy: Policy) -> None:
    with pytest.raises(UsageError) as info:
        build_plan(policy, NOW, only=["sessions-30d", "sessions-90d", "logs"])
    assert str(info.value) == (
        "unknown rule 'sessions-90d', 'logs'; rules: app-invoices-1y, invoices-24mo, "
        "invoices-8y, invoices-after-close, sessions-30d"
    )
    assert info.value.exit_code == ExitCode.INVALID
