"""The auditor's report: one self-contained static HTML page.

Two steps, like plan and run::

    gather(loaded, now) -> ReportData    reads the stores and the audit store (read-only)
    render(data)        -> str           pure: HTML with inline CSS and inline SVG charts

`gather` judges each promise exactly as `retention check` does (`check_promises`),
adds the oldest row each rule still leaves in place, and reads the policy's audit store
(`open_audit`): the removals per rule and day, the last run of each rule, and the
hash-chain verification. `render` writes a page with no scripts and no external assets
(fonts, styles, images): a Content-Security-Policy forbids the browser from loading any,
so the page reads the same offline, printed or archived.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from html import escape
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from retention.audit.holds import HoldTable, stored_holds
from retention.audit.ledger import LedgerTables, last_successes
from retention.audit.sql import AuditTables, records, verify
from retention.audit.store import audit_file, open_audit
from retention.errors import StoreError
from retention.loader import LoadedPolicy
from retention.planner import plan_rule
from retention.policy import Hold, Policy, Rule, SqlStore
from retention.stores.check import PromiseStatus, check_promises, uncovered_personal_columns
from retention.stores.rulesql import RuleSchemaError, compile_rule
from retention.stores.schema import Catalog, from_db_time
from retention.stores.sql import read_only

__all__ = [
    "ChainResult",
    "HoldEntry",
    "ReportData",
    "RuleReport",
    "gather",
    "render",
]

Status = Literal["kept", "overdue", "error", "disabled"]
ChainState = Literal["intact", "broken", "empty", "unreadable"]

_DAY = 86400.0


# --- data ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleReport:
    """One rule's promise and how it stands at the report's `as_of`."""

    name: str
    promise: str
    source_policy: str
    clause: str
    source_url: str | None
    store: str
    table: str
    action: str
    period: str
    grace: str
    #: The period and the period plus grace, in days, measured back from `as_of`.
    period_days: float
    deadline_days: float
    status: Status
    overdue: int = 0
    held: int = 0
    minimum: int = 0
    oldest_overdue: datetime | None = None
    #: The oldest row in the rule's scope that no active hold protects (minimums may).
    oldest_remaining: datetime | None = None
    oldest_age_days: float | None = None
    error: str | None = None
    last_run: datetime | None = None
    last_outcome: str | None = None
    removed_total: int = 0
    #: Rows deleted or de-identified per UTC day of commit, in day order.
    removed_by_day: tuple[tuple[date, int], ...] = ()


@dataclass(frozen=True, slots=True)
class HoldEntry:
    """A legal hold as the report lists it."""

    name: str
    reason: str
    scope: str
    expires: datetime | None
    active: bool
    origin: Literal["policy", "audit store"] = "policy"


@dataclass(frozen=True, slots=True)
class ChainResult:
    """The audit trail's hash-chain verification."""

    where: str
    records: int = 0
    broken_seq: int | None = None
    reason: str | None = None
    error: str | None = None
    #: Commit times of the first and the last record.
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def state(self) -> ChainState:
        """intact, broken, empty (no records yet) or unreadable (the store failed)."""
        if self.error is not None:
            return "unreadable"
        if self.broken_seq is not None:
            return "broken"
        return "intact" if self.records else "empty"


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows; `render` turns it into HTML without further I/O."""

    as_of: datetime
    generated_at: datetime
    policy_file: str
    policy_sha256: str | None
    policy_title: str | None
    tool_version: str
    rules: tuple[RuleReport, ...]
    holds: tuple[HoldEntry, ...]
    chain: ChainResult
    uncovered_columns: tuple[str, ...] = ()

    @property
    def judged(self) -> tuple[RuleReport, ...]:
        """The enabled rules (disabled ones are listed but not judged)."""
        return tuple(r for r in self.rules if r.status != "disabled")

    @property
    def kept(self) -> int:
        """Promises kept."""
        return sum(1 for r in self.rules if r.status == "kept")

    @property
    def broken(self) -> int:
        """Promises overdue or that could not be checked."""
        return sum(1 for r in self.rules if r.status in ("overdue", "error"))


# --- gather --------------------------------------------------------------------------


def gather(
    loaded: LoadedPolicy, now: datetime, *, generated_at: datetime | None = None
) -> ReportData:
    """Collect the report's figures at the aware instant `now` (read-only).

    `generated_at` is the wall-clock time the CLI reads; it defaults to `now`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    policy = loaded.policy
    statuses = {s.rule: s for s in check_promises(policy, now, loaded.base_dir)}
    oldest = dict(_oldest_remaining(policy, now, loaded.base_dir))
    trail = _read_trail(loaded, now)
    rules = tuple(
        _rule_report(policy, rule, now, statuses.get(rule.name), oldest.get(rule.name), trail)
        for rule in policy.rules
    )
    try:
        personal = tuple(uncovered_personal_columns(policy, loaded.base_dir))
    except StoreError:
        personal = ()
    stored = {h.name for h in trail.holds}  # with store holds loaded, they are in both
    holds = tuple(_hold_entry(h, now) for h in policy.holds if h.name not in stored)
    holds += trail.holds
    return ReportData(
        as_of=now.astimezone(UTC),
        generated_at=(generated_at or now).astimezone(UTC),
        policy_file=loaded.file,
        policy_sha256=_file_sha256(loaded.file),
        policy_title=policy.title,
        tool_version=_tool_version(),
        rules=rules,
        holds=holds,
        chain=trail.chain,
        uncovered_columns=personal,
    )


