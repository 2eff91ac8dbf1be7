"""The policy language: frozen, validated models of a retention policy file.

These models are the single source of truth for the YAML format: the loader
validates against them, and `retention schema` prints their JSON Schema (every
field carries a description and an example). They do no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from typing import Annotated, Any, Literal, TypeAlias, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from retention.filters import IDENTIFIER, Condition, parse_where, where_to_yaml
from retention.periods import Period, parse_period

__all__ = [
    "Action",
    "AnonymizeSpec",
    "ArchiveSpec",
    "AuditSettings",
    "Batch",
    "CronSchedule",
    "Defaults",
    "Event",
    "FileAction",
    "FileArchive",
    "FileBatch",
    "FileLimits",
    "FileMinimum",
    "FileRule",
    "FileTimestamp",
    "FilesStore",
    "GeneralizeStrategy",
    "HashStrategy",
    "Hold",
    "IntervalSchedule",
    "Limits",
    "MaskEmailStrategy",
    "Minimum",
    "NullStrategy",
    "PathScope",
    "Policy",
    "RedactStrategy",
    "Rule",
    "Schedule",
    "Source",
    "SqlStore",
    "Store",
    "Strategy",
    "SubjectScope",
    "Timestamp",
    "TruncateIpStrategy",
    "compile_glob",
    "glob_base",
    "parse_file_name",
    "reference_issues",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _doc(description: str, *examples: Any, **kwargs: Any) -> Any:
    """A `Field` with the description and example(s) the JSON Schema shows."""
    return Field(description=description, examples=list(examples), **kwargs)


def _or_string(hint: str) -> Callable[[dict[str, Any]], None]:
    """JSON Schema tweak for fields that also accept a one-word shorthand string."""

    def extra(schema: dict[str, Any]) -> None:
        shorthand = {"type": "string", "description": hint}
        if "anyOf" in schema:
            schema["anyOf"] = [shorthand, *schema["anyOf"]]
            return
        ref = {k: schema.pop(k) for k in ("$ref", "allOf", "type", "properties") if k in schema}
        schema["anyOf"] = [shorthand, ref]

    return extra


# --- scalar types ------------------------------------------------------------

PeriodType = Annotated[
    Period,
    BeforeValidator(parse_period),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A period: '90 days', '90d', '12 months', '7y', or ISO 8601 "
            "'P90D', 'P12M', 'P7Y'. Months and years are calendar-aware; the unit 'm' "
            "is rejected as ambiguous.",
            "examples": ["90 days", "12 months", "7y", "P1Y6M"],
        }
    ),
]


def _identifier(value: object) -> object:
    if isinstance(value, str) and not IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a plain SQL identifier (letters, digits, _ and $; "
            "not starting with a digit)"
        )
    return value


Identifier = Annotated[str, BeforeValidator(_identifier)]
Name = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,79}$"),
]


def _timezone(value: object) -> object:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'UTC'"
            ) from None
    return value


TimeZoneName = Annotated[str, BeforeValidator(_timezone)]


def _where(value: object) -> object:
    return parse_where(value)


Where = Annotated[
    tuple[Condition, ...],
    BeforeValidator(_where),
    PlainSerializer(where_to_yaml, return_type=dict),
    WithJsonSchema(
        {
            "type": "object",
            "description": "Conditions combined with AND: column -> value (equality) or "
            "{eq|ne|lt|lte|gt|gte: value, in|not_in: [values], is_null: true|false}.",
            "additionalProperties": {
                "anyOf": [
                    {"type": ["string", "number", "boolean"]},
                    {
                        "type": "object",
                        "properties": {
                            "eq": {},
                            "ne": {},
                            "lt": {},
                            "lte": {},
                            "gt": {},
                            "gte": {},
                            "in": {"type": "array"},
                            "not_in": {"type": "array"},
                            "is_null": {"type": "boolean"},
                        },
                        "additionalProperties": False,
                    },
                ]
            },
            "examples": [{"status": "closed", "level": {"in": ["debug", "info"]}}],
        }
    ),
]


# --- schedules ---------------------------------------------------------------

_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {m: i + 1 for i, m in enumerate(_MONTHS)},
    {d: i for i, d in enumerate(_DAYS)},
)
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_EVERY = re.compile(r"^every\s+(?P<rest>.+)$", re.IGNORECASE)


class CronSchedule(_Model):
    """A 5-field cron expression (minute hour day-of-month month day-of-week)."""

    cron: str

    def __str__(self) -> str:
        return self.cron


class IntervalSchedule(_Model):
    """A fixed interval, written ``every 6 hours``."""

    every: PeriodType

    def __str__(self) -> str:
        return f"every {self.every}"


Schedule: TypeAlias = CronSchedule | IntervalSchedule


def _cron_value(text: str, index: int) -> int:
    low, high = _CRON_RANGES[index]
    names = _CRON_NAMES[index]
    value = names.get(text.lower()) if not text.isdigit() else int(text)
    if value is None or not low <= value <= high:
        raise ValueError(f"cron {_FIELD_NAMES[index]} {text!r} is outside {low}-{high}")
    return value


def _check_cron_field(field: str, index: int) -> None:
    for part in field.split(","):
        body, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"cron {_FIELD_NAMES[index]} step {step!r} must be a positive number")
        if body == "*":
            continue
        start, dash, end = body.partition("-")
        first = _cron_value(start, index)
        if dash and _cron_value(end, index) < first:
            raise ValueError(f"cron {_FIELD_NAMES[index]} range {body!r} runs backwards")


def parse_schedule(value: object) -> Schedule:
    """Parse ``"0 3 * * *"`` or ``"every 6 hours"`` into a schedule (raises ValueError)."""
    if isinstance(value, CronSchedule | IntervalSchedule):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a cron expression such as '0 3 * * *' or 'every 6 hours'")
    text = value.strip()
    match = _EVERY.match(text)
    if match:
        period = parse_period(match.group("rest"))
        if not period.is_fixed or period.is_zero:
            raise ValueError(
                "an interval must be a positive number of minutes, hours, days or weeks; "
                "for monthly runs use a cron expression such as '0 3 1 * *'"
            )
        return IntervalSchedule(every=period)
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {text!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week), or write 'every 6 hours'"
        )
    for index, field in enumerate(fields):
        _check_cron_field(field, index)
    return CronSchedule(cron=" ".join(fields))


ScheduleType = Annotated[
    Schedule,
    BeforeValidator(parse_schedule),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A 5-field cron expression or an interval 'every N minutes|hours|days'.",
            "examples": ["0 3 * * *", "every 6 hours"],
        }
    ),
]


# --- stores ------------------------------------------------------------------


class SqlStore(_Model):
    """A SQL database reached through SQLAlchemy."""

    kind: Literal["sql"] = _doc("Store kind. 'sql' is the default.", "sql", default="sql")
    url: str = _doc(
        "SQLAlchemy URL. ${VAR} and ${VAR:-default} are replaced from the environment "
        "(the only place besides file-store roots where substitution happens); the "
        "password is never printed.",
        "postgresql+psycopg://retention:${PGPASSWORD}@db:5432/app",
        "sqlite:///demo.db",
    )
    naive_timezone: TimeZoneName = _doc(
        "Time zone in which timestamps without a zone (e.g. DATETIME, TIMESTAMP WITHOUT "
        "TIME ZONE) are written in this database.",
        "UTC",
        default="UTC",
    )
    clock: Literal["database", "local"] = _doc(
        "Where 'now' comes from at run time: the database server's clock (default) or "
        "this machine's.",
        "database",
        default="database",
    )
    max_clock_skew: PeriodType = _doc(
        "A run refuses to start when the local and database clocks differ by more than this.",
        "30 seconds",
        default=Period(minutes=1),
    )


class FilesStore(_Model):
    """A tree of files (backups, rotated logs), enforced by 'file_rules'."""

    kind: Literal["files"] = _doc("Store kind.", "files")
    root: str = _doc(
        "Local path (relative to the policy file's folder) or fsspec URL (s3://, gs://, "
        "az://, memory://; credentials from the environment) of the tree. ${VAR} and "
        "${VAR:-default} substitution applies. Symbolic links are never followed out of it.",
        "/var/backups/app",
        "s3://backups/app",
    )


def _store_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value.get("kind", "sql"))
    return str(getattr(value, "kind", "sql"))


Store = Annotated[
    Annotated[SqlStore, Tag("sql")] | Annotated[FilesStore, Tag("files")],
    Discriminator(
        _store_kind,
        custom_error_type="unknown_store_kind",
        custom_error_message="unknown store kind; use 'sql' (the default) or 'files'",
    ),
]


# --- rule parts --------------------------------------------------------------

TimestampFormat = Literal["datetime", "epoch_seconds", "epoch_milliseconds"]


class Timestamp(_Model):
    """The column whose age decides expiry."""

    column: Identifier = _doc("Column holding the timestamp.", "created_at")
    format: TimestampFormat = _doc(
        "'datetime' for DATE/DATETIME/TIMESTAMP columns, or 'epoch_seconds' / "
        "'epoch_milliseconds' for integer columns.",
        "datetime",
        default="datetime",
    )


def _column_shorthand(value: object) -> object:
    return {"column": value} if isinstance(value, str) else value


class Event(_Model):
    """Event-relative retention: the clock starts at a timestamp in a related table.

    A row expires `period` after the matching event row's timestamp; rows with no
    matching event (or a NULL event timestamp) never expire.
    """

    table: Identifier = _doc("Table holding the event.", "accounts")
    db_schema: Identifier | None = _doc(
        "Database schema of the event table, when not the default.",
        "public",
        default=None,
        alias="schema",
    )
    column: Identifier = _doc("Event timestamp column in that table.", "closed_at")
    format: TimestampFormat = _doc(
        "Format of the event timestamp column.", "datetime", default="datetime"
    )
    join: dict[Identifier, Identifier] = _doc(
        "How rows are matched: rule-table column -> event-table column (all pairs must match).",
        {"account_id": "id"},
        min_length=1,
    )
    where: Where = _doc(
        "Conditions on the event table (e.g. only verified requests).",
        {"status": "verified"},
        default=(),
    )


class Source(_Model):
    """Which clause of which published policy a rule enforces."""

    policy: str = _doc("The published policy.", "InfraUX Privacy Policy (July 1, 2025)")
    clause: str = _doc("The section or clause.", "8. Data Retention: Security logs")
    url: str | None = _doc(
        "Where the policy is published.", "https://example.com/privacy", default=None
    )


class NullStrategy(_Model):
    """Set the column to NULL."""

    strategy: Literal["null"] = _doc("Strategy name.", "null")


class RedactStrategy(_Model):
    """Replace the value with a fixed text."""

    strategy: Literal["redact"] = _doc("Strategy name.", "redact")
    value: str = _doc("Replacement text.", "[redacted]", default="[redacted]")


class HashStrategy(_Model):
    """Keyed HMAC-SHA256 of the value: stable, so joins on it keep working."""

    strategy: Literal["hash"] = _doc("Strategy name.", "hash")
    key_env: Identifier = _doc(
        "Environment variable holding the secret HMAC key (never written in the policy).",
        "RETENTION_HASH_KEY",
        default="RETENTION_HASH_KEY",
    )
    length: int | None = _doc(
        "Keep only the first N hex characters (to fit the column); default all 64. At least "
        "16: shorter digests collide and joins would merge different people.",
        16,
        default=None,
        ge=16,
        le=64,
    )


class TruncateIpStrategy(_Model):
    """Zero the host part of an IP address."""

    strategy: Literal["truncate_ip"] = _doc("Strategy name.", "truncate_ip")
    ipv4_prefix: int = _doc("IPv4 bits kept.", 24, default=24, ge=0, le=32)
    ipv6_prefix: int = _doc("IPv6 bits kept.", 48, default=48, ge=0, le=128)


class GeneralizeStrategy(_Model):
    """Round a date or timestamp down to the first day of its month or year."""

    strategy: Literal["generalize"] = _doc("Strategy name.", "generalize")
    to: Literal["month", "year"] = _doc("Precision kept.", "month", default="month")


class MaskEmailStrategy(_Model):
    """Keep only the domain of an e-mail address."""

    strategy: Literal["mask_email"] = _doc("Strategy name.", "mask_email")
    local: str = _doc(
        "Replacement for the part before '@'.",
        "redacted",
        default="redacted",
        pattern=r"^[^@\s]+$",
    )


_STRATEGIES = ("null", "redact", "hash", "truncate_ip", "generalize", "mask_email")


def _strategy_shorthand(value: object) -> object:
    if value is None:
        raise ValueError(
            'no strategy given; to set the column to NULL write the strategy name in quotes: "null"'
        )
    if isinstance(value, str):
        return {"strategy": value}
    return value


def _strategy_tag(value: Any) -> str | None:
    name = value.get("strategy") if isinstance(value, Mapping) else getattr(value, "strategy", None)
    return name if name in _STRATEGIES else None


Strategy = Annotated[
    Annotated[NullStrategy, Tag("null")]
    | Annotated[RedactStrategy, Tag("redact")]
    | Annotated[HashStrategy, Tag("hash")]
    | Annotated[TruncateIpStrategy, Tag("truncate_ip")]
    | Annotated[GeneralizeStrategy, Tag("generalize")]
    | Annotated[MaskEmailStrategy, Tag("mask_email")],
    Discriminator(
        _strategy_tag,
        custom_error_type="unknown_strategy",
        custom_error_message=f"unknown strategy; use one of {', '.join(_STRATEGIES)}",
    ),
    BeforeValidator(_strategy_shorthand),
]


class AnonymizeSpec(_Model):
    """De-identify expired rows in place instead of deleting them."""

    columns: dict[Identifier, Strategy] = _doc(
        "Column -> strategy. A bare string names a strategy with default parameters.",
        {"email": "mask_email", "name": {"strategy": "redact", "value": "[redacted]"}},
        min_length=1,
    )
    marker: Identifier | None = _doc(
        "Timestamp column set when a row is de-identified; rows with it set are never read "
        "or rewritten again. Required with 'hash' (hashing twice is not idempotent), "
        "'truncate_ip' and 'generalize' (SQL cannot tell a done row); optional with "
        "'null', 'redact' and 'mask_email'.",
        "anonymized_at",
        default=None,
    )

    @model_validator(mode="after")
    def _marker_needed(self) -> AnonymizeSpec:
        hashed = [c for c, s in self.columns.items() if isinstance(s, HashStrategy)]
        if hashed and self.marker is None:
            raise ValueError(
                f"columns {', '.join(hashed)} use 'hash', which is not idempotent: "
                "declare a 'marker' column so rows are de-identified once"
            )
        opaque = [
            c
            for c, s in self.columns.items()
            if isinstance(s, TruncateIpStrategy | GeneralizeStrategy)
        ]
        if opaque and self.marker is None:
            raise ValueError(
                f"columns {', '.join(opaque)} use strategies whose result SQL cannot recognise: "
                "declare a 'marker' column so done rows are not read again on every run"
            )
        if self.marker is not None and self.marker in self.columns:
            raise ValueError(f"the marker column {self.marker!r} cannot also be anonymized")
        return self


class ArchiveSpec(_Model):
    """Copy expired rows to an archive table, then delete them, in the same batch."""

    table: Identifier = _doc("Archive table (same columns).", "invoices_archive")
    store: str | None = _doc(
        "SQL store holding the archive table; default the rule's own store (copy and delete "
        "in one transaction). In another store each batch is copied and committed there "
        "first, then deleted here: the archive table needs a primary key or unique "
        "constraint on the rule's table's key, and keeps one copy per key.",
        "archive",
        default=None,
    )
    db_schema: Identifier | None = _doc(
        "Schema of the archive table.", "archive", default=None, alias="schema"
    )


class Batch(_Model):
    """How expired rows are removed: in short transactions of adaptive size."""

    size: int = _doc("Rows in the first batch.", 5000, default=5000, ge=1, le=1_000_000)
    min_size: int = _doc("Smallest batch.", 500, default=500, ge=1, le=1_000_000)
    max_size: int = _doc("Largest batch.", 50000, default=50000, ge=1, le=1_000_000)
    target_ms: int = _doc(
        "Batch size adapts toward transactions of this many milliseconds.",
        100,
        default=100,
        ge=1,
        le=60_000,
    )
    pause_ms: int = _doc(
        "Pause between batches (lets replicas catch up).", 0, default=0, ge=0, le=600_000
    )
    time_budget: PeriodType | None = _doc(
        "Stop a rule's run after this long; the next run goes on from there.",
        "30 minutes",
        default=None,
    )

    @model_validator(mode="after")
    def _bounds(self) -> Batch:
        if not self.min_size <= self.size <= self.max_size:
            raise ValueError(
                f"batch sizes must satisfy min_size <= size <= max_size "
                f"({self.min_size} <= {self.size} <= {self.max_size})"
            )
        if self.time_budget is not None and not self.time_budget.is_fixed:
            raise ValueError("time_budget must be in minutes, hours or days, not months or years")
        return self


class BatchOverride(_Model):
    """A rule's changes to the default batch settings; checked after merging."""

    size: int | None = _doc("Rows in the first batch.", 5000, default=None, ge=1, le=1_000_000)
    min_size: int | None = _doc("Smallest batch.", 500, default=None, ge=1, le=1_000_000)
    max_size: int | None = _doc("Largest batch.", 50000, default=None, ge=1, le=1_000_000)
    target_ms: int | None = _doc(
        "Target transaction time in milliseconds.", 100, default=None, ge=1, le=60_000
    )
    pause_ms: int | None = _doc(
        "Pause between batches in milliseconds.", 0, default=None, ge=0, le=600_000
    )
    time_budget: PeriodType | None = _doc(
        "Stop the rule's run after this long.", "30 minutes", default=None
    )


