"""Run these rules once: the function `retention run`, cron mode and the daemon share.

Per rule, in policy order: compile against the live schema, count what the plan
would affect, stop before touching a row if a safety limit would be exceeded,
then purge in batches. A rule that fails does not stop the others.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from retention.audit import ledger
from retention.audit.outbox import Outbox, forward, put
from retention.audit.records import BatchRecord, rule_hash
from retention.audit.sql import append
from retention.audit.store import AuditStore, open_audit
from retention.errors import ExitCode, StoreError, UsageError
from retention.loader import LoadedPolicy
from retention.planner import Plan, RulePlan, build_plan, limit_breach
from retention.policy import HashStrategy, Limits, SqlStore
from retention.stores.archive import ArchiveWriter
from retention.stores.files import run_file_rule, selected_file_rules
from retention.stores.purge import BatchDone, KeySpan, PurgeOptions, RuleResult, purge, walk_of
from retention.stores.rulesql import RuleSchemaError, compile_rule
from retention.stores.schema import Catalog
from retention.stores.sql import open_engine

__all__ = ["RuleOutcome", "RunOptions", "RunReport", "database_now", "run_once"]

Status = Literal["ok", "failed", "limit", "stopped", "skipped"]


@dataclass(frozen=True)
class RunOptions:
    """How to run: which rules, and which safety valves to open."""

    rules: Sequence[str] = ()
    force: bool = False
    max_rows: int | None = None
    #: Use this instant as "now" instead of reading clocks (tests, embedding).
    as_of: datetime | None = None
    #: The scheduled slot this run fills, for the run ledger: a rule whose (rule, slot)
    #: is already claimed is skipped. Default: the run's start time (never shared).
    slot: datetime | None = None
    #: Claim and record each rule's run in the ledger (off when a caller, such as the
    #: daemon, keeps the ledger itself).
    ledger: bool = True


@dataclass
class RuleOutcome:
    """What happened to one rule."""

    rule: str
    action: str
    status: Status
    planned: int = 0
    result: RuleResult | None = None
    error: str | None = None
    #: File rules: bytes of the files removed (None for SQL rules).
    bytes: int | None = None

    @property
    def rows(self) -> int:
        """Rows deleted or de-identified (files removed, for a file rule)."""
        return self.result.rows if self.result else 0


@dataclass
class RunReport:
    """The outcome of a run: the plan it executed and one outcome per rule."""

    run_id: str
    plan: Plan
    outcomes: list[RuleOutcome] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all ok; 1 a rule failed; 3 a safety limit stopped a rule (and none failed)."""
        statuses = {o.status for o in self.outcomes}
        if "failed" in statuses:
            return ExitCode.FAILED
        if "limit" in statuses:
            return ExitCode.SAFETY_LIMIT
        return ExitCode.OK