def _tool_version() -> str:
    try:
        return version("retention")
    except PackageNotFoundError:
        return "unknown"


def _file_sha256(file: str) -> str | None:
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        return None


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / _DAY


def _rule_report(
    policy: Policy,
    rule: Rule,
    now: datetime,
    status: PromiseStatus | None,
    oldest: datetime | None,
    trail: _Trail,
) -> RuleReport:
    grace = policy.effective_grace(rule)
    by_day = trail.removed.get(rule.name, {})
    last = trail.last_run.get(rule.name)
    state: Status
    if not rule.enabled:
        state = "disabled"
    elif status is None or status.error is not None:
        state = "error"
    else:
        state = "kept" if status.kept else "overdue"
    return RuleReport(
        name=rule.name,
        promise=rule.promise,
        source_policy=rule.source.policy,
        clause=rule.source.clause,
        source_url=rule.source.url,
        store=rule.store,
        table=rule.table if rule.db_schema is None else f"{rule.db_schema}.{rule.table}",
        action=rule.action,
        period=str(rule.period),
        grace=str(grace),
        period_days=_days(now - rule.period.before(now)),
        # The same deadline `check` uses: the rule planned at now - grace.
        deadline_days=_days(now - rule.period.before(grace.before(now))),
        status=state,
        overdue=status.overdue if status else 0,
        held=status.held if status else 0,
        minimum=status.minimum if status else 0,
        oldest_overdue=status.oldest_overdue if status else None,
        oldest_remaining=oldest,
        oldest_age_days=_days(now - oldest) if oldest is not None else None,
        error=(status.error if status else "not checked") if state == "error" else None,
        last_run=last[0] if last else None,
        last_outcome=last[1] if last else None,
        removed_total=sum(by_day.values()),
        removed_by_day=tuple(sorted(by_day.items())),
    )


def _oldest_remaining(
    policy: Policy, now: datetime, base_dir: Path | None
) -> Iterator[tuple[str, datetime | None]]:
    """Per enabled rule, the oldest row in its scope that no active hold protects.

    The rule is planned at `now` with its cutoff moved to `now`: every row in its scope
    (table, filter, not yet de-identified) is then a candidate. Rows a legal minimum
    keeps are included: they are why a kept promise can show a row past its deadline.
    """
    rules = [r for r in policy.rules if r.enabled]
    for store_name in dict.fromkeys(r.store for r in rules):
        store = policy.stores[store_name]
        if not isinstance(store, SqlStore):
            continue
        try:
            with read_only(store, base_dir, store_name) as conn:
                catalog = Catalog(conn, store_name)
                for rule in (r for r in rules if r.store == store_name):
                    everything = replace(plan_rule(policy, rule, now), cutoff=now)
                    try:
                        sql = compile_rule(everything, catalog)
                    except RuleSchemaError:
                        continue  # `check_promises` reports the rule as an error
                    oldest = sa.func.min(sa.case((sql.not_held, sql.age)))
                    query = sa.select(oldest).select_from(sql.table).where(sql.candidates)
                    value = conn.execute(query).scalar()
                    yield (
                        rule.name,
                        from_db_time(value, sql.age_column, sql.age_format, store, catalog.dialect),
                    )
        except StoreError:
            continue  # ditto: every rule of an unreachable store is an error there


def _condition_text(hold: Hold) -> str:
    if hold.subjects is not None:
        scope = hold.subjects
        values = ", ".join(str(v) for v in scope.values)
        renamed = ", ".join(f"{table}.{column}" for table, column in scope.tables.items())
        where = f" (in {renamed})" if renamed else ""
        return f"{scope.column} in ({values}){where}, in every rule's table"
    where = " and ".join(str(c) for c in hold.where)
    return f"rule {hold.rule}" + (f" where {where}" if where else " (every row)")


def _hold_entry(hold: Hold, now: datetime) -> HoldEntry:
    return HoldEntry(
        name=hold.name,
        reason=hold.reason,
        scope=_condition_text(hold),
        expires=hold.expires,
        active=hold.active(now),
    )


@dataclass
class _Trail:
    """What the report reads from the audit store."""

    chain: ChainResult
    removed: dict[str, dict[date, int]]
    last_run: dict[str, tuple[datetime, str]]
    holds: tuple[HoldEntry, ...] = ()


def _read_trail(loaded: LoadedPolicy, now: datetime) -> _Trail:
    """Verify the policy's audit trail and sum its committed batches per rule and day."""
    policy = loaded.policy
    tables = AuditTables(policy.audit.table_prefix)
    empty: dict[str, Any] = {}
    if policy.audit.store is None and not audit_file(loaded).exists():
        # Do not create the default audit file just to report that it is empty.
        return _Trail(ChainResult(str(audit_file(loaded))), dict(empty), dict(empty))
    try:
        audit = open_audit(loaded, create=False)
    except (StoreError, TypeError) as exc:
        return _Trail(ChainResult("audit store", error=str(exc)), dict(empty), dict(empty))
    try:
        with audit.engine.connect() as conn:
            try:
                if not sa.inspect(conn).has_table(tables.records.name):
                    return _Trail(ChainResult(audit.where), dict(empty), dict(empty))
                checked, problem = verify(conn, tables)
                first_at, last_at = _span(conn, tables)
                removed, last_run = _summarise(records(conn, tables))
                last_run.update(_ledger_runs(conn, policy))
                holds = tuple(_store_holds(conn, HoldTable(policy.audit.table_prefix), now))
            finally:
                conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        message = first[0] if first else type(exc).__name__
        return _Trail(ChainResult(audit.where, error=message), dict(empty), dict(empty))
    finally:
        audit.dispose()
    chain = ChainResult(
        audit.where,
        records=checked,
        broken_seq=problem.seq if problem else None,
        reason=problem.reason if problem else None,
        first_at=first_at,
        last_at=last_at,
    )
    return _Trail(chain, removed, last_run, holds)


