"""Prometheus metrics: per-rule series from a real run, promise gauges from
`check_promises`, file-store counters, and the node-exporter textfile (atomic, keeps
the last success of a rule that failed this time)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from retention.loader import LoadedPolicy, load_policy, load_text
from retention.metrics import Metrics, write_metrics_file
from retention.runner import RuleOutcome, RunOptions, RunReport, run_once
from retention.stores.check import PromiseStatus, check_promises
from retention.stores.purge import RuleResult
from tests.conftest import NOW

ENV = {"RETENTION_AUDIT_KEY": "metrics-test-key"}

POLICY = """\
version: 1
stores: {{app: {{url: "{url}"}}}}
defaults: {{limits: {{max_fraction: 1.0}}, grace: 1 day}}
holds:
  - name: keep-7
    reason: "litigation"
    subjects: {{column: account_id, values: [7]}}
rules:
  - name: events-90d
    promise: "events 90 days"
    source: {{policy: test, clause: "1"}}
    store: app
    table: m_events
    timestamp: created_at
    period: 90 days
    batch: {{size: 10, min_size: 10, max_size: 10}}
  - name: broken
    promise: "a table that does not exist"
    source: {{policy: test, clause: "2"}}
    store: app
    table: m_missing
    timestamp: created_at
    period: 90 days
"""

META = sa.MetaData()
EVENTS = sa.Table(
    "m_events",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)


def _samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    raw = text.decode() if isinstance(text, bytes) else text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(raw)
        for s in family.samples
    }


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedPolicy:
    """45 expired rows (5 of them held), 10 fresh ones."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = sa.create_engine(url)
    META.create_all(engine)
    naive = NOW.replace(tzinfo=None)
    rows = [
        {"id": i, "account_id": 7 if i < 5 else 1, "created_at": naive - timedelta(days=200 + i)}
        for i in range(45)
    ]
    rows += [
        {"id": 100 + i, "account_id": 1, "created_at": naive - timedelta(days=i)} for i in range(10)
    ]
    with engine.begin() as conn:
        conn.execute(EVENTS.insert(), rows)
    engine.dispose()
    return load_text(POLICY.format(url=url), str(tmp_path / "policy.yaml"), {})


def test_a_run_becomes_per_rule_series(loaded: LoadedPolicy) -> None:
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env=ENV)
    assert [(o.rule, o.status) for o in report.outcomes] == [
        ("events-90d", "ok"),
        ("broken", "failed"),
    ]
    metrics = Metrics()
    metrics.observe(report, finished_at=NOW)
    samples = _samples(metrics.text())
    events = report.outcomes[0]
    assert events.result is not None
    assert samples[("retention_rows_total", (("action", "delete"), ("rule", "events-90d")))] == 40
    assert samples[("retention_batches_total", (("rule", "events-90d"),))] == events.result.batches
    assert events.result.batches >= 4
    assert samples[("retention_runs_total", (("rule", "events-90d"), ("status", "ok")))] == 1
    assert samples[("retention_runs_total", (("rule", "broken"), ("status", "failed")))] == 1
    assert samples[("retention_run_duration_seconds_count", (("rule", "events-90d"),))] == 1
    assert samples[("retention_last_success_timestamp_seconds", (("rule", "events-90d"),))] == (
        NOW.timestamp()
    )
    assert ("retention_last_success_timestamp_seconds", (("rule", "broken"),)) not in samples


def test_promises_become_overdue_held_and_kept_gauges(loaded: LoadedPolicy) -> None:
    metrics = Metrics()
    statuses = list(check_promises(loaded.policy, NOW, loaded.base_dir))
    metrics.observe_promises(statuses, NOW)
    samples = _samples(metrics.text())
    rule = (("rule", "events-90d"),)
    assert samples[("retention_overdue_rows", rule)] == 40
    assert samples[("retention_rows_held", rule)] == 5
    assert samples[("retention_promise_kept", rule)] == 0
    # The oldest unheld row is 244 days old (id 44).
    assert samples[("retention_oldest_overdue_age_seconds", rule)] == pytest.approx(
        timedelta(days=244).total_seconds()
    )
    assert samples[("retention_promise_kept", (("rule", "broken"),))] == 0
    assert ("retention_overdue_rows", (("rule", "broken"),)) not in samples

    run_once(loaded, NOW, RunOptions(as_of=NOW), env=ENV)
    metrics.observe_promises(check_promises(loaded.policy, NOW, loaded.base_dir), NOW)
    samples = _samples(metrics.text())
    assert samples[("retention_overdue_rows", rule)] == 0
    assert samples[("retention_oldest_overdue_age_seconds", rule)] == 0
    assert samples[("retention_promise_kept", rule)] == 1