class Limits(_Model):
    """Safety limits: a run that would exceed one stops before touching a row."""

    max_rows: int | None = _doc(
        "Most rows one run of the rule may affect.", 1_000_000, default=None, ge=0
    )
    max_fraction: float | None = _doc(
        "Largest fraction of the table one run may affect (0-1).",
        0.5,
        default=None,
        ge=0.0,
        le=1.0,
    )


Action = Literal["delete", "anonymize", "archive"]


class Rule(_Model):
    """One retention promise, enforced on one table."""

    name: Name = _doc("Unique name (lowercase, digits, '-', '_', '.').", "security-logs-90d")
    promise: str = _doc(
        "The promise, in the words of the published policy.",
        "Security logs: 90 days",
        min_length=1,
    )
    source: Source = _doc("The clause this rule enforces.", {"policy": "InfraUX", "clause": "8"})
    enabled: bool = _doc("Disabled rules are planned but never run.", True, default=True)
    store: str = _doc("Name of the store holding the table.", "app")
    db_schema: Identifier | None = _doc(
        "Database schema of the table, when not the default.",
        "public",
        default=None,
        alias="schema",
    )
    table: Identifier = _doc("Table the rule applies to.", "security_logs")
    timestamp: Annotated[Timestamp | None, BeforeValidator(_column_shorthand)] = _doc(
        "Column whose age decides expiry; a bare string names a datetime column. "
        "Give exactly one of 'timestamp' and 'event'.",
        "created_at",
        {"column": "ts", "format": "epoch_milliseconds"},
        default=None,
        json_schema_extra=_or_string("Name of a datetime column."),
    )
    event: Event | None = _doc(
        "Event-relative retention: the clock starts at a timestamp in a related table.",
        {"table": "accounts", "column": "closed_at", "join": {"account_id": "id"}},
        default=None,
    )
    period: PeriodType = _doc("How long rows are kept after their timestamp.", "90 days")
    where: Where = _doc(
        "Only rows matching these conditions are covered by the rule.",
        {"category": "security"},
        default=(),
    )
    action: Action = _doc(
        "'delete', 'anonymize' (needs an 'anonymize' block) or 'archive' (copy, then delete; "
        "needs an 'archive' block).",
        "delete",
        default="delete",
    )
    anonymize: AnonymizeSpec | None = _doc(
        "How columns are de-identified when action is 'anonymize'.",
        {"columns": {"email": "mask_email"}},
        default=None,
    )
    archive: ArchiveSpec | None = _doc(
        "Where rows are copied when action is 'archive'.",
        {"table": "invoices_archive"},
        default=None,
    )
    delete_first: list[Identifier] = _doc(
        "Tables (in the same store) whose rows referencing a batch's rows are deleted first, "
        "in this order, in the batch's transaction. Each needs exactly one foreign key to "
        "this table or to another listed table (to its single-column primary key), so "
        "grandchildren can be listed too; list children before the tables they reference "
        "(for accounts: [order_items, orders]). A row with a held descendant, or one under "
        "a legal minimum, at any depth, is kept with its whole chain.",
        ["payments"],
        default_factory=list,
    )
    accept_cascade: bool = _doc(
        "Allow deleting rows that other tables reference when every such foreign key is "
        "ON DELETE CASCADE or SET NULL (the database then removes or detaches the children). "
        "Without it such deletes are refused, naming the foreign keys.",
        False,
        default=False,
    )
    schedule: ScheduleType | None = _doc(
        "When the daemon runs the rule; default from 'defaults'.", "0 3 * * *", default=None
    )
    timezone: TimeZoneName | None = _doc(
        "Time zone of the cron schedule; default from 'defaults'.", "Europe/Madrid", default=None
    )
    batch: BatchOverride | None = _doc(
        "Batch settings; fields not given come from 'defaults.batch'.",
        {"size": 10000},
        default=None,
    )
    limits: Limits | None = _doc(
        "Safety limits; fields not given come from 'defaults.limits'.",
        {"max_fraction": 0.5},
        default=None,
    )
    grace: PeriodType | None = _doc(
        "How late a row may be removed before `check` calls the promise broken.",
        "1 day",
        default=None,
    )

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        if (self.timestamp is None) == (self.event is None):
            raise ValueError(
                "give exactly one of 'timestamp' (a column) and 'event' (a related table)"
            )
        blocks = {"anonymize": self.anonymize, "archive": self.archive}
        for action, block in blocks.items():
            if self.action == action and block is None:
                raise ValueError(f"action '{action}' needs an '{action}' block")
            if self.action != action and block is not None:
                raise ValueError(f"an '{action}' block is only allowed with action '{action}'")
        if self.delete_first and self.action == "anonymize":
            raise ValueError("'delete_first' goes with action 'delete' or 'archive'")
        if self.anonymize is not None:
            keys = set(self.event.join) if self.event else set()
            clash = keys & set(self.anonymize.columns)
            if clash:
                raise ValueError(
                    f"join key {', '.join(sorted(clash))} cannot be anonymized: the event join "
                    "would break"
                )
            if self.timestamp is not None and self.timestamp.column in self.anonymize.columns:
                strategy = self.anonymize.columns[self.timestamp.column]
                if not isinstance(strategy, GeneralizeStrategy):
                    raise ValueError(
                        f"the timestamp column {self.timestamp.column!r} may only be generalized"
                    )
        return self

    @property
    def age_column(self) -> str:
        """The rule-table column the age is read from (timestamp rules only)."""
        if self.timestamp is None:
            raise ValueError(f"rule {self.name} is event-relative")
        return self.timestamp.column


