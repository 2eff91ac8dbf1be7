"""Presenting plans and findings: JSON documents and rich text tables.

The JSON form of a plan is a stable, documented structure (README, "plan
--format json"); its top-level ``format`` key is bumped on incompatible change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from retention.errors import Issue, Severity
from retention.planner import Plan
from retention.stores.preview import RuleEstimate

__all__ = ["iso", "plan_document", "print_issues", "print_plan"]

PLAN_FORMAT = 1


def iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with a trailing Z, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rule_document(est: RuleEstimate) -> dict[str, Any]:
    plan = est.plan
    rule = plan.rule
    return {
        "rule": rule.name,
        "promise": rule.promise,
        "source": rule.source.model_dump(exclude_none=True),
        "store": plan.store_name,
        "table": f"{rule.db_schema}.{rule.table}" if rule.db_schema else rule.table,
        "action": rule.action,
        "path": est.path,
        "partitions": [{"name": n, "rows": r} for n, r in est.partitions],
        "period": str(rule.period),
        "clock": (
            {"column": rule.timestamp.column, "format": rule.timestamp.format}
            if rule.timestamp
            else {
                "event_table": rule.event.table,
                "column": rule.event.column,
                "format": rule.event.format,
            }
            if rule.event
            else None
        ),
        "cutoff": iso(plan.cutoff),
        "rows": {
            "affected": est.affected,
            "held": est.held,
            "minimum": est.protected_by_minimum,
            "candidates": est.candidates,
            "table": est.table_rows,
        },
        "oldest_affected": iso(est.oldest),
        "batch_size": plan.batch.size,
        "estimated_batches": est.estimated_batches,
        "limits": plan.limits.model_dump(),
        "limit_exceeded": est.limit_exceeded,
        "holds": list(est.applied_holds),
        "holds_not_applied": [{"hold": n, "reason": why} for n, why in est.skipped_holds],
        "lapsed_holds": [h.name for h in plan.lapsed_holds],
        "minimums": [
            {"name": m.minimum.name, "period": str(m.minimum.period), "cutoff": iso(m.cutoff)}
            for m in plan.minimums
        ],
        "schedule": str(plan.schedule),
        "sql": [{"step": s.step, "sql": s.sql, "params": s.params} for s in est.statements],
        "warnings": list(est.warnings),
        "error": est.error,
    }


def plan_document(
    plan: Plan, estimates: Sequence[RuleEstimate], policy_file: str
) -> dict[str, Any]:
    """The JSON document `retention plan --format json` prints."""
    return {
        "format": PLAN_FORMAT,
        "policy": policy_file,
        "now": iso(plan.now),
        "dry_run": True,
        "rules": [_rule_document(est) for est in estimates],
        "disabled_rules": list(plan.disabled),
        "totals": {
            "affected": sum(e.affected for e in estimates),
            "held": sum(e.held for e in estimates),
            "minimum": sum(e.protected_by_minimum for e in estimates),
            "errors": sum(1 for e in estimates if e.error),
        },
    }


def print_plan(
    console: Console,
    plan: Plan,
    estimates: Sequence[RuleEstimate],
    policy_file: str,
    *,
    show_sql: bool = False,
) -> None:
    """A readable table of what each rule would do, then per-rule notes."""
    table = Table(
        title=f"retention plan - {policy_file} - as of {iso(plan.now)} (dry run, nothing changed)",
        title_justify="left",
        show_lines=False,
    )
    for name, justify in (
        ("rule", "left"),
        ("action", "left"),
        ("table", "left"),
        ("cutoff (UTC)", "left"),
        ("affected", "right"),
        ("held", "right"),
        ("minimum", "right"),
        ("oldest affected", "left"),
        ("batches", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    notes: list[Any] = []
    for est in estimates:
        rule = est.plan.rule
        cutoff = iso(est.plan.cutoff) or ""
        if est.error:
            table.add_row(
                rule.name, rule.action, rule.table, cutoff[:19], "-", "-", "-", "error", "-"
            )
            notes.append(Text(f"{rule.name}: ERROR {est.error}", style="bold red"))
            continue
        affected = Text(str(est.affected), style="bold" if est.affected else "")
        table.add_row(
            rule.name,
            rule.action,
            rule.table,
            cutoff[:19],
            affected,
            str(est.held),
            str(est.protected_by_minimum),
            (iso(est.oldest) or "-")[:19],
            str(est.estimated_batches),
        )
        if est.limit_exceeded:
            notes.append(
                Text(f"{rule.name}: a run would stop here: {est.limit_exceeded}", style="yellow")
            )
        for hold, why in est.skipped_holds:
            notes.append(Text(f"{rule.name}: hold {hold} does not apply: {why}", style="yellow"))
        for warning in est.warnings:
            notes.append(Text(f"{rule.name}: warning: {warning}", style="yellow"))
        if show_sql:
            for stmt in est.statements:
                notes.append(
                    Panel(
                        f"{stmt.sql}\n-- params: {stmt.params}",
                        title=f"{rule.name}: {stmt.step}",
                        title_align="left",
                    )
                )
    console.print(table)
    if plan.disabled:
        notes.append(Text(f"disabled rules (not run): {', '.join(plan.disabled)}", style="dim"))
    total = sum(e.affected for e in estimates)
    held = sum(e.held for e in estimates)
    minimum = sum(e.protected_by_minimum for e in estimates)
    notes.append(
        Text(
            f"{total} rows would be affected; {held} held back by legal holds, "
            f"{minimum} by legal minimums."
        )
    )
    console.print(Group(*notes))


def print_issues(console: Console, issues: Iterable[Issue]) -> None:
    """One line per issue, errors in red and warnings in yellow."""
    for issue in issues:
        style = "red" if issue.severity is Severity.ERROR else "yellow"
        console.print(Text(str(issue), style=style), soft_wrap=True)
