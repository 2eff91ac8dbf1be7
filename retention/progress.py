"""Showing a run: a rich progress bar per rule on a terminal, JSON log lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from retention.loader import LoadedPolicy
from retention.logs import configure, get_logger
from retention.planner import RulePlan
from retention.render import iso
from retention.runner import RuleOutcome, RunOptions, RunReport, run_once
from retention.stores.purge import BatchDone

__all__ = ["run_with_progress"]


def run_with_progress(
    loaded: LoadedPolicy,
    local_now: datetime,
    options: RunOptions,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunReport:
    """`run_once` with progress shown on a terminal, or one log line per batch and rule."""
    if sys.stdout.isatty():
        return _interactive(loaded, local_now, options, should_stop)
    configure(json=True)
    log = get_logger(policy=loaded.file)
    cutoffs: dict[str, str | None] = {}

    def on_start(plan: RulePlan, rows: int) -> None:
        cutoffs[plan.name] = iso(plan.cutoff)
        log.info(
            "rule.start",
            rule=plan.name,
            action=plan.rule.action,
            planned=rows,
            cutoff=cutoffs[plan.name],
        )

    def on_batch(done: BatchDone) -> None:
        log.info(
            "batch",
            rule=done.rule,
            batch=done.batch,
            rows=done.rows,
            size=done.size,
            ms=round(done.seconds * 1000, 1),
        )

    def on_rule(outcome: RuleOutcome) -> None:
        result = outcome.result
        log.info(
            "rule.done",
            rule=outcome.rule,
            action=outcome.action,
            status=outcome.status,
            rows=outcome.rows,
            batches=result.batches if result else 0,
            seconds=round(result.seconds, 3) if result else 0,
            cutoff=cutoffs.get(outcome.rule),
            error=outcome.error,
        )

    report = run_once(
        loaded,
        local_now,
        options,
        on_start=on_start,
        on_batch=on_batch,
        on_rule=on_rule,
        should_stop=should_stop,
    )
    log.info(
        "run.done",
        run_id=report.run_id,
        exit_code=report.exit_code,
        rows=sum(o.rows for o in report.outcomes),
    )
    return report


def _interactive(
    loaded: LoadedPolicy,
    local_now: datetime,
    options: RunOptions,
    should_stop: Callable[[], bool],
) -> RunReport:
    console = Console()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, TaskID] = {}

    def on_start(plan: RulePlan, rows: int) -> None:
        tasks[plan.name] = progress.add_task(plan.name, total=rows or 1, rate="")

    def on_batch(done: BatchDone) -> None:
        if done.rule not in tasks:  # file rules announce themselves with their first batch
            tasks[done.rule] = progress.add_task(done.rule, total=None, rate="")
        task = tasks[done.rule]
        rate = f"{done.rows / done.seconds:,.0f} rows/s" if done.seconds > 0 else ""
        progress.update(task, advance=done.rows, rate=rate)

    def on_rule(outcome: RuleOutcome) -> None:
        if outcome.rule in tasks:
            progress.update(tasks[outcome.rule], completed=outcome.rows or 1)

    with progress:
        report = run_once(
            loaded,
            local_now,
            options,
            on_start=on_start,
            on_batch=on_batch,
            on_rule=on_rule,
            should_stop=should_stop,
        )
    table = Table(
        title=f"retention run {report.run_id} - now {iso(report.plan.now)}", title_justify="left"
    )
    for name in ("rule", "action", "status", "rows", "batches", "seconds", "note"):
        table.add_column(name)
    for o in report.outcomes:
        r = o.result
        table.add_row(
            o.rule,
            o.action,
            o.status,
            str(o.rows),
            str(r.batches if r else 0),
            f"{r.seconds:.2f}" if r else "-",
            o.error or "",
        )
    console.print(table)
    return report