# --- file rules: globs and dated names -----------------------------------------

_GLOB_SPECIAL = re.compile(r"[*?\[]")


def _glob_issue(pattern: str, what: str) -> str | None:
    """Why `pattern` is not a usable relative glob (None when it is)."""
    if not pattern:
        return f"{what} is empty"
    if "\\" in pattern:
        return f"{what} {pattern!r} contains '\\'; separate folders with '/'"
    if pattern.startswith("/") or re.match(r"^[A-Za-z]:", pattern):
        return f"{what} {pattern!r} must be relative to the store root (no leading '/')"
    for part in pattern.split("/"):
        if part in ("..", "."):
            return f"{what} {pattern!r} may not contain '{part}': paths stay inside the root"
        if part == "":
            return f"{what} {pattern!r} has an empty folder name ('//' or a trailing '/')"
        if "**" in part and part != "**":
            return f"{what} {pattern!r}: '**' must be a whole path part, as in 'logs/**/*.gz'"
        if part.count("[") != part.count("]"):
            return f"{what} {pattern!r} has an unclosed '['"
    return None


def _relative_glob(value: object) -> object:
    if isinstance(value, str):
        problem = _glob_issue(value, "the pattern")
        if problem:
            raise ValueError(problem)
    return value


RelativeGlob = Annotated[
    str,
    BeforeValidator(_relative_glob),
    WithJsonSchema(
        {
            "type": "string",
            "description": "A glob relative to the store root: '*' and '?' within one path "
            "part, '[abc]' a character class, '**' any number of folders. No '..'.",
            "examples": ["db/*.sql.gz", "logs/**/app.log.*"],
        }
    ),
]


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression a relative path ('/'-separated) must fully match.

    ``*`` and ``?`` never cross a '/', ``[...]`` is a character class (``[!...]``
    negated), and a whole part ``**`` matches any number of folders (at the end:
    everything below).
    """
    parts = pattern.split("/")
    out = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:[^/]+/)*"
            continue
        i = 0
        while i < len(part):
            char = part[i]
            if char == "*":
                out += "[^/]*"
            elif char == "?":
                out += "[^/]"
            elif char == "[":
                end = part.index("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)
                body = part[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += "(?!/)[" + body.replace("\\", "\\\\") + "]"
                i = end
            else:
                out += re.escape(char)
            i += 1
        if not last:
            out += "/"
    return re.compile(out)


def glob_base(pattern: str) -> str:
    """The folder below which every match of `pattern` lies ('' for the root)."""
    fixed: list[str] = []
    for part in pattern.split("/")[:-1]:
        if part == "**" or _GLOB_SPECIAL.search(part):
            break
        fixed.append(part)
    return "/".join(fixed)


#: Directives of a file-name format: group name and the digits they match (ASCII digits
#: only: other scripts' digits would be read as numbers by int()).
_NAME_DIRECTIVES = {
    "Y": ("year", r"[0-9]{4}"),
    "m": ("month", r"[0-9]{2}"),
    "d": ("day", r"[0-9]{2}"),
    "j": ("yday", r"[0-9]{3}"),
    "H": ("hour", r"[0-9]{2}"),
    "M": ("minute", r"[0-9]{2}"),
    "S": ("second", r"[0-9]{2}"),
    "s": ("epoch", r"[0-9]{1,12}"),
    "z": ("offset", r"Z|[+-][0-9]{2}:?[0-9]{2}"),
}
_SUPPORTED = " ".join(f"%{d}" for d in _NAME_DIRECTIVES) + " %%"


@functools.lru_cache(maxsize=512)
def _name_regex(fmt: str) -> re.Pattern[str]:
    """Compile a strftime-like file-name format (raises ValueError when it cannot be used).

    Every numeric directive has a fixed width (%Y four digits; %m, %d, %H, %M, %S two;
    %j three), so formats such as ``%Y%m%d`` have exactly one reading.
    """
    if "/" in fmt:
        raise ValueError(f"name format {fmt!r} contains '/'; it is matched against base names")
    out, seen, i = "", set(), 0
    while i < len(fmt):
        char = fmt[i]
        if char != "%":
            if char == "*":
                raise ValueError(
                    f"name format {fmt!r} contains '*': the format states the whole base "
                    "name (the rule's 'pattern' selects the files)"
                )
            out += re.escape(char)
            i += 1
            continue
        directive = fmt[i + 1 : i + 2]
        i += 2
        if directive == "%":
            out += "%"
            continue
        if directive == "y":
            raise ValueError(
                f"name format {fmt!r}: %y (two-digit year) is ambiguous about the century; use %Y"
            )
        if directive not in _NAME_DIRECTIVES:
            shown = f"%{directive}" if directive else "a lone '%' at the end"
            raise ValueError(
                f"name format {fmt!r}: {shown} is not supported (names of months and days "
                f"depend on the locale); use {_SUPPORTED}"
            )
        if directive in seen:
            raise ValueError(f"name format {fmt!r} uses %{directive} twice")
        seen.add(directive)
        group, digits = _NAME_DIRECTIVES[directive]
        out += f"(?P<{group}>{digits})"
    if "s" in seen:
        if seen != {"s"}:
            raise ValueError(f"name format {fmt!r}: %s (seconds since 1970) stands alone")
    elif not ({"Y", "m", "d"} <= seen or {"Y", "j"} <= seen):
        raise ValueError(
            f"name format {fmt!r} does not name a whole date: it needs %Y with %m and %d "
            "(or %Y with %j, or %s)"
        )
    elif "j" in seen and seen & {"m", "d"}:
        raise ValueError(f"name format {fmt!r} mixes %j (day of year) with %m/%d")
    for later, earlier in (("M", "H"), ("S", "M")):
        if later in seen and earlier not in seen:
            raise ValueError(f"name format {fmt!r} has %{later} without %{earlier}")
    return re.compile(out)


def _name_format(value: object) -> object:
    if isinstance(value, str):
        _name_regex(value)
    return value


NameFormat = Annotated[
    str,
    BeforeValidator(_name_format),
    WithJsonSchema(
        {
            "type": "string",
            "description": "strftime-like format of the whole base name: %Y (4 digits), %m, "
            "%d, %H, %M, %S (2 digits), %j (3), %s (epoch seconds), %z (Z or +HH:MM) and %%. "
            "%y and month or day names are refused as ambiguous.",
            "examples": ["db-%Y-%m-%d.sql.gz", "dump_%Y%m%dT%H%M%S%z.tar"],
        }
    ),
]


def parse_file_name(fmt: str, zone: str, name: str) -> datetime:
    """The instant (aware, UTC) that base name `name` states under format `fmt`.

    A time without an offset is local time in `zone`; a local time that occurs
    twice or not at all (daylight-saving changes) is read as the later instant,
    so a file never looks older than it may be. Raises ValueError saying why a
    name does not parse (no match, or no such date such as 29 February 2026).
    """
    match = _name_regex(fmt).fullmatch(name)
    if match is None:
        raise ValueError(f"does not match the name format {fmt!r}")
    got = {k: v for k, v in match.groupdict().items() if v is not None}
    if "epoch" in got:
        try:
            return datetime.fromtimestamp(int(got["epoch"]), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"states no real time ({got['epoch']} seconds)") from None
    try:
        year = int(got["year"])
        if "yday" in got:
            yday = int(got["yday"])
            day = date(year, 1, 1) + timedelta(days=yday - 1)
            if yday < 1 or day.year != year:
                raise ValueError(f"day of year {yday} is out of range for {year}")
        else:
            day = date(year, int(got["month"]), int(got["day"]))
        moment = datetime.combine(
            day,
            time(int(got.get("hour", 0)), int(got.get("minute", 0)), int(got.get("second", 0))),
        )
    except ValueError as exc:
        raise ValueError(f"states no real date or time ({exc})") from None
    offset = got.get("offset")
    if offset is not None:
        if offset == "Z":
            return moment.replace(tzinfo=UTC)
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise ValueError(f"states no real UTC offset ({offset})")
        delta = sign * timedelta(hours=hours, minutes=minutes)
        return moment.replace(tzinfo=dt_timezone(delta)).astimezone(UTC)
    tz = ZoneInfo(zone)
    return max(
        moment.replace(tzinfo=tz, fold=0).astimezone(UTC),
        moment.replace(tzinfo=tz, fold=1).astimezone(UTC),
    )


# --- file rules ------------------------------------------------------------------


class FileTimestamp(_Model):
    """Where a file's age comes from: its modification time, or a date in its name."""

    name: NameFormat | None = _doc(
        "Format of the file's base name holding its date; leave out for the modification "
        "time (write 'timestamp: mtime'). A name that does not parse is reported and never "
        "deleted.",
        "db-%Y-%m-%d.sql.gz",
        default=None,
    )
    timezone: TimeZoneName = _doc(
        "Time zone of a date in the name that carries no offset (%z).", "UTC", default="UTC"
    )

    @model_validator(mode="after")
    def _zone_needs_name(self) -> FileTimestamp:
        if self.name is None and "timezone" in self.model_fields_set:
            raise ValueError(
                "'timezone' applies to dates in file names; modification times are instants"
            )
        return self

    @property
    def uses_mtime(self) -> bool:
        """True when the age is the file's modification time."""
        return self.name is None

    def from_name(self, base_name: str) -> datetime:
        """The instant `base_name` states (raises ValueError saying why it does not parse)."""
        if self.name is None:
            raise ValueError("this timestamp is the modification time, not the name")
        return parse_file_name(self.name, self.timezone, base_name)

    def __str__(self) -> str:
        return "mtime" if self.name is None else f"name {self.name} ({self.timezone})"