def database_now(conn: sa.Connection) -> datetime:
    """The database server's current time, as an aware UTC datetime."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        value: Any = conn.exec_driver_sql("SELECT CURRENT_TIMESTAMP").scalar()
    elif dialect in ("mysql", "mariadb"):
        value = conn.exec_driver_sql("SELECT UTC_TIMESTAMP(6)").scalar()
    elif dialect == "sqlite":
        value = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar()
    else:
        value = conn.execute(sa.select(sa.func.current_timestamp())).scalar()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise StoreError(f"cannot read the database clock (got {value!r})")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _decide_now(
    loaded: LoadedPolicy, stores: Sequence[str], local_now: datetime, engines: dict[str, sa.Engine]
) -> datetime:
    """'now' for the run: the first database clock, unless every store says local; refuse
    when any database clock is further from the local one than its store allows."""
    chosen: datetime | None = None
    for name in stores:
        store = loaded.policy.stores[name]
        assert isinstance(store, SqlStore)
        with engines[name].connect() as conn:
            db_now = database_now(conn)
        skew = abs((db_now - local_now).total_seconds())
        allowed = store.max_clock_skew.as_timedelta().total_seconds()
        if skew > allowed:
            raise StoreError(
                f"store {name!r}: the database clock ({db_now.isoformat()}) and the local clock "
                f"({local_now.isoformat()}) differ by {skew:.0f} s, more than max_clock_skew "
                f"({store.max_clock_skew}); refusing to run"
            )
        if chosen is None and store.clock == "database":
            chosen = db_now
    return chosen or local_now


def _keys(
    loaded: LoadedPolicy, plans: Sequence[RulePlan], env: Mapping[str, str]
) -> tuple[bytes, dict[str, bytes]]:
    """The audit digest key and the HMAC keys of hash strategies, from the environment."""
    audit_env = loaded.policy.audit.key_env
    names = {audit_env}
    for rule_plan in plans:
        spec = rule_plan.rule.anonymize
        if spec is not None:
            names |= {s.key_env for s in spec.columns.values() if isinstance(s, HashStrategy)}
    missing = sorted(n for n in names if not env.get(n))
    if missing:
        raise UsageError(
            f"environment variable(s) {', '.join(missing)} not set: the audit digest key and "
            "hash-strategy keys are secrets read from the environment"
        )
    return env[audit_env].encode(), {n: env[n].encode() for n in names if n != audit_env}


def _limits(limits: Limits, options: RunOptions) -> Limits:
    if options.max_rows is None:
        return limits
    return limits.model_copy(update={"max_rows": options.max_rows})


def run_once(
    loaded: LoadedPolicy,
    local_now: datetime,
    options: RunOptions = RunOptions(),
    *,
    env: Mapping[str, str] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[BatchDone], None] = lambda _done: None,
    on_rule: Callable[[RuleOutcome], None] = lambda _outcome: None,
    on_start: Callable[[RulePlan, int], None] = lambda _plan, _rows: None,
    run_id: str | None = None,
) -> RunReport:
    """Execute the plan of the selected rules once; return what happened to each rule.

    `run_id` names the run in the audit trail and the ledger (default: a new UUID)."""
    env = os.environ if env is None else env
    policy = loaded.policy
    selected = [
        r for r in policy.rules if (r.name in options.rules if options.rules else r.enabled)
    ]
    stores = list(dict.fromkeys(r.store for r in selected))
    archive_stores = [r.archive.store for r in selected if r.archive and r.archive.store]
    engines = {
        name: open_engine(policy.stores[name], loaded.base_dir)  # type: ignore[arg-type]
        for name in dict.fromkeys([*stores, *archive_stores])
    }
    audit: AuditStore | None = None
    try:
        now = options.as_of or _decide_now(loaded, stores, local_now, engines)
        plan = build_plan(policy, now, options.rules)
        digest_key, hash_keys = _keys(loaded, plan.rules, env)
        report = RunReport(run_id or str(uuid.uuid4()), plan)
        audit = open_audit(loaded)
        outbox = Outbox(policy.audit.table_prefix)
        _recover(audit, outbox, {n: engines[n] for n in stores if not audit.shares(n)})
        host = socket.gethostname()
        runs = _Ledger(audit, policy.audit.table_prefix, options, report.run_id, host)
        for rule_plan in plan.rules:
            if should_stop():
                break
            if not runs.claim(rule_plan.name):
                report.outcomes.append(_skipped(rule_plan.name, rule_plan.rule.action))
                on_rule(report.outcomes[-1])
                continue
            shared = audit.shares(rule_plan.store_name)
            outcome = _run_rule(
                rule_plan,
                engines[rule_plan.store_name],
                options,
                PurgeOptions(
                    run_id=report.run_id,
                    host=host,
                    rule_hash=rule_hash(rule_plan.rule.model_dump(mode="json", by_alias=True)),
                    digest_key=digest_key,
                    record=_recorder(audit, outbox, shared),
                    committed=_forwarder(audit, outbox, shared),
                    hash_keys=hash_keys,
                    should_stop=should_stop,
                    on_batch=on_batch,
                ),
                on_start,
                outbox=None if shared else outbox,
                archive=_archive_store(rule_plan, engines),
            )
            runs.finish(outcome, rule_plan.cutoff)
            report.outcomes.append(outcome)
            on_rule(outcome)
        for file_rule in selected_file_rules(policy, options.rules):
            if should_stop():
                break
            if not runs.claim(file_rule.name):
                report.outcomes.append(_skipped(file_rule.name, file_rule.action))
                on_rule(report.outcomes[-1])
                continue
            done = run_file_rule(
                loaded,
                file_rule,
                now,
                options,
                audit,
                report.run_id,
                host,
                digest_key,
                should_stop,
                on_batch=on_batch,
            )
            outcome = RuleOutcome(
                done.rule,
                done.action,
                done.status,
                done.planned,
                done.result,
                done.error,
                bytes=done.bytes,
            )
            runs.finish(outcome, done.cutoff or now)
            report.outcomes.append(outcome)
            on_rule(outcome)
        return report
    finally:
        if audit is not None:
            audit.dispose()
        for engine in engines.values():
            engine.dispose()


def _skipped(rule: str, action: str) -> RuleOutcome:
    return RuleOutcome(rule, action, "skipped", error="this slot was already run (run ledger)")


class _Ledger:
    """The run's rows in the run ledger: claimed per rule before it runs, finished after."""

    def __init__(
        self,
        audit: AuditStore,
        prefix: str,
        options: RunOptions,
        run_id: str,
        host: str,
    ) -> None:
        self.audit, self.options, self.run_id, self.host = audit, options, run_id, host
        self.tables = ledger.LedgerTables(prefix)
        self.slot = options.slot or datetime.now(UTC)  # the start: no other run shares it
        if options.ledger:
            with audit.engine.begin() as conn:
                ledger.ensure(conn, self.tables)

    def claim(self, rule: str) -> bool:
        """False when another run already took this rule's slot."""
        if not self.options.ledger:
            return True
        now = datetime.now(UTC)
        return ledger.claim(
            self.audit.engine, self.tables, rule, self.slot, self.run_id, self.host, now
        )

    def finish(self, outcome: RuleOutcome, cutoff: datetime) -> None:
        if self.options.ledger:
            ledger.finish(
                self.audit.engine,
                self.tables,
                outcome.rule,
                self.slot,
                outcome.status,
                outcome.rows,
                cutoff,
                datetime.now(UTC),
                outcome.error,
            )


