"""What every command shares: the policy file option and reading an ISO 8601 instant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from retention.errors import UsageError

__all__ = ["config_option", "parse_instant"]

F = TypeVar("F", bound=Callable[..., Any])


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


def parse_instant(value: str | None, default: datetime | None = None) -> datetime:
    """`--as-of` as an aware UTC instant (naive means UTC); `default` (else the current
    time) when absent."""
    if value is None:
        return default or datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {value!r} is not an ISO 8601 date or time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