def _file_timestamp(value: object) -> object:
    if value == "mtime":
        return {}
    if isinstance(value, str):
        raise ValueError(
            f"{value!r} is not a timestamp source; write 'mtime' or "
            "{name: 'db-%Y-%m-%d.sql.gz', timezone: UTC}"
        )
    return value


def _file_timestamp_yaml(value: FileTimestamp) -> object:
    if value.name is None:
        return "mtime"
    return {"name": value.name, "timezone": value.timezone}


FileTimestampType = Annotated[
    FileTimestamp,
    BeforeValidator(_file_timestamp),
    PlainSerializer(_file_timestamp_yaml),
]


def _relative_dir(value: object) -> object:
    if isinstance(value, str):
        trimmed = value.rstrip("/")
        if trimmed:
            problem = _glob_issue(trimmed, "the prefix")
            if problem:
                raise ValueError(problem)
            if _GLOB_SPECIAL.search(trimmed):
                raise ValueError(f"the prefix {value!r} is a folder, not a glob")
        return trimmed
    return value


class FileArchive(_Model):
    """Copy expired files to another files store or folder, then delete them."""

    store: str | None = _doc(
        "The 'files' store to copy into; default the rule's own store.",
        "offsite",
        default=None,
    )
    prefix: Annotated[str, BeforeValidator(_relative_dir)] = _doc(
        "Folder (relative to that store's root) under which each file keeps its relative "
        "path. Required when archiving within the rule's own store; files already below it "
        "are never matched by the rule.",
        "archive/",
        default="",
    )