def _span(conn: sa.Connection, tables: AuditTables) -> tuple[datetime | None, datetime | None]:
    column = tables.records.c.committed_at
    row = conn.execute(sa.select(sa.func.min(column), sa.func.max(column))).one()

    def aware(value: Any) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    return aware(row[0]), aware(row[1])


def _summarise(
    rows: Iterable[dict[str, Any]],
) -> tuple[dict[str, dict[date, int]], dict[str, tuple[datetime, str]]]:
    """Rows removed per rule and UTC day (committed batches only) and each rule's last
    audit record (the last run when the run ledger has none: see `_ledger_runs`)."""
    removed: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    last_run: dict[str, tuple[datetime, str]] = {}
    for row in rows:
        if row["dry_run"]:
            continue
        rule, committed = str(row["rule"]), row["committed_at"]
        if row["outcome"] == "committed" and row["batch"] > 0:
            removed[rule][committed.date()] += int(row["rows"])
        if rule not in last_run or committed >= last_run[rule][0]:
            last_run[rule] = (committed, f"batch {row['outcome']}")
    return {rule: dict(days) for rule, days in removed.items()}, last_run


def _ledger_runs(conn: sa.Connection, policy: Policy) -> Iterator[tuple[str, tuple[datetime, str]]]:
    """Each rule's last successful run from the run ledger, when the audit store has one.

    The ledger also knows runs that found nothing to remove, which write no batch record.
    """
    ledger = LedgerTables(policy.audit.table_prefix)
    for name, run in last_successes(conn, ledger, [r.name for r in policy.rules]).items():
        yield name, (run.finished_at or run.started_at, f"ok, {run.rows:,} rows")


def _store_holds(conn: sa.Connection, table: HoldTable, now: datetime) -> Iterator[HoldEntry]:
    """Holds placed at run time (`retention hold add`), released ones included."""
    for stored in stored_holds(conn, table):
        try:
            hold = Hold.model_validate(stored.definition)
        except ValueError:
            continue  # validated when placed; a definition edited since is not shown as a hold
        entry = replace(_hold_entry(hold, now), origin="audit store")
        yield replace(entry, active=entry.active and stored.active)


# --- render --------------------------------------------------------------------------

