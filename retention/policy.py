"""The policy language: frozen, validated models of a retention policy file.

These models are the single source of truth for the YAML format: the loader
validates against them, and `retention schema` prints their JSON Schema (every
field carries a description and an example). They do no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
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
    "FilesStore",
    "GeneralizeStrategy",
    "HashStrategy",
    "Hold",
    "IntervalSchedule",
    "Limits",
    "MaskEmailStrategy",
    "Minimum",
    "NullStrategy",
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
    """A tree of files (backups, rotated logs). Rules on file stores are not implemented yet."""

    kind: Literal["files"] = _doc("Store kind.", "files")
    root: str = _doc(
        "Local path or fsspec URL of the tree. ${VAR} substitution applies.",
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
        "Store holding the archive table; default the rule's own store.", "archive", default=None
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
        "Child tables (in the same store, each with a foreign key to this table) whose rows "
        "referencing a batch's parents are deleted first, in this order, in the same "
        "transaction. A parent with a held child, or a child under a legal minimum, is kept.",
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

    @model_validator(mode="after")
    def _scope(self) -> Hold:
        if (self.subjects is None) == (self.rule is None):
            raise ValueError("give exactly one scope: 'subjects' or 'rule' (with optional 'where')")
        if self.where and self.rule is None:
            raise ValueError("'where' narrows a rule-scoped hold; add 'rule'")
        return self

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

    def rule(self, name: str) -> Rule:
        """The rule called `name` (KeyError if there is none)."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

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

    def effective_schedule(self, rule: Rule) -> Schedule:
        """`rule`'s schedule, or the default one."""
        return rule.schedule or self.defaults.schedule

    def effective_timezone(self, rule: Rule) -> str:
        """`rule`'s schedule time zone, or the default one."""
        return rule.timezone or self.defaults.timezone

    def effective_grace(self, rule: Rule) -> Period:
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

    rules = tree.get("rules")
    rule_names: list[str] = []
    if isinstance(rules, list):
        for index, rule in enumerate(rules):
            if not isinstance(rule, Mapping):
                continue
            check_store(("rules", index, "store"), rule.get("store"), "rules")
            archive = rule.get("archive")
            if isinstance(archive, Mapping) and archive.get("store") is not None:
                check_store(("rules", index, "archive", "store"), archive.get("store"), "archives")
            name = rule.get("name")
            if isinstance(name, str):
                rule_names.append(name)
        counts = Counter(rule_names)
        seen: set[str] = set()
        for index, rule in enumerate(rules):
            name = rule.get("name") if isinstance(rule, Mapping) else None
            if isinstance(name, str) and counts[name] > 1:
                if name in seen:
                    issues.append((("rules", index, "name"), f"duplicate rule name {name!r}"))
                seen.add(name)

    for section in ("holds", "minimums"):
        items = tree.get(section)
        if not isinstance(items, list):
            continue
        names: set[str] = set()
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                continue
            name = item.get("name")
            if isinstance(name, str):
                if name in names:
                    issues.append(
                        ((section, index, "name"), f"duplicate {section[:-1]} name {name!r}")
                    )
                names.add(name)
            if section == "minimums":
                check_store((section, index, "store"), item.get("store"), "minimums")
            rule = item.get("rule")
            if section == "holds" and isinstance(rule, str) and rule not in rule_names:
                issues.append(((section, index, "rule"), f"unknown rule {rule!r}"))

    audit = tree.get("audit")
    if isinstance(audit, Mapping) and audit.get("store") is not None:
        check_store(("audit", "store"), audit.get("store"), "audit trails")
    return issues
