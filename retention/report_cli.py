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
from retention.errors import UsageError
from retention.report import gather, render

__all__ = ["report"]


def _instant(value: str | None, now: datetime) -> datetime:
    """`--as-of` as an aware UTC instant (naive means UTC); `now` when absent."""
    if value is None:
        return now
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {value!r} is not an ISO 8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@click.command()
@click.option(
    "-c",
    "--config",
    "config",
    envvar="RETENTION_CONFIG",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Policy file (YAML). Env: RETENTION_CONFIG.",
)
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
    now = _instant(as_of, clock)
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
