"""`retention report`: write the auditor's HTML report (registered by `retention.cli`).

Reads the clock for "now" and the generation time, like every command; the report's
content shows broken promises, so the command itself succeeds whenever the page is
written (exit 0). An invalid policy raises `PolicyError` (exit 2 in `retention.cli.main`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from retention.audit.holds import load_with_holds
from retention.cli_options import config_option, parse_instant
from retention.report import gather, render

__all__ = ["report"]


@click.command()
@config_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Where to write the HTML page (overwritten).",
)
@click.option(
    "--as-of", "as_of", help="Judge the promises as of this ISO 8601 time (default: now)."
)
def report(config: Path, out: Path, as_of: str | None) -> None:
    """Write a self-contained HTML report for an auditor: each promise and its status,
    last runs, rows removed over time, oldest remaining records, legal holds and the
    audit-chain verification. Read-only; exit 0 when the report is written."""
    clock = datetime.now(UTC)
    now = parse_instant(as_of, clock)
    loaded = load_with_holds(config)
    data = gather(loaded, now, generated_at=clock)
    page = render(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(out)
    judged = data.judged
    click.echo(
        f"report written to {out}: {data.kept} of {len(judged)} promises kept, "
        f"{sum(1 for r in judged if r.status == 'overdue')} overdue, "
        f"audit chain {data.chain.state} ({data.chain.records} records)"
    )
