"""A realistic demo store to run the seed policies against.

`METADATA` defines ten tables of a small SaaS application (accounts and their
profiles, sessions, telemetry, access and security logs, workflow runs, invoices,
payments and deletion requests); `build_demo` fills them with deterministic,
made-up data whose timestamps are all derived from the `now` it is given, so the
same seed and `now` give exactly the same rows on SQLite, PostgreSQL and MariaDB.

Timestamps are naive DATETIME values holding UTC with whole seconds;
``telemetry_events.ts_ms`` holds epoch milliseconds. Ids follow time order where
that is natural (``profiles.id`` equals its account's id). Accounts 1042 and 2077
(`HOLD_SUBJECTS`) were closed long ago and have rows in every child table: they
are the subjects of the demo's legal hold. E-mail domains use the reserved
``.example`` names and IP addresses come from documentation and shared ranges
(192.0.2.0/24, 198.51.100.0/24, 100.64.0.0/10, 2001:db8::/32), except
203.0.113.9 (`SUSPICIOUS_IP`), the source of a planted credential-stuffing run.

Beside a SQLite demo database, `build_demo` also writes the application's backup
tree (`demo_files`, `build_demo_backups`): nightly dumps ``db/db-YYYY-MM-DD.sql.gz``
(daily for two weeks, then Sundays, over 200 days, named and timed in UTC), one
hand-named dump whose name states no date, and weekly-rotated ``logs/app.log.N``
(70 weeks) and ``logs/security.log.N`` (24 weeks) whose modification times are
their rotation times. Content is filler bytes; sizes and times follow `now`.
"""

from __future__ import annotations

import calendar
import json
import os
import random
import shutil
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = [
    "BACKUPS_DIR",
    "DEMO_TABLES",
    "HOLD_SUBJECTS",
    "METADATA",
    "SUSPICIOUS_IP",
    "DemoFile",
    "build_demo",
    "build_demo_backups",
    "demo_files",
    "demo_rows",
]

#: Account ids the demo policies put under a legal hold.
HOLD_SUBJECTS = (1042, 2077)
#: Source address of the planted credential-stuffing attempts in ``security_logs``.
SUSPICIOUS_IP = "203.0.113.9"

METADATA = sa.MetaData()
_MYSQL: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)


def _account_fk(nullable: bool = False) -> sa.Column[int]:
    return sa.Column(
        "account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=nullable, index=True
    )


def _account_ref(nullable: bool = False) -> sa.Column[int]:
    """An account id without a foreign key (logs outlive their accounts)."""
    return sa.Column("account_id", sa.Integer, nullable=nullable, index=True)


def _time(name: str, *, nullable: bool = False, index: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), nullable=nullable, index=index)


accounts = sa.Table(
    "accounts",
    METADATA,
    _id(),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("full_name", sa.String(200), nullable=False),
    sa.Column("company", sa.String(200)),
    sa.Column("status", sa.String(16), nullable=False),
    _time("created_at"),
    _time("closed_at", nullable=True),
    _time("minor_reported_at", nullable=True),
    _time("anonymized_at", nullable=True, index=False),
    **_MYSQL,
)

profiles = sa.Table(
    "profiles",
    METADATA,
    _id(),
    _account_fk(),
    sa.Column("display_name", sa.String(100), nullable=False),
    sa.Column("phone", sa.String(32)),
    sa.Column("address", sa.String(255)),
    sa.Column("preferences", sa.Text, nullable=False),
    _time("updated_at"),
    **_MYSQL,
)

sessions = sa.Table(
    "sessions",
    METADATA,
    _id(),
    _account_fk(),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("user_agent", sa.String(255), nullable=False),
    _time("created_at"),
    **_MYSQL,
)

telemetry_events = sa.Table(
    "telemetry_events",
    METADATA,
    _id(),
    _account_ref(),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("payload", sa.Text, nullable=False),
    **_MYSQL,
)

