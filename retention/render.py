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
from retention.stores.files import FileRulePlan
from retention.stores.preview import RuleEstimate

__all__ = [
    "file_rule_document",
    "iso",
    "plan_document",
    "print_issues",
    "print_plan",
    "size_text",
]

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
        "archive": (
            {
                "store": rule.archive.store or plan.store_name,
                "schema": rule.archive.db_schema,
                "table": rule.archive.table,
            }
            if rule.archive
            else None
        ),
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
        "sql": [
            {"step": s.step, "store": s.store, "sql": s.sql, "params": s.params}
            for s in est.statements
        ],
        "warnings": list(est.warnings),
        "error": est.error,
    }


def file_rule_document(plan: FileRulePlan) -> dict[str, Any]:
    """The JSON form of one file rule's plan, listing every matched file."""
    rule = plan.rule
    stamp = rule.timestamp
    return {
        "rule": rule.name,
        "promise": rule.promise,
        "source": rule.source.model_dump(exclude_none=True),
        "store": plan.store_name,
        "root": plan.root,
        "pattern": rule.pattern,
        "action": rule.action,
        "archive": (
            {"store": rule.archive_store, "prefix": rule.archive.prefix} if rule.archive else None
        ),
        "period": str(rule.period),
        "clock": "mtime"
        if stamp.name is None
        else {"name": stamp.name, "timezone": stamp.timezone},
        "cutoff": iso(plan.cutoff),
        "keep_last": rule.keep_last,
        "files": {
            "expired": plan.count("expired"),
            "held": plan.count("held"),
            "minimum": plan.count("minimum"),
            "keep_last": plan.count("keep_last"),
            "unparsable": plan.count("unparsable"),
            "newer": plan.count("newer"),
            "matched": plan.matched,
        },
        "bytes": {"expired": plan.bytes("expired"), "matched": plan.bytes()},
        "oldest_expired": iso(plan.oldest_expired),
        "batch_size": plan.batch.size,
        "estimated_batches": plan.estimated_batches,
        "limits": plan.limits.model_dump(),
        "limit_exceeded": plan.limit_exceeded,
        "holds": [h.name for h in plan.holds],
        "lapsed_holds": [h.name for h in plan.lapsed_holds],
        "minimums": [
            {"name": m.minimum.name, "period": str(m.minimum.period), "cutoff": iso(m.cutoff)}
            for m in plan.minimums
        ],
        "schedule": str(plan.schedule),
        "paths": [
            {
                "path": f.path,
                "size": f.size,
                "timestamp": iso(f.timestamp),
                "state": f.state,
                "reason": f.reason,
            }
            for f in plan.files
        ],
        "skipped": [{"path": s.path, "reason": s.reason} for s in plan.skipped],
        "warnings": list(plan.warnings),
        "error": plan.error,
    }