_CSS = """
:root {
  --ink: #1f2328; --muted: #59636e; --faint: #818b98; --line: #d1d9e0; --soft: #f6f8fa;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --warn: #9a6700; --warn-bg: #fff8c5; --off-bg: #eff2f5; --accent: #0b3d62;
}
* { box-sizing: border-box; }
html { background: #eef1f4; }
body {
  margin: 0 auto; max-width: 1320px; padding: 0 0 40px; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", sans-serif;
  background: #fff; box-shadow: 0 0 0 1px var(--line);
}
header.top { background: var(--accent); color: #fff; padding: 28px 40px 24px; }
header.top .kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 12px;
  opacity: .8; margin: 0 0 4px; }
header.top h1 { margin: 0 0 14px; font-size: 26px; font-weight: 600; }
header.top dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px;
  margin: 0; font-size: 13px; }
header.top dt { opacity: .75; }
header.top dd { margin: 0; word-break: break-all; }
main { padding: 0 40px; }
.verdict { margin: 24px 0 0; padding: 14px 18px; border-radius: 6px; font-size: 16px;
  font-weight: 600; border: 1px solid; }
.verdict.good { background: var(--ok-bg); border-color: #aceebb; color: #116329; }
.verdict.bad { background: var(--bad-bg); border-color: #ffcecb; color: #a40e26; }
.cards { display: grid; grid-template-columns: repeat(5, 1fr); gap: 14px; margin: 18px 0 8px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px;
  background: var(--soft); }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .05em; }
.card .value { font-size: 26px; font-weight: 600; line-height: 1.25; margin-top: 2px;
  font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 12px; }
.card.good .value { color: var(--ok); } .card.bad .value { color: var(--bad); }
section { margin-top: 34px; }
h2 { font-size: 19px; margin: 0 0 4px; padding-bottom: 6px; border-bottom: 2px solid var(--ink); }
h2 .n { color: var(--faint); font-weight: 400; margin-right: 8px; }
p.lead { color: var(--muted); margin: 6px 0 14px; max-width: 980px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
  text-transform: uppercase; letter-spacing: .03em; border-bottom: 1px solid var(--line);
  padding: 8px 8px; vertical-align: bottom; background: #fff; }
td { border-bottom: 1px solid #eaeef2; padding: 8px 8px; vertical-align: top; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .small, .small { color: var(--muted); font-size: 12px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas,
  "Liberation Mono", monospace; font-size: 12px; }
td code { color: var(--ink); font-weight: 600; }
td code { white-space: nowrap; }
td.promise q { quotes: "\\201C" "\\201D"; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px;
  font-weight: 600; border: 1px solid; white-space: nowrap; }
.badge.kept { color: var(--ok); background: var(--ok-bg); border-color: #aceebb; }
.badge.overdue, .badge.error, .badge.broken, .badge.unreadable {
  color: var(--bad); background: var(--bad-bg); border-color: #ffcecb; }
.badge.disabled, .badge.lapsed, .badge.empty { color: var(--muted); background: var(--off-bg);
  border-color: var(--line); }
.badge.active, .badge.intact { color: var(--ok); background: var(--ok-bg);
  border-color: #aceebb; }
.bad-num { color: var(--bad); font-weight: 600; }
.zero { color: var(--faint); }
figure { margin: 0 0 10px; border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px;
  background: #fff; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 8px; }
.chain { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 10px 0; }
.chain dt { color: var(--muted); } .chain dd { margin: 0; }
.note { background: var(--warn-bg); border: 1px solid #f5e0a0; border-radius: 6px;
  padding: 10px 14px; color: #6b4b00; }
footer { margin: 40px 40px 0; padding-top: 14px; border-top: 1px solid var(--line);
  color: var(--muted); font-size: 12.5px; }
footer ol { padding-left: 20px; } footer li { margin: 4px 0; }
@media print {
  html { background: #fff; } body { box-shadow: none; max-width: none; }
  header.top { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section { break-inside: avoid-page; } tr { break-inside: avoid; }
}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"

_OK, _WARN, _BAD, _LAW = "#2da44e", "#d4a72c", "#cf222e", "#8250df"
_GREY, _INK, _GRID = "#8c959f", "#1f2328", "#e6eaef"
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif"'


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _count(n: int) -> str:
    return f"{n:,}"


def _age(days: float | None) -> str:
    """A readable age: hours under a day, days under two years, then years."""
    if days is None:
        return "—"
    if days < 0:
        return "in the future"
    if days < 1:
        return f"{days * 24:.0f} h"
    if days < 730:
        return f"{days:,.0f} d"
    return f"{days / 365.25:.1f} y"


def render(data: ReportData) -> str:
    """The report as one HTML document: no scripts, no external assets, all text escaped."""
    title = f"Retention report — {data.policy_title or Path(data.policy_file).name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f'<meta name="generator" content="retention {_e(data.tool_version)}">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(data),
        "<main>",
        _summary(data),
        _promises(data),
        _charts(data),
        _holds(data),
        _chain(data),
        _uncovered(data),
        "</main>",
        _footnote(data),
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _header(data: ReportData) -> str:
    rows = [
        ("Policy file", data.policy_file),
        ("Policy SHA-256", data.policy_sha256 or "unavailable (file not readable)"),
        ("Judged as of", _when(data.as_of)),
        ("Generated", f"{_when(data.generated_at)} by retention {data.tool_version}"),
    ]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return (
        '<header class="top"><p class="kicker">Data-retention compliance report</p>'
        f"<h1>{_e(data.policy_title or Path(data.policy_file).name)}</h1>"
        f"<dl>{items}</dl></header>"
    )


def _chain_phrase(chain: ChainResult) -> str:
    return {
        "intact": f"audit chain intact ({_count(chain.records)} records verified)",
        "broken": f"audit chain BROKEN at record seq={chain.broken_seq}",
        "empty": "no audit records yet",
        "unreadable": "audit store unreadable",
    }[chain.state]


def _summary(data: ReportData) -> str:
    judged = data.judged
    overdue = [r for r in judged if r.status == "overdue"]
    errors = [r for r in judged if r.status == "error"]
    good = not overdue and not errors and data.chain.state in ("intact", "empty")
    if good:
        verdict = f"All {len(judged)} promises kept; {_chain_phrase(data.chain)}."
    else:
        bits = []
        if overdue:
            bits.append(f"{len(overdue)} of {len(judged)} promises overdue")
        if errors:
            bits.append(f"{len(errors)} could not be checked")
        if not bits:
            bits.append(f"all {len(judged)} promises kept")
        verdict = f"{'; '.join(bits)}; {_chain_phrase(data.chain)}."
        verdict = verdict[0].upper() + verdict[1:]
    rows_overdue = sum(r.overdue for r in judged)
    held = sum(r.held for r in judged)
    removed = sum(r.removed_total for r in data.rules)
    chain_value = {"intact": "Intact", "broken": "Broken", "empty": "Empty", "unreadable": "Error"}
    chain_sub = {
        "intact": f"{_count(data.chain.records)} records verified",
        "broken": f"first break at seq={data.chain.broken_seq}",
        "empty": "no records to verify",
        "unreadable": "could not read the trail",
    }
    disabled = len(data.rules) - len(judged)
    cards = [
        (
            "Promises kept",
            f"{data.kept} / {len(judged)}",
            f"{disabled} disabled rules not judged" if disabled else "enabled rules",
            "good" if data.kept == len(judged) else "bad",
        ),
        (
            "Overdue",
            str(len(overdue)),
            f"{_count(rows_overdue)} rows past deadline",
            "bad" if overdue else "good",
        ),
        ("Rows held", _count(held), "by active legal holds, summed over rules", ""),
        (
            "Audit chain",
            chain_value[data.chain.state],
            chain_sub[data.chain.state],
            {"intact": "good", "empty": ""}.get(data.chain.state, "bad"),
        ),
        ("Rows removed", _count(removed), "deleted or de-identified (trail)", ""),
    ]
    html = "".join(
        f'<div class="card {cls}"><div class="label">{_e(label)}</div>'
        f'<div class="value">{_e(value)}</div><div class="sub">{_e(sub)}</div></div>'
        for label, value, sub, cls in cards
    )
    return (
        f'<div class="verdict {"good" if good else "bad"}" id="verdict">{_e(verdict)}</div>'
        f'<div class="cards" id="summary">{html}</div>'
    )


def _badge(state: str, text: str | None = None) -> str:
    return f'<span class="badge {_e(state)}">{_e(text or state.capitalize())}</span>'


def _num(n: int, bad: bool = False) -> str:
    if n == 0:
        return '<span class="zero">0</span>'
    return f'<span class="bad-num">{_count(n)}</span>' if bad else _count(n)


def _promise_row(rule: RuleReport) -> str:
    source = f"{rule.source_policy} — {rule.clause}"
    if rule.source_url:
        source += f" ({rule.source_url})"
    overdue = _num(rule.overdue, bad=True)
    if rule.oldest_overdue is not None:
        overdue += f'<div class="small">oldest {_e(rule.oldest_overdue.date().isoformat())}</div>'
    if rule.status == "error":
        overdue = f'<span class="small">{_e(rule.error or "not checked")}</span>'
    held = _num(rule.held)
    if rule.minimum:
        held += f'<div class="small">+{_count(rule.minimum)} legal minimum</div>'
    age = _age(rule.oldest_age_days) if rule.oldest_remaining else "none left"
    allowed = f"deadline {_age(rule.deadline_days)}"
    last = (
        f"{_e(rule.last_run.astimezone(UTC).strftime('%Y-%m-%d %H:%M'))}"
        f"<div class='small'>{_e(rule.last_outcome or '')}</div>"
        if rule.last_run
        else '<span class="zero">no record</span>'
    )
    return (
        f'<tr data-rule="{_e(rule.name)}" data-status="{_e(rule.status)}">'
        f"<td>{_badge(rule.status)}</td>"
        f"<td><code>{_e(rule.name)}</code>"
        f'<div class="small">{_e(rule.store)}.{_e(rule.table)} · {_e(rule.action)}</div></td>'
        f'<td class="promise"><q>{_e(rule.promise)}</q><div class="small">{_e(source)}</div></td>'
        f'<td class="num">{_e(rule.period)}<div class="small">grace {_e(rule.grace)}</div></td>'
        f'<td class="num">{overdue}</td>'
        f'<td class="num">{held}</td>'
        f'<td class="num">{_e(age)}<div class="small">{_e(allowed)}</div></td>'
        f'<td class="num">{last}</td>'
        f'<td class="num">{_num(rule.removed_total)}</td>'
        "</tr>"
    )


def _promises(data: ReportData) -> str:
    head = (
        "<tr><th>Status</th><th>Rule</th><th>Promise and source</th>"
        '<th class="num">Period</th><th class="num">Overdue</th>'
        '<th class="num">Held</th><th class="num">Oldest left</th>'
        '<th class="num">Last run (UTC)</th><th class="num">Removed</th></tr>'
    )
    body = "".join(_promise_row(r) for r in data.rules)
    return (
        '<section id="promises"><h2><span class="n">1</span>Promises</h2>'
        '<p class="lead">Each rule enforces one published promise. A promise is overdue when '
        "a row it covers is older than its period plus grace and nothing protects it.</p>"
        f'<table id="promise-table"><thead>{head}</thead><tbody>{body}</tbody></table></section>'
    )


# --- charts (inline SVG) -----------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg_open(chart_id: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(label)}" {_FONT} font-size="12">'
    )


_AGE_TICKS = (
    (1 / 24, "1 h"),
    (1.0, "1 d"),
    (7.0, "1 w"),
    (30.0, "30 d"),
    (90.0, "90 d"),
    (365.25, "1 y"),
    (3 * 365.25, "3 y"),
    (10 * 365.25, "10 y"),
    (30 * 365.25, "30 y"),
)


def _bar_colour(rule: RuleReport, age: float) -> str:
    if age <= rule.period_days:
        return _OK
    if age <= rule.deadline_days:
        return _WARN
    # Past the deadline yet not overdue: only a legal minimum keeps such a row.
    return _BAD if rule.overdue or rule.status != "kept" else _LAW


def _marker(x: float, y1: float, y2: float, *, dashed: bool) -> str:
    """A vertical mark with a white halo, visible on any bar: solid period, dashed deadline."""
    dash = ' stroke-dasharray="3 2"' if dashed else ""
    line = f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y2}"'
    return (
        f'{line} stroke="#ffffff" stroke-width="4.5"/>'
        f'{line} stroke="{_INK}" stroke-width="2"{dash}/>'
    )


def _age_chart(rules: Sequence[RuleReport]) -> str:
    """Oldest remaining age per rule on a log axis, the period and the deadline marked."""
    width, left, right, top, row = 1180, 250, 120, 62, 24
    plot = width - left - right
    height = top + row * len(rules) + 34
    low = 1 / 24
    longest = max(
        [10 * 365.25]
        + [r.deadline_days for r in rules]
        + [r.oldest_age_days or 0 for r in rules if r.oldest_remaining is not None]
    )
    high = longest * 1.25
    span = math.log10(high) - math.log10(low)

    def x(days: float) -> float:
        return left + (math.log10(max(days, low)) - math.log10(low)) / span * plot

    out = [_svg_open("age-chart", width, height, "Oldest remaining record age against period")]
    legend = [
        (_OK, "within period"),
        (_WARN, "in grace"),
        (_BAD, "past deadline (overdue)"),
        (_LAW, "past deadline, kept by a legal minimum"),
    ]
    lx = 16
    for colour, text in legend:
        out.append(f'<rect x="{lx}" y="8" width="12" height="12" rx="2" fill="{colour}"/>')
        out.append(f'<text x="{lx + 17}" y="18" fill="{_INK}">{_e(text)}</text>')
        lx += 28 + len(text) * 7
    out.append(_marker(lx, 6, 22, dashed=False))
    out.append(f'<text x="{lx + 7}" y="18" fill="{_INK}">period</text>')
    lx += 70
    out.append(_marker(lx, 6, 22, dashed=True))
    out.append(f'<text x="{lx + 7}" y="18" fill="{_INK}">period + grace (deadline)</text>')
    bottom = top + row * len(rules)
    for days, text in _AGE_TICKS:
        if low <= days <= high:
            tx = x(days)
            out.append(
                f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" stroke="{_GRID}"/>'
            )
            for ty in (top - 10, bottom + 16):
                out.append(
                    f'<text x="{tx:.1f}" y="{ty}" text-anchor="middle" '
                    f'fill="#59636e">{_e(text)}</text>'
                )
    out.append(
        f'<text x="{width - right + 8}" y="{top - 10}" fill="#59636e" font-weight="600">'
        "oldest / deadline</text>"
    )
    for i, rule in enumerate(rules):
        y = top + i * row
        if i % 2:
            out.append(
                f'<rect x="0" y="{y}" width="{width}" height="{row}" fill="#f6f8fa" '
                'fill-opacity="0.7"/>'
            )
        mid = y + row / 2
        out.append(
            f'<text x="{left - 10}" y="{mid + 4:.1f}" text-anchor="end" fill="{_INK}">'
            f"<title>{_e(rule.name)}</title>{_e(_clip(rule.name, 34))}</text>"
        )
        age = rule.oldest_age_days
        if rule.status == "disabled":
            note = "disabled: not judged"
        elif rule.status == "error":
            note = "not checked (error)"
        elif rule.oldest_remaining is None or age is None:
            note = "no rows left (other than held ones)"
        else:
            note = ""
        if note:
            out.append(
                f'<text x="{left + 6}" y="{mid + 4:.1f}" fill="{_GREY}" font-style="italic">'
                f"{_e(note)}</text>"
            )
        else:
            assert age is not None
            colour = _bar_colour(rule, age)
            end = max(x(age), left + 2)
            out.append(
                f'<rect x="{left}" y="{y + 6}" width="{end - left:.1f}" height="{row - 12}" '
                f'rx="2" fill="{colour}"><title>{_e(rule.name)}: oldest remaining row '
                f"{_e(_age(age))} old; period {_e(rule.period)}, deadline "
                f"{_e(_age(rule.deadline_days))}</title></rect>"
            )
        if rule.period_days > 0:
            out.append(_marker(x(rule.period_days), y + 2, y + row - 2, dashed=False))
        out.append(_marker(x(rule.deadline_days), y + 2, y + row - 2, dashed=True))
        value = f"{_age(age) if not note else '—'} / {_age(rule.deadline_days)}"
        out.append(
            f'<text x="{width - right + 8}" y="{mid + 4:.1f}" fill="{_INK}" '
            f'font-variant-numeric="tabular-nums">{_e(value)}</text>'
        )
    out.append(
        f'<line x1="{left}" y1="{top - 4}" x2="{left}" y2="{bottom}" stroke="#8c959f"/></svg>'
    )
    return "".join(out)


def _axis(value: int) -> tuple[int, int]:
    """A round tick step for an axis from 0 to `value`, and the axis top (a multiple of it)."""
    target = max(value, 1) / 5
    power = 1
    while power * 10 <= target:
        power *= 10
    step = next(
        int(power * f) for f in (1, 2, 2.5, 5, 10) if power * f >= target and power * f >= 1
    )
    return step, step * max(1, math.ceil(max(value, 1) / step))


_WINDOW_DAYS = 30
_MAX_DAYS = 366


def _window(data: ReportData) -> list[date]:
    """Days shown: at least the 30 days up to the report, at most the last 366 days."""
    days = [d for r in data.rules for d, _ in r.removed_by_day]
    end = max([data.as_of.date(), *days])
    start = min([end - timedelta(days=_WINDOW_DAYS - 1), *days])
    start = max(start, end - timedelta(days=_MAX_DAYS - 1))
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _removed_chart(data: ReportData, days: list[date]) -> tuple[str, list[RuleReport]]:
    """Total rows removed per day, then one strip per rule that removed any (own scale)."""
    shown = set(days)
    per_rule = [
        (r, {d: n for d, n in r.removed_by_day if d in shown})
        for r in data.rules
        if any(d in shown and n for d, n in r.removed_by_day)
    ]
    idle = [r for r in data.rules if not any(n for d, n in r.removed_by_day if d in shown)]
    totals: dict[date, int] = defaultdict(int)
    for _, by_day in per_rule:
        for d, n in by_day.items():
            totals[d] += n
    width, left, right = 1180, 250, 120
    plot = width - left - right
    panel_top, panel_h, strip_h, gap = 16, 150, 22, 46
    strips_top = panel_top + panel_h + gap
    height = strips_top + strip_h * len(per_rule) + 12
    slot = plot / len(days)
    bar = max(slot * 0.7, 1.0)
    index = {d: i for i, d in enumerate(days)}
    out = [_svg_open("removed-chart", width, height, "Rows removed per day")]
    tick, peak = _axis(max(totals.values(), default=0))
    for value in range(0, peak + 1, tick):
        y = panel_top + panel_h - panel_h * value / peak
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot}" y2="{y:.1f}" stroke="{_GRID}"/>'
        )
        out.append(
            f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#59636e">'
            f"{_count(value)}</text>"
        )
    out.append(
        f'<text x="{left - 60}" y="{panel_top + panel_h / 2:.1f}" text-anchor="end" '
        f'fill="{_INK}" font-weight="600">all rules</text>'
    )
    for d, n in sorted(totals.items()):
        h = panel_h * n / peak
        bx = left + index[d] * slot + (slot - bar) / 2
        out.append(
            f'<rect x="{bx:.1f}" y="{panel_top + panel_h - h:.1f}" width="{bar:.1f}" '
            f'height="{max(h, 1):.1f}" fill="#0b3d62"><title>{_e(d.isoformat())}: '
            f"{_count(n)} rows</title></rect>"
        )
    axis_y = panel_top + panel_h
    if not totals:
        out.append(
            f'<text x="{left + plot / 2:.1f}" y="{panel_top + panel_h / 2:.1f}" '
            f'text-anchor="middle" fill="{_GREY}" font-style="italic" font-size="14">'
            "No rows removed in this window</text>"
        )
    out.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot}" y2="{axis_y}" stroke="#8c959f"/>'
    )
    step = max(1, math.ceil(len(days) / 10))
    for i, d in enumerate(days):
        if (len(days) - 1 - i) % step == 0:
            tx = left + i * slot + slot / 2
            out.append(
                f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 4}" '
                'stroke="#8c959f"/>'
                f'<text x="{tx:.1f}" y="{axis_y + 18}" text-anchor="middle" fill="#59636e">'
                f"{_e(d.strftime('%b %d'))}</text>"
            )
    out.append(
        f'<text x="{width - right + 8}" y="{strips_top - 8}" fill="#59636e" '
        'font-weight="600">total rows</text>'
    )
    for i, (rule, by_day) in enumerate(per_rule):
        y = strips_top + i * strip_h
        if i % 2 == 0:
            out.append(
                f'<rect x="0" y="{y}" width="{width}" height="{strip_h}" fill="#f6f8fa" '
                'fill-opacity="0.7"/>'
            )
        out.append(
            f'<text x="{left - 10}" y="{y + strip_h / 2 + 4:.1f}" text-anchor="end" '
            f'fill="{_INK}"><title>{_e(rule.name)}</title>{_e(_clip(rule.name, 34))}</text>'
        )
        top_n = max(by_day.values())
        for d, n in sorted(by_day.items()):
            h = (strip_h - 6) * n / top_n
            bx = left + index[d] * slot + (slot - bar) / 2
            out.append(
                f'<rect x="{bx:.1f}" y="{y + strip_h - 3 - h:.1f}" width="{bar:.1f}" '
                f'height="{max(h, 1):.1f}" fill="#4a7fb0"><title>{_e(rule.name)}, '
                f"{_e(d.isoformat())}: {_count(n)} rows</title></rect>"
            )
        out.append(
            f'<text x="{width - right + 8}" y="{y + strip_h / 2 + 4:.1f}" fill="{_INK}">'
            f"{_count(sum(by_day.values()))}</text>"
        )
    out.append("</svg>")
    return "".join(out), idle


def _charts(data: ReportData) -> str:
    days = _window(data)
    removed_svg, idle = _removed_chart(data, days)
    idle_note = (
        f" No rows removed in this window by: {', '.join(r.name for r in idle)}." if idle else ""
    )
    return (
        '<section id="charts"><h2><span class="n">2</span>Charts</h2>'
        '<p class="lead">Oldest row each rule still leaves in place, against its period '
        "(solid mark) and its deadline, the period plus grace (dashed). The axis is "
        "logarithmic so that periods of hours and of years fit on one scale.</p>"
        f"<figure>{_age_chart(data.rules)}<figcaption>Oldest remaining record age per rule, "
        f"as of {_e(_when(data.as_of))}. Rows under an active legal hold are left out; rows a "
        "legal minimum retention keeps are included.</figcaption></figure>"
        '<p class="lead">Rows deleted or de-identified per day (UTC), from the audit trail: '
        "the total, then each rule on its own scale.</p>"
        f"<figure>{removed_svg}<figcaption>{_e(days[0].isoformat())} to "
        f"{_e(days[-1].isoformat())}, {len(days)} days.{_e(idle_note)}</figcaption></figure>"
        "</section>"
    )


def _expiry(moment: datetime | None) -> str:
    """``never``; a date-only expiry (midnight UTC) as the last day the hold covers."""
    if moment is None:
        return "never"
    utc = moment.astimezone(UTC)
    if (utc.hour, utc.minute, utc.second, utc.microsecond) == (0, 0, 0, 0):
        return f"end of {(utc - timedelta(days=1)).date().isoformat()}"
    return _when(utc)


def _holds(data: ReportData) -> str:
    if not data.holds:
        body = '<tr><td colspan="6" class="small">No legal holds.</td></tr>'
    else:
        ordered = sorted(data.holds, key=lambda h: (not h.active, h.origin, h.name))
        body = "".join(
            f'<tr data-hold="{_e(h.name)}"><td>'
            f"{_badge('active' if h.active else 'lapsed')}</td>"
            f"<td><code>{_e(h.name)}</code></td><td>{_e(h.reason)}</td>"
            f'<td class="small">{_e(h.scope)}</td>'
            f'<td class="num">{_e(_expiry(h.expires))}</td>'
            f'<td class="small">{_e(h.origin)}</td></tr>'
            for h in ordered
        )
    active = sum(1 for h in data.holds if h.active)
    return (
        '<section id="holds"><h2><span class="n">3</span>Legal holds</h2>'
        f'<p class="lead">{active} active of {len(data.holds)}. Rows under an active hold are '
        "never removed, and are reported as held, not overdue.</p>"
        '<table id="hold-table"><thead><tr><th>State</th><th>Hold</th><th>Reason</th>'
        '<th>Scope</th><th class="num">Expires</th><th>Source</th></tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )


def _chain(data: ReportData) -> str:
    chain = data.chain
    state = chain.state
    texts = {
        "intact": "Every record matches its hash and links to the record before it; the "
        "last one matches the chain head. Nothing was edited, inserted, removed or reordered.",
        "broken": f"The chain does not hold at record seq={chain.broken_seq}: {chain.reason}. "
        "Records from there on cannot be trusted.",
        "empty": "The audit store holds no records yet: no run has removed anything.",
        "unreadable": f"The audit store could not be read: {chain.error}.",
    }
    rows = [
        ("Result", _badge(state)),
        ("Audit store", f'<span class="mono">{_e(chain.where)}</span>'),
        ("Records verified", _e(_count(chain.records))),
    ]
    if chain.first_at is not None:
        span = f"{_when(chain.first_at)} to {_when(chain.last_at)}"
        rows.append(("Records committed", _e(span)))
    if chain.broken_seq is not None:
        rows.append(("First break", f"record seq={chain.broken_seq}: {_e(chain.reason)}"))
    items = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return (
        '<section id="audit-chain"><h2><span class="n">4</span>Audit trail</h2>'
        f'<p class="lead">{_e(texts[state])}</p><dl class="chain">{items}</dl></section>'
    )


def _uncovered(data: ReportData) -> str:
    if not data.uncovered_columns:
        return ""
    items = ", ".join(f"<code>{_e(c)}</code>" for c in data.uncovered_columns)
    return (
        '<section id="uncovered"><h2><span class="n">5</span>Personal data no rule covers</h2>'
        '<p class="note">These columns look like personal data (e-mail, IP address, phone, '
        f"name, address) and sit in tables no rule covers: {items}.</p></section>"
    )


def _footnote(data: ReportData) -> str:
    notes = [
        "<b>Status.</b> A rule is planned at the as-of time minus its grace period, the same "
        "computation as <code>retention check</code>: the rows it would then remove are "
        "overdue. Rows under an active legal hold are counted as held and rows inside a "
        "legal minimum retention as kept by law; neither counts as overdue. A rule whose "
        "store or table could not be read is an error, counted as not kept.",
        "<b>Oldest remaining.</b> The oldest row in the rule's scope (its table and filter; "
        "for de-identification rules, rows not yet de-identified) that no active hold "
        "protects. Rows a legal minimum retention keeps are included, so a kept promise "
        "can show a row past its deadline (drawn in purple). Age is measured from the "
        "rule's timestamp, or from the event for event-based rules, in days of 24 hours; "
        "calendar periods (months, years) are converted at the as-of time.",
        "<b>Rows removed.</b> The sum of <code>rows</code> over committed, non-dry-run batch "
        "records of the audit trail, grouped by UTC day of commit; rows of child tables "
        "removed with their parents count towards the parent's rule. The whole trail is "
        "read, including records committed after the as-of time.",
        "<b>Last run.</b> The end of the rule's last successful run in the run ledger; for a "
        "rule the ledger has no successful run of, the commit time of its latest audit record "
        "(a run that found nothing to remove writes none).",
        "<b>Audit trail.</b> Each record's SHA-256 hash covers its content and the previous "
        "record's hash; verification recomputes every hash in order and compares the last "
        "with the chain head. The trail stores key ranges and keyed digests, never personal "
        "data.",
        f"<b>Policy SHA-256.</b> The hash of the policy file's bytes "
        f"(<code>{_e(data.policy_file)}</code>) when the report was generated.",
    ]
    items = "".join(f"<li>{n}</li>" for n in notes)
    return f'<footer id="method"><b>How these figures were computed</b><ol>{items}</ol></footer>'