class FileLimits(_Model):
    """Safety limits of a file rule: a run that would exceed one stops before touching a file."""

    max_files: int | None = _doc(
        "Most files one run of the rule may remove.", 1000, default=None, ge=0
    )
    max_bytes: int | None = _doc(
        "Most bytes one run of the rule may remove.", 50_000_000_000, default=None, ge=0
    )
    max_fraction: float | None = _doc(
        "Largest fraction of the files the pattern matches that one run may remove (0-1); "
        "default 'defaults.limits.max_fraction'.",
        0.5,
        default=None,
        ge=0.0,
        le=1.0,
    )


class FileBatch(_Model):
    """How many files each audit record covers."""

    size: int = _doc(
        "Files per batch: one 'intent' audit record before and one 'committed' after.",
        100,
        default=100,
        ge=1,
        le=100_000,
    )
    pause_ms: int = _doc("Pause between batches.", 0, default=0, ge=0, le=600_000)


FileAction = Literal["delete", "archive"]


class FileRule(_Model):
    """One retention promise, enforced on the files of a 'files' store that match a pattern."""

    name: Name = _doc("Unique name across 'rules' and 'file_rules'.", "backups-90d")
    promise: str = _doc(
        "The promise, in the words of the published policy.",
        "Backups: Maximum 90 days after deletion",
        min_length=1,
    )
    source: Source = _doc("The clause this rule enforces.", {"policy": "InfraUX", "clause": "8"})
    enabled: bool = _doc("Disabled rules are planned but never run.", True, default=True)
    store: str = _doc("Name of the 'files' store.", "backups")
    pattern: RelativeGlob = _doc("Files the rule covers, relative to the root.", "db/*.sql.gz")
    timestamp: FileTimestampType = _doc(
        "'mtime' (the modification time, the default) or a date in the file name: "
        "{name: FORMAT, timezone: ZONE}.",
        "mtime",
        {"name": "db-%Y-%m-%d.sql.gz", "timezone": "UTC"},
        default=FileTimestamp(),
        json_schema_extra=_or_string("'mtime': the file's modification time."),
    )
    period: PeriodType = _doc("How long files are kept after their timestamp.", "90 days")
    action: FileAction = _doc(
        "'delete', or 'archive' (copy, then delete; needs an 'archive' block).",
        "delete",
        default="delete",
    )
    archive: FileArchive | None = _doc(
        "Where files are copied when action is 'archive'.",
        {"store": "offsite", "prefix": "backups/"},
        default=None,
    )
    keep_last: int = _doc(
        "Never remove the newest N matching files (by timestamp), even when they are expired, "
        "so the last backups survive when new ones stop arriving.",
        7,
        default=0,
        ge=0,
    )
    schedule: ScheduleType | None = _doc(
        "When the daemon runs the rule; default from 'defaults'.", "0 4 * * *", default=None
    )
    timezone: TimeZoneName | None = _doc(
        "Time zone of the cron schedule; default from 'defaults'.", "UTC", default=None
    )
    batch: FileBatch | None = _doc("Files per audit record.", {"size": 100}, default=None)
    limits: FileLimits | None = _doc(
        "Safety limits; max_fraction defaults to 'defaults.limits.max_fraction'.",
        {"max_files": 1000},
        default=None,
    )
    grace: PeriodType | None = _doc(
        "How late a file may be removed before `check` calls the promise broken.",
        "1 day",
        default=None,
    )

    @model_validator(mode="after")
    def _shape(self) -> FileRule:
        if self.action == "archive" and self.archive is None:
            raise ValueError("action 'archive' needs an 'archive' block")
        if self.action != "archive" and self.archive is not None:
            raise ValueError("an 'archive' block is only allowed with action 'archive'")
        archive = self.archive
        if archive is not None and archive.store in (None, self.store) and not archive.prefix:
            raise ValueError(
                "archiving within the rule's own store needs a 'prefix' (a folder such as "
                "'archive/')"
            )
        return self

    @property
    def archive_store(self) -> str | None:
        """The store files are archived into (None when the action is 'delete')."""
        if self.archive is None:
            return None
        return self.archive.store or self.store