def plan_document(
    plan: Plan,
    estimates: Sequence[RuleEstimate],
    policy_file: str,
    file_plans: Sequence[FileRulePlan] = (),
) -> dict[str, Any]:
    """The JSON document `retention plan --format json` prints.

    File rules add ``file_rules`` and ``file_totals`` (only when the policy selects any)."""
    document: dict[str, Any] = {
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
    if file_plans:
        document["file_rules"] = [file_rule_document(p) for p in file_plans]
        document["file_totals"] = {
            "files": sum(p.count("expired") for p in file_plans),
            "bytes": sum(p.bytes("expired") for p in file_plans),
            "held": sum(p.count("held") for p in file_plans),
            "minimum": sum(p.count("minimum") for p in file_plans),
            "keep_last": sum(p.count("keep_last") for p in file_plans),
            "unparsable": sum(p.count("unparsable") for p in file_plans),
            "errors": sum(1 for p in file_plans if p.error),
        }
    return document


def size_text(size: int) -> str:
    """Bytes in a short human form: 512 B, 1.5 kB, 2.0 MB (powers of 1000)."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


#: Paths listed per rule in the text plan (``--format json`` lists them all).
_SHOWN_PATHS = 5


def _file_table(file_plans: Sequence[FileRulePlan]) -> tuple[Table, list[Any]]:
    table = Table(title="file rules", title_justify="left", show_lines=False)
    for name, justify in (
        ("rule", "left"),
        ("action", "left"),
        ("files", "left"),
        ("cutoff (UTC)", "left"),
        ("expired", "right"),
        ("bytes", "right"),
        ("held", "right"),
        ("minimum", "right"),
        ("keep_last", "right"),
        ("unparsable", "right"),
        ("oldest expired", "left"),
        ("batches", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    notes: list[Any] = []
    for fp in file_plans:
        rule = fp.rule
        where = f"{fp.store_name}:{rule.pattern}"
        cutoff = (iso(fp.cutoff) or "")[:19]
        if fp.error:
            table.add_row(rule.name, rule.action, where, cutoff, *["-"] * 6, "error", "-")
            notes.append(Text(f"{rule.name}: ERROR {fp.error}", style="bold red"))
            continue
        expired = fp.count("expired")
        table.add_row(
            rule.name,
            rule.action,
            where,
            cutoff,
            Text(str(expired), style="bold" if expired else ""),
            size_text(fp.bytes("expired")),
            str(fp.count("held")),
            str(fp.count("minimum")),
            str(fp.count("keep_last")),
            str(fp.count("unparsable")),
            (iso(fp.oldest_expired) or "-")[:19],
            str(fp.estimated_batches),
        )
        if fp.limit_exceeded:
            notes.append(
                Text(f"{rule.name}: a run would stop here: {fp.limit_exceeded}", style="yellow")
            )
        for warning in fp.warnings:
            notes.append(Text(f"{rule.name}: warning: {warning}", style="yellow"))
        going = fp.expired
        if going:
            shown = ", ".join(f"{f.path} ({size_text(f.size)})" for f in going[:_SHOWN_PATHS])
            more = len(going) - _SHOWN_PATHS
            tail = f" and {more} more (--format json lists them all)" if more > 0 else ""
            notes.append(Text(f"{rule.name}: would remove {shown}{tail}"))
        for f in fp.having("unparsable")[:_SHOWN_PATHS]:
            notes.append(Text(f"{rule.name}: never removed: {f.path}: {f.reason}", style="yellow"))
        if fp.count("unparsable") > _SHOWN_PATHS:
            notes.append(
                Text(
                    f"{rule.name}: ... and {fp.count('unparsable') - _SHOWN_PATHS} more files "
                    "whose timestamp cannot be read",
                    style="yellow",
                )
            )
        for skipped in fp.skipped:
            notes.append(
                Text(f"{rule.name}: skipped {skipped.path}: {skipped.reason}", style="yellow")
            )
    return table, notes


def print_plan(
    console: Console,
    plan: Plan,
    estimates: Sequence[RuleEstimate],
    policy_file: str,
    *,
    show_sql: bool = False,
    file_plans: Sequence[FileRulePlan] = (),
) -> None:
    """A readable table of what each rule would do, then per-rule notes (file rules get a
    second table, printed only when the policy selects any)."""
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
        if est.plan.archive_store is not None and rule.archive is not None:
            notes.append(Text(_archive_path(est, rule.archive.table)))
        if show_sql:
            for stmt in est.statements:
                notes.append(
                    Panel(
                        f"{stmt.sql}\n-- params: {stmt.params}",
                        title=f"{rule.name}: {stmt.step} (store {stmt.store})",
                        title_align="left",
                    )
                )
    console.print(table)
    if file_plans:
        files_table, file_notes = _file_table(file_plans)
        console.print(files_table)
        notes.extend(file_notes)
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
    if file_plans:
        count = sum(p.count("expired") for p in file_plans)
        size = sum(p.bytes("expired") for p in file_plans)
        notes.append(
            Text(
                f"{count} files ({size_text(size)}) would be removed; "
                f"{sum(p.count('held') for p in file_plans)} held back by legal holds, "
                f"{sum(p.count('minimum') for p in file_plans)} by legal minimums, "
                f"{sum(p.count('keep_last') for p in file_plans)} by keep_last; "
                f"{sum(p.count('unparsable') for p in file_plans)} with unreadable timestamps."
            )
        )
    console.print(Group(*notes))


def _archive_path(est: RuleEstimate, table: str) -> str:
    """How a rule archiving into another store moves each batch."""
    plan = est.plan
    here, there = plan.store_name, plan.archive_store
    return (
        f"{plan.rule.name}: archives into {table} in store {there}: each batch is read and "
        f"locked in {here}, copied into {there} (replacing copies an interrupted run left) "
        f"and committed there, then deleted in {here} and committed with its audit record"
    )


def print_issues(console: Console, issues: Iterable[Issue]) -> None:
    """One line per issue, errors in red and warnings in yellow."""
    for issue in issues:
        style = "red" if issue.severity is Severity.ERROR else "yellow"
        console.print(Text(str(issue), style=style), soft_wrap=True)