def test_contention_misfires_and_file_series() -> None:
    metrics = Metrics()
    metrics.declare(["a", "b"])
    metrics.lock_busy("a")
    metrics.lock_busy("a")
    metrics.misfire("b")
    metrics.observe_files("backups", 3, 3_000_000)
    metrics.observe_files("backups", 1, 5)
    samples = _samples(metrics.text())
    assert samples[("retention_lock_contention_total", (("rule", "a"),))] == 2
    assert samples[("retention_lock_contention_total", (("rule", "b"),))] == 0
    assert samples[("retention_scheduler_misfires_total", (("rule", "a"),))] == 0
    assert samples[("retention_scheduler_misfires_total", (("rule", "b"),))] == 1
    assert samples[("retention_files_removed_total", (("rule", "backups"),))] == 4
    assert samples[("retention_bytes_removed_total", (("rule", "backups"),))] == 3_000_005


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.lock_busy("x")
    assert (
        _samples(second.text()).get(("retention_lock_contention_total", (("rule", "x"),))) is None
    )


def _report(loaded: LoadedPolicy, statuses: dict[str, str]) -> RunReport:
    report = run_once(loaded, NOW, RunOptions(as_of=NOW, rules=["events-90d"]), env=ENV)
    report.outcomes = [
        RuleOutcome(rule, "delete", status, result=RuleResult(rule, "delete", rows=3, batches=1))  # type: ignore[arg-type]
        for rule, status in statuses.items()
    ]
    return report


def test_textfile_is_replaced_atomically_and_keeps_the_last_success_of_a_failed_rule(
    loaded: LoadedPolicy, tmp_path: Path
) -> None:
    path = tmp_path / "retention.prom"
    write_metrics_file(_report(loaded, {"a": "ok", "b": "ok"}), path, finished_at=NOW)
    later = NOW + timedelta(days=1)
    write_metrics_file(
        _report(loaded, {"a": "ok", "b": "failed"}),
        path,
        finished_at=later,
        promises=[PromiseStatus("a", "p", overdue=2, oldest_overdue=later - timedelta(hours=1))],
    )
    samples = _samples(path.read_text(encoding="utf-8"))
    last = "retention_last_success_timestamp_seconds"
    assert samples[(last, (("rule", "a"),))] == later.timestamp()
    assert samples[(last, (("rule", "b"),))] == NOW.timestamp()
    assert samples[("retention_runs_total", (("rule", "b"), ("status", "failed")))] == 1
    assert samples[("retention_rows_total", (("action", "delete"), ("rule", "b")))] == 3
    assert samples[("retention_overdue_rows", (("rule", "a"),))] == 2
    assert samples[("retention_oldest_overdue_age_seconds", (("rule", "a"),))] == 3600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_textfile_write_failure_leaves_the_old_file_and_no_temporary(
    loaded: LoadedPolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "retention.prom"
    path.write_text("old\n", encoding="utf-8")

    def broken(_src: str, _dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_metrics_file(_report(loaded, {"a": "ok"}), path, finished_at=NOW)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".prom.tmp")) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".retention.prom")] == []


def test_a_file_rule_run_counts_files_and_bytes(tmp_path: Path) -> None:
    """Files and bytes removed by a file rule reach the metrics through the run report."""
    import shutil

    from retention.demo import build_demo_backups

    root = tmp_path / "backups"
    build_demo_backups(root, NOW)
    policy = tmp_path / "infraux.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "policies" / "infraux.yaml", policy)
    env = {"RETENTION_DB_URL": f"sqlite:///{tmp_path / 'unused.db'}"}
    loaded = load_policy(policy, env={**env, "RETENTION_BACKUP_ROOT": str(root)})
    report = run_once(loaded, NOW, RunOptions(as_of=NOW, rules=["backups-90d"]), env=ENV)
    (outcome,) = report.outcomes
    assert outcome.status == "ok", outcome.error
    assert outcome.rows > 0
    assert outcome.bytes is not None
    assert outcome.bytes > 0
    metrics = Metrics()
    metrics.observe(report, finished_at=NOW)
    samples = _samples(metrics.text())
    rule = (("rule", "backups-90d"),)
    assert samples[("retention_files_removed_total", rule)] == outcome.rows
    assert samples[("retention_bytes_removed_total", rule)] == outcome.bytes