access_logs = sa.Table(
    "access_logs",
    METADATA,
    _id(),
    _account_ref(nullable=True),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("user_agent", sa.String(255), nullable=False),
    sa.Column("path", sa.String(255), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    _time("created_at"),
    _time("anonymized_at", nullable=True, index=False),
    **_MYSQL,
)

security_logs = sa.Table(
    "security_logs",
    METADATA,
    _id(),
    _account_ref(nullable=True),
    sa.Column("email", sa.String(255)),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    _time("created_at"),
    **_MYSQL,
)

workflow_runs = sa.Table(
    "workflow_runs",
    METADATA,
    _id(),
    _account_fk(),
    sa.Column("workflow_name", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("log_text", sa.Text, nullable=False),
    _time("started_at"),
    **_MYSQL,
)

invoices = sa.Table(
    "invoices",
    METADATA,
    _id(),
    _account_fk(),
    sa.Column("number", sa.String(32), nullable=False, unique=True),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("customer_email", sa.String(255), nullable=False),
    sa.Column("billing_address", sa.String(255), nullable=False),
    _time("issued_at"),
    _time("anonymized_at", nullable=True, index=False),
    **_MYSQL,
)

payments = sa.Table(
    "payments",
    METADATA,
    _id(),
    sa.Column("invoice_id", sa.Integer, sa.ForeignKey("invoices.id"), nullable=False, index=True),
    _account_ref(),
    sa.Column("amount_cents", sa.Integer, nullable=False),
    sa.Column("card_last4", sa.String(4)),
    _time("paid_at"),
    **_MYSQL,
)

deletion_requests = sa.Table(
    "deletion_requests",
    METADATA,
    _id(),
    _account_ref(),
    _time("requested_at"),
    _time("verified_at", nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    _time("completed_at", nullable=True, index=False),
    **_MYSQL,
)

#: The demo's tables, parents before children.
DEMO_TABLES: tuple[str, ...] = (
    "accounts",
    "profiles",
    "sessions",
    "telemetry_events",
    "access_logs",
    "security_logs",
    "workflow_runs",
    "invoices",
    "payments",
    "deletion_requests",
)

# --- data -----------------------------------------------------------------------

_DAY = 86_400
_SPAN_DAYS = 3_100  # about 8.5 years of history
_PER_SCALE = {
    "accounts": 3_000,
    "sessions": 6_000,
    "telemetry_events": 12_000,
    "access_logs": 8_000,
    "security_logs": 3_000,
    "workflow_runs": 5_000,
    "deletion_requests": 50,
    "minors": 12,
}
#: Where log-like rows fall, in days before now: (weight, from, to). Recent rows are
#: denser, as in a growing service, so no rule's first run removes most of a table.
_LOG_AGES = {
    "sessions": ((0.35, 0, 90), (0.25, 90, 365), (0.40, 365, _SPAN_DAYS)),
    "telemetry_events": ((0.30, 0, 90), (0.30, 90, 365), (0.40, 365, 1_400)),
    "access_logs": ((0.35, 0, 90), (0.25, 90, 365), (0.40, 365, 1_100)),
    "security_logs": ((0.35, 0, 90), (0.25, 90, 365), (0.40, 365, 1_500)),
    "workflow_runs": ((0.30, 0, 90), (0.30, 90, 365), (0.40, 365, _SPAN_DAYS)),
}
_HOLD_CLOSED_DAYS = {1042: 1_100, 2077: 800}


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST = _words(
    "Ada Alan Amara Ana Arjun Ben Carla Chen Dana David Elena Emil Farah Felix Grace Hana "
    "Ivan Jonas Julia Kai Kofi Lars Laura Leila Luca Maria Mateo Mei Nadia Noah Omar "
    "Priya Rafael Rosa Sami Sara Sofia Tariq Theo Uma Valentina Wei Yara Yusuf Zoe"
)
_LAST = _words(
    "Abebe Alvarez Andersen Bakker Banerjee Costa Dubois Eriksen Fischer Garcia Haddad "
    "Ito Jensen Kowalski Kumar Larsen Lopez Martin Mendes Moreau Nakamura Novak Okafor "
    "Olsen Patel Petrov Quinn Rossi Santos Schmidt Silva Singh Tanaka Torres Varga Weber "
    "Yilmaz Zhang"
)
_COMPANIES = (
    ("Acme Robotics", "acme-robotics.example"),
    ("Blue Harbor Labs", "blueharbor.example"),
    ("Cobalt Analytics", "cobalt-analytics.example"),
    ("Delta Biotech", "deltabio.example"),
    ("Evergreen Foods", "evergreen.example"),
    ("Fjord Logistics", "fjord-logistics.example"),
    ("Granite Health", "granite-health.example"),
    ("Helix Pharma", "helixpharma.example"),
    ("Indus Software", "indus-software.example"),
    ("Juniper Energy", "juniper-energy.example"),
)
_MAIL_DOMAINS = ("mail.example", "example.com", "example.org", "inbox.example")
_STREETS = ("Main St", "Oak Ave", "Harbor Rd", "Calle 10", "Carrer Major", "MG Road", "Elm Way")
_CITIES = ("Cartagena", "Escaldes-Engordany", "Delhi", "Indianapolis", "Madrid", "Berlin")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.5.0",
    "python-requests/2.31.0",
)
_PATHS = (
    "/",
    "/login",
    "/dashboard",
    "/projects",
    "/projects/new",
    "/workflows",
    "/settings/account",
    "/billing",
    "/api/v1/runs",
    "/api/v1/diagrams",
)
_STATUS_CODES = ((200, 80), (302, 8), (304, 4), (401, 3), (404, 3), (500, 2))
_TELEMETRY = ("page_view", "feature_used", "diagram_exported", "workflow_saved", "error_shown")
_SECURITY_EVENTS = (
    ("login_succeeded", 55),
    ("login_failed", 20),
    ("mfa_challenge", 12),
    ("password_reset", 8),
    ("api_key_created", 5),
)
_WORKFLOWS = (
    "invoice-sync",
    "crm-import",
    "nightly-report",
    "lead-scoring",
    "slack-digest",
    "backup-export",
    "ticket-triage",
    "sample-tracking",
)
_RUN_STATUS = (("succeeded", 85), ("failed", 12), ("cancelled", 3))
_PLANS = ((12_000, 50), (49_000, 30), (120_000, 15), (480_000, 5))
_CURRENCIES = (("USD", 60), ("EUR", 30), ("INR", 10))


@dataclass(frozen=True, slots=True)
class _Account:
    """What the child tables need to know about an account; times in seconds before now."""

    id: int
    email: str
    created: int
    closed: int | None

    @property
    def end(self) -> int:
        """Seconds before now when the account stopped producing data (0 while active)."""
        return self.closed or 0


class _Gen:
    """Deterministic row generation from one `random.Random` and one `now`."""

    def __init__(self, now: datetime, seed: int, scale: int) -> None:
        aware = now if now.tzinfo else now.replace(tzinfo=UTC)
        self.now = aware.astimezone(UTC).replace(tzinfo=None, microsecond=0)
        self.now_ms = calendar.timegm(self.now.timetuple()) * 1000
        self.rng = random.Random(seed)
        self.scale = scale
        self.accounts: list[_Account] = []
        self.paying: list[int] = []  # ids of accounts with invoices, oldest first
        self._created_desc: list[int] = []  # negated creation ages, ascending

    # helpers

    def at(self, ago: int) -> datetime:
        """The naive UTC datetime `ago` seconds before now."""
        return self.now - timedelta(seconds=ago)

    def weighted(self, options: Sequence[tuple[Any, int]]) -> Any:
        total = sum(weight for _, weight in options)
        pick = self.rng.randrange(total)
        for value, weight in options:
            if pick < weight:
                return value
            pick -= weight
        raise AssertionError("unreachable")

    def age(self, parts: Sequence[tuple[float, int, int]]) -> int:
        """Seconds before now, drawn from a mixture of uniform day ranges."""
        pick = self.rng.random() * sum(p[0] for p in parts)
        for weight, low, high in parts:
            if pick < weight:
                return self.rng.randint(max(low * _DAY, 60), high * _DAY)
            pick -= weight
        return self.rng.randint(max(parts[-1][1] * _DAY, 60), parts[-1][2] * _DAY)

    def ip(self) -> str:
        rng = self.rng
        kind = rng.randrange(10)
        if kind < 2:
            groups = [rng.randrange(0x10000) for _ in range(6)]
            return "2001:db8:" + ":".join(f"{g:x}" for g in groups)
        if kind < 4:
            prefix = ("192.0.2", "198.51.100")[kind - 2]
            return f"{prefix}.{rng.randint(1, 254)}"
        return f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"

    def address(self) -> str:
        rng = self.rng
        return f"{rng.randint(1, 999)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"

    def alive_at(self, ago: int) -> _Account | None:
        """A random account that existed and was not closed `ago` seconds before now."""
        # Accounts are in creation order, so the first `count` of them existed then.
        count = bisect_right(self._created_desc, -ago)
        if count == 0:
            return None
        for _ in range(50):
            account = self.accounts[self.rng.randrange(count)]
            if account.closed is None or account.closed <= ago:
                return account
        return None

    def log_rows(self, table: str) -> Iterator[tuple[int, _Account]]:
        """(age, account) pairs for `table`: ages from its mixture, accounts alive then,
        then three rows for each hold subject during its lifetime."""
        produced = 0
        while produced < _PER_SCALE[table] * self.scale:
            ago = self.age(_LOG_AGES[table])
            account = self.alive_at(ago)
            if account is not None:
                produced += 1
                yield ago, account
        for subject in HOLD_SUBJECTS:
            account = self.accounts[subject - 1]
            for _ in range(3):
                yield self.rng.randint(account.end + _DAY, account.created), account

    # tables

    def make_accounts(self) -> list[dict[str, Any]]:
        rng = self.rng
        count = _PER_SCALE["accounts"] * self.scale
        ages = sorted(
            (rng.randint(2 * _DAY, _SPAN_DAYS * _DAY) for _ in range(count)), reverse=True
        )
        rows: list[dict[str, Any]] = []
        for index, created in enumerate(ages):
            account_id = index + 1
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            company = rng.choice(_COMPANIES) if rng.random() < 0.65 else None
            domain = company[1] if company else rng.choice(_MAIL_DOMAINS)
            closed: int | None = None
            if account_id in _HOLD_CLOSED_DAYS:
                closed = _HOLD_CLOSED_DAYS[account_id] * _DAY + rng.randint(0, _DAY)
                closed = min(closed, created - 30 * _DAY)
            elif rng.random() < 0.2:
                lifetime = created - _DAY
                recent = rng.random() < 0.15 and lifetime > 60 * _DAY
                closed = rng.randint(3_600, 60 * _DAY) if recent else rng.randint(3_600, lifetime)
            email = f"{first}.{last}.{account_id}@{domain}".lower()
            self.accounts.append(_Account(account_id, email, created, closed))
            rows.append(
                {
                    "id": account_id,
                    "email": email,
                    "full_name": f"{first} {last}",
                    "company": company[0] if company else None,
                    "status": "active" if closed is None else "closed",
                    "created_at": self.at(created),
                    "closed_at": None if closed is None else self.at(closed),
                    "minor_reported_at": None,
                    "anonymized_at": None,
                }
            )
        self._created_desc = [-a.created for a in self.accounts]
        self._mark_minors(rows)
        return rows

    def _mark_minors(self, rows: list[dict[str, Any]]) -> None:
        """Report a few accounts as minors; the first three in the last week."""
        rng = self.rng
        wanted = _PER_SCALE["minors"] * self.scale
        marked: set[int] = set()
        while len(marked) < wanted:
            account = rng.choice(self.accounts)
            if account.id in marked or account.id in HOLD_SUBJECTS:
                continue
            if len(marked) < 3:
                if account.closed is not None or account.created < 8 * _DAY:
                    continue
                reported = rng.randint(3_600, 7 * _DAY)
            else:
                reported = rng.randint(account.end + 60, account.created)
            marked.add(account.id)
            rows[account.id - 1]["minor_reported_at"] = self.at(reported)

    def make_profiles(self) -> list[dict[str, Any]]:
        rng = self.rng
        rows = []
        for account in self.accounts:
            prefs = {
                "theme": rng.choice(("light", "dark", "system")),
                "lang": rng.choice(("en", "es", "ca", "hi", "de")),
                "digest": rng.choice(("daily", "weekly", "never")),
            }
            rows.append(
                {
                    "id": account.id,
                    "account_id": account.id,
                    "display_name": account.email.split(".")[0].title(),
                    "phone": f"+1-555-01{rng.randint(0, 99):02d}" if rng.random() < 0.6 else None,
                    "address": self.address() if rng.random() < 0.5 else None,
                    "preferences": json.dumps(prefs, sort_keys=True),
                    "updated_at": self.at(rng.randint(account.end, account.created)),
                }
            )
        return rows

    def make_sessions(self) -> list[dict[str, Any]]:
        rows = [
            {
                "account_id": account.id,
                "ip": self.ip(),
                "user_agent": self.rng.choice(_AGENTS),
                "created_at": self.at(ago),
            }
            for ago, account in self.log_rows("sessions")
        ]
        return _numbered(rows, "created_at")

    def make_telemetry(self) -> list[dict[str, Any]]:
        rng = self.rng
        rows = []
        for ago, account in self.log_rows("telemetry_events"):
            event = rng.choice(_TELEMETRY)
            payload = {"feature": rng.choice(_PATHS), "ms": rng.randint(20, 4_000)}
            rows.append(
                {
                    "account_id": account.id,
                    "event_type": event,
                    "ts_ms": self.now_ms - ago * 1000 - rng.randint(0, 999),
                    "payload": json.dumps(payload, sort_keys=True),
                }
            )
        return _numbered(rows, "ts_ms")

    def make_access_logs(self) -> list[dict[str, Any]]:
        rng = self.rng
        rows = []
        for ago, account in self.log_rows("access_logs"):
            anonymous = rng.random() < 0.15
            rows.append(
                {
                    "account_id": None if anonymous else account.id,
                    "ip": self.ip(),
                    "user_agent": rng.choice(_AGENTS),
                    "path": rng.choice(_PATHS[:3]) if anonymous else rng.choice(_PATHS),
                    "status_code": self.weighted(_STATUS_CODES),
                    "created_at": self.at(ago),
                    "anonymized_at": None,
                }
            )
        return _numbered(rows, "created_at")

    def make_security_logs(self) -> list[dict[str, Any]]:
        rng = self.rng
        rows = []
        for ago, account in self.log_rows("security_logs"):
            unknown = rng.random() < 0.10
            rows.append(
                {
                    "account_id": None if unknown else account.id,
                    "email": f"{rng.choice(_FIRST).lower()}@{rng.choice(_MAIL_DOMAINS)}"
                    if unknown
                    else account.email,
                    "ip": self.ip(),
                    "event": "login_failed" if unknown else self.weighted(_SECURITY_EVENTS),
                    "created_at": self.at(ago),
                }
            )
        # A credential-stuffing run from one address over the last 200 days, trying
        # the e-mail addresses of real accounts (the subject of a rule-scoped hold).
        for _ in range(24):
            target = rng.choice(self.accounts)
            rows.append(
                {
                    "account_id": None,
                    "email": target.email,
                    "ip": SUSPICIOUS_IP,
                    "event": "login_failed",
                    "created_at": self.at(rng.randint(_DAY, 200 * _DAY)),
                }
            )
        return _numbered(rows, "created_at")

    def make_workflow_runs(self) -> list[dict[str, Any]]:
        rng = self.rng
        rows = []
        for ago, account in self.log_rows("workflow_runs"):
            name = rng.choice(_WORKFLOWS)
            status = self.weighted(_RUN_STATUS)
            started = self.at(ago)
            steps = rng.randint(2, 40)
            lines = [
                f"{started.isoformat()} run of {name} started by {account.email}",
                f"{steps} steps executed",
                f"finished: {status}",
            ]
            if status == "failed":
                lines.insert(2, f"error in step {rng.randint(1, steps)}: upstream timeout")
            rows.append(
                {
                    "account_id": account.id,
                    "workflow_name": name,
                    "status": status,
                    "log_text": "\n".join(lines),
                    "started_at": started,
                }
            )
        return _numbered(rows, "started_at")

    def make_billing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Yearly invoices for paying accounts from sign-up until closure, and their payments."""
        rng = self.rng
        issued: list[dict[str, Any]] = []
        for account in self.accounts:
            if account.id not in HOLD_SUBJECTS and rng.random() >= 0.4:
                continue
            self.paying.append(account.id)
            amount = self.weighted(_PLANS)
            currency = self.weighted(_CURRENCIES)
            address = self.address()
            ago = account.created - rng.randint(0, 3 * _DAY)
            while ago > max(account.end, 60):
                issued.append(
                    {
                        "account_id": account.id,
                        "amount_cents": amount,
                        "currency": currency,
                        "customer_email": account.email,
                        "billing_address": address,
                        "issued_at": self.at(ago),
                        "anonymized_at": None,
                    }
                )
                ago -= 365 * _DAY
        invoice_rows = _numbered(issued, "issued_at")
        paid: list[dict[str, Any]] = []
        for invoice in invoice_rows:
            invoice["number"] = f"INV-{invoice['issued_at'].year}-{invoice['id']:06d}"
            payment_age = int((self.now - invoice["issued_at"]).total_seconds())
            payment_age -= rng.randint(0, 14 * _DAY)
            unpaid = rng.random() < 0.05 and invoice["account_id"] not in HOLD_SUBJECTS
            if unpaid or payment_age < 60:
                continue
            paid.append(
                {
                    "invoice_id": invoice["id"],
                    "account_id": invoice["account_id"],
                    "amount_cents": invoice["amount_cents"],
                    "card_last4": f"{rng.randint(0, 9999):04d}" if rng.random() < 0.9 else None,
                    "paid_at": self.at(payment_age),
                }
            )
        return invoice_rows, _numbered(paid, "paid_at")

    def make_deletion_requests(self) -> list[dict[str, Any]]:
        """Requests in every status; verified ones older and younger than 30 days."""
        rng = self.rng
        rows: list[dict[str, Any]] = []
        for subject in HOLD_SUBJECTS:
            closed = self.accounts[subject - 1].end
            rows.append(_request(self, subject, closed + 3 * _DAY, closed + _DAY, "verified"))
        # The oldest customer asked for deletion: billing rows older than any legal
        # minimum the demo policies use (8 years) fall under a deletion request.
        oldest = next(i for i in self.paying if i not in HOLD_SUBJECTS)
        when = rng.randint(31 * _DAY, 400 * _DAY)
        rows.append(_request(self, oldest, when + rng.randint(600, 5 * _DAY), when, "verified"))
        taken = {*HOLD_SUBJECTS, oldest}
        kinds = ("verified-old", "verified-old", "verified-new", "pending", "rejected")
        for index in range(_PER_SCALE["deletion_requests"] * self.scale):
            kind = kinds[index % len(kinds)]
            verified: int | None = None
            if kind == "verified-old":
                verified = rng.randint(31 * _DAY, 900 * _DAY)
                requested = verified + rng.randint(600, 5 * _DAY)
            elif kind == "verified-new":
                verified = rng.randint(3_600, 29 * _DAY)
                requested = verified + rng.randint(600, 5 * _DAY)
            elif kind == "pending":
                requested = rng.randint(3_600, 20 * _DAY)
            else:
                requested = rng.randint(2 * _DAY, 600 * _DAY)
            account = self.alive_at(requested) if kind != "rejected" else None
            if account is None:
                account = rng.choice(self.accounts)
                if account.created <= requested:
                    continue
            if account.id in taken:
                continue
            taken.add(account.id)
            status = "verified" if verified is not None else kind
            rows.append(_request(self, account.id, requested, verified, status))
        return _numbered(rows, "requested_at")

    def all_rows(self) -> dict[str, list[dict[str, Any]]]:
        out = {"accounts": self.make_accounts(), "profiles": self.make_profiles()}
        out["sessions"] = self.make_sessions()
        out["telemetry_events"] = self.make_telemetry()
        out["access_logs"] = self.make_access_logs()
        out["security_logs"] = self.make_security_logs()
        out["workflow_runs"] = self.make_workflow_runs()
        out["invoices"], out["payments"] = self.make_billing()
        out["deletion_requests"] = self.make_deletion_requests()
        return {name: out[name] for name in DEMO_TABLES}


def _request(
    gen: _Gen, account_id: int, requested: int, verified: int | None, status: str
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "requested_at": gen.at(requested),
        "verified_at": None if verified is None else gen.at(verified),
        "status": status,
        "completed_at": None,
    }


def _numbered(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """`rows` sorted by `key` (stably) with ids 1..n assigned in that order."""
    rows.sort(key=lambda row: row[key])
    for index, row in enumerate(rows):
        row["id"] = index + 1
    return rows


def demo_rows(now: datetime, *, seed: int = 7, scale: int = 1) -> dict[str, list[dict[str, Any]]]:
    """The demo's rows per table (in `DEMO_TABLES` order), as `build_demo` inserts them.

    Pure and deterministic: the same `now` (aware, or naive UTC), `seed` and
    `scale` always give the same rows. Datetimes are naive UTC with whole seconds.
    """
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return _Gen(now, seed, scale).all_rows()


def build_demo(
    url: str, now: datetime, *, seed: int = 7, scale: int = 1, backups: Path | None = None
) -> dict[str, int]:
    """(Re)create the demo tables in the database at `url` and fill them.

    Drops the demo's own tables if present (children first; other tables are left
    alone), creates them, inserts `demo_rows(now, seed=seed, scale=scale)` in
    chunks, one transaction per table, and returns the number of rows per table.
    The parent folder of a SQLite file is created when missing. Works the same on
    SQLite, PostgreSQL (``postgresql+psycopg://``) and MariaDB/MySQL
    (``mysql+pymysql://``).

    The backup tree (`build_demo_backups`) is written to `backups`, or, for a SQLite
    file, to the folder `BACKUPS_DIR` beside it (``var/backups`` for ``var/demo.db``).
    """
    rows = demo_rows(now, seed=seed, scale=scale)
    parsed = sa.make_url(url)
    database = parsed.database
    if (
        parsed.get_backend_name() == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
    ):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        if backups is None:
            backups = Path(database).parent / BACKUPS_DIR
    if backups is not None:
        build_demo_backups(backups, now, seed=seed)
    engine = sa.create_engine(parsed)
    try:
        METADATA.drop_all(engine, checkfirst=True)
        METADATA.create_all(engine)
        for name in DEMO_TABLES:
            table = METADATA.tables[name]
            with engine.begin() as conn:
                for chunk in _chunks(rows[name], _CHUNK):
                    conn.execute(table.insert(), chunk)
    finally:
        engine.dispose()
    return {name: len(rows[name]) for name in DEMO_TABLES}


_CHUNK = 2_000


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- the backup tree ------------------------------------------------------------------

#: Folder of the demo's backup tree, beside the demo SQLite file.
BACKUPS_DIR = "backups"
#: Written at the root of a demo backup tree; `build_demo_backups` replaces only such trees.
_MARKER = ".retention-demo"
_DUMP_HOUR = 2  # nightly dumps start at 02:00 UTC
_DAILY_DUMPS = 14
_DUMP_SPAN_DAYS = 200
_LOG_WEEKS = {"app": 70, "security": 24}


@dataclass(frozen=True)
class DemoFile:
    """One file of the demo backup tree: path (relative), size in bytes, mtime (naive UTC)."""

    path: str
    size: int
    mtime: datetime


def demo_files(now: datetime, *, seed: int = 7) -> list[DemoFile]:
    """The demo backup tree's files, sorted by path; pure and deterministic in `now`, `seed`.

    Dumps: one per night for the last 14 nights, then one per Sunday night back to 200
    days; each is named after its UTC date and written a few minutes after 02:00.
    ``db/db-before-migration.sql.gz`` has no date in its name. Logs rotate weekly:
    ``logs/app.log`` is current, ``app.log.1`` the week before, ``app.log.N.gz`` older.
    """
    aware = now if now.tzinfo else now.replace(tzinfo=UTC)
    moment = aware.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    rng = random.Random(f"backups-{seed}")
    files: list[DemoFile] = []
    today = moment.date()
    for back in range(_DUMP_SPAN_DAYS + 1):
        day = today - timedelta(days=back)
        taken = datetime.combine(day, datetime.min.time()) + timedelta(
            hours=_DUMP_HOUR, minutes=rng.randrange(3, 40)
        )
        if taken > moment or (back > _DAILY_DUMPS and day.weekday() != 6):
            continue
        files.append(DemoFile(f"db/db-{day.isoformat()}.sql.gz", rng.randrange(4000, 9000), taken))
    files.append(
        DemoFile("db/db-before-migration.sql.gz", 7321, moment - timedelta(days=300, hours=5))
    )
    for log, weeks in _LOG_WEEKS.items():
        files.append(DemoFile(f"logs/{log}.log", rng.randrange(500, 3000), moment))
        for week in range(1, weeks + 1):
            name = f"logs/{log}.log.{week}" + ("" if week == 1 else ".gz")
            rotated = moment - timedelta(
                days=7 * week - 1, hours=moment.hour, minutes=moment.minute
            )
            files.append(DemoFile(name, rng.randrange(800, 4000), rotated))
    return sorted(files, key=lambda f: f.path)


def build_demo_backups(root: Path, now: datetime, *, seed: int = 7) -> dict[str, int]:
    """(Re)create the demo backup tree at `root`; return the number of files per folder.

    An existing folder is replaced only when it is empty or an earlier demo tree (it
    holds the marker file); anything else raises FileExistsError.
    """
    if root.exists() and any(root.iterdir()):
        if not (root / _MARKER).is_file():
            raise FileExistsError(f"{root} exists and is not a demo backup tree; not replacing it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / _MARKER).write_text("written by `retention demo`; safe to delete\n", encoding="utf-8")
    counts: dict[str, int] = {}
    for file in demo_files(now, seed=seed):
        path = root / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        filler = random.Random(file.path).randbytes(64)
        path.write_bytes((filler * (file.size // 64 + 1))[: file.size])
        stamp = calendar.timegm(file.mtime.timetuple())
        os.utime(path, (stamp, stamp))
        folder = file.path.split("/", 1)[0]
        counts[folder] = counts.get(folder, 0) + 1
    return counts
