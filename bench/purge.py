#!/usr/bin/env python3
"""Benchmark `retention run` against plain SQL purges on SQLite, PostgreSQL and MariaDB.

The benchmark builds its own data: an ``events`` table of N rows (default 1,000,000)
spread evenly over 225 days before a fixed "now", of which exactly 60 % are older
than the 90-day cutoff. The rows come from one seeded generator (``--seed``), so
every database gets the same rows. Layout ``ordered``: ids follow time; layout
``shuffled``: ids are a seeded permutation of 1..N, unrelated to time (rows are
still inserted in time order, as they would arrive).

Each variant runs on freshly reloaded, identical data, in a child process of its
own (so its peak RSS is its own), ``--repeat`` times:

  plain-delete         one ``DELETE FROM events WHERE created_at < :cutoff``
  retention-delete     `retention.runner.run_once` with a delete rule (audit trail on)
  naive-in-limit       ``DELETE ... WHERE id IN (SELECT id ... ORDER BY id LIMIT n)``
  sentry-any-array     ``DELETE ... WHERE id = ANY(ARRAY(SELECT id ... LIMIT n))``
                       (PostgreSQL; the statement of Sentry's BulkDeleteQuery)
  pt-archiver          ``pt-archiver --purge --bulk-delete --limit n`` (MariaDB)
  pt-archiver-commit-each  the same with ``--commit-each`` given explicitly
  plain-update         one UPDATE doing the anonymization in SQL
  retention-anonymize  `run_once` with an anonymize rule (truncate_ip, mask_email,
                       marker anonymized_at)
  sketch-delete, sketch-anonymize
                       diagnostics, not retention: hand-written loops with the batch
                       shape bench/RESULTS.md proposes (only when named in --variants)
  plain-delete-partitioned, retention-delete-partitioned
                       PostgreSQL: the same two deletes on a copy of ``events`` range-
                       partitioned by month on created_at; retention detaches and drops
                       the partitions wholly past the cutoff and batches the one that
                       straddles it

Two diagnostic modes explain the figures: ``--explain`` prints the database's plan
of every kind of statement a retention run sends, and ``--phases BATCH`` times each
phase of a batched delete for several statement shapes.

Rates are compared per repeat with the plain statement of the same kind
(plain-delete or plain-update) and the median of those ratios is reported.
See bench/README.md for how to run it and what every column means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

# --- the data -------------------------------------------------------------------------

#: The instant the benchmark treats as "now" (`RunOptions.as_of`); no clock is read.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PERIOD_DAYS = 90
SPAN_DAYS = 225  # rows spread evenly over 225 days, the last 90 kept: 60 % expired
EXPIRED_FRACTION = (SPAN_DAYS - PERIOD_DAYS) / SPAN_DAYS
CUTOFF = (NOW - timedelta(days=PERIOD_DAYS)).replace(tzinfo=None)
ANON_TIME = NOW.replace(tzinfo=None)
SEED = 20261123
#: Bump when the generator changes, so cached seed tables are rebuilt.
GENERATOR = 2
#: Rows per statement of the naive, Sentry and pt-archiver variants.
CHUNK = 10_000
AUDIT_ENV = {"RETENTION_AUDIT_KEY": "bench-audit-key"}

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/h4_bench"
DEFAULT_MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/h4_bench"
DEFAULT_SQLITE_DIR = "/tmp/h4_bench"

Db = Literal["sqlite", "postgresql", "mariadb"]
DBS: tuple[Db, ...] = ("sqlite", "postgresql", "mariadb")
Row = tuple[int, int, str, str, datetime, str]

DOMAINS = (
    "example.com",
    "Example.COM",
    "mail.example.org",
    "corp.example.net",
    "EU.Example.io",
    "students.example.edu",
)


def expired_rows(rows: int) -> int:
    """How many of `rows` generated rows are older than the cutoff."""
    return int(rows * EXPIRED_FRACTION)


def _next_month(moment: datetime) -> datetime:
    return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)


def partition_bounds() -> list[tuple[str, datetime, datetime]]:
    """The monthly partitions of the partitioned table: (name, from, to), covering every
    generated row (the 225 days before NOW). The cutoff falls inside one of them."""
    oldest = CUTOFF - timedelta(days=SPAN_DAYS - PERIOD_DAYS)
    low = oldest.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    out = []
    while low <= NOW.replace(tzinfo=None):
        high = _next_month(low)
        out.append((f"events_{low:%Y_%m}", low, high))
        low = high
    if any(CUTOFF in (low, high) for _name, low, high in out):
        raise AssertionError("the cutoff must not fall on a partition boundary")
    return out


def droppable_partition_names() -> list[str]:
    """The partitions wholly past the cutoff (upper bound at or before it)."""
    return [name for name, _low, high in partition_bounds() if high <= CUTOFF]


def generate(rows: int, layout: str, seed: int) -> Iterator[Row]:
    """The benchmark rows, in time order: (id, account_id, ip, email, created_at, payload).

    Row i (0-based, in time order) is expired exactly when i < expired_rows(rows).
    IPv6 addresses have eight non-zero groups, so their text has no '::' and the SQL
    versions of truncate_ip can be exact.
    """
    rnd = random.Random(seed)
    ids = list(range(1, rows + 1))
    if layout == "shuffled":
        random.Random(seed + 1).shuffle(ids)
    expired = expired_rows(rows)
    step = SPAN_DAYS * 86400 / rows
    cutoff = CUTOFF
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
    payloads = ["".join(rnd.choices(letters, k=rnd.randint(60, 100))) for _ in range(512)]
    for i in range(rows):
        # floor((i - expired + u) * step) is < 0 exactly when i < expired.
        offset = (i - expired + rnd.random()) * step
        created = cutoff + timedelta(seconds=int(offset // 1))
        if rnd.random() < 0.1:
            ip = ":".join(f"{rnd.randrange(1, 0x10000):x}" for _ in range(8))
        else:
            ip = (
                f"{rnd.randrange(1, 224)}.{rnd.randrange(256)}."
                f"{rnd.randrange(256)}.{rnd.randrange(256)}"
            )
        email = f"user{rnd.randrange(10**7)}@{rnd.choice(DOMAINS)}"
        yield (ids[i], rnd.randrange(1, 100_001), ip, email, created, rnd.choice(payloads))


def sqlite_time(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite DateTime type stores (and binds) for `moment`."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


# --- the databases --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One database under test."""

    db: Db
    url: str

    @property
    def parts(self) -> sa.engine.URL:
        return sa.make_url(self.url)


def seed_name(rows: int, layout: str, seed: int) -> str:
    return f"bench_seed_{layout}_{rows}_s{seed}_g{GENERATOR}"


def sqlite_seed_path(target: Target, rows: int, layout: str, seed: int) -> Path:
    main = Path(str(target.parts.database))
    return main.parent / f"{seed_name(rows, layout, seed)}.db"


def pg_connect(target: Target, autocommit: bool = True) -> Any:
    import psycopg

    url = target.parts
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password or None,
        dbname=url.database,
        autocommit=autocommit,
    )


def my_connect(target: Target) -> Any:
    import pymysql  # type: ignore[import-untyped]

    url = target.parts
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database,
        autocommit=True,
    )


PG_DDL = """
CREATE TABLE {name} (
    id BIGINT PRIMARY KEY,
    account_id INT NOT NULL,
    ip VARCHAR(45),
    email VARCHAR(120),
    created_at TIMESTAMP NOT NULL,
    payload VARCHAR(100),
    anonymized_at TIMESTAMP NULL
){options}
"""
# A partitioned table's primary key must contain the partition key: (id, created_at).
PG_PARTITIONED_DDL = """
CREATE TABLE {name} (
    id BIGINT NOT NULL,
    account_id INT NOT NULL,
    ip VARCHAR(45),
    email VARCHAR(120),
    created_at TIMESTAMP NOT NULL,
    payload VARCHAR(100),
    anonymized_at TIMESTAMP NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at)
"""
MY_DDL = """
CREATE TABLE {name} (
    id BIGINT NOT NULL PRIMARY KEY,
    account_id INT NOT NULL,
    ip VARCHAR(45),
    email VARCHAR(120),
    created_at DATETIME NOT NULL,
    payload VARCHAR(100),
    anonymized_at DATETIME NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""
# INTEGER PRIMARY KEY is SQLite's 64-bit rowid: "BIGINT PRIMARY KEY" would add a
# second B-tree next to the rowid table, which no SQLite schema does on purpose.
SQLITE_DDL = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    account_id INT NOT NULL,
    ip VARCHAR(45),
    email VARCHAR(120),
    created_at DATETIME NOT NULL,
    payload VARCHAR(100),
    anonymized_at DATETIME NULL
)
"""
COLUMNS = "id, account_id, ip, email, created_at, payload"
DROP_BENCH = ("events", "retention_audit", "retention_audit_head")
#: How `events` is built: one heap (``plain``) or monthly range partitions (PostgreSQL).
Table = Literal["plain", "partitioned"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_seed(target: Target, rows: int, layout: str, seed: int) -> None:
    """Create the seed table (all generated rows) unless an identical one exists."""
    name = seed_name(rows, layout, seed)
    if target.db == "sqlite":
        path = sqlite_seed_path(target, rows, layout, seed)
        if path.exists():
            with sqlite3.connect(path) as con:
                try:
                    if con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == rows:
                        return
                except sqlite3.DatabaseError:
                    pass
            path.unlink()
        log(f"sqlite: generating {rows} rows into {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path)
        con.execute(SQLITE_DDL.format(name=name))
        con.executemany(
            f"INSERT INTO {name} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                (r[0], r[1], r[2], r[3], sqlite_time(r[4]), r[5])
                for r in generate(rows, layout, seed)
            ),
        )
        con.commit()
        con.close()
    elif target.db == "postgresql":
        with pg_connect(target) as conn:
            found = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]
            if found and conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == rows:
                return
            log(f"postgresql: generating {rows} rows into {name} (COPY)")
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(PG_DDL.format(name=name, options=""))
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(f"COPY {name} ({COLUMNS}) FROM STDIN") as copy,
            ):
                for row in generate(rows, layout, seed):
                    copy.write_row(row)
            conn.execute(f"VACUUM ANALYZE {name}")
    else:
        conn = my_connect(target)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW TABLES LIKE %s", (name,))
                if cur.fetchone():
                    cur.execute(f"SELECT count(*) FROM {name}")
                    if cur.fetchone()[0] == rows:
                        return
                log(f"mariadb: generating {rows} rows into {name} (multi-row INSERT)")
                cur.execute(f"DROP TABLE IF EXISTS {name}")
                cur.execute(MY_DDL.format(name=name))
                conn.begin()
                batch: list[Row] = []
                sql = f"INSERT INTO {name} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"
                for row in generate(rows, layout, seed):
                    batch.append(row)
                    if len(batch) == 5000:
                        cur.executemany(sql, batch)
                        batch = []
                if batch:
                    cur.executemany(sql, batch)
                conn.commit()
        finally:
            conn.close()


