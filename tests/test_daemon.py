"""`retention daemon`: schedules as cron means them, one run per slot across replicas,
clean stops on SIGTERM, reloads on SIGHUP, metrics and probes over HTTP, and logs
that never carry a secret.

The process tests start real daemons (``python -m retention.daemon_cli``) on real
databases; rules run every second so that a dozen slots pass in a dozen seconds.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

from retention.audit import ledger
from retention.audit.sql import AuditTables
from retention.daemon import (
    AnchoredInterval,
    Daemon,
    cron_day_of_week,
    cron_trigger,
    rule_schedule,
    rules_behind,
)
from retention.demo import build_demo
from retention.loader import load_text
from retention.logs import REDACTED, add_secrets, configure, redact_text
from tests.conftest import NOW

REPO = Path(__file__).resolve().parent.parent
#: Rows far past their cutoff added mid-test: a run of a few seconds to interrupt.
BACKLOG = 2000
AUDIT_KEY = "audit-key-7f3a9c2e51d04b8e"
# PYTHONFAULTHANDLER: a daemon that does not stop in time is sent SIGABRT, which
# prints every thread's stack into its output (see Process.stop).
ENV = {**os.environ, "RETENTION_AUDIT_KEY": AUDIT_KEY, "PYTHONFAULTHANDLER": "1"}
ENV.pop("RETENTION_CONFIG", None)

META = sa.MetaData()
EVENTS = sa.Table(
    "d_events",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
)

POLICY = """\
version: 1
stores:
  app:
    url: "{url}"
audit:
  store: app
defaults:
  limits: {{max_fraction: 1.0}}
rules:
  - name: events
    promise: "events: {period}"
    source: {{policy: test, clause: "1"}}
    store: app
    table: d_events
    timestamp: created_at
    period: {period}
    schedule: "{schedule}"
    batch: {{size: {size}, min_size: {size}, max_size: {size}, pause_ms: {pause}}}
"""


def _policy(
    path: Path,
    url: str,
    *,
    period: str = "2 seconds",
    schedule: str = "every 1 second",
    size: int = 25,
    pause: int = 10,
) -> Path:
    path.write_text(
        POLICY.format(url=url, period=period, schedule=schedule, size=size, pause=pause),
        encoding="utf-8",
    )
    return path


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _fill(url: str, rows: list[dict[str, Any]], *, create: bool = True) -> None:
    engine = sa.create_engine(url)
    try:
        if create:
            META.create_all(engine)
        with engine.begin() as conn:
            conn.execute(EVENTS.insert(), rows)
    finally:
        engine.dispose()


def _scalar(url: str, query: Any) -> Any:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar()
    finally:
        engine.dispose()


def _audited(url: str) -> int:
    """Rows the audit trail (in the rule's own store) says were deleted."""
    records = AuditTables().records
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(records.name):
                return 0
            query = sa.select(sa.func.sum(records.c.rows)).where(
                records.c.table_name == EVENTS.name, records.c.outcome == "committed"
            )
            return int(conn.execute(query).scalar() or 0)
    finally:
        engine.dispose()


def _ledger(url: str) -> list[ledger.LedgerRun]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("retention_runs"):
                return []
            return ledger.runs(conn, ledger.LedgerTables())
    finally:
        engine.dispose()


class Process:
    """A daemon subprocess whose output lines are collected by a thread."""

    def __init__(self, policy: Path, env: dict[str, str] | None = None, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "retention.daemon_cli", "-c", str(policy)),
                *("--http-host", "127.0.0.1", "--http-port", "0", "--check-every", "0", *args),
            ],
            env=env or ENV,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) waiting for {what}:\n"
                    + "".join(self.lines[-30:])
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{''.join(self.lines[-30:])}")
            time.sleep(0.05)

    def port(self) -> int:
        self.wait_for(lambda: bool(self.events("http.listening")), 30, "the HTTP port")
        return int(self.events("http.listening")[0]["port"])

    def _close(self) -> None:
        self._reader.join(timeout=5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()

    def stop(self, timeout: float = 30) -> int:
        # 30 s is Kubernetes' default grace period before SIGKILL. Stopping takes under
        # 1 s here (measured on MariaDB); one CI run on a loaded machine took over 10 s,
        # with no output to say where: hence the stack dump below.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            self.proc.wait(timeout=10)
            self._close()
            raise AssertionError(
                f"daemon {self.pid} still running {timeout:g} s after SIGTERM:\n"
                + "".join(self.lines[-200:])
            ) from None
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- schedules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "aps"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1", "mon"),
        ("6", "sat"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("5-7", "fri,sat,sun"),
        ("0,6", "sat,sun"),
        ("*/2", "tue,thu,sat,sun"),
        ("1-5/2", "mon,wed,fri"),
        ("SUN", "sun"),
        ("0-6", "*"),
    ],
)
def test_cron_day_of_week_counts_from_sunday_and_is_passed_by_name(cron: str, aps: str) -> None:
    assert cron_day_of_week(cron) == aps


