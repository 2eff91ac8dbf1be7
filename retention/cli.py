"""The `retention` command line. The only place that reads the clock and exits the process."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from retention.cli_options import config_option, parse_instant
from retention.daemon_cli import daemon as daemon_command
from retention.errors import ExitCode, PolicyError, RetentionError, Severity, UsageError
from retention.loader import LoadedPolicy, load_policy
from retention.planner import build_plan
from retention.policy import Policy
from retention.render import iso, plan_document, print_issues, print_plan
from retention.report_cli import report as report_command
from retention.runner import RunOptions
from retention.stores.files import plan_file_rules
from retention.stores.preview import preview
from retention.validate import connected_findings, static_findings

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DEMO_DB = Path("var") / "demo.db"


def _console(err: bool = False) -> Console:
    return Console(stderr=err, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def _load(config: Path) -> LoadedPolicy:
    """The policy with the active holds of its audit store added."""
    from retention.audit.holds import load_with_holds

    return load_with_holds(config)


class _Commands(click.Group):
    """The command group; the one place where a `RetentionError` becomes a message on
    standard error and the process exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PolicyError as exc:
            print_issues(_console(err=True), exc.issues)
            errors = sum(1 for i in exc.issues if i.severity is Severity.ERROR)
            warnings = len(exc.issues) - errors
            counted = f"{errors} error(s)" + (f", {warnings} warning(s)" if warnings else "")
            click.echo(f"policy invalid: {counted}; nothing was run", err=True)
            raise SystemExit(exc.exit_code) from None
        except RetentionError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(exc.exit_code) from None


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="retention")
def cli() -> None:
    """Enforce data-retention promises: YAML rules, dry-run plans, batched purges, audit.

    Exit codes: 0 success, 1 a rule or store failed, 2 invalid policy or usage,
    3 a safety limit stopped a rule.
    """


@cli.command()
@config_option
@click.option(
    "--connect", is_flag=True, help="Also reflect every store and check rules against it."
)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--as-of", "as_of", help="Judge conflicts as of this ISO 8601 time (default: now).")
def validate(config: Path, connect: bool, strict: bool, as_of: str | None) -> None:
    """Check a policy file; with --connect also check it against the live stores (read-only)."""
    now = parse_instant(as_of)
    loaded = load_policy(config)
    issues = static_findings(loaded, now)
    if connect:
        issues += connected_findings(loaded, now)
    issues.sort(key=lambda i: (i.severity is not Severity.ERROR, i.line, i.column))
    errors = [i for i in issues if i.severity is Severity.ERROR]
    warnings = [i for i in issues if i.severity is Severity.WARNING]
    if errors or (strict and warnings):
        raise PolicyError(issues)  # printed, warnings included, where errors are reported
    print_issues(_console(err=True), issues)
    policy = loaded.policy
    checked = "checked against the stores" if connect else "static checks only"
    click.echo(
        f"{config}: OK ({len(policy.rules)} rules, {len(policy.stores)} stores, "
        f"{len(policy.holds)} holds, {len(policy.minimums)} minimums; {checked}; "
        f"{len(warnings)} warnings)"
    )


