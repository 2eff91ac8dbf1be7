"""Prometheus metrics: one registry per process (never the global one), per-rule series.

The daemon serves it on ``/metrics``; ``retention run --metrics-file PATH`` writes
it once per run for node-exporter's textfile collector (`write_metrics_file`).

Series (every one labelled by ``rule``):

==========================================  =========  ================================
``retention_rows_total{rule,action}``       counter    rows deleted / anonymized / archived
``retention_batches_total``                 counter    committed batches
``retention_runs_total{rule,status}``       counter    rule runs by outcome
``retention_run_duration_seconds``          histogram  duration of a rule's run
``retention_last_success_timestamp_seconds``gauge      end of the last successful run
``retention_overdue_rows``                  gauge      rows past cutoff + grace, not held
``retention_oldest_overdue_age_seconds``    gauge      age of the oldest overdue row (0: none)
``retention_rows_held``                     gauge      rows a legal hold keeps
``retention_promise_kept``                  gauge      1 kept, 0 broken or not checkable
``retention_lock_contention_total``         counter    runs skipped: another replica held the lock
``retention_scheduler_misfires_total``      counter    slots the scheduler could not start on time
``retention_files_removed_total``           counter    files removed (file stores)
``retention_bytes_removed_total``           counter    bytes removed (file stores)
==========================================  =========  ================================
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from retention.runner import RuleOutcome, RunReport
from retention.stores.check import PromiseStatus

__all__ = ["DURATION_BUCKETS", "Metrics", "write_metrics_file"]

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600)
_LAST_SUCCESS = "retention_last_success_timestamp_seconds"
_SAMPLE = re.compile(_LAST_SUCCESS + r'\{rule="(?P<rule>(?:[^"\\]|\\.)*)"\} (?P<value>\S+)$')


class Metrics:
    """The metrics of one process, in their own `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rows = Counter(
            "retention_rows",
            "Rows deleted, anonymized or archived, by rule and action.",
            ["rule", "action"],
            registry=r,
        )
        self.batches = Counter(
            "retention_batches", "Committed batches, by rule.", ["rule"], registry=r
        )
        self.runs = Counter(
            "retention_runs", "Rule runs, by rule and status.", ["rule", "status"], registry=r
        )
        self.duration = Histogram(
            "retention_run_duration_seconds",
            "Duration of a rule's run.",
            ["rule"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            _LAST_SUCCESS,
            "Unix time at which the rule's last successful run ended.",
            ["rule"],
            registry=r,
        )
        self.overdue = Gauge(
            "retention_overdue_rows",
            "Rows past their cutoff plus grace that are not held (the promise is broken if > 0).",
            ["rule"],
            registry=r,
        )
        self.oldest_overdue_age = Gauge(
            "retention_oldest_overdue_age_seconds",
            "Age of the oldest overdue row's timestamp (0 when none is overdue).",
            ["rule"],
            registry=r,
        )
        self.held = Gauge(
            "retention_rows_held",
            "Rows a legal hold keeps past their cutoff.",
            ["rule"],
            registry=r,
        )
        self.kept = Gauge(
            "retention_promise_kept",
            "1 when the rule's promise is kept, 0 when broken or it could not be checked.",
            ["rule"],
            registry=r,
        )
        self.contention = Counter(
            "retention_lock_contention",
            "Scheduled runs skipped because another process held the rule's lock.",
            ["rule"],
            registry=r,
        )
        self.misfires = Counter(
            "retention_scheduler_misfires",
            "Scheduled runs the scheduler could not start on time (missed, or still running).",
            ["rule"],
            registry=r,
        )
        self.files = Counter(
            "retention_files_removed", "Files removed by file-store rules.", ["rule"], registry=r
        )
        self.bytes = Counter(
            "retention_bytes_removed", "Bytes removed by file-store rules.", ["rule"], registry=r
        )

    def declare(self, rules: Iterable[str]) -> None:
        """Create the zero-valued series of `rules`, so they show before their first run."""
        for rule in rules:
            self.batches.labels(rule)
            self.contention.labels(rule)
            self.misfires.labels(rule)

    def observe_outcome(self, outcome: RuleOutcome, *, finished_at: datetime) -> None:
        """Count one rule's outcome (its rows, batches, duration and status)."""
        rule = outcome.rule
        result = outcome.result
        self.runs.labels(rule, outcome.status).inc()
        self.rows.labels(rule, outcome.action).inc(outcome.rows)
        if result is not None:
            self.batches.labels(rule).inc(result.batches)
            self.duration.labels(rule).observe(result.seconds)
        if outcome.bytes is not None:
            self.observe_files(rule, outcome.rows, outcome.bytes)
        if outcome.status == "ok":
            self.last_success.labels(rule).set(finished_at.timestamp())

    def observe(self, report: RunReport, *, finished_at: datetime | None = None) -> None:
        """Count every outcome of `report` (finished at `finished_at`, default the plan's now)."""
        end = finished_at or report.plan.now
        for outcome in report.outcomes:
            self.observe_outcome(outcome, finished_at=end)

    def observe_promises(self, statuses: Iterable[PromiseStatus], now: datetime) -> None:
        """Set the overdue, held and kept gauges from `retention check`'s statuses."""
        for s in statuses:
            self.kept.labels(s.rule).set(1 if s.kept else 0)
            if s.error is not None:
                continue
            self.overdue.labels(s.rule).set(s.overdue)
            self.held.labels(s.rule).set(s.held)
            age = 0.0
            if s.overdue and s.oldest_overdue is not None:
                age = max(0.0, (now - s.oldest_overdue).total_seconds())
            self.oldest_overdue_age.labels(s.rule).set(age)

    def observe_files(self, rule: str, files: int, size: int) -> None:
        """Count files and bytes a file-store rule removed."""
        self.files.labels(rule).inc(files)
        self.bytes.labels(rule).inc(size)

    def lock_busy(self, rule: str) -> None:
        """Count a run skipped because the rule's lock was held elsewhere."""
        self.contention.labels(rule).inc()

    def misfire(self, rule: str) -> None:
        """Count a slot the scheduler could not start on time."""
        self.misfires.labels(rule).inc()

    def text(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def write_textfile(self, path: str | Path) -> None:
        """Write the metrics to `path` atomically (a temporary file in the same folder,
        then rename), as node-exporter's textfile collector requires."""
        target = Path(path)
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(self.text())
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _previous_successes(path: Path) -> dict[str, float]:
    """``rule -> last success`` from an earlier textfile, so a failed run keeps the series."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            try:
                found[match.group("rule")] = float(match.group("value"))
            except ValueError:
                continue
    return found


def write_metrics_file(
    report: RunReport,
    path: str | Path,
    *,
    finished_at: datetime | None = None,
    promises: Iterable[PromiseStatus] = (),
) -> None:
    """Write one run's metrics to `path` for node-exporter's textfile collector.

    Counters hold this run's values. A rule that did not succeed this time keeps
    the last-success time of the file it replaces, so alerts on its age still work.
    """
    metrics = Metrics()
    metrics.declare(o.rule for o in report.outcomes)
    for rule, value in _previous_successes(Path(path)).items():
        metrics.last_success.labels(rule).set(value)
    end = finished_at or report.plan.now
    metrics.observe(report, finished_at=end)
    metrics.observe_promises(promises, end)
    metrics.write_textfile(path)