def test_cron_day_0_fires_on_sunday_not_monday() -> None:
    trigger = cron_trigger("0 3 * * 0", "UTC")
    monday = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, monday)
    assert fire == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert fire.strftime("%A") == "Sunday"


def test_cron_with_day_of_month_and_day_of_week_fires_on_either_like_cron() -> None:
    """'0 3 13 * 5' is the 13th of the month OR any Friday (cron), not Friday the 13th."""
    trigger = cron_trigger("0 3 13 * 5", "UTC")
    fires = []
    moment: datetime | None = datetime(2026, 11, 1, tzinfo=UTC)
    for _ in range(5):
        assert moment is not None
        moment = trigger.get_next_fire_time(None, moment + timedelta(microseconds=1))
        assert moment is not None
        fires.append(moment.date().isoformat())
    assert fires == ["2026-11-06", "2026-11-13", "2026-11-20", "2026-11-27", "2026-12-04"]


def test_cron_slots_follow_the_rules_time_zone_across_dst() -> None:
    policy = load_text(
        POLICY.format(url="sqlite://", period="1 day", schedule="30 2 * * *", size=5, pause=0)
        + "    timezone: Europe/Madrid\n"
    ).policy
    schedule = rule_schedule(policy, policy.rules[0])
    winter = schedule.previous(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    summer = schedule.previous(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert winter == datetime(2026, 12, 1, 1, 30, tzinfo=UTC)
    assert summer == datetime(2026, 7, 1, 0, 30, tzinfo=UTC)
    assert schedule.next_after(datetime(2026, 12, 1, 1, 30, tzinfo=UTC)) == datetime(
        2026, 12, 2, 1, 30, tzinfo=UTC
    )


def test_interval_slots_do_not_depend_on_when_a_process_started_or_on_jitter() -> None:
    anchor = datetime(2000, 1, 1, tzinfo=UTC)
    plain = AnchoredInterval(timedelta(hours=6), anchor)
    jittered = AnchoredInterval(timedelta(hours=6), anchor, jitter=600)
    assert plain.previous(NOW) == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert plain.previous(NOW + timedelta(hours=5, minutes=59)) == NOW
    for started in (NOW + timedelta(minutes=1), NOW + timedelta(hours=2, seconds=7)):
        fire = plain.get_next_fire_time(None, started)
        assert fire == NOW + timedelta(hours=6)
    previous = None
    for k in range(1, 5):
        previous = jittered.get_next_fire_time(previous, NOW + timedelta(seconds=1))
        assert previous is not None
        slot = NOW + timedelta(hours=6 * k)
        assert slot <= previous <= slot + timedelta(seconds=600)


def test_cron_previous_slot_finds_rare_schedules() -> None:
    policy = load_text(
        POLICY.format(url="sqlite://", period="1 day", schedule="0 4 29 2 *", size=5, pause=0)
    ).policy
    schedule = rule_schedule(policy, policy.rules[0])
    assert schedule.previous(NOW) == datetime(2024, 2, 29, 4, 0, tzinfo=UTC)


def test_rules_behind_are_those_whose_last_slot_is_older_than_the_due_one(
    sqlite_url: str,
) -> None:
    policy = load_text(
        POLICY.format(url="sqlite://", period="1 day", schedule="0 3 * * *", size=5, pause=0)
    ).policy
    schedules = {"events": rule_schedule(policy, policy.rules[0])}
    engine = sa.create_engine(sqlite_url)
    tables = ledger.LedgerTables()
    with engine.begin() as conn:
        ledger.ensure(conn, tables)
    due = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    try:
        assert rules_behind(engine, tables, schedules, NOW) == ["events"]  # never ran
        ledger.claim(engine, tables, "events", due - timedelta(days=1), "r1", "h", NOW)
        assert rules_behind(engine, tables, schedules, NOW) == ["events"]  # missed today's
        ledger.claim(engine, tables, "events", due, "r2", "h", NOW)
        assert rules_behind(engine, tables, schedules, NOW) == []
    finally:
        engine.dispose()


# --- in-process: reload, readiness, logs ------------------------------------------------


def test_reload_rejects_a_bad_policy_keeps_the_jobs_then_takes_a_good_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    _fill(url, [{"id": 1, "created_at": _utcnow()}])
    policy = _policy(tmp_path / "policy.yaml", url, schedule="0 3 * * *", period="30 days")
    daemon = Daemon(policy, env=ENV, catch_up=False, promises_every=0)
    daemon.start()
    try:
        jobs = sorted(job.id for job in daemon.scheduler.get_jobs())
        assert jobs == ["events"]
        good = policy.read_text(encoding="utf-8")
        policy.write_text(good.replace("period: 30 days", "period: 30 parsecs"), encoding="utf-8")
        with structlog.testing.capture_logs() as logs:
            assert daemon.reload() is False
        (rejected,) = [e for e in logs if e["event"] == "policy.reload_rejected"]
        assert len(rejected["errors"]) == 1
        assert re.match(
            rf"{re.escape(str(policy))}:\d+:\d+: rules\[0\]\.period: ", rejected["errors"][0]
        )
        assert sorted(job.id for job in daemon.scheduler.get_jobs()) == jobs
        assert daemon.ready()[0]
        renamed = good.replace("name: events", "name: events-renamed")
        policy.write_text(renamed, encoding="utf-8")
        assert daemon.reload() is True
        assert sorted(job.id for job in daemon.scheduler.get_jobs()) == ["events-renamed"]
    finally:
        daemon.shutdown()
    assert not daemon.alive()[0]


def test_readiness_needs_every_store_and_liveness_needs_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retention import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "READY_CACHE_SECONDS", 0.0)
    store = tmp_path / "app.db"
    url = f"sqlite:///{store}"
    _fill(url, [{"id": 1, "created_at": _utcnow()}])
    policy = _policy(tmp_path / "policy.yaml", url, schedule="0 3 * * *", period="30 days")
    policy.write_text(
        policy.read_text(encoding="utf-8").replace("audit:\n  store: app\n", ""), encoding="utf-8"
    )
    daemon = Daemon(policy, env=ENV, catch_up=False, promises_every=0)
    assert daemon.ready() == (False, {"policy": "not loaded", "scheduler": "stopped"})
    daemon.start()
    try:
        ok, detail = daemon.ready()
        assert (ok, detail["stores"]) == (True, {"audit": "ok", "app": "ok"})
        store.rename(tmp_path / "gone.db")
        ok, detail = daemon.ready()
        assert ok is False
        assert detail["stores"]["audit"] == "ok"
        assert "does not exist" in detail["stores"]["app"]
        assert daemon.alive() == (True, {"scheduler": "running"})
    finally:
        daemon.shutdown()


def test_log_lines_redact_url_passwords_and_registered_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    add_secrets(["s3cr3t-hash-key-value"])
    assert redact_text("postgresql+psycopg://app:pa55w0rd@db:5432/x") == (
        f"postgresql+psycopg://app:{REDACTED}@db:5432/x"
    )
    configure(json=True, stream=sys.stdout, level=logging.INFO)
    try:
        structlog.get_logger("t").info(
            "connect", url="mysql+pymysql://root:pa55w0rd@db/app", note="s3cr3t-hash-key-value"
        )
        logging.getLogger("sqlalchemy.engine").warning(
            "cannot reach %s", "postgresql://u:pa55w0rd@h/db"
        )
    finally:
        configure(json=True, stream=sys.stderr)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["event"], line.get("url"), line.get("note")) for line in lines] == [
        ("connect", f"mysql+pymysql://root:{REDACTED}@db/app", REDACTED),
        (f"cannot reach postgresql://u:{REDACTED}@h/db", None, None),
    ]
    assert lines[1]["logger"] == "sqlalchemy.engine"