@cli.command()
@config_option
@click.option("--rule", "rules", multiple=True, metavar="NAME", help="Only this rule (repeatable).")
@click.option(
    "--as-of", "as_of", help="Plan as of this ISO 8601 time instead of now (UTC if no zone)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
@click.option("--sql", "show_sql", is_flag=True, help="Text format: also print each rule's SQL.")
def plan(config: Path, rules: Sequence[str], as_of: str | None, fmt: str, show_sql: bool) -> None:
    """Show what a run would delete or de-identify, changing nothing (read-only)."""
    now = parse_instant(as_of)
    loaded = _load(config)
    the_plan = build_plan(loaded.policy, now, rules)
    estimates = list(preview(the_plan, loaded.base_dir))
    file_plans = plan_file_rules(loaded, now, rules)
    if fmt == "json":
        document = plan_document(the_plan, estimates, str(config), file_plans)
        click.echo(json.dumps(document, indent=2))
    else:
        print_plan(
            _console(), the_plan, estimates, str(config), show_sql=show_sql, file_plans=file_plans
        )
    if any(e.error for e in estimates) or any(p.error for p in file_plans):
        sys.exit(ExitCode.FAILED)


@cli.command()
@config_option
@click.option("--rule", "rules", multiple=True, metavar="NAME", help="Only this rule (repeatable).")
@click.option("--dry-run", is_flag=True, help="Change nothing: the same as `retention plan`.")
@click.option("--force", is_flag=True, help="Run rules even when a safety limit would stop them.")
@click.option("--max-rows", type=click.IntRange(min=0), help="Override every rule's max_rows.")
@click.option(
    "--slot",
    metavar="ISO",
    help="The scheduled slot this run fills (e.g. the cron time): a rule already run for "
    "it (run ledger) is skipped. Default: the start time.",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write this run's Prometheus metrics to PATH (node-exporter textfile collector).",
)
@click.pass_context
def run(
    ctx: click.Context,
    config: Path,
    rules: Sequence[str],
    dry_run: bool,
    force: bool,
    max_rows: int | None,
    slot: str | None,
    metrics_file: Path | None,
) -> None:
    """Execute the plan once and exit (cron mode).

    Exit 0 when every rule succeeded, 1 when a rule failed, 3 when a limit stopped one."""
    if dry_run:
        ctx.invoke(plan, config=config, rules=rules, as_of=None, fmt="text", show_sql=False)
        return
    from retention.progress import run_with_progress

    loaded = _load(config)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        # Only set a flag: the run stops at the next batch boundary (a second signal too).
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    report = run_with_progress(
        loaded,
        datetime.now(UTC),
        RunOptions(
            rules=rules,
            force=force,
            max_rows=max_rows,
            slot=parse_instant(slot) if slot else None,
        ),
        should_stop=stop.is_set,
    )
    if metrics_file is not None:
        from retention.metrics import write_metrics_file

        write_metrics_file(report, metrics_file, finished_at=datetime.now(UTC))
    sys.exit(report.exit_code)


@cli.command()
@config_option
@click.option("--as-of", "as_of", help="Judge as of this ISO 8601 time instead of now.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def check(config: Path, as_of: str | None, fmt: str) -> None:
    """Are the promises kept? Per rule: rows overdue (past cutoff plus grace, not held),
    the oldest one, rows held. Exit 1 when any promise is broken. Read-only."""
    from retention.stores.check import PromiseStatus, check_promises, uncovered_personal_columns
    from retention.stores.files import FilePromiseStatus, check_file_rules

    now = parse_instant(as_of)
    loaded = _load(config)
    statuses: list[PromiseStatus] = [
        *check_promises(loaded.policy, now, loaded.base_dir),
        *check_file_rules(loaded, now),
    ]
    personal = uncovered_personal_columns(loaded.policy, loaded.base_dir)
    last = _last_successes(loaded, [s.rule for s in statuses])
    if fmt == "json":
        document = {
            "now": iso(now),
            "kept": all(s.kept for s in statuses),
            "rules": [
                {
                    "rule": s.rule,
                    "promise": s.promise,
                    "status": "kept" if s.kept else "error" if s.error else "broken",
                    "overdue": s.overdue,
                    "oldest_overdue": iso(s.oldest_overdue),
                    "held": s.held,
                    "minimum": s.minimum,
                    "last_success": iso(last.get(s.rule)),
                    "error": s.error,
                    **(
                        {
                            "overdue_bytes": s.overdue_bytes,
                            "keep_last": s.keep_last,
                            "unparsable": s.unparsable,
                            "notes": s.notes,
                        }
                        if isinstance(s, FilePromiseStatus)
                        else {}
                    ),
                }
                for s in statuses
            ],
            "uncovered_personal_columns": personal,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for s in statuses:
            state = "kept" if s.kept else "ERROR" if s.error else "BROKEN"
            detail = s.error or (
                f"{s.overdue} overdue (oldest {iso(s.oldest_overdue) or '-'}), {s.held} held, "
                f"{s.minimum} kept by legal minimums; last successful run "
                f"{iso(last.get(s.rule)) or 'never'}"
            )
            click.echo(f"{state:<7} {s.rule}: {detail}")
            if isinstance(s, FilePromiseStatus):
                for note in s.notes:
                    click.echo(f"note    {s.rule}: {note}")
        for column in personal:
            click.echo(f"note    {column} looks like personal data and no rule covers its table")
    if not all(s.kept for s in statuses):
        sys.exit(ExitCode.FAILED)


def _last_successes(loaded: LoadedPolicy, rules: Sequence[str]) -> dict[str, datetime]:
    """When each rule last finished a run successfully (run ledger; nothing if none)."""
    from retention.audit.ledger import LedgerTables, last_successes
    from retention.audit.store import opened

    tables = LedgerTables(loaded.policy.audit.table_prefix)
    with opened(loaded, create=False) as audit, audit.engine.connect() as conn:
        runs = last_successes(conn, tables, rules)
    return {rule: run.finished_at for rule, run in runs.items() if run.finished_at is not None}


@cli.group()
def audit() -> None:
    """Inspect the audit trail."""


def _audit_rows(
    config: Path,
    rules: Sequence[str],
    run_id: str | None,
    since: str | None,
    until: str | None,
) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from retention.audit.sql import records
    from retention.audit.store import opened

    with opened(_load(config), create=False) as store, store.engine.connect() as conn:
        if not sa.inspect(conn).has_table(store.tables.records.name):
            return []
        return list(
            records(
                conn,
                store.tables,
                rules=rules,
                run_id=run_id,
                since=parse_instant(since) if since else None,
                until=parse_instant(until) if until else None,
            )
        )


def audit_filters(func: F) -> F:
    """Filters shared by `audit show` and `audit export`."""
    for option in reversed(
        [
            config_option,
            click.option("--rule", "rules", multiple=True, metavar="NAME", help="Only this rule."),
            click.option("--run", "run_id", metavar="RUN_ID", help="Only this run."),
            click.option("--since", help="Committed at or after this ISO 8601 time."),
            click.option("--until", help="Committed before this ISO 8601 time."),
        ]
    ):
        func = option(func)
    return func


@audit.command("show")
@audit_filters
def audit_show(
    config: Path, rules: Sequence[str], run_id: str | None, since: str | None, until: str | None
) -> None:
    """List audit records (what was removed, when, under which rule)."""
    from rich.table import Table

    table = Table(title="audit trail", title_justify="left")
    for column in (
        "committed (UTC)",
        "store",
        "rule",
        "table",
        "action",
        "batch",
        "outcome",
        "rows",
        "keys",
        "cutoff",
        "run",
    ):
        table.add_column(column)
    for r in _audit_rows(config, rules, run_id, since, until):
        table.add_row(
            (iso(r["committed_at"]) or "")[:19],
            r["store"],
            r["rule"],
            r["table_name"],
            r["action"],
            str(r["batch"]),
            r["outcome"],
            str(r["rows"]),
            f"{r['key_min']}..{r['key_max']}",
            (iso(r["cutoff"]) or "")[:19],
            r["run_id"][:8],
        )
    _console().print(table)


@audit.command("export")
@audit_filters
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
def audit_export(
    config: Path,
    rules: Sequence[str],
    run_id: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
) -> None:
    """Export audit records as JSON lines or CSV on standard output."""
    import csv

    rows = _audit_rows(config, rules, run_id, since, until)
    plain = [{k: iso(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]
    if fmt == "jsonl":
        for row in plain:
            click.echo(json.dumps(row, sort_keys=True))
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(plain[0]) if plain else ["seq"])
    writer.writeheader()
    writer.writerows(plain)


@audit.command("verify")
@config_option
def audit_verify(config: Path) -> None:
    """Check the hash chain of the policy's audit trail.

    Exit 1 naming the first broken record when a record was altered, deleted,
    inserted or reordered; exit 0 when the chain is intact. Records still waiting in a
    store's outbox (a run crashed after its batch committed) are listed; the next run
    forwards them.
    """
    import sqlalchemy as sa

    from retention.audit.outbox import Outbox, pending
    from retention.audit.sql import verify
    from retention.audit.store import opened
    from retention.stores.sql import read_only

    loaded = _load(config)
    policy = loaded.policy
    with opened(loaded, create=False) as store:
        with store.engine.connect() as conn:
            started = sa.inspect(conn).has_table(store.tables.records.name)
            count, problem = verify(conn, store.tables) if started else (0, None)
        where = store.where
        others = [n for n in dict.fromkeys(r.store for r in policy.rules) if not store.shares(n)]
    outbox = Outbox(policy.audit.table_prefix)
    for name in others:
        with read_only(policy.stores[name], loaded.base_dir, name) as conn:  # type: ignore[arg-type]
            waiting = pending(conn, outbox)
        if waiting:
            click.echo(f"store {name}: {waiting} records waiting in its outbox")
    if not started:
        click.echo(f"audit store {where}: no audit trail yet")
        return
    if problem is not None:
        click.echo(f"audit store {where}: BROKEN at record seq={problem.seq}: {problem.reason}")
        sys.exit(ExitCode.FAILED)
    click.echo(f"audit store {where}: {count} records, chain intact")


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the policy format."""
    document = Policy.model_json_schema(by_alias=True)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "retention policy (version 1)"
    click.echo(json.dumps(document, indent=2))


@cli.command()
@click.option(
    "--url",
    default=None,
    help=f"SQLAlchemy URL to build the demo in (default: SQLite file {DEFAULT_DEMO_DB}).",
)
@click.option("--as-of", "as_of", help="Build timestamps relative to this instant (default: now).")
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same rows).")
@click.option("--scale", default=1, show_default=True, help="Multiply the number of rows.")
def demo(url: str | None, as_of: str | None, seed: int, scale: int) -> None:
    """Build (or rebuild) the demo store: accounts, logs, invoices, requests over 8 years."""
    from retention.demo import build_demo

    now = parse_instant(as_of)
    if url is None:
        DEFAULT_DEMO_DB.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{DEFAULT_DEMO_DB}"
    counts = build_demo(url, now, seed=seed, scale=scale)
    total = sum(counts.values())
    click.echo(f"demo store built at {_redacted(url)}: {total} rows in {len(counts)} tables")
    for table, rows in counts.items():
        click.echo(f"  {table:<20} {rows:>8}")


def _redacted(url: str) -> str:
    from retention.stores.sql import redact

    return redact(url)


cli.add_command(report_command)
cli.add_command(daemon_command)


@cli.group()
def hold() -> None:
    """Legal holds kept in the audit store (they apply like the policy file's holds)."""


def _who(who: str | None) -> str:
    import getpass
    import socket

    return who or f"{getpass.getuser()}@{socket.gethostname()}"


def _digest_key(loaded: LoadedPolicy) -> bytes:
    import os

    name = loaded.policy.audit.key_env
    if not os.environ.get(name):
        raise UsageError(f"environment variable {name} not set: hold changes are audited")
    return os.environ[name].encode()


@hold.command("add")
@config_option
@click.argument("name")
@click.option("--reason", required=True, help="Why (case number, request).")
@click.option("--subject", metavar="COLUMN=V1,V2", help="Hold these subject key values.")
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="TABLE=COLUMN",
    help="The subject key is named COLUMN in TABLE (repeatable).",
)
@click.option("--rule", "rule", metavar="NAME", help="Hold what this rule would remove...")
@click.option("--where", metavar="YAML", help="...matching this filter, e.g. '{ip: 10.0.0.1}'.")
@click.option("--expires", metavar="DATE", help="Last day the hold applies (ISO date).")
@click.option("--by", "who", metavar="WHO", help="Who places it (default user@host).")
def hold_add(
    config: Path,
    name: str,
    reason: str,
    subject: str | None,
    tables: Sequence[str],
    rule: str | None,
    where: str | None,
    expires: str | None,
    who: str | None,
) -> None:
    """Place a hold. It is validated against the policy and audited."""
    from ruamel.yaml import YAML

    from retention.audit.holds import add

    definition: dict[str, Any] = {"name": name, "reason": reason}
    if expires:
        definition["expires"] = expires
    if subject:
        column, _, values = subject.partition("=")
        parsed: list[int | str] = [
            int(v) if v.strip().isdigit() else v.strip() for v in values.split(",") if v.strip()
        ]
        definition["subjects"] = {"column": column.strip(), "values": parsed}
        if tables:
            definition["subjects"]["tables"] = dict(t.split("=", 1) for t in tables)
    if rule:
        definition["rule"] = rule
    if where:
        definition["where"] = YAML(typ="safe", pure=True).load(where)
    loaded = load_policy(config)
    add(config, definition, _who(who), _digest_key(loaded))
    click.echo(f"hold {name} placed")


@hold.command("release")
@config_option
@click.argument("name")
@click.option("--by", "who", metavar="WHO", help="Who releases it (default user@host).")
def hold_release(config: Path, name: str, who: str | None) -> None:
    """Release a stored hold (it stays listed as released; the change is audited)."""
    from retention.audit.holds import release

    loaded = load_policy(config)
    release(config, name, _who(who), _digest_key(loaded))
    click.echo(f"hold {name} released")


@hold.command("list")
@config_option
@click.option("--all", "show_all", is_flag=True, help="Include released holds.")
def hold_list(config: Path, show_all: bool) -> None:
    """List holds: the policy file's and the audit store's."""
    from rich.table import Table

    from retention.audit.holds import HoldTable, stored_holds
    from retention.audit.store import opened

    loaded = load_policy(config)
    table = Table(title="legal holds", title_justify="left")
    for column in ("name", "source", "scope", "expires", "placed", "status", "reason"):
        table.add_column(column)
    now = datetime.now(UTC)
    for h in loaded.policy.holds:
        status = "expired" if h.expires and h.expires < now else "active"
        table.add_row(
            h.name,
            "policy file",
            _scope(h.model_dump(mode="json")),
            iso(h.expires) or "-",
            "-",
            status,
            h.reason,
        )
    with opened(loaded, create=False) as audit, audit.engine.connect() as conn:
        stored = stored_holds(conn, HoldTable(loaded.policy.audit.table_prefix))
    for s in stored:
        if not s.active and not show_all:
            continue
        status = "active" if s.active else f"released {iso(s.released_at)} by {s.released_by}"
        placed = f"{iso(s.created_at)} by {s.created_by}"
        d = s.definition
        table.add_row(
            s.name,
            "audit store",
            _scope(d),
            str(d.get("expires") or "-"),
            placed,
            status,
            str(d.get("reason", "")),
        )
    _console().print(table)


def _scope(definition: dict[str, Any]) -> str:
    subjects = definition.get("subjects")
    if subjects:
        return f"{subjects['column']} in {len(subjects['values'])} values"
    return f"rule {definition.get('rule')} where {json.dumps(definition.get('where'), default=str)}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI and turn `RetentionError`s into exit codes."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.FAILED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.INVALID)
    sys.exit(ExitCode.OK)