# --- holds and minimums ------------------------------------------------------


class SubjectScope(_Model):
    """Hold every row, in every rule's table, that belongs to these subjects."""

    column: Identifier = _doc("The subject key column.", "account_id")
    values: list[int | str] = _doc("Held subject keys.", [1042, 2077], min_length=1)
    tables: dict[Identifier, Identifier] = _doc(
        "Tables where the key has another name: table -> column.",
        {"accounts": "id"},
        default_factory=dict,
    )

    def column_for(self, table: str) -> str:
        """The column holding the subject key in `table`."""
        return self.tables.get(table, self.column)


class PathScope(_Model):
    """Hold the files of a 'files' store whose paths match any of these globs."""

    store: str = _doc("The 'files' store.", "backups")
    paths: list[RelativeGlob] = _doc(
        "Globs relative to the store root ('**' for any folders).",
        ["db/db-2026-03-*"],
        min_length=1,
    )


def _as_utc(value: object) -> object:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date or date-time") from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        # A date-only expiry keeps the hold through that whole day (UTC).
        return datetime.combine(value + timedelta(days=1), time(), tzinfo=UTC)
    return value


class Hold(_Model):
    """A legal hold: matching rows are never deleted or de-identified while it is active."""

    name: Name = _doc("Unique name.", "litigation-2026-017")
    reason: str = _doc(
        "Why the data must be kept (mandatory).", "Acme v. Example, case 2026-017", min_length=3
    )
    expires: Annotated[datetime | None, BeforeValidator(_as_utc)] = _doc(
        "When the hold lapses (UTC when no zone is given); a date keeps the hold through "
        "the end of that day. Default: never.",
        "2027-06-30",
        default=None,
    )
    subjects: SubjectScope | None = _doc(
        "Scope by subject key values, across every rule whose table has the key.",
        {"column": "account_id", "values": [1042, 2077]},
        default=None,
    )
    rule: str | None = _doc(
        "Scope by rule (optionally narrowed by 'where').", "sessions-30d", default=None
    )
    where: Where = _doc(
        "With 'rule': only rows matching these conditions are held.",
        {"ip": "203.0.113.9"},
        default=(),
    )
    paths: PathScope | None = _doc(
        "Scope by path: files of a 'files' store matching these globs.",
        {"store": "backups", "paths": ["db/db-2026-03-*"]},
        default=None,
    )

    @model_validator(mode="after")
    def _scope(self) -> Hold:
        scopes = [s for s in (self.subjects, self.rule, self.paths) if s is not None]
        if len(scopes) != 1:
            raise ValueError(
                "give exactly one scope: 'subjects', 'rule' (with optional 'where') or 'paths'"
            )
        if self.where and self.rule is None:
            raise ValueError("'where' narrows a rule-scoped hold; add 'rule'")
        return self

    def holds_path(self, store: str, path: str) -> bool:
        """True when this hold's 'paths' scope covers `path` (relative) in files store `store`."""
        if self.paths is None or self.paths.store != store:
            return False
        return any(compile_glob(glob).fullmatch(path) for glob in self.paths.paths)

    def active(self, now: datetime) -> bool:
        """True while the hold has not expired at `now`."""
        return self.expires is None or now < self.expires


