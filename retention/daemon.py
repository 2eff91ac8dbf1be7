"""`retention daemon`: run each rule on its schedule, safely with any number of replicas.

A thin shell around `retention.runner.run_once`, the function `retention run` calls:

- **Jobs**: APScheduler 3.x `BackgroundScheduler` with an in-memory job store,
  rebuilt from the policy at start (and on SIGHUP): one job per enabled rule, with
  the rule's schedule and time zone, ``coalesce=True``, ``max_instances=1`` and a
  misfire grace of an hour (3.x's default of one second silently drops runs when
  the pool is busy). Schedules never depend on when a process started, so every
  replica computes the same slots: cron slots come from the cron expression;
  interval slots are ``anchor + k * interval`` with the anchor at 2000-01-01
  00:00 in the rule's time zone.
- **One run per slot**: a job takes the rule's lock (`retention.locks`; busy: count
  contention, wait up to half the interval, at most 30 s, then leave the slot to the
  holder), claims (rule, slot) in the run ledger
  (`retention.audit.ledger`; taken: skip), runs the rule once, and records the
  outcome in the ledger. The lock prevents overlap; the ledger prevents a slot
  running twice one after the other. Both live in the policy's audit store.
- **Catch-up**: at start (and after a reload), each rule whose last ledger slot is
  older than its most recent due slot gets one immediate run, for that slot.
- **Stopping**: SIGTERM/SIGINT only set an event; the running purge sees it at its
  next batch boundary (``should_stop``), and the main thread shuts the scheduler
  down, waiting for the job. A second signal changes nothing.
- **Reload**: SIGHUP loads the policy again; a policy with errors is logged with
  its located issues and the running jobs are kept.

Each job clears and binds its structlog context (``rule``, ``run_id``, ``slot``)
first: the pool's threads are reused and do not copy context.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor as Futures
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from retention.audit import ledger
from retention.audit.store import AuditStore, open_audit
from retention.errors import PolicyError, RetentionError
from retention.loader import LoadedPolicy, load_policy
from retention.locks import LockTables, rule_lock, rule_lock_name
from retention.locks import ensure as ensure_locks
from retention.logs import add_secrets, get_logger
from retention.metrics import Metrics
from retention.policy import CronSchedule, FileRule, HashStrategy, Policy, Rule, Schedule, SqlStore
from retention.runner import RunOptions, run_once
from retention.stores.check import check_promises
from retention.stores.purge import BatchDone
from retention.stores.sql import open_engine, redact, resolve_url

__all__ = [
    "MISFIRE_GRACE",
    "AnchoredInterval",
    "Daemon",
    "RuleSchedule",
    "cron_day_of_week",
    "cron_trigger",
    "rule_schedule",
    "rules_behind",
]

#: How late a slot may still start (3.x's default of 1 s drops runs silently).
MISFIRE_GRACE = 3600
#: Interval slots are counted from this instant, in the rule's time zone.
INTERVAL_ANCHOR = datetime(2000, 1, 1)
#: How long the store reachability behind /readyz is cached, and each probe's timeout.
READY_CACHE_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 3.0
#: Longest wait for a busy rule lock before the slot is left to its holder, and the poll.
LOCK_PATIENCE = 30.0
LOCK_POLL = 0.2
CATCH_UP = "catch-up:"
PROMISES_JOB = "promises"

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- schedules -----------------------------------------------------------------------

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: 0 (and 7) = Sunday
_APS_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # APScheduler 3.x: 0 = Monday


def _cron_day(text: str) -> int:
    value = _DAYS.index(text.lower()) if not text.isdigit() else int(text)
    return 0 if value == 7 else value


def cron_day_of_week(field: str) -> str:
    """A cron day-of-week field (0 or 7 = Sunday) as an APScheduler 3.x one (by name).

    APScheduler 3.x numbers days from Monday = 0, so numbers are never passed
    through: the field is expanded to the days it selects and written as names.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            first, last = 0, 6
        else:
            start, dash, end = body.partition("-")
            first = _DAYS.index(start.lower()) if not start.isdigit() else int(start)
            if dash:
                last = _DAYS.index(end.lower()) if not end.isdigit() else int(end)
            else:
                last = 6 if step_text else first
        days |= {_cron_day(str(day)) for day in range(first, last + 1, step)}
    if days == set(range(7)):
        return "*"
    return ",".join(name for name in _APS_DAYS if _DAYS.index(name) in days)


