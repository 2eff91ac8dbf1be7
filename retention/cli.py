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

from retention.errors import ExitCode, PolicyError, RetentionError, Severity, UsageError
from retention.loader import LoadedPolicy, load_policy
from retention.planner import build_plan
from retention.policy import Policy
from retention.render import iso, plan_document, print_issues, print_plan
from retention.runner import RunOptions
from retention.stores.preview import preview
from retention.validate import connected_findings, static_findings

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DEMO_DB = Path("var") / "demo.db"


def _console(err: bool = False) -> Console:
    return Console(stderr=err, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def _parse_instant(value: str | None) -> datetime:
    """`--as-of` as an aware UTC instant (naive means UTC); the current time when absent."""
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {value!r} is not an ISO 8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def config_option(func: F) -> F:
    """The policy file option shared by every command (`RETENTION_CONFIG` may replace it)."""
    return click.option(
        "-c",
        "--config",
        "config",
        envvar="RETENTION_CONFIG",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Policy file (YAML). Env: RETENTION_CONFIG.",
    )(func)


def _load(config: Path) -> LoadedPolicy:
    return load_policy(config)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    now = _parse_instant(as_of)
    loaded = _load(config)
    issues = static_findings(loaded, now)
    if connect:
        issues += connected_findings(loaded, now)
    issues.sort(key=lambda i: (i.severity is not Severity.ERROR, i.line, i.column))
    errors = [i for i in issues if i.severity is Severity.ERROR]
    warnings = [i for i in issues if i.severity is Severity.WARNING]
    print_issues(_console(err=True), issues)
    if errors or (strict and warnings):
        raise PolicyError(errors + (warnings if strict else []))
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
    now = _parse_instant(as_of)
    loaded = _load(config)
    the_plan = build_plan(loaded.policy, now, rules)
    estimates = list(preview(the_plan, loaded.base_dir))
    if fmt == "json":
        click.echo(json.dumps(plan_document(the_plan, estimates, str(config)), indent=2))
    else:
        print_plan(_console(), the_plan, estimates, str(config), show_sql=show_sql)
    if any(e.error for e in estimates):
        sys.exit(ExitCode.FAILED)


@cli.command()
@config_option
@click.option("--rule", "rules", multiple=True, metavar="NAME", help="Only this rule (repeatable).")
@click.option("--dry-run", is_flag=True, help="Change nothing: the same as `retention plan`.")
@click.option("--force", is_flag=True, help="Run rules even when a safety limit would stop them.")
@click.option("--max-rows", type=click.IntRange(min=0), help="Override every rule's max_rows.")
@click.pass_context
def run(
    ctx: click.Context,
    config: Path,
    rules: Sequence[str],
    dry_run: bool,
    force: bool,
    max_rows: int | None,
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
        RunOptions(rules=rules, force=force, max_rows=max_rows),
        should_stop=stop.is_set,
    )
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
    from retention.stores.check import check_promises, uncovered_personal_columns

    now = _parse_instant(as_of)
    loaded = _load(config)
    statuses = list(check_promises(loaded.policy, now, loaded.base_dir))
    personal = uncovered_personal_columns(loaded.policy, loaded.base_dir)
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
                    "error": s.error,
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
                f"{s.minimum} kept by legal minimums"
            )
            click.echo(f"{state:<7} {s.rule}: {detail}")
        for column in personal:
            click.echo(f"note    {column} looks like personal data and no rule covers its table")
    if not all(s.kept for s in statuses):
        sys.exit(ExitCode.FAILED)


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

    from retention.audit.sql import AuditTables, records
    from retention.stores.sql import read_only

    loaded = _load(config)
    policy = loaded.policy
    tables = AuditTables(policy.audit.table_prefix)
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(rule.store for rule in policy.rules):
        with read_only(policy.stores[name], loaded.base_dir, name) as conn:  # type: ignore[arg-type]
            if sa.inspect(conn).has_table(tables.records.name):
                rows += records(
                    conn,
                    tables,
                    rules=rules,
                    run_id=run_id,
                    since=_parse_instant(since) if since else None,
                    until=_parse_instant(until) if until else None,
                )
    return sorted(rows, key=lambda r: (r["committed_at"], r["store"], r["seq"]))


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
    """Check the hash chain of the audit trail in each store the policy's rules use.

    Exit 1 naming the first broken record when a record was altered, deleted,
    inserted or reordered; exit 0 when every chain is intact.
    """
    import sqlalchemy as sa

    from retention.audit.sql import AuditTables, verify
    from retention.stores.sql import read_only

    loaded = _load(config)
    policy = loaded.policy
    tables = AuditTables(policy.audit.table_prefix)
    broken = False
    for name in dict.fromkeys(rule.store for rule in policy.rules):
        store = policy.stores[name]
        with read_only(store, loaded.base_dir, name) as conn:  # type: ignore[arg-type]
            if not sa.inspect(conn).has_table(tables.records.name):
                click.echo(f"store {name}: no audit trail yet")
                continue
            count, problem = verify(conn, tables)
        if problem is None:
            click.echo(f"store {name}: {count} records, chain intact")
        else:
            broken = True
            click.echo(f"store {name}: BROKEN at record seq={problem.seq}: {problem.reason}")
    if broken:
        sys.exit(ExitCode.FAILED)


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

    now = _parse_instant(as_of)
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
    except PolicyError as exc:
        print_issues(_console(err=True), exc.issues)
        errors = sum(1 for i in exc.issues if i.severity is Severity.ERROR)
        click.echo(f"policy invalid: {errors} error(s); nothing was run", err=True)
        sys.exit(exc.exit_code)
    except RetentionError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(ExitCode.OK)
