"""Strategies computed in SQL give exactly what `retention.anonymize` gives, for every
value their guard (`SqlStrategy.exact`) admits, and the guard never makes the database
fail on a value it does not admit. Checked on real SQLite and PostgreSQL with generated
values (addresses in every text form, e-mails, arbitrary text)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention.anonymize import anonymize_row, anonymize_value
from retention.loader import load_text
from retention.policy import (
    MaskEmailStrategy,
    NullStrategy,
    RedactStrategy,
    Strategy,
    TruncateIpStrategy,
)
from retention.runner import RunOptions, run_once
from retention.stores.sqlstrategies import in_sql, register_functions
from tests.conftest import MARIADB_URL, NOW, POSTGRES_URL, _server

META = sa.MetaData()
VALUES = sa.Table(
    "sqlstrategy_values",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("c", sa.String(300)),
    mysql_charset="utf8mb4",
)


def _engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url)
    META.drop_all(engine)
    META.create_all(engine)
    yield engine
    META.drop_all(engine)
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    """The three databases; each has SQL strategies."""
    if request.param == "sqlite":
        yield from _engine(f"sqlite:///{tmp_path_factory.mktemp('sql') / 'values.db'}")
    else:
        yield from _engine(_server(POSTGRES_URL if request.param == "postgresql" else MARIADB_URL))


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[sa.Engine]:
    """PostgreSQL, the one dialect with truncate_ip in SQL (it has ``inet``)."""
    yield from _engine(_server(POSTGRES_URL))


def _through_sql(engine: sa.Engine, strategy: Strategy, values: list[Any]) -> list[Any]:
    """(value, SQL's result, whether the guard admits it) for each value the database can
    compute; a value whose statement fails (`SqlStrategy.may_fail`) counts as refused."""
    found = in_sql(strategy, VALUES.c.c, engine.dialect)
    assert found is not None
    out = []
    with engine.begin() as conn:
        register_functions(conn, [found])
        conn.execute(sa.delete(VALUES))
        if values:
            conn.execute(VALUES.insert(), [{"id": i, "c": v} for i, v in enumerate(values)])
        for i, value in enumerate(values):
            query = sa.select(found.value, found.exact).where(VALUES.c.id == i)
            try:
                with conn.begin_nested():
                    in_db, exact = conn.execute(query).one()
            except sa.exc.DataError:
                assert found.may_fail, value
                continue
            out.append((value, in_db, bool(exact)))
    return out


def _agree(engine: sa.Engine, strategy: Strategy, values: list[Any]) -> int:
    """Assert SQL equals Python wherever the guard admits a value; return how many it did."""
    admitted = 0
    for value, in_db, exact in _through_sql(engine, strategy, values):
        if exact:
            admitted += 1
            assert in_db == anonymize_value(strategy, value), value
    return admitted


def _forms(address: ipaddress.IPv4Address | ipaddress.IPv6Address, form: int) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return [address.compressed, address.exploded, address.compressed.upper()][form % 3]
    return str(address)


def _mutated(address: ipaddress.IPv4Address | ipaddress.IPv6Address, at: int, put: str) -> str:
    """A near-address: one character of its text replaced (or removed) at `at`."""
    text = address.compressed
    at %= len(text)
    return text[:at] + put + text[at + 1 :]


#: Any character a text column stores (PostgreSQL refuses NUL; UTF-8 has no surrogates).
TEXT = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
ADDRESSES = st.one_of(
    st.builds(_forms, st.ip_addresses(v=4), st.integers(0, 2)),
    st.builds(_forms, st.ip_addresses(v=6), st.integers(0, 2)),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}").exploded),
    st.text(alphabet="0123456789abcdefABCDEF:.", max_size=45),
    st.builds(_mutated, st.ip_addresses(v=6), st.integers(0, 40), st.sampled_from(["", ":", "0"])),
    st.builds(_mutated, st.ip_addresses(v=4), st.integers(0, 15), st.sampled_from(["", ".", "0"])),
    st.text(TEXT, max_size=20),
    st.none(),
)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(values=st.lists(ADDRESSES, max_size=40), v4=st.integers(0, 32), v6=st.integers(0, 128))
def test_truncate_ip_in_sql_equals_python(
    engine: sa.Engine, values: list[Any], v4: int, v6: int
) -> None:
    strategy = TruncateIpStrategy(strategy="truncate_ip", ipv4_prefix=v4, ipv6_prefix=v6)
    _agree(engine, strategy, values)


def test_truncate_ip_in_sql_admits_the_common_forms(pg_engine: sa.Engine) -> None:
    strategy = TruncateIpStrategy(strategy="truncate_ip")
    common = ["203.0.113.77", "2001:db8:85a3::8a2e:370:7334", "2001:0DB8:0:0:1:2:3:4", "::", None]
    assert _agree(pg_engine, strategy, common) == len(common)
    refused = ["::ffff:10.1.2.3", "::ffff:a01:203", "fe80::1%eth0", "10.001.2.3", "1.2.3.4/24"]
    assert _agree(pg_engine, strategy, refused) == 0


EMAILS = st.one_of(
    st.emails(),
    st.emails().map(str.upper),
    st.text(alphabet="abcXYZ@. \t-é", max_size=20),
    st.text(TEXT, max_size=20),
    st.none(),
)


@SETTINGS
@given(values=st.lists(EMAILS, max_size=40), local=st.sampled_from(["anon", "x", "Redacted"]))
def test_mask_email_in_sql_equals_python(engine: sa.Engine, values: list[Any], local: str) -> None:
    strategy = MaskEmailStrategy(strategy="mask_email", local=local)
    _agree(engine, strategy, values)


def test_mask_email_in_sql_admits_ascii_and_leaves_the_rest_to_python(engine: sa.Engine) -> None:
    strategy = MaskEmailStrategy(strategy="mask_email")
    assert _agree(engine, strategy, ["Ana@Example.COM", "no-at-sign", "a@b@c", "x@", None]) == 5
    assert _agree(engine, strategy, ["ana@exämple.com", "ana@ example.com"]) == 0


@pytest.mark.parametrize(
    "strategy", [NullStrategy(strategy="null"), RedactStrategy(strategy="redact", value="[gone]")]
)
def test_null_and_redact_in_sql_equal_python_for_every_value(
    engine: sa.Engine, strategy: Strategy
) -> None:
    values = ["x", "", " ", "ünï", None]
    assert _agree(engine, strategy, values) == len(values)


CONTACTS = sa.Table(
    "contacts",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(100)),
    sa.Column("ip", sa.String(60)),
    sa.Column("seen_at", sa.DateTime, nullable=False),
    sa.Column("anon_at", sa.DateTime),
)
MIXED_EMAILS = ["Ana@Example.COM", "ana@EXÄMPLE.com", "no-at", None, "anon@example.com", " x@y.z "]
MIXED_IPS = ["203.0.113.77", "2001:DB8::1", "::ffff:10.1.2.3", "fe80::1%eth0", None, "203.0.113.0"]
#: Admitted by the cheap guards but no address: on PostgreSQL the SQL step fails on them
#: and their batches go through Python.
NOT_ADDRESSES = ["300.1.2.3", "1:2"]


@pytest.mark.parametrize("marker", [True, False], ids=["marker", "no marker"])
def test_a_run_rewrites_rows_in_and_out_of_the_sql_domain_exactly_as_python(
    db_url: str, marker: bool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows the SQL strategies cover and rows they leave to Python, in the same batches,
    end up exactly as `anonymize_row` makes them; recent rows are untouched; the run
    counts what changed, and a second run changes nothing."""
    monkeypatch.chdir(tmp_path)
    rows = [
        {
            "id": i,
            "email": MIXED_EMAILS[i % 6],
            "ip": NOT_ADDRESSES[i % 2] if i % 37 == 0 else MIXED_IPS[(i // 6) % 6],
            "seen_at": datetime(2026, 1, 1) + timedelta(days=i % 300),
            "anon_at": None,
        }
        for i in range(1, 109)
    ]
    engine = sa.create_engine(db_url)
    CONTACTS.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(CONTACTS.insert(), rows)
    # truncate_ip needs a marker (SQL cannot tell its output from an address)
    columns: dict[str, Strategy] = {"email": MaskEmailStrategy(strategy="mask_email")}
    if marker:
        columns["ip"] = TruncateIpStrategy(strategy="truncate_ip")
    policy = f"""\
version: 1
stores:
  app: {{url: "{db_url}"}}
defaults:
  batch: {{size: 10, min_size: 5, max_size: 20}}
rules:
  - name: contacts
    promise: "contact details are de-identified after 200 days"
    source: {{policy: test, clause: "1"}}
    store: app
    table: contacts
    timestamp: seen_at
    period: 200 days
    action: anonymize
    anonymize:
      columns: {{email: mask_email{", ip: truncate_ip" if marker else ""}}}
{"      marker: anon_at" if marker else ""}
"""
    cutoff = (NOW - timedelta(days=200)).replace(tzinfo=None)
    expected: dict[int, dict[str, Any]] = {}
    changed = 0
    for row in rows:
        new = dict(row)
        if row["seen_at"] < cutoff:
            values = anonymize_row(columns, row, keys={})
            if marker or any(values[c] != row[c] for c in columns):
                changed += 1
                new.update(values)
                new["anon_at"] = "set" if marker else None  # the wall-clock time of the batch
        expected[row["id"]] = new
    loaded = load_text(policy, "test.yaml", env={})
    env = {"RETENTION_AUDIT_KEY": "k"}
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env=env)
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    assert report.outcomes[0].rows == changed
    assert changed > 20
    with engine.connect() as conn:
        after = {r.id: r._asdict() for r in conn.execute(sa.select(CONTACTS))}
    for row in after.values():
        row["anon_at"] = "set" if row["anon_at"] is not None else None
    assert after == expected
    again = run_once(loaded, NOW, RunOptions(as_of=NOW), env=env)
    assert again.outcomes[0].rows == 0
    engine.dispose()