# --- processes -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_three_replicas_run_each_slot_once_and_take_over_from_a_killed_one(
    server: str, request: pytest.FixtureRequest, tmp_path: Path, processes: list[Process]
) -> None:
    url: str = request.getfixturevalue(f"{server}_url")
    start = _utcnow()
    # A steady stream of rows: every slot (1 s) has about 100 rows to delete.
    _fill(
        url, [{"id": i, "created_at": start + timedelta(milliseconds=10 * i)} for i in range(4000)]
    )
    policy = _policy(tmp_path / "policy.yaml", url, size=50, pause=10)
    processes += [Process(policy) for _ in range(3)]

    def finished() -> list[ledger.LedgerRun]:
        return [r for r in _ledger(url) if r.status != "running"]

    processes[0].wait_for(lambda: len(finished()) >= 10, 40, "10 finished slots")

    # A backlog far past its cutoff: the next run takes seconds; kill it mid-run.
    _fill(
        url,
        [{"id": 100_000 + i, "created_at": start - timedelta(days=1)} for i in range(BACKLOG)],
        create=False,
    )
    backlog = sa.select(sa.func.count()).select_from(EVENTS).where(EVENTS.c.id >= 100_000)
    victim: list[ledger.LedgerRun] = []

    def mid_run() -> bool:
        running = [r for r in _ledger(url) if r.status == "running"]
        if running and _scalar(url, backlog) < BACKLOG - 100:
            victim.extend(running)
            return True
        return False

    processes[0].wait_for(mid_run, 20, "a run in the middle of the backlog")
    (killed,) = victim
    (target,) = [p for p in processes if killed.host.endswith(f":{p.pid}")]
    target.kill()
    survivors = [p for p in processes if p is not target]

    def taken_over() -> bool:
        after = [r for r in _ledger(url) if r.slot > killed.slot and r.status == "ok"]
        return _scalar(url, backlog) == 0 and bool(after)

    survivors[0].wait_for(taken_over, 20, "another replica finishing the backlog")
    stopping = datetime.now(UTC)
    for process in survivors:
        process.proc.send_signal(signal.SIGTERM)
    assert [process.stop() for process in survivors] == [0, 0]

    runs = _ledger(url)
    slots = [r.slot for r in runs]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    (dead,) = [r for r in runs if r.run_id == killed.run_id]
    assert dead.status == "failed"
    assert dead.error is not None
    assert dead.error.startswith("abandoned")
    # Every other run succeeded, but those the final SIGTERM stopped mid-run.
    assert [
        r
        for r in runs
        if r is not dead
        and r.status != "ok"
        and not (r.status in ("stopped", "skipped") and r.finished_at and r.finished_at >= stopping)
    ] == []
    # Before the backlog every slot ran, one second apart, unless the lock was held
    # through the slot's whole wait (half the interval) by a run that had started
    # late (a loaded machine): that slot is then left to the holder, by design.
    before = [r.slot for r in runs if r.slot < killed.slot]
    assert len(before) >= 10, "fewer than 10 slots before the backlog"
    patience = timedelta(seconds=0.5)
    missing = [
        a + timedelta(seconds=k)
        for a, b in itertools.pairwise(before)
        for k in range(1, int((b - a).total_seconds()))
    ]
    unexplained = [
        slot
        for slot in missing
        if not any(
            r.started_at <= slot + patience
            and (r.finished_at or stopping) >= slot + patience - timedelta(seconds=0.1)
            for r in runs
        )
    ]
    assert unexplained == [], "\n".join(
        f"{r.slot:%H:%M:%S} {r.host} {r.status} {r.started_at:%S.%f} {r.finished_at:%S.%f}"
        for r in runs
    )
    # Never two runs at once: each run ended before the next one started.
    timeline = sorted(runs, key=lambda r: r.started_at)
    overlaps = [
        (a.slot, b.slot)
        for a, b in itertools.pairwise(timeline)
        if a.finished_at is None or a.finished_at > b.started_at
    ]
    assert overlaps == []
    taker = next(r for r in runs if r.slot > killed.slot and r.rows > 0)
    assert not taker.host.endswith(f":{target.pid}")
    # The audit trail and the table agree, although a run died mid-batch.
    remaining = _scalar(url, sa.select(sa.func.count()).select_from(EVENTS))
    assert _audited(url) == 4000 + BACKLOG - remaining
    assert sum(r.rows for r in runs) <= 4000 + BACKLOG - remaining
    for process in survivors:
        assert [e for e in process.events() if e.get("level") == "error"] == []