def _recover(audit: AuditStore, outbox: Outbox, engines: Mapping[str, sa.Engine]) -> None:
    """Forward audit records a crashed run left in the stores' outboxes."""
    for name, engine in engines.items():
        try:
            with engine.connect() as conn:
                forward(conn, outbox, audit.engine, audit.tables)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store {name!r}: cannot forward its audit outbox: {exc}") from None


def _recorder(
    audit: AuditStore, outbox: Outbox, shared: bool
) -> Callable[[sa.Connection, BatchRecord], None]:
    """How a batch writes its audit record inside its transaction: straight into the
    chain when the audit store is the rule's own database, else into its outbox."""

    def in_chain(conn: sa.Connection, record: BatchRecord) -> None:
        append(conn, audit.tables, record)

    def in_outbox(conn: sa.Connection, record: BatchRecord) -> None:
        put(conn, outbox, record)

    return in_chain if shared else in_outbox


def _forwarder(audit: AuditStore, outbox: Outbox, shared: bool) -> Callable[[sa.Connection], None]:
    """What follows each commit: forward the outbox to the audit store (if not shared)."""

    def nothing(_conn: sa.Connection) -> None:
        return None

    def send(conn: sa.Connection) -> None:
        forward(conn, outbox, audit.engine, audit.tables, check=False)

    return nothing if shared else send


def _archive_store(
    rule_plan: RulePlan, engines: Mapping[str, sa.Engine]
) -> tuple[str, SqlStore, sa.Engine] | None:
    """The store a rule archives into, when that is another store: name, model, engine."""
    name, store = rule_plan.archive_store, rule_plan.archive_target
    if name is None or store is None:
        return None
    return name, store, engines[name]


def _run_rule(
    rule_plan: RulePlan,
    engine: sa.Engine,
    options: RunOptions,
    purge_options: PurgeOptions,
    on_start: Callable[[RulePlan, int], None],
    *,
    outbox: Outbox | None,
    archive: tuple[str, SqlStore, sa.Engine] | None = None,
) -> RuleOutcome:
    """Compile, count, check the limits and purge one rule; a rule archiving into another
    store also holds a connection to that store (its archive side, `ArchiveWriter`)."""
    rule = rule_plan.rule
    outcome = RuleOutcome(rule.name, rule.action, "failed")
    limits = _limits(rule_plan.limits, options)
    try:
        with engine.connect() as conn, ExitStack() as stack:
            catalog = Catalog(conn, rule_plan.store_name)
            if archive is None:
                sql = compile_rule(rule_plan, catalog)
            else:
                name, store, archive_engine = archive
                archive_conn = stack.enter_context(archive_engine.connect())
                other = Catalog(archive_conn, name)
                sql = compile_rule(rule_plan, catalog, lambda _name: other)
                archive_conn.rollback()
                writer = ArchiveWriter(sql, archive_conn, name, store, catalog.dialect)
                purge_options = replace(purge_options, archive=writer)
            counts = conn.execute(sql.count()).one()
            affected = int(counts.affected or 0)
            table_rows = None
            if limits.max_fraction is not None:
                table_rows = int(conn.execute(sql.table_rows()).scalar() or 0)
            conn.rollback()
            outcome.planned = affected
            breach = limit_breach(limits, affected, table_rows or 0)
            if breach and not options.force:
                outcome.status = "limit"
                outcome.error = f"safety limit: {breach}; nothing touched (use --force to override)"
                return outcome
            if outbox is not None:
                with conn.begin():
                    outbox.ensure(conn)
            span = None
            if walk_of(sql) == "span" and counts.first_key is not None:
                span = KeySpan(int(counts.first_key), int(counts.last_key))
            on_start(rule_plan, affected)
            outcome.result = purge(sql, conn, purge_options, span)
            outcome.status = "stopped" if outcome.result.stopped == "signal" else "ok"
    except RuleSchemaError as exc:
        outcome.error = str(exc)
    except (sa.exc.SQLAlchemyError, StoreError, ValueError) as exc:
        outcome.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return outcome