class Minimum(_Model):
    """A legal minimum retention on a table that no rule may undercut."""

    name: Name = _doc("Unique name.", "tax-records-7y")
    reason: str = _doc("The law or obligation.", "Tax law: keep invoices 7 years", min_length=3)
    store: str = _doc("Store holding the table.", "app")
    db_schema: Identifier | None = _doc(
        "Schema of the table.", "public", default=None, alias="schema"
    )
    table: Identifier = _doc("Protected table.", "invoices")
    timestamp: Annotated[Timestamp, BeforeValidator(_column_shorthand)] = _doc(
        "Column the minimum is measured from; rows where it is NULL are always kept.",
        "issued_at",
        json_schema_extra=_or_string("Name of a datetime column."),
    )
    period: PeriodType = _doc("Minimum retention.", "7 years")


class FileMinimum(_Model):
    """A legal minimum retention on files of a 'files' store that no file rule may undercut."""

    name: Name = _doc("Unique name.", "backups-30d-minimum")
    reason: str = _doc(
        "The law or obligation.", "Keep 30 days of backups (contract with the host)", min_length=3
    )
    store: str = _doc("The 'files' store.", "backups")
    pattern: RelativeGlob = _doc("Protected files, relative to the root.", "db/*.sql.gz")
    timestamp: FileTimestampType = _doc(
        "Clock of the minimum: 'mtime' or {name: FORMAT, timezone: ZONE}; a file whose "
        "timestamp cannot be read is always kept.",
        "mtime",
        default=FileTimestamp(),
        json_schema_extra=_or_string("'mtime': the file's modification time."),
    )
    period: PeriodType = _doc("Minimum retention.", "30 days")


class AuditSettings(_Model):
    """Where the audit trail is kept (used by the audit and daemon features)."""

    store: str | None = _doc(
        "SQL store for the audit trail; default a SQLite file next to the policy.",
        "app",
        default=None,
    )
    table_prefix: Identifier = _doc(
        "Prefix of the audit tables.", "retention_", default="retention_"
    )
    key_env: Identifier = _doc(
        "Environment variable with the key for digests of affected keys.",
        "RETENTION_AUDIT_KEY",
        default="RETENTION_AUDIT_KEY",
    )


class Defaults(_Model):
    """Settings that apply to every rule that does not set its own."""

    schedule: ScheduleType = _doc(
        "Default schedule.", "0 3 * * *", default=CronSchedule(cron="0 3 * * *")
    )
    timezone: TimeZoneName = _doc("Default time zone of cron schedules.", "UTC", default="UTC")
    batch: Batch = _doc("Default batch settings.", {"size": 5000}, default_factory=Batch)
    limits: Limits = _doc("Default safety limits.", {"max_fraction": 0.9}, default_factory=Limits)
    grace: PeriodType = _doc(
        "Default grace before `check` reports a row overdue.", "1 day", default=Period(days=1)
    )


class Policy(_Model):
    """A retention policy file (format version 1)."""

    version: Literal[1] = _doc("Format version; always 1.", 1)
    title: str | None = _doc("What this policy enforces.", "InfraUX retention", default=None)
    stores: dict[Name, Store] = _doc(
        "Named stores.", {"app": {"url": "sqlite:///demo.db"}}, min_length=1
    )
    defaults: Defaults = _doc(
        "Defaults for every rule.", {"schedule": "0 3 * * *"}, default_factory=Defaults
    )
    audit: AuditSettings = _doc(
        "Where the audit trail lives.", {"store": "app"}, default_factory=AuditSettings
    )
    minimums: list[Minimum] = _doc(
        "Legal minimum retentions.",
        [
            {
                "name": "tax",
                "reason": "tax law",
                "store": "app",
                "table": "invoices",
                "timestamp": "issued_at",
                "period": "7 years",
            }
        ],
        default_factory=list,
    )
    holds: list[Hold] = _doc(
        "Legal holds.",
        [
            {
                "name": "case-17",
                "reason": "litigation",
                "subjects": {"column": "account_id", "values": [1042]},
            }
        ],
        default_factory=list,
    )
    file_minimums: list[FileMinimum] = _doc(
        "Legal minimum retentions on files of 'files' stores.",
        [
            {
                "name": "backups-30d",
                "reason": "hosting contract",
                "store": "backups",
                "pattern": "db/*.sql.gz",
                "period": "30 days",
            }
        ],
        default_factory=list,
    )
    rules: list[Rule] = _doc(
        "Retention rules.",
        [
            {
                "name": "security-logs-90d",
                "promise": "Security logs: 90 days",
                "source": {"policy": "InfraUX Privacy Policy", "clause": "8. Data Retention"},
                "store": "app",
                "table": "security_logs",
                "timestamp": "created_at",
                "period": "90 days",
            }
        ],
        min_length=1,
    )
    file_rules: list[FileRule] = _doc(
        "Retention rules on 'files' stores (backups, rotated logs).",
        [
            {
                "name": "backups-90d",
                "promise": "Backups: Maximum 90 days after deletion",
                "source": {"policy": "InfraUX Privacy Policy", "clause": "8. Data Retention"},
                "store": "backups",
                "pattern": "db/db-*.sql.gz",
                "timestamp": {"name": "db-%Y-%m-%d.sql.gz", "timezone": "UTC"},
                "period": "90 days",
                "keep_last": 7,
            }
        ],
        default_factory=list,
    )

    def rule(self, name: str) -> Rule:
        """The rule called `name` (KeyError if there is none)."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def file_rule(self, name: str) -> FileRule:
        """The file rule called `name` (KeyError if there is none)."""
        for rule in self.file_rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def effective_file_limits(self, rule: FileRule) -> FileLimits:
        """`rule`'s limits; max_fraction comes from 'defaults.limits' when not set."""
        limits = rule.limits or FileLimits()
        if "max_fraction" in limits.model_fields_set:
            return limits
        return limits.model_copy(update={"max_fraction": self.defaults.limits.max_fraction})

    def effective_file_batch(self, rule: FileRule) -> FileBatch:
        """`rule`'s batch settings, or the defaults."""
        return rule.batch or FileBatch()

    def effective_batch(self, rule: Rule) -> Batch:
        """`rule`'s batch settings with unset fields taken from the defaults (validated)."""
        if rule.batch is None:
            return self.defaults.batch
        changes = {name: getattr(rule.batch, name) for name in rule.batch.model_fields_set}
        return Batch.model_validate({**self.defaults.batch.model_dump(), **changes})

    def semantic_issues(self) -> list[tuple[Path, str]]:
        """Problems visible only once the whole policy is known (merged settings)."""
        issues: list[tuple[Path, str]] = []
        for index, rule in enumerate(self.rules):
            try:
                self.effective_batch(rule)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                issues.append((("rules", index, "batch"), f"with the defaults: {message}"))
        return issues

    def effective_limits(self, rule: Rule) -> Limits:
        """`rule`'s limits with unset fields taken from the defaults."""
        return _merge(self.defaults.limits, rule.limits)

    def effective_schedule(self, rule: Rule | FileRule) -> Schedule:
        """`rule`'s schedule, or the default one."""
        return rule.schedule or self.defaults.schedule

    def effective_timezone(self, rule: Rule | FileRule) -> str:
        """`rule`'s schedule time zone, or the default one."""
        return rule.timezone or self.defaults.timezone

    def effective_grace(self, rule: Rule | FileRule) -> Period:
        """`rule`'s grace period, or the default one."""
        return rule.grace or self.defaults.grace