@pytest.mark.slow
def test_sigterm_stops_a_long_purge_at_a_batch_boundary_and_exits_0(
    db_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    rows = 20_000
    old = _utcnow() - timedelta(days=10)
    _fill(db_url, [{"id": i, "created_at": old} for i in range(rows)])
    # A daily cron: the first start catches up on today's slot at once.
    policy = _policy(
        tmp_path / "policy.yaml", db_url, schedule="0 3 * * *", period="1 day", size=20, pause=20
    )
    daemon = Process(policy)
    processes.append(daemon)
    daemon.wait_for(lambda: len(daemon.events("batch")) >= 5, 30, "five batches")
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    daemon.proc.send_signal(signal.SIGTERM)  # a second one must not crash it
    assert daemon.stop(timeout=10) == 0
    assert time.monotonic() - sent < 5
    remaining = _scalar(db_url, sa.select(sa.func.count()).select_from(EVENTS))
    assert 0 < rows - remaining < rows, "the purge was not stopped part-way"
    assert _audited(db_url) == rows - remaining
    (run,) = _ledger(db_url)
    assert (run.status, run.rows) == ("stopped", rows - remaining)
    events = [e["event"] for e in daemon.events()]
    assert events[-1] == "daemon.stopped"
    assert "daemon.stopping" in events
    assert not [line for line in daemon.lines if "Traceback" in line]


@pytest.mark.slow
def test_metrics_and_probes_while_running_the_demo_policy(
    tmp_path: Path, processes: list[Process]
) -> None:
    demo = tmp_path / "demo.db"
    build_demo(f"sqlite:///{demo}", datetime.now(UTC))
    policy = tmp_path / "infraux.yaml"
    shutil.copyfile(REPO / "policies" / "infraux.yaml", policy)
    loaded = load_text(policy.read_text(encoding="utf-8"), str(policy), {})
    enabled = [r.name for r in loaded.policy.rules if r.enabled]
    daemon = Process(policy, {**ENV, "RETENTION_DB_URL": f"sqlite:///{demo}"})
    processes.append(daemon)
    port = daemon.port()
    daemon.wait_for(
        lambda: {e["rule"] for e in daemon.events("rule.done")} >= set(enabled), 60, "every rule"
    )
    assert _get(port, "/livez") == (200, '{"ok": true, "scheduler": "running"}\n')
    status, body = _get(port, "/readyz")
    assert (status, json.loads(body)["stores"]) == (200, {"audit": "ok", "app": "ok"})
    # The promise gauges are refreshed after each run, just after its rule.done line.
    daemon.wait_for(
        lambda: all(
            f'retention_overdue_rows{{rule="{r}"}}' in _get(port, "/metrics")[1] for r in enabled
        ),
        20,
        "the overdue gauges",
    )
    status, text = _get(port, "/metrics")
    assert status == 200
    done = {e["rule"]: e for e in daemon.events("rule.done")}
    for rule in enabled:
        action = loaded.policy.rule(rule).action
        rows = re.search(
            rf'^retention_rows_total{{action="{action}",rule="{rule}"}} (\S+)$', text, re.M
        )
        assert rows is not None, rule
        assert float(rows.group(1)) == done[rule]["rows"]
        assert f'retention_run_duration_seconds_count{{rule="{rule}"}} 1.0' in text
        assert f'retention_overdue_rows{{rule="{rule}"}}' in text
        assert f'retention_oldest_overdue_age_seconds{{rule="{rule}"}}' in text
        assert f'retention_rows_held{{rule="{rule}"}}' in text
        assert f'retention_lock_contention_total{{rule="{rule}"}} 0.0' in text
        assert f'retention_scheduler_misfires_total{{rule="{rule}"}} 0.0' in text
        if done[rule]["status"] == "ok":
            assert f'retention_last_success_timestamp_seconds{{rule="{rule}"}}' in text
    assert sum(e["rows"] for e in done.values()) > 0
    assert _get(port, "/nothing")[0] == 404
    assert daemon.stop() == 0
    # Every line from every thread (jobs, scheduler, main) is one whole JSON document.
    assert len(daemon.events()) == len(daemon.lines)


@pytest.mark.slow
@pytest.mark.postgres
def test_sighup_reload_and_no_secret_in_any_log_line(
    postgres_url: str, tmp_path: Path, processes: list[Process]
) -> None:
    """A password in the store URL (substituted from the environment) and the audit
    key never appear in any output line, through runs, a rejected and an accepted
    reload, and shutdown."""
    url = sa.make_url(postgres_url)
    password = url.password or "pw-9d1c55aa0e7b"
    secret_url = url.set(password=password).render_as_string(hide_password=False)
    _fill(postgres_url, [{"id": i, "created_at": _utcnow()} for i in range(50)])
    policy = _policy(tmp_path / "policy.yaml", "${RETENTION_DB_URL}")
    env = {**ENV, "RETENTION_DB_URL": secret_url}
    daemon = Process(policy, env)
    processes.append(daemon)
    daemon.wait_for(lambda: len(daemon.events("rule.done")) >= 2, 30, "two runs")
    good = policy.read_text(encoding="utf-8")
    policy.write_text(good.replace("table: d_events", "table: d_events\n    tabel: x"), "utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: bool(daemon.events("policy.reload_rejected")), 10, "the rejection")
    (rejected,) = daemon.events("policy.reload_rejected")
    assert any(
        re.match(rf"{re.escape(str(policy))}:\d+:\d+: rules\[0\]", e) for e in rejected["errors"]
    )
    runs = len(daemon.events("rule.done"))
    daemon.wait_for(lambda: len(daemon.events("rule.done")) > runs, 10, "a run after it")
    policy.write_text(good.replace("name: events", "name: events-2"), "utf-8")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(
        lambda: any(e.get("rule") == "events-2" for e in daemon.events("rule.done")),
        10,
        "a run of the reloaded rule",
    )
    assert daemon.stop() == 0
    (started,) = daemon.events("daemon.started")
    assert started["stores"] == {"app": url.set(password=password).render_as_string()}
    output = "".join(daemon.lines)
    assert password not in output
    assert AUDIT_KEY not in output
    assert secret_url not in output
    assert [e for e in daemon.events() if e.get("level") == "error"] == [rejected]