def cron_trigger(expression: str, timezone: str, *, jitter: int | None = None) -> Any:
    """An APScheduler trigger firing like cron would for the 5-field `expression`.

    Day-of-week numbers follow cron (0 = Sunday). When both day-of-month and
    day-of-week are restricted, cron fires on days matching *either* (APScheduler
    alone would require both): that becomes an OR of two cron triggers.
    """
    minute, hour, day, month, dow = expression.split()
    zone = ZoneInfo(timezone)
    common: dict[str, Any] = {"minute": minute, "hour": hour, "month": month.lower()}
    if not day.startswith("*") and not dow.startswith("*"):
        return OrTrigger(
            [
                CronTrigger(**common, day=day, timezone=zone),
                CronTrigger(**common, day_of_week=cron_day_of_week(dow), timezone=zone),
            ],
            jitter=jitter,
        )
    return CronTrigger(
        **common, day=day, day_of_week=cron_day_of_week(dow), timezone=zone, jitter=jitter
    )


class AnchoredInterval(BaseTrigger):  # type: ignore[misc]
    """Fires at ``anchor + k * interval``, whatever the previous (possibly jittered) fire
    time was, so that every replica and every restart agree on the slots (APScheduler's
    own interval trigger counts from the previous fire time, jitter included)."""

    __slots__ = ("anchor", "interval", "jitter")

    def __init__(self, interval: timedelta, anchor: datetime, jitter: int | None = None) -> None:
        if interval <= timedelta(0) or anchor.tzinfo is None:
            raise ValueError("an interval must be positive and its anchor timezone-aware")
        self.interval = interval
        self.anchor = anchor
        self.jitter = jitter

    def previous(self, now: datetime) -> datetime:
        """The latest slot at or before `now`."""
        return self.anchor + ((now - self.anchor) // self.interval) * self.interval

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None:
            last = self.previous(now)
            slot = last if last == now else last + self.interval
        else:
            slot = self.previous(previous_fire_time) + self.interval
        fire: datetime | None = self._apply_jitter(slot, self.jitter, now)
        return fire

    def __str__(self) -> str:
        return f"every {self.interval} from {self.anchor.isoformat()}"

    def __repr__(self) -> str:
        return f"<AnchoredInterval (interval={self.interval!r}, anchor={self.anchor!r})>"


#: Windows searched backwards for the latest cron slot, smallest first.
_WINDOWS = tuple(
    timedelta(days=d) for d in (2 / 1440, 2 / 24, 2, 9, 33, 367, 5 * 366 + 2, 29 * 366)
)


def _previous_cron(trigger: Any, now: datetime) -> datetime | None:
    """The latest fire time of an unjittered cron trigger at or before `now`."""
    for window in _WINDOWS:
        found: datetime | None = None
        moment: datetime | None = trigger.get_next_fire_time(None, now - window)
        while moment is not None and moment <= now:
            found = moment
            moment = trigger.get_next_fire_time(None, moment + timedelta(microseconds=1))
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class RuleSchedule:
    """A rule's schedule: the trigger the scheduler uses (with jitter), and its slots."""

    rule: str
    schedule: Schedule
    timezone: str
    trigger: Any
    _slots: Any = field(repr=False)

    def previous(self, now: datetime) -> datetime | None:
        """The slot a run starting at `now` serves: the latest one at or before `now`."""
        if isinstance(self._slots, AnchoredInterval):
            moment: datetime = self._slots.previous(now)
            return moment
        return _previous_cron(self._slots, now)

    def next_after(self, now: datetime) -> datetime | None:
        """The first slot after `now` (no jitter)."""
        moment: datetime | None = self._slots.get_next_fire_time(
            None, now + timedelta(microseconds=1)
        )
        return moment


def rule_schedule(
    policy: Policy, rule: Rule | FileRule, *, jitter: int | None = None
) -> RuleSchedule:
    """The schedule of `rule` (its own, or the policy's default) in its time zone."""
    schedule = policy.effective_schedule(rule)
    timezone = policy.effective_timezone(rule)
    if isinstance(schedule, CronSchedule):
        return RuleSchedule(
            rule.name,
            schedule,
            timezone,
            cron_trigger(schedule.cron, timezone, jitter=jitter),
            cron_trigger(schedule.cron, timezone),
        )
    anchor = INTERVAL_ANCHOR.replace(tzinfo=ZoneInfo(timezone))
    every = schedule.every.as_timedelta()
    return RuleSchedule(
        rule.name,
        schedule,
        timezone,
        AnchoredInterval(every, anchor, jitter),
        AnchoredInterval(every, anchor),
    )


def rules_behind(
    engine: sa.Engine,
    tables: ledger.LedgerTables,
    schedules: Mapping[str, RuleSchedule],
    now: datetime,
) -> list[str]:
    """Rules whose last slot in the ledger is older than their most recent due slot
    (or that never ran): each gets one catch-up run for that slot."""
    behind = []
    with engine.connect() as conn:
        for name, schedule in schedules.items():
            due = schedule.previous(now)
            last = ledger.last_slot(conn, tables, name)
            if due is not None and (last is None or last < due):
                behind.append(name)
    return behind


# --- the daemon ----------------------------------------------------------------------


@dataclass
class _State:
    """One loaded policy and what was opened for it."""

    loaded: LoadedPolicy
    audit: AuditStore
    ledger: ledger.LedgerTables
    locks: LockTables
    schedules: dict[str, RuleSchedule]
    users: int = 0
    retired: bool = False


def _secret_values(loaded: LoadedPolicy, env: Mapping[str, str]) -> list[str]:
    """Values never to be logged: substituted ones, keys, store passwords."""
    policy = loaded.policy
    names = {policy.audit.key_env}
    for rule in policy.rules:
        if rule.anonymize is not None:
            names |= {
                s.key_env for s in rule.anonymize.columns.values() if isinstance(s, HashStrategy)
            }
    values = [env[n] for n in names if env.get(n)]
    values += list(loaded.secrets)
    for store in policy.stores.values():
        if isinstance(store, SqlStore):
            try:
                password = sa.make_url(store.url).password
            except sa.exc.ArgumentError:
                continue
            if password:
                values.append(str(password))
    return values


def _retrying(action: Callable[[], Any], attempts: int = 4) -> Any:
    """`action()`, retried a few times on database errors: replicas starting together
    race to create the same tables, and the loser sees them on its next attempt."""
    for attempt in range(attempts):
        try:
            return action()
        except sa.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class Daemon:
    """The scheduler, its jobs and the state they share. `start`, then `shutdown`.

    `clock` is the only clock read (tests pass their own); `identity` names this
    process in the ledger and in lease rows (default ``host:pid``).
    """

    def __init__(
        self,
        config: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        jitter: int | None = None,
        workers: int = 1,
        catch_up: bool = True,
        promises_every: float = 300.0,
        clock: Clock = _utcnow,
        identity: str | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.config = Path(config)
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.metrics = metrics or Metrics()
        self.jitter = jitter or None
        self.catch_up = catch_up
        self.promises_every = promises_every
        self.clock = clock
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}"
        self.stop_event = stop_event or threading.Event()
        self.log = get_logger()
        self._state: _State | None = None
        self._state_lock = threading.Lock()
        self._ready_cache: tuple[float, bool, dict[str, Any]] | None = None
        self._ready_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE,
            },
            timezone=UTC,
        )
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
        )

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Load the policy (raises `PolicyError`), schedule its rules, start the scheduler."""
        state = self._open(load_policy(self.config, self.env))
        with self._state_lock:
            self._state = state
        self._install(state)
        self.scheduler.start()
        self.log.info(
            "daemon.started",
            policy=str(self.config),
            identity=self.identity,
            audit_store=state.audit.where,
            stores={
                name: redact(resolve_url(store.url, state.loaded.base_dir))
                for name, store in state.loaded.policy.stores.items()
                if isinstance(store, SqlStore)
            },
            rules={
                name: {"schedule": str(s.schedule), "timezone": s.timezone}
                for name, s in state.schedules.items()
            },
        )

    def reload(self) -> bool:
        """Load the policy again; on success replace every job, else keep the old ones."""
        try:
            loaded = load_policy(self.config, self.env)
            state = self._open(loaded)
        except PolicyError as exc:
            self.log.error(
                "policy.reload_rejected",
                policy=str(self.config),
                errors=[str(issue) for issue in exc.issues],
                kept="the jobs of the policy loaded before",
            )
            return False
        except (RetentionError, sa.exc.SQLAlchemyError) as exc:
            self.log.error(
                "policy.reload_rejected",
                policy=str(self.config),
                errors=[_first_line(exc)],
                kept="the jobs of the policy loaded before",
            )
            return False
        with self._state_lock:
            old, self._state = self._state, state
            idle = old is not None and old.users == 0
            if old is not None:
                old.retired = True
        self._install(state)
        if old is not None and idle:
            old.audit.dispose()
        with self._ready_lock:
            self._ready_cache = None
        self.log.info("policy.reloaded", policy=str(self.config), rules=sorted(state.schedules))
        return True

    def shutdown(self) -> None:
        """Stop: running purges stop at their next batch boundary; wait for them."""
        self.stop_event.set()
        if self.scheduler.state == STATE_RUNNING:
            self.scheduler.shutdown(wait=True)
        with self._state_lock:
            state, self._state = self._state, None
        if state is not None:
            state.audit.dispose()

    def _open(self, loaded: LoadedPolicy) -> _State:
        add_secrets(_secret_values(loaded, self.env))
        policy = loaded.policy
        audit: AuditStore = _retrying(lambda: open_audit(loaded))
        tables = ledger.LedgerTables(policy.audit.table_prefix)
        locks = LockTables(policy.audit.table_prefix)

        def prepare() -> None:
            with audit.engine.begin() as conn:
                ledger.ensure(conn, tables)
                if conn.dialect.name not in ("postgresql", "mysql", "mariadb"):
                    ensure_locks(conn, locks)

        try:
            _retrying(prepare)
        except BaseException:
            audit.dispose()
            raise
        every: list[Rule | FileRule] = [*policy.rules, *policy.file_rules]
        schedules = {
            rule.name: rule_schedule(policy, rule, jitter=self.jitter)
            for rule in every
            if rule.enabled
        }
        self.metrics.declare(schedules)
        return _State(loaded, audit, tables, locks, schedules)

    def _install(self, state: _State) -> None:
        """Replace every job with those of `state` (plus catch-up runs where due)."""
        self.scheduler.remove_all_jobs()
        now = self.clock()
        for name, schedule in state.schedules.items():
            self.scheduler.add_job(
                self.run_rule,
                schedule.trigger,
                args=[name],
                id=name,
                name=name,
                replace_existing=True,
            )
        if self.catch_up:
            for name in self._behind(state, now):
                self.scheduler.add_job(
                    self.run_rule,
                    DateTrigger(run_date=now),
                    args=[name],
                    id=CATCH_UP + name,
                    name=CATCH_UP + name,
                    replace_existing=True,
                    misfire_grace_time=None,
                )
        if self.promises_every > 0:
            self.scheduler.add_job(
                self.refresh_promises,
                "interval",
                seconds=self.promises_every,
                next_run_time=now,
                id=PROMISES_JOB,
                name=PROMISES_JOB,
                replace_existing=True,
            )

    def _behind(self, state: _State, now: datetime) -> list[str]:
        behind = rules_behind(state.audit.engine, state.ledger, state.schedules, now)
        if behind:
            self.log.info("daemon.catch_up", rules=behind)
        return behind

    @contextmanager
    def _use_state(self) -> Iterator[_State | None]:
        with self._state_lock:
            state = self._state
            if state is not None:
                state.users += 1
        try:
            yield state
        finally:
            if state is not None:
                with self._state_lock:
                    state.users -= 1
                    dispose = state.retired and state.users == 0
                if dispose:
                    state.audit.dispose()

    # -- jobs -----------------------------------------------------------------------

    def run_rule(self, name: str) -> None:
        """The job of rule `name`: lock, claim the slot, run once, record the outcome."""
        structlog.contextvars.clear_contextvars()
        try:
            if self.stop_event.is_set():
                return
            with self._use_state() as state:
                if state is None or name not in state.schedules:
                    return
                self._run_slot(state, name)
        except Exception as exc:
            self.log.error("rule.error", rule=name, error=_first_line(exc), exc_info=True)
        finally:
            structlog.contextvars.clear_contextvars()

    def _run_slot(self, state: _State, name: str) -> None:
        schedule = state.schedules[name]
        slot = schedule.previous(self.clock())
        if slot is None:
            return
        run_id = str(uuid.uuid4())
        structlog.contextvars.bind_contextvars(rule=name, run_id=run_id, slot=_iso(slot))
        # A busy lock may be a run of this very slot elsewhere (the claim will tell),
        # or a late run of the previous slot: wait for it a little, up to half the
        # schedule's interval, so that a slow run does not make every replica skip.
        following = schedule.next_after(slot)
        patience = LOCK_PATIENCE if following is None else (following - slot).total_seconds() / 2
        deadline = time.monotonic() + min(LOCK_PATIENCE, patience)
        contended = False
        while not self._try_slot(state, name, slot, run_id):
            if not contended:
                contended = True
                self.metrics.lock_busy(name)
            if time.monotonic() >= deadline or self.stop_event.wait(LOCK_POLL):
                self.log.info("rule.skipped", reason="another process holds the rule's lock")
                return

    def _try_slot(self, state: _State, name: str, slot: datetime, run_id: str) -> bool:
        """Take the lock and, when it is free, claim and run the slot; False: lock busy."""
        engine = state.audit.engine
        lock_name = rule_lock_name(state.loaded.policy.audit.table_prefix, name)
        holder = f"{self.identity}:{run_id}"
        with rule_lock(engine, lock_name, holder=holder, tables=state.locks) as lock:
            if not lock.acquired:
                return False
            now = self.clock()
            if not ledger.claim(engine, state.ledger, name, slot, run_id, self.identity, now):
                self.log.info("rule.skipped", reason="the slot already ran")
                return True
            abandoned = ledger.abandon(engine, state.ledger, name, now, keep=run_id)
            if abandoned:
                self.log.warning("rule.abandoned_runs", count=abandoned)
            self._execute(state, name, slot, run_id, lambda: lock.lost())
        self._refresh(state, [name])
        return True

    def _execute(
        self,
        state: _State,
        name: str,
        slot: datetime,
        run_id: str,
        lock_lost: Callable[[], bool],
    ) -> None:
        log = self.log
        status: ledger.Status = "failed"
        rows, cutoff, error = 0, None, None
        batches, seconds = 0, 0.0
        final_id: str | None = None
        lost = False

        def should_stop() -> bool:
            nonlocal lost
            if self.stop_event.is_set():
                return True
            lost = lost or lock_lost()
            return lost

        def on_batch(done: BatchDone) -> None:
            log.info(
                "batch",
                batch=done.batch,
                rows=done.rows,
                size=done.size,
                ms=round(done.seconds * 1000, 1),
            )

        started = time.monotonic()
        try:
            report = run_once(
                state.loaded,
                self.clock(),
                # The daemon claims and finishes the slot itself, under the rule's lock.
                RunOptions(rules=[name], ledger=False),
                env=self.env,
                should_stop=should_stop,
                on_batch=on_batch,
                run_id=run_id,
            )
        except (RetentionError, sa.exc.SQLAlchemyError, OSError) as exc:
            error = _first_line(exc)
            self.metrics.runs.labels(name, "failed").inc()
        else:
            final_id = report.run_id
            cutoff = next((p.cutoff for p in report.plan.rules if p.name == name), None)
            outcome = next((o for o in report.outcomes if o.rule == name), None)
            if outcome is None:
                status = "skipped"
                error = "the daemon was stopping before the rule started"
            else:
                status, rows, error = outcome.status, outcome.rows, outcome.error
                if outcome.result is not None:
                    batches, seconds = outcome.result.batches, outcome.result.seconds
            if lost and status == "stopped":
                error = "stopped: the rule's lock was lost"
            self.metrics.observe(report, finished_at=self.clock())
        finished = self.clock()
        try:
            ledger.finish(
                state.audit.engine,
                state.ledger,
                name,
                slot,
                status,
                rows,
                cutoff,
                finished,
                error,
                run_id=final_id,
            )
        except sa.exc.SQLAlchemyError as exc:
            log.error("ledger.finish_failed", error=_first_line(exc))
        fields: dict[str, Any] = {
            "status": status,
            "rows": rows,
            "batches": batches,
            "seconds": round(seconds or time.monotonic() - started, 3),
            "cutoff": _iso(cutoff),
            "audit_run_id": final_id,
        }
        if error:
            log.warning("rule.done", **fields, error=error)
        else:
            log.info("rule.done", **fields)

    def refresh_promises(self) -> None:
        """Refresh the overdue / held gauges of every enabled rule (`retention check`)."""
        structlog.contextvars.clear_contextvars()
        if self.stop_event.is_set():
            return
        with self._use_state() as state:
            if state is not None:
                self._refresh(state, list(state.schedules))

    def _refresh(self, state: _State, rules: Sequence[str]) -> None:
        policy = state.loaded.policy
        selected = [
            r
            for r in policy.rules
            if r.name in rules and isinstance(policy.stores.get(r.store), SqlStore)
        ]
        if not selected or self.stop_event.is_set():
            return
        now = self.clock()
        try:
            statuses = list(
                check_promises(
                    policy.model_copy(update={"rules": selected}), now, state.loaded.base_dir
                )
            )
        except Exception as exc:
            self.log.warning("promises.check_failed", error=_first_line(exc))
            return
        self.metrics.observe_promises(statuses, now)

    def _on_event(self, event: JobEvent) -> None:
        job_id = str(event.job_id)
        rule = job_id.removeprefix(CATCH_UP)
        if job_id == PROMISES_JOB:
            return
        if event.code in (EVENT_JOB_MISSED, EVENT_JOB_MAX_INSTANCES):
            self.metrics.misfire(rule)
            self.log.warning(
                "scheduler.misfire",
                rule=rule,
                reason="missed" if event.code == EVENT_JOB_MISSED else "still running",
                scheduled=_iso(getattr(event, "scheduled_run_time", None)),
            )
        elif event.code == EVENT_JOB_ERROR:
            self.log.error("scheduler.job_error", rule=rule, error=repr(event.exception))

    # -- health ---------------------------------------------------------------------

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the scheduler runs and its thread is alive (no database involved)."""
        thread = getattr(self.scheduler, "_thread", None)
        running = self.scheduler.state == STATE_RUNNING
        alive = bool(running and thread is not None and thread.is_alive())
        return alive, {"scheduler": "running" if alive else "stopped"}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: policy loaded, scheduler started, every store reachable (cached)."""
        with self._state_lock:
            state = self._state
        live, _ = self.alive()
        detail: dict[str, Any] = {
            "policy": "loaded" if state is not None else "not loaded",
            "scheduler": "running" if live else "stopped",
        }
        if state is None or not live:
            return False, detail
        with self._ready_lock:
            cached = self._ready_cache
            if cached is None or time.monotonic() - cached[0] > READY_CACHE_SECONDS:
                reachable, stores = _probe_stores(state)
                self._ready_cache = cached = (time.monotonic(), reachable, stores)
        detail["stores"] = cached[2]
        return cached[1], detail


def _probe(state: _State, name: str | None) -> None:
    """SELECT 1 on store `name` (None: the audit store)."""
    if name is None:
        with state.audit.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
        return
    store = state.loaded.policy.stores[name]
    assert isinstance(store, SqlStore)
    engine = open_engine(store, state.loaded.base_dir, read_only=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
    finally:
        engine.dispose()


def _probe_stores(state: _State) -> tuple[bool, dict[str, str]]:
    policy = state.loaded.policy
    names: list[str | None] = [None]
    names += [
        n
        for n in dict.fromkeys(r.store for r in policy.rules if r.enabled)
        if isinstance(policy.stores[n], SqlStore)
    ]
    results: dict[str, str] = {}
    pool = Futures(max_workers=len(names), thread_name_prefix="readyz")
    try:
        futures = {name: pool.submit(_probe, state, name) for name in names}
        for name, future in futures.items():
            label = "audit" if name is None else name
            try:
                future.result(timeout=READY_TIMEOUT_SECONDS)
                results[label] = "ok"
            except FutureTimeout:
                results[label] = f"no answer within {READY_TIMEOUT_SECONDS:g} s"
            except Exception as exc:
                results[label] = _first_line(exc)
    finally:
        pool.shutdown(wait=False)
    return all(v == "ok" for v in results.values()), results


def configure_daemon_logging(*, json: bool | None = None) -> None:
    """Logs for the daemon: structlog, with APScheduler's own lines at INFO."""
    from retention.logs import configure

    configure(
        json=json,
        min_level=logging.INFO,
        level=logging.WARNING,
        levels={
            "apscheduler": logging.INFO,
            # "Running job ..." / "... executed successfully" for every run: too chatty.
            "apscheduler.executors": logging.WARNING,
            "retention": logging.INFO,
        },
    )