_M = TypeVar("_M", bound=BaseModel)


def _merge(base: _M, override: _M | None) -> _M:
    if override is None:
        return base
    fields = {name: getattr(override, name) for name in override.model_fields_set}
    return base.model_copy(update=fields)


# --- cross-references (checked on the raw tree, so they are reported together
#     with type errors) --------------------------------------------------------

Path: TypeAlias = tuple[str | int, ...]


def reference_issues(tree: object) -> list[tuple[Path, str]]:
    """References between parts of a raw policy tree that do not resolve.

    Works on the plain YAML tree (before model validation), so that an unknown
    store is reported in the same run as a misspelled key elsewhere.
    """
    if not isinstance(tree, Mapping):
        return []
    issues: list[tuple[Path, str]] = []
    stores = tree.get("stores")
    store_names = {str(n) for n in stores} if isinstance(stores, Mapping) else None
    sql_stores = (
        {
            str(n)
            for n, s in stores.items()
            if not (isinstance(s, Mapping) and s.get("kind") == "files")
        }
        if isinstance(stores, Mapping)
        else set()
    )

    def check_store(path: Path, value: object, what: str) -> None:
        if store_names is None or not isinstance(value, str):
            return
        if value not in store_names:
            known = ", ".join(sorted(store_names)) or "none"
            issues.append((path, f"unknown store {value!r} (stores: {known})"))
        elif value not in sql_stores:
            issues.append((path, f"{what} on a 'files' store are not supported yet"))

    def check_files_store(path: Path, value: object, what: str) -> None:
        if store_names is None or not isinstance(value, str):
            return
        if value not in store_names:
            known = ", ".join(sorted(store_names)) or "none"
            issues.append((path, f"unknown store {value!r} (stores: {known})"))
        elif value in sql_stores:
            issues.append(
                (path, f"{what} need a 'files' store; {value!r} is a SQL store (kind: sql)")
            )

    def items(section: str) -> list[tuple[int, Mapping[str, Any]]]:
        found = tree.get(section)
        if not isinstance(found, list):
            return []
        return [(i, item) for i, item in enumerate(found) if isinstance(item, Mapping)]

    rule_names: list[str] = []
    file_rule_names: set[str] = set()
    named: list[tuple[Path, str]] = []
    for index, rule in items("rules"):
        check_store(("rules", index, "store"), rule.get("store"), "rules")
        archive = rule.get("archive")
        if isinstance(archive, Mapping) and archive.get("store") is not None:
            check_store(("rules", index, "archive", "store"), archive.get("store"), "archives")
        name = rule.get("name")
        if isinstance(name, str):
            rule_names.append(name)
            named.append((("rules", index, "name"), name))
    for index, rule in items("file_rules"):
        check_files_store(("file_rules", index, "store"), rule.get("store"), "file rules")
        archive = rule.get("archive")
        if isinstance(archive, Mapping) and archive.get("store") is not None:
            check_files_store(
                ("file_rules", index, "archive", "store"), archive.get("store"), "file archives"
            )
        name = rule.get("name")
        if isinstance(name, str):
            file_rule_names.add(name)
            named.append((("file_rules", index, "name"), name))
    seen: set[str] = set()
    for path, name in named:
        if name in seen:
            issues.append((path, f"duplicate rule name {name!r}"))
        seen.add(name)

    for section in ("holds", "minimums", "file_minimums"):
        names: set[str] = set()
        for index, item in items(section):
            name = item.get("name")
            if isinstance(name, str):
                if name in names:
                    what = "file minimum" if section == "file_minimums" else section[:-1]
                    issues.append(((section, index, "name"), f"duplicate {what} name {name!r}"))
                names.add(name)
            if section == "minimums":
                check_store((section, index, "store"), item.get("store"), "minimums")
            if section == "file_minimums":
                check_files_store((section, index, "store"), item.get("store"), "file minimums")
            if section != "holds":
                continue
            held_rule = item.get("rule")
            if isinstance(held_rule, str) and held_rule not in rule_names:
                if held_rule not in file_rule_names:
                    issues.append(((section, index, "rule"), f"unknown rule {held_rule!r}"))
                elif item.get("where"):
                    issues.append(
                        (
                            (section, index, "where"),
                            f"{held_rule!r} is a file rule: a hold on it keeps all its files; "
                            "narrow it with a 'paths' hold instead of 'where'",
                        )
                    )
            paths = item.get("paths")
            if isinstance(paths, Mapping):
                check_files_store((section, index, "paths", "store"), paths.get("store"), "holds")

    audit = tree.get("audit")
    if isinstance(audit, Mapping) and audit.get("store") is not None:
        check_store(("audit", "store"), audit.get("store"), "audit trails")
    return issues