def mariadb_history(target: Target) -> int:
    conn = my_connect(target)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
            row = cur.fetchone()
            return int(row[1]) if row else 0
    finally:
        conn.close()


def wait_for_purge(target: Target, limit: float = 120.0) -> float:
    """Wait until InnoDB has purged old row versions (history list short); return seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if mariadb_history(target) < 1000:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def reload(target: Target, rows: int, layout: str, seed: int, table: Table = "plain") -> None:
    """Drop and rebuild `events` from the seed table; recreate empty audit tables."""
    name = seed_name(rows, layout, seed)
    if table == "partitioned":
        if target.db != "postgresql":
            raise ValueError("the partitioned table exists on PostgreSQL only")
        reload_partitioned(target, name)
    elif target.db == "sqlite":
        main = Path(str(target.parts.database))
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{main}{suffix}").unlink(missing_ok=True)
        con = sqlite3.connect(main)
        con.execute(
            "ATTACH DATABASE ? AS seed", (str(sqlite_seed_path(target, rows, layout, seed)),)
        )
        con.execute(SQLITE_DDL.format(name="events"))
        con.execute(f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM seed.{name} ORDER BY id")
        con.execute("CREATE INDEX ix_events_created_at ON events (created_at)")
        con.commit()
        con.execute("DETACH DATABASE seed")
        con.close()
    elif target.db == "postgresql":
        with pg_connect(target) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {', '.join(DROP_BENCH)}")
            # Autovacuum is off for the table: every variant leaves the same dead rows,
            # and a vacuum starting in the middle of one run would only add noise.
            conn.execute(PG_DDL.format(name="events", options=" WITH (autovacuum_enabled = false)"))
            # Rows arrive in time order (with shuffled ids, the heap is in time order).
            conn.execute(
                f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM {name} "
                "ORDER BY created_at, id"
            )
            conn.execute("CREATE INDEX ix_events_created_at ON events (created_at)")
            conn.execute("VACUUM (ANALYZE) events")
            conn.execute("CHECKPOINT")
    else:
        conn = my_connect(target)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {', '.join(DROP_BENCH)}")
                cur.execute(MY_DDL.format(name="events"))
                cur.execute(
                    f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM {name} ORDER BY id"
                )
                cur.execute("CREATE INDEX ix_events_created_at ON events (created_at)")
                cur.execute("ANALYZE TABLE events")
                cur.fetchall()
        finally:
            conn.close()
        wait_for_purge(target)
    create_audit_tables(target)


def reload_partitioned(target: Target, seed_table: str) -> None:
    """`events` as monthly range partitions on created_at, with the same rows, the same
    created_at index (one per partition) and the same preparation as the plain table."""
    with pg_connect(target) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(DROP_BENCH)}")
        for part, _low, _high in partition_bounds():  # left over from an interrupted run
            conn.execute(f"DROP TABLE IF EXISTS {part}")
        conn.execute(PG_PARTITIONED_DDL.format(name="events"))
        for part, low, high in partition_bounds():
            # Storage parameters belong to the leaf partitions (autovacuum off: see reload).
            conn.execute(
                f"CREATE TABLE {part} PARTITION OF events FOR VALUES FROM ('{low:%Y-%m-%d}') "
                f"TO ('{high:%Y-%m-%d}') WITH (autovacuum_enabled = false)"
            )
        conn.execute(
            f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM {seed_table} "
            "ORDER BY created_at, id"
        )
        conn.execute("CREATE INDEX ix_events_created_at ON events (created_at)")
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("CHECKPOINT")


def create_audit_tables(target: Target) -> None:
    """Create retention's (empty) audit tables, as they are after a first run."""
    from retention.audit.sql import AuditTables, ensure_tables

    engine = sa.create_engine(target.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            ensure_tables(conn, AuditTables())
    finally:
        engine.dispose()


def cleanup(target: Target) -> None:
    """Drop everything the benchmark created in `target`."""
    if target.db == "sqlite":
        main = Path(str(target.parts.database))
        for path in main.parent.glob("bench_seed_*.db"):
            path.unlink()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{main}{suffix}").unlink(missing_ok=True)
        return
    engine = sa.create_engine(target.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            names = sa.inspect(conn).get_table_names()
            partitions = {name for name, _low, _high in partition_bounds()}
            for table in sorted(names, key=lambda name: name != "events"):  # parent first
                if table.startswith("bench_seed_") or table in DROP_BENCH or table in partitions:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    finally:
        engine.dispose()


# --- variants ---------------------------------------------------------------------------

Kind = Literal["delete", "anonymize"]


@dataclass(frozen=True)
class Variant:
    name: str
    kind: Kind
    dbs: tuple[Db, ...]
    #: Stopped after --cap seconds, its rate extrapolated from the rows done.
    capped: bool = False
    #: Not part of the default set: runs only when named in --variants.
    diagnostic: bool = False
    #: The table it runs on (`reload`); a partitioned variant is compared with the
    #: plain statement on an identical partitioned table.
    table: Table = "plain"


VARIANTS = (
    Variant("plain-delete", "delete", DBS),
    Variant("retention-delete", "delete", DBS),
    Variant("naive-in-limit", "delete", DBS, capped=True),
    Variant("sentry-any-array", "delete", ("postgresql",), capped=True),
    Variant("pt-archiver", "delete", ("mariadb",)),
    # --bulk-delete is documented to imply --commit-each, but pt-archiver 3.2.1 reads
    # the option before setting it and still commits after every fetched row; this
    # variant passes --commit-each explicitly.
    Variant("pt-archiver-commit-each", "delete", ("mariadb",)),
    Variant("sketch-delete", "delete", DBS, diagnostic=True),
    Variant("plain-update", "anonymize", DBS),
    Variant("retention-anonymize", "anonymize", DBS),
    Variant("sketch-anonymize", "anonymize", DBS, diagnostic=True),
    Variant("plain-delete-partitioned", "delete", ("postgresql",), table="partitioned"),
    Variant("retention-delete-partitioned", "delete", ("postgresql",), table="partitioned"),
    Variant(
        "sketch-drop-partitioned", "delete", ("postgresql",), diagnostic=True, table="partitioned"
    ),
)
BASELINE: dict[Kind, str] = {"delete": "plain-delete", "anonymize": "plain-update"}


def baseline_of(variant: Variant) -> str:
    """The plain statement a variant's rate is compared with (same kind, same table)."""
    if variant.table == "partitioned":
        return "plain-delete-partitioned"
    return BASELINE[variant.kind]


TOOLS = ("pt-archiver", "pt-archiver-commit-each")


def policy_text(url: str, action: Kind) -> str:
    """The benchmark's policy: one rule on `events`, default batch settings."""
    rule = f"""\
version: 1
title: purge benchmark
stores:
  bench: {{url: "{url}"}}
audit: {{store: bench}}
rules:
  - name: events-{action}
    promise: "events are kept {PERIOD_DAYS} days"
    source: {{policy: bench, clause: "1"}}
    store: bench
    table: events
    timestamp: created_at
    period: {PERIOD_DAYS} days
"""
    if action == "anonymize":
        rule += """\
    action: anonymize
    anonymize:
      columns: {ip: truncate_ip, email: mask_email}
      marker: anonymized_at
"""
    return rule


def plain_update_sql(db: Db) -> str:
    """One UPDATE doing what truncate_ip (24/48 bits) and mask_email do, per dialect."""
    if db == "postgresql":
        return """
UPDATE events SET
  ip = host(network(set_masklen(ip::inet,
         CASE WHEN family(ip::inet) = 4 THEN 24 ELSE 48 END))),
  email = CASE WHEN email LIKE '%%@%%' AND email NOT LIKE '%%@%%@%%'
                    AND btrim(split_part(email, '@', 2)) <> ''
               THEN 'redacted@' || lower(btrim(split_part(email, '@', 2)))
               ELSE 'redacted' END,
  anonymized_at = %(now)s
WHERE created_at < %(cutoff)s AND anonymized_at IS NULL
"""
    if db == "mariadb":
        return """
UPDATE events SET
  ip = CASE WHEN IS_IPV4(ip) THEN INET6_NTOA(CONCAT(LEFT(INET6_ATON(ip), 3), UNHEX('00')))
            WHEN IS_IPV6(ip)
            THEN INET6_NTOA(CONCAT(LEFT(INET6_ATON(ip), 6), UNHEX(REPEAT('00', 10))))
            ELSE NULL END,
  email = CASE WHEN email LIKE '%%@%%' AND email NOT LIKE '%%@%%@%%'
                    AND TRIM(SUBSTRING_INDEX(email, '@', -1)) <> ''
               THEN CONCAT('redacted@', LOWER(TRIM(SUBSTRING_INDEX(email, '@', -1))))
               ELSE 'redacted' END,
  anonymized_at = %(now)s
WHERE created_at < %(cutoff)s AND anonymized_at IS NULL
"""
    # SQLite has no address functions: string surgery that is exact for the generated
    # addresses (IPv4 dotted quads; IPv6 with eight non-zero groups, so no '::').
    third_colon = (
        "instr(ip, ':') + instr(substr(ip, instr(ip, ':') + 1), ':')"
        " + instr(substr(ip, instr(ip, ':') + instr(substr(ip, instr(ip, ':') + 1), ':') + 1),"
        " ':')"
    )
    return f"""
UPDATE events SET
  ip = CASE WHEN instr(ip, ':') = 0 THEN rtrim(ip, '0123456789') || '0'
            ELSE substr(ip, 1, {third_colon}) || ':' END,
  email = CASE WHEN email LIKE '%@%' AND email NOT LIKE '%@%@%'
                    AND trim(substr(email, instr(email, '@') + 1)) <> ''
               THEN 'redacted@' || lower(trim(substr(email, instr(email, '@') + 1)))
               ELSE 'redacted' END,
  anonymized_at = :now
WHERE created_at < :cutoff AND anonymized_at IS NULL
"""


# --- the child: one variant, one process ------------------------------------------------

#: Statement kinds, told apart by their text (see `classify`).
KINDS = (
    "count",
    "table_rows",
    "last_key",
    "next_bound",
    "select_keys",
    "select_batch",
    "delete",
    "update",
    "scratch",
    "audit",
    "partitions",
    "other",
)


def classify(statement: str) -> str:
    """Which of retention's statements `statement` is (by its SQL text)."""
    text = " ".join(statement.split()).lower()
    if "retention_audit" in text or "retention_runs" in text or "retention_outbox" in text:
        return "audit"
    if "retention_batch_values" in text and not text.startswith("update"):
        return "scratch"
    if (
        text.startswith(("lock table", "drop table", 'select count(*) from "'))
        or "detach partition" in text
        or "pg_get_partkeydef" in text
        or "relpartbound" in text
        or "part_high" in text
    ):
        # Finding, checking, counting, detaching and dropping whole partitions.
        return "partitions"
    if text.startswith("delete"):
        return "delete"
    if text.startswith("update"):
        return "update"
    if not text.startswith("select") or " from events" not in text:
        return "other"
    if "sum(case" in text:
        return "count"
    if "max(events.id)" in text or (" desc" in text and " limit " in text):
        return "last_key"
    if " limit " in text and text.endswith(" for update"):
        return "select_keys"  # the limit walk's locked key query (composite keys)
    if " limit " in text:
        return "next_bound"
    if text.startswith("select count(*)") and " where " not in text:
        return "table_rows"
    if text.startswith("select events.id, "):
        return "select_batch"
    if text.startswith("select events.id"):
        return "select_keys"
    return "other"


class Profile:
    """Time spent in each kind of statement, for every engine of this process."""

    def __init__(self, explain: bool = False) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.explain = explain
        self.plans: list[dict[str, Any]] = []
        self._started = 0.0
        self._kind = "other"

    def install(self) -> None:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", self._after)

    def _before(
        self,
        conn: sa.Connection,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        self._kind = classify(statement)
        calls = self.calls[self._kind]
        if self.explain and self._kind not in ("other", "audit") and calls in (0, 4):
            params = parameters[0] if executemany else parameters
            self.plans.append(
                {
                    "kind": self._kind,
                    "call": calls + 1,
                    "sql": statement,
                    "params": {k: str(v) for k, v in dict(params).items()}
                    if isinstance(params, dict)
                    else [str(v) for v in params],
                    "plan": explain_statement(conn, statement, params),
                }
            )
        self._started = time.perf_counter()

    def _after(self, *_args: Any) -> None:
        self.seconds[self._kind] += time.perf_counter() - self._started
        self.calls[self._kind] += 1


def explain_statement(conn: sa.Connection, statement: str, params: Any) -> str:
    """The database's plan for `statement` (executed and rolled back where that is how
    the database reports real row counts and times)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    dialect = conn.dialect.name
    is_write = statement.lstrip().upper().startswith(("DELETE", "UPDATE"))
    cur = raw.cursor()
    try:
        if dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + statement, params)
            return "\n".join(" | ".join(str(c) for c in row) for row in cur.fetchall())
        if dialect == "postgresql":
            if is_write:
                cur.execute("SAVEPOINT bench_explain")
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            text = "\n".join(str(row[0]) for row in cur.fetchall())
            if is_write:
                cur.execute("ROLLBACK TO SAVEPOINT bench_explain")
            return text
        if is_write:
            cur.execute("SAVEPOINT bench_explain")
        cur.execute("ANALYZE FORMAT=JSON " + statement, params)
        text = "\n".join(str(row[0]) for row in cur.fetchall())
        if is_write:
            cur.execute("ROLLBACK TO SAVEPOINT bench_explain")
        return text
    finally:
        cur.close()


@dataclass
class ChildSpec:
    db: Db
    url: str
    variant: str
    rows: int
    cap: float
    retention_cap: float
    explain: bool = False


def run_child(spec: ChildSpec) -> dict[str, Any]:
    """Run one variant in this process; return what it measured."""
    expired = expired_rows(spec.rows)
    result: dict[str, Any] = {
        "db": spec.db,
        "variant": spec.variant,
        "rows_target": expired,
        "rows": 0,
        "seconds": 0.0,
        "complete": False,
        "capped": False,
        "batches": [],
        "longest_txn": None,
        "setup_seconds": None,
        "error": None,
        "note": None,
    }
    # Import the driver and dialect before any clock starts, for every variant alike.
    sa.create_engine(spec.url, poolclass=sa.pool.NullPool).dispose()
    profile = Profile(explain=spec.explain)
    profile.install()
    try:
        if spec.variant.startswith("retention-"):
            _run_retention(spec, result)
        elif spec.variant.startswith("pt-archiver"):
            _run_pt_archiver(spec, result)
        elif spec.variant == "sketch-drop-partitioned":
            _run_drop_sketch(spec, result)
        elif spec.variant.startswith("sketch-"):
            _run_sketch(spec, result)
        else:
            _run_sql(spec, result)
    except Exception as exc:  # a variant that fails is reported, not fatal
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    result["profile"] = {
        k: [profile.calls[k], round(profile.seconds[k], 6)] for k in KINDS if profile.calls[k]
    }
    if profile.plans:
        result["explain"] = profile.plans
    result["maxrss_kb"] = peak_rss_kb()
    return result


def peak_rss_kb(pid: int | str = "self") -> int | None:
    """Peak resident set size of a process (VmHWM), in KiB.

    Not `ru_maxrss`: Linux carries the parent's peak over exec into the child's
    ``ru_maxrss``, so a child started by a large parent would report the parent's peak.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if pid == "self" else None


def _run_retention(spec: ChildSpec, result: dict[str, Any]) -> None:
    from retention.loader import load_text
    from retention.runner import RunOptions, run_once
    from retention.stores.purge import BatchDone

    action: Kind = "anonymize" if spec.variant == "retention-anonymize" else "delete"
    loaded = load_text(policy_text(spec.url, action), "bench.yaml", env={})
    batches: list[list[float]] = []
    drops: list[list[float]] = []
    marks: dict[str, float] = {}

    def on_batch(done: BatchDone) -> None:
        # A dropped partition is reported as a batch of size 0 (`_drop_partitions`);
        # row batches always have a size (a key-range width or a key count) of 1 or more.
        (drops if done.size == 0 else batches).append([done.seconds, done.rows, done.size])

    def on_start(*_args: Any) -> None:
        marks["start"] = time.perf_counter()

    started = time.perf_counter()
    deadline = started + spec.retention_cap if spec.retention_cap > 0 else None

    def should_stop() -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    report = run_once(
        loaded,
        NOW,
        RunOptions(as_of=NOW),
        env=AUDIT_ENV,
        should_stop=should_stop,
        on_batch=on_batch,
        on_start=on_start,
    )
    result["seconds"] = time.perf_counter() - started
    outcome = report.outcomes[0]
    if outcome.status not in ("ok", "stopped"):
        raise RuntimeError(f"rule {outcome.rule} {outcome.status}: {outcome.error}")
    result["rows"] = outcome.rows
    result["capped"] = outcome.status == "stopped"
    result["complete"] = outcome.status == "ok"
    result["planned"] = outcome.planned
    result["batches"] = batches
    result["longest_txn"] = max((b[0] for b in [*batches, *drops]), default=None)
    if outcome.result is not None and (drops or outcome.result.partitions):
        result["partitions"] = outcome.result.partitions
        result["drops"] = drops
        result["partition_rows"] = int(sum(d[1] for d in drops))
        result["batched_rows"] = int(sum(b[1] for b in batches))
        result["longest_drop"] = max((d[0] for d in drops), default=None)
        result["longest_batch"] = max((b[0] for b in batches), default=None)
    if "start" in marks:
        result["setup_seconds"] = marks["start"] - started


def _cutoff_params(db: Db) -> dict[str, Any]:
    if db == "sqlite":
        return {"cutoff": sqlite_time(CUTOFF), "now": sqlite_time(ANON_TIME)}
    return {"cutoff": CUTOFF, "now": ANON_TIME}


def _run_sql(spec: ChildSpec, result: dict[str, Any]) -> None:
    """The plain and naive variants, through SQLAlchemy's driver-level execute."""
    params = _cutoff_params(spec.db)
    ph = ":cutoff" if spec.db == "sqlite" else "%(cutoff)s"
    started = time.perf_counter()
    engine = sa.create_engine(spec.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if spec.variant in ("plain-delete", "plain-update", "plain-delete-partitioned"):
                sql = (
                    plain_update_sql(spec.db)
                    if spec.variant == "plain-update"
                    else f"DELETE FROM events WHERE created_at < {ph}"
                )
                with conn.begin():
                    begun = time.perf_counter()
                    rows = conn.exec_driver_sql(sql, params).rowcount
                result["longest_txn"] = time.perf_counter() - begun
                result["rows"] = rows
                result["complete"] = True
            else:
                if spec.variant == "naive-in-limit":
                    sql = (
                        f"DELETE FROM events WHERE id IN (SELECT id FROM events "
                        f"WHERE created_at < {ph} ORDER BY id LIMIT {CHUNK})"
                    )
                else:  # Sentry's BulkDeleteQuery (no order_by): src/sentry/db/deletion.py
                    sql = (
                        f"DELETE FROM events WHERE id = ANY(ARRAY(SELECT id FROM events "
                        f"WHERE created_at < {ph} LIMIT {CHUNK}))"
                    )
                batches: list[list[float]] = []
                while True:
                    begun = time.perf_counter()
                    with conn.begin():
                        rows = conn.exec_driver_sql(sql, params).rowcount
                    seconds = time.perf_counter() - begun
                    if rows <= 0:
                        result["complete"] = True
                        break
                    batches.append([seconds, rows, CHUNK])
                    result["rows"] += rows
                    if time.perf_counter() - started >= spec.cap:
                        result["capped"] = True
                        break
                result["batches"] = batches
                result["longest_txn"] = max((b[0] for b in batches), default=None)
    finally:
        engine.dispose()
    result["seconds"] = time.perf_counter() - started


def _sketch_update_sql(db: Db) -> str:
    """One UPDATE per batch, joined to the batch's new values (sent as one parameter)."""
    if db == "postgresql":
        return """
UPDATE events AS t SET ip = v.ip, email = v.email, anonymized_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(ips)s::varchar[], %(emails)s::varchar[]) AS v(id, ip, email)
WHERE t.id = v.id AND t.created_at < %(cutoff)s AND t.anonymized_at IS NULL
"""
    if db == "mariadb":
        return """
UPDATE events AS t JOIN JSON_TABLE(%(rows)s, '$[*]' COLUMNS (
    id BIGINT PATH '$[0]', ip VARCHAR(45) PATH '$[1]', email VARCHAR(120) PATH '$[2]')) AS v
  ON t.id = v.id
SET t.ip = v.ip, t.email = v.email, t.anonymized_at = %(now)s
WHERE t.created_at < %(cutoff)s AND t.anonymized_at IS NULL
"""
    return """
UPDATE events SET ip = v.ip, email = v.email, anonymized_at = :now
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS ip,
             json_extract(value, '$[2]') AS email FROM json_each(:rows)) AS v
WHERE events.id = v.id AND events.created_at < :cutoff AND events.anonymized_at IS NULL
"""


def _run_sketch(spec: ChildSpec, result: dict[str, Any]) -> None:
    """Not retention: a prototype of the batch shape proposed in bench/RESULTS.md.

    Same guarantees per batch as retention (keyset range with both bounds, the
    eligibility predicate re-checked by the writing statement, a keyed digest of the
    keys and a chained audit record in the same transaction, adaptive size toward
    100 ms between 500 and 50,000 rows, the same Python anonymization functions), but:
    one statement finds the batch's keys (and its upper bound) instead of an OFFSET
    probe plus a second key scan; rows are fetched with one ``fetchall``; the digest is
    one HMAC update over the same bytes; anonymized values are written by one UPDATE
    per batch instead of one UPDATE per row; and there is no count or table-size query
    up front.
    """
    import hashlib
    import hmac
    import uuid

    from retention.anonymize import anonymize_value
    from retention.audit.records import BatchRecord
    from retention.audit.sql import AuditTables, append
    from retention.policy import MaskEmailStrategy, TruncateIpStrategy

    anonymize = spec.variant == "sketch-anonymize"
    params = _cutoff_params(spec.db)

    def bind(name: str) -> str:
        return f":{name}" if spec.db == "sqlite" else f"%({name})s"

    pending = " AND anonymized_at IS NULL" if anonymize else ""
    eligible = f"created_at < {bind('cutoff')}{pending}"
    last_sql = f"SELECT id FROM events WHERE {eligible} ORDER BY id DESC LIMIT 1"
    columns = "id, ip, email" if anonymize else "id"
    keys_sql = (
        f"SELECT {columns} FROM events WHERE id > {bind('after')} AND id <= {bind('last')} "
        f"AND {eligible} ORDER BY id LIMIT {bind('n')}"
    )
    delete_sql = (
        f"DELETE FROM events WHERE id > {bind('after')} AND id <= {bind('upto')} AND {eligible}"
    )
    update_sql = _sketch_update_sql(spec.db)
    ip_strategy = TruncateIpStrategy(strategy="truncate_ip")
    email_strategy = MaskEmailStrategy(strategy="mask_email")
    audit = AuditTables()
    key = AUDIT_ENV["RETENTION_AUDIT_KEY"].encode()
    run_id, host = str(uuid.uuid4()), socket.gethostname()
    size, batches = 5000, list[list[float]]()
    started = time.perf_counter()
    engine = sa.create_engine(spec.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            with conn.begin():
                last = conn.exec_driver_sql(last_sql, params).scalar()
            after = 0
            while last is not None and after < last:
                begun = time.perf_counter()
                started_at = datetime.now(UTC)
                with conn.begin():
                    bounds = {**params, "after": after, "last": last, "n": size}
                    rows = conn.exec_driver_sql(keys_sql, bounds).fetchall()
                    if not rows:
                        break
                    keys = [r[0] for r in rows]
                    upto = keys[-1]
                    if anonymize:
                        ips = [anonymize_value(ip_strategy, r[1]) for r in rows]
                        emails = [anonymize_value(email_strategy, r[2]) for r in rows]
                        values: dict[str, Any] = {**params}
                        if spec.db == "postgresql":
                            values.update(ids=keys, ips=ips, emails=emails)
                        else:
                            values["rows"] = json.dumps(list(zip(keys, ips, emails, strict=True)))
                        done = conn.exec_driver_sql(update_sql, values).rowcount
                    else:
                        done = conn.exec_driver_sql(delete_sql, {**bounds, "upto": upto}).rowcount
                    blob = "".join(f"{k!r}\n" for k in keys).encode()
                    record = BatchRecord(
                        run_id=run_id,
                        rule=f"events-{'anonymize' if anonymize else 'delete'}",
                        rule_hash="0" * 64,
                        store="bench",
                        table_name="events",
                        action="anonymize" if anonymize else "delete",
                        cutoff=CUTOFF.replace(tzinfo=UTC),
                        batch=len(batches) + 1,
                        rows=done,
                        key_min=str(keys[0]),
                        key_max=str(upto),
                        key_digest=hmac.new(key, blob, hashlib.sha256).hexdigest(),
                        started_at=started_at,
                        committed_at=datetime.now(UTC),
                        host=host,
                        dry_run=False,
                        outcome="committed",
                    )
                    append(conn, audit, record)
                seconds = time.perf_counter() - begun
                batches.append([seconds, done, size])
                result["rows"] += done
                after = upto
                factor = 2.0 if seconds <= 0 else min(2.0, max(0.5, 0.1 / seconds))
                size = max(500, min(50_000, int(size * factor)))
    finally:
        engine.dispose()
    result["seconds"] = time.perf_counter() - started
    result["complete"] = True
    result["batches"] = batches
    result["longest_txn"] = max((b[0] for b in batches), default=None)


def _run_drop_sketch(spec: ChildSpec, result: dict[str, Any]) -> None:
    """Not retention: the floor of any partition-aware purge of the partitioned table.

    Each partition wholly past the cutoff is detached and dropped in a transaction of
    its own, then one ``DELETE ... WHERE created_at < :cutoff`` removes the expired
    rows of the straddling partition. No eligibility re-check, no count, no audit
    record, no batching (so its one DELETE is longer than retention's batches may be).
    The dropped partitions' rows are counted before the clock starts.
    """
    params = _cutoff_params(spec.db)
    names = droppable_partition_names()
    # Counted through psycopg directly: not part of the run, so not in its profile.
    with pg_connect(Target(spec.db, spec.url)) as raw:
        counts = [int(raw.execute(f"SELECT count(*) FROM {name}").fetchone()[0]) for name in names]
    engine = sa.create_engine(spec.url, poolclass=sa.pool.NullPool)
    try:
        started = time.perf_counter()
        drops: list[list[float]] = []
        with engine.connect() as conn:
            for name, rows in zip(names, counts, strict=True):
                begun = time.perf_counter()
                with conn.begin():
                    conn.exec_driver_sql(f"ALTER TABLE events DETACH PARTITION {name}")
                    conn.exec_driver_sql(f"DROP TABLE {name}")
                drops.append([time.perf_counter() - begun, rows, 0])
            begun = time.perf_counter()
            with conn.begin():
                deleted = conn.exec_driver_sql(
                    "DELETE FROM events WHERE created_at < %(cutoff)s", params
                ).rowcount
            batch = [time.perf_counter() - begun, deleted, deleted]
    finally:
        engine.dispose()
    result["seconds"] = time.perf_counter() - started
    result["rows"] = sum(counts) + deleted
    result["complete"] = True
    result["batches"] = [batch]
    result["longest_txn"] = max(batch[0], *(d[0] for d in drops))
    result["partitions"] = len(drops)
    result["drops"] = drops
    result["partition_rows"] = sum(counts)
    result["batched_rows"] = deleted
    result["longest_drop"] = max(d[0] for d in drops)
    result["longest_batch"] = batch[0]


def _run_pt_archiver(spec: ChildSpec, result: dict[str, Any]) -> None:
    exe = shutil.which("pt-archiver")
    if exe is None:
        raise RuntimeError("pt-archiver not found (apt-get install percona-toolkit)")
    url = sa.make_url(spec.url)
    dsn = f"h={url.host or '127.0.0.1'},P={url.port or 3306},u={url.username or 'root'}"
    if url.password:
        dsn += f",p={url.password}"
    dsn += f",D={url.database},t=events,A=utf8mb4"
    command = [
        exe,
        "--source",
        dsn,
        "--purge",
        "--bulk-delete",
        "--limit",
        str(CHUNK),
        "--where",
        f"created_at < '{CUTOFF:%Y-%m-%d %H:%M:%S}'",
        "--no-version-check",
        "--statistics",
    ]
    if spec.variant == "pt-archiver-commit-each":
        command.append("--commit-each")
    engine = sa.create_engine(spec.url, poolclass=sa.pool.NullPool)
    count = f"SELECT count(*) FROM events WHERE created_at < '{CUTOFF:%Y-%m-%d %H:%M:%S}'"
    try:
        with engine.connect() as conn:
            before = int(conn.exec_driver_sql(count).scalar() or 0)
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
            peak = 0
            while process.poll() is None:  # sample the tool's own peak RSS while it runs
                peak = max(peak, peak_rss_kb(process.pid) or 0)
                time.sleep(0.05)
            result["seconds"] = time.perf_counter() - started
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        result["children_maxrss_kb"] = peak or None
        with engine.connect() as conn:
            after = int(conn.exec_driver_sql(count).scalar() or 0)
    finally:
        engine.dispose()
    if process.returncode != 0:
        raise RuntimeError(f"pt-archiver exited {process.returncode}: {stderr.strip()[:300]}")
    result["rows"] = before - after
    result["complete"] = after == 0
    result["command"] = " ".join(command)
    result["statistics"] = stdout.strip()
    match = re.search(r"^bulk_deleting\s+(\d+)\s+([\d.]+)", stdout, re.MULTILINE)
    if match and int(match.group(1)):
        # pt-archiver does not report single transactions; the mean DELETE is a floor.
        result["note"] = f"mean DELETE {float(match.group(2)) / int(match.group(1)):.3f} s"


# --- the parent: load, run every variant in a child, verify, summarize -------------------


def child_command(spec: ChildSpec, out: Path) -> list[str]:
    payload = json.dumps(spec.__dict__)
    return [sys.executable, str(Path(__file__).resolve()), "--child", payload, "--out", str(out)]


def spawn(spec: ChildSpec, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="h4_bench_") as tmp:
        out = Path(tmp) / "result.json"
        done = subprocess.run(
            child_command(spec, out), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0 or not out.exists():
            return {
                "db": spec.db,
                "variant": spec.variant,
                "error": f"child exited {done.returncode}: {done.stderr.strip()[-500:]}",
            }
        loaded: dict[str, Any] = json.loads(out.read_text())
        return loaded


def verify(target: Target, variant: Variant, result: dict[str, Any], seed_table: str) -> str:
    """Check the data after a complete run: 'ok' or what is wrong."""
    if result.get("error") or not result.get("complete"):
        return "skipped (incomplete)"
    rows = int(result["rows_target"] / EXPIRED_FRACTION + 0.5)
    params = _cutoff_params(target.db)
    ph = ":cutoff" if target.db == "sqlite" else "%(cutoff)s"
    engine = sa.create_engine(target.url, poolclass=sa.pool.NullPool)
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            total = conn.exec_driver_sql("SELECT count(*) FROM events").scalar()
            old = conn.exec_driver_sql(
                f"SELECT count(*) FROM events WHERE created_at < {ph}", params
            ).scalar()
            if variant.kind == "delete":
                if old != 0:
                    problems.append(f"{old} expired rows left")
                if total != rows - result["rows_target"]:
                    problems.append(f"{total} rows left, expected {rows - result['rows_target']}")
                if variant.table == "partitioned":
                    problems.extend(_check_partitioned(conn, variant, result, seed_table))
            else:
                done = conn.exec_driver_sql(
                    "SELECT count(*) FROM events WHERE anonymized_at IS NOT NULL"
                ).scalar()
                if done != result["rows_target"] or total != rows:
                    problems.append(f"{done} rows marked, {total} rows in the table")
                problems.extend(_check_anonymized(target, conn, seed_table, ph, params))
    finally:
        engine.dispose()
    return "ok" if not problems else "; ".join(problems)


def _check_partitioned(
    conn: sa.Connection, variant: Variant, result: dict[str, Any], seed_table: str
) -> list[str]:
    """After a delete on the partitioned table: exactly the seed's live rows remain, with
    their values; exactly the partitions wholly past the cutoff are gone (none for the
    plain DELETE); a variant that drops partitions reports the seed's row counts for the
    dropped partitions and for the rest; for retention the audit trail says the same."""
    problems: list[str] = []
    params = _cutoff_params("postgresql")
    live = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
    same = conn.exec_driver_sql(
        f"SELECT count(*) FROM events e JOIN {seed_table} s USING ({COLUMNS}) "
        "WHERE s.created_at >= %(cutoff)s",
        params,
    ).scalar_one()
    if same != live:
        problems.append(f"{live - same} remaining rows are not the seed's live rows")
    leaves = {
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass"
        )
    }
    every = {name for name, _low, _high in partition_bounds()}
    dropped = sorted(every - leaves)
    drops = variant.name != "plain-delete-partitioned"
    expected = droppable_partition_names() if drops else []
    if dropped != expected:
        problems.append(f"partitions gone: {dropped or 'none'}, expected {expected or 'none'}")
    if not drops:
        return problems
    straddling = next(low for _name, low, high in partition_bounds() if low < CUTOFF < high)
    in_dropped = conn.exec_driver_sql(
        f"SELECT count(*) FROM {seed_table} WHERE created_at < %(low)s", {"low": straddling}
    ).scalar_one()
    batched = result["rows_target"] - in_dropped
    if result.get("partitions") != len(expected) or result.get("partition_rows") != in_dropped:
        problems.append(
            f"run reports {result.get('partitions')} partitions ({result.get('partition_rows')} "
            f"rows) dropped, expected {len(expected)} ({in_dropped})"
        )
    if result.get("batched_rows") != batched:
        problems.append(f"{result.get('batched_rows')} rows in batches, expected {batched}")
    if not variant.name.startswith("retention-"):
        return problems
    audit = {
        action: (int(n), int(rows))
        for action, n, rows in conn.exec_driver_sql(
            "SELECT action, count(*), sum(rows) FROM retention_audit GROUP BY action"
        )
    }
    if audit.get("drop_partition") != (len(expected), in_dropped):
        problems.append(f"audit drop_partition records {audit.get('drop_partition')}")
    if (audit.get("delete") or (0, 0))[1] != batched:
        problems.append(f"audit delete records {audit.get('delete')}")
    return problems


def _check_anonymized(
    target: Target, conn: sa.Connection, seed_table: str, ph: str, params: dict[str, Any]
) -> list[str]:
    """Compare 600 expired and 100 live rows with what retention's Python strategies make."""
    from retention.anonymize import anonymize_value
    from retention.policy import MaskEmailStrategy, TruncateIpStrategy

    if target.db == "sqlite":
        path = sqlite_seed_path(target, *_seed_args(seed_table))
        conn.exec_driver_sql(f"ATTACH DATABASE '{path}' AS seed")
        source = f"seed.{seed_table}"
    else:
        source = seed_table
    try:
        query = (
            f"SELECT s.id, s.ip, s.email, e.ip, e.email FROM {source} s JOIN events e "
            f"ON e.id = s.id WHERE s.created_at {{op}} {ph} ORDER BY s.id {{order}} LIMIT {{n}}"
        )
        rows: list[Any] = []
        for op, order, n in (("<", "ASC", 300), ("<", "DESC", 300), (">=", "ASC", 100)):
            rows += [
                (op, r) for r in conn.exec_driver_sql(query.format(op=op, order=order, n=n), params)
            ]
    finally:
        if target.db == "sqlite":
            conn.rollback()
            conn.exec_driver_sql("DETACH DATABASE seed")
    ip = TruncateIpStrategy(strategy="truncate_ip")
    email = MaskEmailStrategy(strategy="mask_email")
    wrong = 0
    for op, (_id, s_ip, s_email, e_ip, e_email) in rows:
        if op == "<":
            expected = (anonymize_value(ip, s_ip), anonymize_value(email, s_email))
        else:
            expected = (s_ip, s_email)
        wrong += (e_ip, e_email) != expected
    return (
        [f"{wrong} of {len(rows)} sampled rows differ from retention's strategies"] if wrong else []
    )


def _seed_args(seed_table: str) -> tuple[int, str, int]:
    match = re.fullmatch(r"bench_seed_(\w+?)_(\d+)_s(\d+)_g\d+", seed_table)
    assert match is not None
    return int(match.group(2)), match.group(1), int(match.group(3))


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def machine_facts(targets: Sequence[Target]) -> dict[str, Any]:
    from importlib.metadata import version

    facts: dict[str, Any] = {
        "host": socket.gethostname(),
        "nproc": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "psycopg": version("psycopg"),
        "pymysql": version("pymysql"),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "retention_commit": _git("rev-parse", "HEAD"),
        "retention_uncommitted": _git("status", "--short", "retention"),
    }
    try:
        with open("/proc/meminfo") as meminfo:
            facts["memory"] = meminfo.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    exe = shutil.which("pt-archiver")
    if exe:
        facts["pt_archiver"] = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    for target in targets:
        engine = sa.create_engine(target.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                if target.db == "postgresql":
                    facts["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
                    facts["postgresql_settings"] = {
                        name: conn.exec_driver_sql(f"SHOW {name}").scalar()
                        for name in (
                            "shared_buffers",
                            "synchronous_commit",
                            "max_wal_size",
                            "autovacuum",
                            "work_mem",
                        )
                    }
                elif target.db == "mariadb":
                    facts["mariadb"] = conn.exec_driver_sql("SELECT VERSION()").scalar()
                    row = conn.exec_driver_sql(
                        "SELECT @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, "
                        "@@innodb_flush_method, @@log_bin"
                    ).one()
                    facts["mariadb_settings"] = {
                        "innodb_buffer_pool_size": row[0],
                        "innodb_flush_log_at_trx_commit": row[1],
                        "innodb_flush_method": row[2],
                        "log_bin": row[3],
                    }
                else:
                    facts["sqlite_settings"] = {
                        "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                        "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                    }
        except sa.exc.DBAPIError as exc:
            facts[f"{target.db}_error"] = str(exc).splitlines()[0]
        finally:
            engine.dispose()
    return facts


# --- summary ----------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def decile_ratio(batches: Sequence[Sequence[float]], per_row: bool) -> float | None:
    """Mean time of the last 10 % of batches over the first 10 % (or per row)."""
    if len(batches) < 2:
        return None
    k = max(1, round(len(batches) / 10))
    first, last = batches[:k], batches[-k:]

    def mean(part: Sequence[Sequence[float]]) -> float:
        if per_row:
            return sum(b[0] for b in part) / max(1.0, sum(b[1] for b in part))
        return sum(b[0] for b in part) / len(part)

    return mean(last) / mean(first) if mean(first) > 0 else None


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (db, variant): medians over repeats and per-repeat ratios."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        by_key.setdefault((run["db"], run["variant"]), []).append(run)
    summary: list[dict[str, Any]] = []
    for (db, name), group in by_key.items():
        variant = next(v for v in VARIANTS if v.name == name)
        good = [r for r in group if not r.get("error") and r.get("seconds")]
        rates = [r["rows"] / r["seconds"] for r in good if r["rows"]]
        ratios: list[float] = []
        vs_tools: dict[str, list[float]] = {}
        for run in good:
            base = _same_repeat(runs, db, baseline_of(variant), run.get("repeat"))
            if base and run["rows"]:
                ratios.append((run["rows"] / run["seconds"]) / (base["rows"] / base["seconds"]))
            for tool in TOOLS:
                other = _same_repeat(runs, db, tool, run.get("repeat"))
                if other and run["rows"] and not name.startswith("pt-archiver"):
                    rate = (run["rows"] / run["seconds"]) / (other["rows"] / other["seconds"])
                    vs_tools.setdefault(tool, []).append(rate)
        longest = [r["longest_txn"] for r in good if r.get("longest_txn") is not None]
        batches = [r["batches"] for r in good if len(r.get("batches") or []) >= 2]
        profiles: dict[str, list[float]] = {}
        for run in good:
            for kind, (_calls, secs) in (run.get("profile") or {}).items():
                profiles.setdefault(kind, []).append(secs)
        summary.append(
            {
                "db": db,
                "variant": name,
                "repeats": len(group),
                "errors": sorted({r["error"] for r in group if r.get("error")}),
                "rows": _median([r["rows"] for r in good]),
                "rows_target": group[0].get("rows_target"),
                "seconds": _median([r["seconds"] for r in good]),
                "rows_per_s": _median(rates),
                "ratio": _median(ratios),
                "ratio_range": [min(ratios), max(ratios)] if ratios else None,
                "vs_tools": {tool: _median(v) for tool, v in vs_tools.items()},
                "capped": any(r.get("capped") for r in good),
                "extrapolated_seconds": _median(
                    [r["rows_target"] / (r["rows"] / r["seconds"]) for r in good if r["rows"]]
                )
                if any(r.get("capped") for r in good)
                else None,
                "longest_txn": _median(longest),
                "longest_txn_worst": max(longest) if longest else None,
                "batches": _median([len(r.get("batches") or []) for r in good]),
                "decile_time": _median(
                    [x for b in batches if (x := decile_ratio(b, False)) is not None]
                ),
                "decile_per_row": _median(
                    [x for b in batches if (x := decile_ratio(b, True)) is not None]
                ),
                "setup_seconds": _median(
                    [r["setup_seconds"] for r in good if r.get("setup_seconds") is not None]
                ),
                "profile": {k: statistics.median(v) for k, v in profiles.items()},
                "maxrss_mb": max((r.get("maxrss_kb") or 0) for r in group) / 1024,
                "children_maxrss_mb": max((r.get("children_maxrss_kb") or 0) for r in group) / 1024
                or None,
                "verified": sorted({str(r.get("verified")) for r in group}),
                "purge_wait": _median([r["purge_wait"] for r in group if "purge_wait" in r]),
                **_partition_summary(good),
            }
        )
    return summary


def _partition_summary(good: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians of what a run on the partitioned table did with partitions and batches."""
    runs = [r for r in good if "partitions" in r]
    if not runs:
        return {}

    def med(key: str) -> Any:
        return _median([r[key] for r in runs if r.get(key) is not None])

    return {
        "partitions": med("partitions"),
        "partition_rows": med("partition_rows"),
        "batched_rows": med("batched_rows"),
        "longest_drop": med("longest_drop"),
        "longest_drop_worst": max((r["longest_drop"] or 0.0) for r in runs) or None,
        "longest_batch": med("longest_batch"),
        "longest_batch_worst": max((r["longest_batch"] or 0.0) for r in runs) or None,
    }


def _same_repeat(
    runs: Sequence[dict[str, Any]], db: str, variant: str, repeat: Any
) -> dict[str, Any] | None:
    for run in runs:
        if (
            run["db"] == db
            and run["variant"] == variant
            and run.get("repeat") == repeat
            and not run.get("error")
            and run.get("rows")
            and run.get("seconds")
        ):
            return run
    return None


def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else f"{value}{suffix}"


def markdown(summary: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"rows={meta['rows']:,} layout={meta['layout']} repeat={meta['repeat']} "
        f"seed={meta['seed']} cap={meta['cap']}s",
        "",
        "| db | variant | rows done | s (median) | rows/s | ratio to plain (range) "
        "| longest txn s (worst) | batches | last/first decile: time, per row | peak RSS MB "
        "| verified |",
        "|---|---|---:|---:|---:|---|---|---:|---|---:|---|",
    ]
    for s in summary:
        ratio = _fmt(s["ratio"]) + "x" if s["ratio"] is not None else "-"
        if s["ratio_range"]:
            ratio += f" ({s['ratio_range'][0]:.2f}-{s['ratio_range'][1]:.2f})"
        rows = _fmt(s["rows"] if s["rows"] is None else int(s["rows"]))
        if s["capped"]:
            rows += (
                f" of {s['rows_target']:,} (capped; est. {_fmt(s['extrapolated_seconds'], 0)} s)"
            )
        if s["errors"]:
            rows = "error: " + "; ".join(s["errors"])[:160]
        rss = _fmt(s["maxrss_mb"], 0)
        if s["children_maxrss_mb"]:
            rss += f" (+ tool {s['children_maxrss_mb']:.0f})"
        lines.append(
            f"| {s['db']} | {s['variant']} | {rows} | {_fmt(s['seconds'])} "
            f"| {_fmt(s['rows_per_s'], 0)} | {ratio} "
            f"| {_fmt(s['longest_txn'], 3)} ({_fmt(s['longest_txn_worst'], 3)}) "
            f"| {_fmt(s['batches'] if s['batches'] is None else int(s['batches']))} "
            f"| {_fmt(s['decile_time'])}, {_fmt(s['decile_per_row'])} | {rss} "
            f"| {', '.join(s['verified'])} |"
        )
    lines += ["", "Where the retention variants spend their time (median seconds per run):", ""]
    lines.append("| db | variant | total | before first batch | " + " | ".join(KINDS) + " |")
    lines.append("|---|---|---:|---:|" + "---:|" * len(KINDS))
    for s in summary:
        if not s["variant"].startswith("retention-"):
            continue
        cells = " | ".join(_fmt(s["profile"].get(k), 3) for k in KINDS)
        lines.append(
            f"| {s['db']} | {s['variant']} | {_fmt(s['seconds'], 3)} "
            f"| {_fmt(s['setup_seconds'], 3)} | {cells} |"
        )
    parted = [s for s in summary if "partitions" in s]
    if parted:
        lines += [
            "",
            "Partitioned table: what retention dropped and what it deleted in batches "
            "(medians; longest: median of the per-run longest, worst in brackets):",
            "",
            "| db | variant | partitions dropped | rows in dropped partitions | rows in batches "
            "| batches | longest drop s | longest batch s |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        for s in parted:
            lines.append(
                f"| {s['db']} | {s['variant']} | {_fmt(s['partitions'])} "
                f"| {_fmt(s['partition_rows'])} | {_fmt(s['batched_rows'])} "
                f"| {_fmt(s['batches'] if s['batches'] is None else int(s['batches']))} "
                f"| {_fmt(s['longest_drop'], 3)} ({_fmt(s['longest_drop_worst'], 3)}) "
                f"| {_fmt(s['longest_batch'], 3)} ({_fmt(s['longest_batch_worst'], 3)}) |"
            )
    pt = [s for s in summary if s["vs_tools"]]
    if pt:
        lines += ["", "Against pt-archiver (median of per-repeat rate ratios):", ""]
        lines += [
            f"- {s['db']} {s['variant']}: "
            + ", ".join(f"{ratio:.2f}x {tool}" for tool, ratio in s["vs_tools"].items())
            for s in pt
        ]
    return "\n".join(lines)


def targets(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The brief's targets, judged on this run's figures."""
    get = {(s["db"], s["variant"]): s for s in summary}
    out: list[str] = []

    def judge(label: str, value: float | None, goal: float, above: bool = True) -> None:
        if value is None:
            out.append(f"- {label}: not measured")
            return
        met = value >= goal if above else value <= goal
        out.append(
            f"- {label}: {value:.2f} (goal {'>=' if above else '<='} {goal}) -> "
            f"{'met' if met else 'MISSED'}"
        )

    for db, goal in (("postgresql", 0.85), ("sqlite", 0.8)):
        s = get.get((db, "retention-delete"))
        if s:
            judge(f"{db} retention-delete / plain-delete", s["ratio"], goal)
            judge(
                f"{db} retention-delete longest transaction (s)",
                s["longest_txn_worst"],
                0.1,
                above=False,
            )
    s = get.get(("postgresql", "retention-anonymize"))
    if s:
        judge("postgresql retention-anonymize / plain-update", s["ratio"], 1.0)
    for s in summary:
        if s["variant"].startswith("retention-"):
            judge(
                f"{s['db']} {s['variant']} last/first decile batch time",
                s["decile_time"],
                1.5,
                above=False,
            )
    s = get.get(("mariadb", "retention-delete"))
    if s:
        for tool, ratio in s["vs_tools"].items():
            judge(f"mariadb retention-delete / {tool}", ratio, 1.0)
    s = get.get(("postgresql", "retention-delete-partitioned"))
    if s:
        judge(
            "partition drop >= 3x plain DELETE: postgresql retention-delete-partitioned / "
            "plain-delete-partitioned",
            s["ratio"],
            3.0,
        )
    return out


def compare_rss(summary: Sequence[dict[str, Any]], baseline: Path) -> list[str]:
    """Peak RSS of this run against a run at another size (`--rss-baseline`)."""
    other = json.loads(baseline.read_text())
    base = {(s["db"], s["variant"]): s for s in other["summary"]}
    lines = []
    for s in summary:
        b = base.get((s["db"], s["variant"]))
        if b and b["maxrss_mb"]:
            change = s["maxrss_mb"] / b["maxrss_mb"] - 1
            lines.append(
                f"- {s['db']} {s['variant']}: {b['maxrss_mb']:.0f} MB at "
                f"{other['meta']['rows']:,} rows -> {s['maxrss_mb']:.0f} MB at "
                f"{s['rows_target'] and int(s['rows_target'] / EXPIRED_FRACTION + 0.5):,} rows "
                f"({change:+.1%}; goal within 10 % -> {'met' if abs(change) <= 0.10 else 'MISSED'})"
            )
    return lines


# --- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark `retention run` against plain SQL purges.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--db", choices=[*DBS, "all"], default="all")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layout", choices=["ordered", "shuffled"], default="ordered")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--mariadb-url", default=DEFAULT_MARIADB_URL)
    parser.add_argument(
        "--sqlite-url", default=f"sqlite:///{DEFAULT_SQLITE_DIR}/events.db", help="a file URL"
    )
    parser.add_argument(
        "--variants",
        default="all",
        help="comma-separated list of: "
        + ", ".join(v.name for v in VARIANTS)
        + " ('all': every variant but the sketch-* diagnostics)",
    )
    parser.add_argument(
        "--cap", type=float, default=60.0, help="seconds after which naive variants stop"
    )
    parser.add_argument(
        "--retention-cap",
        type=float,
        default=0.0,
        help="stop retention variants after this many seconds (0: run to completion)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="run each retention variant once, printing the plans of its statements",
    )
    parser.add_argument(
        "--phases",
        type=int,
        metavar="BATCH",
        help="diagnostic: time each phase of a keyset delete loop with BATCH rows per batch, "
        "for several statement shapes (see phases_main), --repeat times",
    )
    parser.add_argument(
        "--rss-baseline", type=Path, help="results JSON of another size to compare peak RSS"
    )
    parser.add_argument(
        "--cleanup", action="store_true", help="drop the benchmark's tables and files, then exit"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 10:
        parser.error("--rows must be at least 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = ChildSpec(**json.loads(args.child))
        args.out.write_text(json.dumps(run_child(spec)))
        return 0

    urls: dict[Db, str] = {
        "sqlite": args.sqlite_url,
        "postgresql": args.pg_url,
        "mariadb": args.mariadb_url,
    }
    dbs: list[Db] = list(DBS) if args.db == "all" else [args.db]
    targets_ = [Target(db, urls[db]) for db in dbs]
    for target in targets_:
        if target.db == "sqlite":
            Path(str(target.parts.database)).parent.mkdir(parents=True, exist_ok=True)
    if args.cleanup:
        for target in targets_:
            cleanup(target)
        return 0

    wanted = None if args.variants == "all" else set(args.variants.split(","))
    unknown = (wanted or set()) - {v.name for v in VARIANTS}
    if unknown:
        print(f"unknown variants: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.explain:
        return explain_main(args, targets_, wanted)
    if args.phases:
        return phases_main(args, targets_)

    meta: dict[str, Any] = {
        "rows": args.rows,
        "layout": args.layout,
        "repeat": args.repeat,
        "seed": args.seed,
        "cap": args.cap,
        "retention_cap": args.retention_cap,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(targets_),
    }
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for target in targets_:
        ensure_seed(target, args.rows, args.layout, args.seed)
        seed_table = seed_name(args.rows, args.layout, args.seed)
        variants = [
            v
            for v in VARIANTS
            if target.db in v.dbs and (v.name in wanted if wanted else not v.diagnostic)
        ]
        for repeat in range(args.repeat):
            for variant in variants:
                unsupported = target.db == "mariadb" and variant.name == "naive-in-limit"
                if unsupported and repeat > 0:
                    continue  # the error does not depend on the data: shown once
                if not unsupported:
                    reload(target, args.rows, args.layout, args.seed, variant.table)
                spec = ChildSpec(
                    target.db, target.url, variant.name, args.rows, args.cap, args.retention_cap
                )
                result = spawn(spec, timeout=max(3600.0, args.cap * 10))
                result["repeat"] = repeat
                if target.db == "mariadb" and not unsupported:
                    result["purge_wait"] = wait_for_purge(target, limit=600)
                result["verified"] = verify(target, variant, result, seed_table)
                runs.append(result)
                log(
                    f"{target.db} #{repeat + 1} {variant.name}: {result.get('rows')} rows in "
                    f"{result.get('seconds', 0):.2f} s; longest txn "
                    f"{_fmt(result.get('longest_txn'), 3)} s; "
                    f"rss {(result.get('maxrss_kb') or 0) / 1024:.0f} MB; "
                    + (
                        f"{result['partitions']} partitions dropped "
                        f"({result['partition_rows']} rows), {result['batched_rows']} rows "
                        "in batches; "
                        if "partitions" in result
                        else ""
                    )
                    + f"{result.get('error') or result['verified']}"
                )
                _write(args.out, meta, runs, started)
    summary = _write(args.out, meta, runs, started)
    print(markdown(summary, meta))
    print("\nTargets:\n" + "\n".join(targets(summary)))
    if args.rss_baseline:
        print(
            "\nPeak RSS against the baseline run:\n"
            + "\n".join(compare_rss(summary, args.rss_baseline))
        )
    return 0


def _write(
    out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], started: float
) -> list[dict[str, Any]]:
    summary = summarize(runs)
    meta["wall_seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    return summary


#: Statement shapes `--phases` compares; every one deletes the same rows in key order.
SHAPES = {
    "plain": "one DELETE of every expired row (the reference)",
    "retention": "retention's statements: OFFSET bound probe, key SELECT, range DELETE, "
    "digest with retention.audit.records.key_digest",
    "keys-limit": "one key SELECT with LIMIT n gives keys and bound, range DELETE, "
    "digest in one HMAC update",
    "no-keys": "OFFSET bound probe, range DELETE, no keys and no digest (the floor of batching)",
    "sql-digest": "one aggregate query returns the bound and the digest's input text "
    "(string_agg / group_concat of the keys), range DELETE, digest in one HMAC update",
}


def _phase_sql(db: Db) -> dict[str, str]:
    def bind(name: str) -> str:
        return f":{name}" if db == "sqlite" else f"%({name})s"

    expired = f"created_at < {bind('cutoff')}"
    batch = (
        f"SELECT id FROM events WHERE id > {bind('after')} AND id <= {bind('last')} "
        f"AND {expired} ORDER BY id LIMIT {bind('n')}"
    )
    newline_joined = {
        "postgresql": "string_agg(id::text || E'\\n', '' ORDER BY id)",
        "mariadb": "CONCAT(GROUP_CONCAT(id ORDER BY id SEPARATOR '\\n'), '\\n')",
        # SQLite 3.40 has no ORDER BY inside aggregates; the ordered subquery feeds it.
        "sqlite": "group_concat(id || char(10), '')",
    }[db]
    return {
        "plain": f"DELETE FROM events WHERE {expired}",
        "last": f"SELECT id FROM events WHERE {expired} ORDER BY id DESC LIMIT 1",
        "bound": (
            f"SELECT id FROM events WHERE id > {bind('after')} AND id <= {bind('last')} "
            f"AND {expired} ORDER BY id LIMIT 1 OFFSET {bind('skip')}"
        ),
        "keys": (
            f"SELECT id FROM events WHERE id > {bind('after')} AND id <= {bind('upto')} "
            f"AND {expired} ORDER BY id"
        ),
        "batch": batch,
        "aggregate": f"SELECT max(id), count(*), {newline_joined} FROM ({batch}) AS b",
        "delete": (
            f"DELETE FROM events WHERE id > {bind('after')} AND id <= {bind('upto')} AND {expired}"
        ),
    }


def phase_loop(target: Target, shape: str, size: int) -> dict[str, Any]:
    """Delete every expired row in batches of `size` keys with statement shape `shape`,
    one transaction (with retention's audit append) per batch; time every phase."""
    import hashlib
    import hmac

    from retention.audit.records import BatchRecord, key_digest
    from retention.audit.sql import AuditTables, append

    sql = _phase_sql(target.db)
    params = _cutoff_params(target.db)
    secret = AUDIT_ENV["RETENTION_AUDIT_KEY"].encode()
    audit = AuditTables()
    phases: dict[str, float] = {}
    rows = batches = 0
    engine = sa.create_engine(target.url, poolclass=sa.pool.NullPool)
    engine.dispose()  # imports done
    started = clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - clock
        clock = now

    try:
        with engine.connect() as conn:
            if target.db == "mariadb":
                conn.exec_driver_sql("SET SESSION group_concat_max_len = 1073741824")
                conn.commit()
            if shape == "plain":
                with conn.begin():
                    rows = conn.exec_driver_sql(sql["plain"], params).rowcount
                    tick("delete")
                tick("commit")
                batches = 1
            else:
                with conn.begin():
                    last = conn.exec_driver_sql(sql["last"], params).scalar()
                tick("last_key")
                after = 0
                while last is not None and after < last:
                    step = {**params, "after": after, "last": last, "skip": size - 1, "n": size}
                    digest: str | None = None
                    transaction = conn.begin()
                    if shape in ("retention", "no-keys"):
                        upto = conn.exec_driver_sql(sql["bound"], step).scalar() or last
                        tick("bound")
                        if shape == "retention":
                            found = conn.exec_driver_sql(sql["keys"], {**step, "upto": upto})
                            keys = [row[0] for row in found]
                            tick("keys")
                    elif shape == "keys-limit":
                        keys = [r[0] for r in conn.exec_driver_sql(sql["batch"], step).fetchall()]
                        upto = keys[-1]
                        tick("keys")
                    else:
                        upto, _count, text = conn.exec_driver_sql(sql["aggregate"], step).one()
                        tick("keys")
                    done = conn.exec_driver_sql(sql["delete"], {**step, "upto": upto}).rowcount
                    tick("delete")
                    if shape == "retention":
                        digest = key_digest(keys, secret)
                    elif shape == "keys-limit":
                        blob = "".join(f"{k!r}\n" for k in keys).encode()
                        digest = hmac.new(secret, blob, hashlib.sha256).hexdigest()
                    elif shape == "sql-digest":
                        digest = hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()
                    tick("digest")
                    now = datetime.now(UTC)
                    record = BatchRecord(
                        run_id="phases",
                        rule="events-delete",
                        rule_hash="0" * 64,
                        store="bench",
                        table_name="events",
                        action="delete",
                        cutoff=CUTOFF.replace(tzinfo=UTC),
                        batch=batches + 1,
                        rows=done,
                        key_min=None,
                        key_max=str(upto),
                        key_digest=digest,
                        started_at=now,
                        committed_at=now,
                        host="bench",
                        dry_run=False,
                        outcome="committed",
                    )
                    append(conn, audit, record)
                    tick("audit")
                    transaction.commit()
                    tick("commit")
                    rows += done
                    batches += 1
                    after = upto
    finally:
        engine.dispose()
    return {
        "shape": shape,
        "rows": rows,
        "batches": batches,
        "seconds": time.perf_counter() - started,
        "phases": phases,
    }


def phases_main(args: argparse.Namespace, targets_: Sequence[Target]) -> int:
    """`--phases BATCH`: where the time of a batched delete goes, shape by shape."""
    columns = ("last_key", "bound", "keys", "delete", "digest", "audit", "commit")
    out: list[dict[str, Any]] = []
    for target in targets_:
        ensure_seed(target, args.rows, args.layout, args.seed)
        for repeat in range(args.repeat):
            for shape in SHAPES:
                reload(target, args.rows, args.layout, args.seed)
                result = phase_loop(target, shape, args.phases)
                result.update(db=target.db, repeat=repeat)
                out.append(result)
                log(f"{target.db} #{repeat + 1} {shape}: {result['seconds']:.2f} s")
    print(
        f"rows={args.rows:,} layout={args.layout} batch={args.phases:,} repeat={args.repeat} "
        "(median seconds over repeats; ratio: median of per-repeat rate ratios to plain)\n"
    )
    print("| db | shape | batches | s | ratio to plain | " + " | ".join(columns) + " |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(columns))
    for target in targets_:
        for shape in SHAPES:
            runs = [r for r in out if r["db"] == target.db and r["shape"] == shape]
            ratios = []
            for run in runs:
                plain = next(
                    r
                    for r in out
                    if r["db"] == target.db
                    and r["shape"] == "plain"
                    and r["repeat"] == run["repeat"]
                )
                ratios.append((run["rows"] / run["seconds"]) / (plain["rows"] / plain["seconds"]))
            cells = " | ".join(
                _fmt(_median([r["phases"].get(c, 0.0) for r in runs]), 3)
                if any(c in r["phases"] for r in runs)
                else "-"
                for c in columns
            )
            print(
                f"| {target.db} | {shape} | {runs[0]['batches']} "
                f"| {_fmt(_median([r['seconds'] for r in runs]))} "
                f"| {_fmt(_median(ratios))}x | {cells} |"
            )
    print("\nShapes:\n" + "\n".join(f"- {k}: {v}" for k, v in SHAPES.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"batch": args.phases, "runs": out}, indent=1))
    return 0


def explain_main(
    args: argparse.Namespace, targets_: Sequence[Target], wanted: set[str] | None
) -> int:
    """Run each retention variant once with every statement's plan captured (not timed)."""
    for target in targets_:
        ensure_seed(target, args.rows, args.layout, args.seed)
        for variant in VARIANTS:
            if not variant.name.startswith("retention-"):
                continue
            if wanted is not None and variant.name not in wanted:
                continue
            if target.db not in variant.dbs:
                continue
            reload(target, args.rows, args.layout, args.seed, variant.table)
            spec = ChildSpec(
                target.db, target.url, variant.name, args.rows, args.cap, 60.0, explain=True
            )
            result = spawn(spec, timeout=3600)
            print(f"\n===== {target.db} {variant.name} ({args.rows:,} rows, {args.layout})")
            if result.get("error"):
                print("error:", result["error"])
            for plan in result.get("explain") or []:
                print(f"\n--- {plan['kind']} (call {plan['call']}) params {plan['params']}")
                print(plan["sql"].strip())
                print(plan["plan"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
