"""De-identification strategies as SQL expressions, where SQL can match Python exactly.

`retention.anonymize` defines what every strategy does. Running it in Python costs
10-30 us a row (read, compute, write back), far more than the database needs to rewrite
a row. So where a dialect can compute the very same value, a batch first rewrites, with
one ``UPDATE ... SET col = <expression>``, the rows whose values are inside the domain
where the expression and the Python strategy are known to agree (`SqlStrategy.exact`,
checked by property tests against `retention.anonymize`); the rows left over (say, an
address written with a zone id, an e-mail with non-ASCII characters) go through Python
in the same transaction.

The domains are kept narrow on purpose:

* ``null`` and ``redact``: every value, on every dialect.
* ``mask_email``: values made only of printable ASCII without spaces (so ``strip`` has
  nothing to remove and lower-casing needs no locale); case is folded with
  ``translate`` on PostgreSQL (``lower`` follows the database's locale there) and with
  ``lower`` on SQLite (ASCII-only without ICU).
* ``truncate_ip`` on SQLite: the Python strategy, registered as a function of the
  connection (`SqlStrategy.functions`), every value.
* ``truncate_ip`` on PostgreSQL: dotted-quad IPv4 without leading zeros, and IPv6 in
  hex-and-colons form that is not IPv4-mapped (Python keeps 96 + the IPv4 prefix bits of
  those); ``inet`` does the masking and prints the result. The guards are cheap patterns
  (a full address pattern costs PostgreSQL 15 us a row): a value they admit that is no
  address (``300.1.1.1``, ``1:2``) makes the cast fail, and the batch's statement is
  rolled back to a savepoint and its rows go through Python.
* ``hash`` and ``generalize``: never (no keyed hash in core SQL; time zones and text forms
  of dates differ by dialect).

On MariaDB/MySQL: ``null``, ``redact``, ``mask_email`` (its guard matches the value's
bytes, as patterns on text follow the column's collation, and the domain is lower-cased
as ASCII text), and ``truncate_ip`` for dotted-quad IPv4 (``INET_ATON``/``INET_NTOA``).
There is no ``UPDATE ... RETURNING`` there: the batch first locks the keys of the rows
it will rewrite, then updates them and checks the count (`RuleSql.select_in_sql`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from retention.anonymize import anonymize_value
from retention.policy import (
    MaskEmailStrategy,
    NullStrategy,
    RedactStrategy,
    Strategy,
    TruncateIpStrategy,
)

__all__ = ["SqlStrategy", "in_sql", "register_functions", "row_in_sql"]

#: Dotted-quad IPv4 without leading zeros (the text Python's fast path reads); an octet
#: over 255 gets through and makes the cast to ``inet`` fail (see `SqlStrategy.may_fail`).
IPV4 = r"^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$"
#: IPv6 in hex-and-colons form (no embedded IPv4, no zone id, no netmask); a string of
#: these characters that is no address makes the cast to ``inet`` fail.
IPV6 = "^[0-9A-Fa-f:]+$"


_MYSQL = ("mysql", "mariadb")


@dataclass(frozen=True, slots=True)
class SqlStrategy:
    """A strategy as SQL: the new value, and the rows for which it equals Python's
    (`value` is meant for those rows only; elsewhere it may differ, or fail)."""

    value: sa.ColumnElement[Any]
    exact: sa.ColumnElement[bool]
    #: The statement may fail on a value inside `exact` that the database cannot read
    #: (then the batch's rows go through Python instead; the guard stays cheap).
    may_fail: bool = False
    #: SQLite: functions `value` calls, to register on the connection first (name,
    #: number of arguments, the Python function): the strategy itself, run by SQLite.
    functions: tuple[tuple[str, int, Callable[..., object]], ...] = ()


def register_functions(conn: sa.Connection, strategies: Iterable[SqlStrategy]) -> None:
    """Register on `conn`'s database connection the functions `strategies` call (SQLite)."""
    raw: Any = None
    for strategy in strategies:
        for name, arguments, function in strategy.functions:
            raw = raw or conn.connection.driver_connection
            raw.create_function(name, arguments, function, deterministic=True)


def row_in_sql(
    columns: Mapping[str, Strategy], table: sa.Table, dialect: sa.Dialect
) -> dict[str, SqlStrategy] | None:
    """Every column's strategy as SQL, or None when one of them has no SQL form here."""
    out: dict[str, SqlStrategy] = {}
    for name, strategy in columns.items():
        found = in_sql(strategy, table.c[name], dialect)
        if found is None:
            return None
        out[name] = found
    return out


def in_sql(
    strategy: Strategy, col: sa.ColumnElement[Any], dialect: sa.Dialect
) -> SqlStrategy | None:
    """`strategy` applied to `col` as SQL on `dialect`, or None where it has no exact form."""
    if dialect.name not in ("postgresql", "sqlite", *_MYSQL):
        return None
    if isinstance(strategy, NullStrategy):
        return SqlStrategy(sa.null(), sa.true())
    if not isinstance(col.type, sa.String):
        return None
    if isinstance(strategy, RedactStrategy):
        value = sa.case((col.is_(None), sa.null()), else_=sa.literal(strategy.value, col.type))
        return SqlStrategy(value, sa.true())
    if isinstance(strategy, MaskEmailStrategy):
        return _mask_email(strategy, col, dialect)
    if isinstance(strategy, TruncateIpStrategy):
        if dialect.name == "postgresql":
            return _truncate_ip(strategy, col)
        if dialect.name in _MYSQL:
            return _truncate_ipv4(strategy, col)
        return _udf(strategy, col)
    return None


def _binary(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """MariaDB/MySQL: the value's bytes, so that patterns match byte by byte (on text they
    follow the column's collation, which may fold case and non-ASCII letters)."""
    return sa.cast(col, sa.LargeBinary)


def _truncate_ipv4(strategy: TruncateIpStrategy, col: sa.ColumnElement[Any]) -> SqlStrategy:
    """MariaDB/MySQL: dotted-quad IPv4 through ``INET_ATON``/``INET_NTOA`` (an octet over
    255 gives NULL there and None in Python); other values go through Python."""
    bits = strategy.ipv4_prefix
    mask = ((1 << bits) - 1) << (32 - bits)
    value = sa.func.inet_ntoa(sa.func.inet_aton(col).op("&")(mask), type_=sa.String)
    return SqlStrategy(value, sa.or_(col.is_(None), _matches(_binary(col), "REGEXP", IPV4)))


def _udf(strategy: TruncateIpStrategy, col: sa.ColumnElement[Any]) -> SqlStrategy:
    """SQLite: the Python strategy itself as a function SQLite calls for each row (exact
    by construction; it spares reading the rows out and writing them back)."""
    name = f"retention_truncate_ip_{strategy.ipv4_prefix}_{strategy.ipv6_prefix}"

    def truncate(value: object) -> object:
        return anonymize_value(strategy, value)

    return SqlStrategy(getattr(sa.func, name)(col), sa.true(), functions=((name, 1, truncate),))


def _matches(col: sa.ColumnElement[Any], operator: str, pattern: str) -> sa.ColumnElement[bool]:
    return col.op(operator, is_comparison=True)(sa.literal(pattern))


def _printable_ascii(col: sa.ColumnElement[Any], dialect: sa.Dialect) -> sa.ColumnElement[bool]:
    """The value is made only of the characters ``!`` to ``~`` (no space, no control)."""
    if dialect.name == "postgresql":
        return _matches(col, "~", "^[!-~]*$")
    if dialect.name in _MYSQL:
        return _matches(_binary(col), "REGEXP", "^[!-~]*$")
    return sa.not_(_matches(col, "GLOB", "*[^!-~]*"))


def _mask_email(
    strategy: MaskEmailStrategy, col: sa.ColumnElement[Any], dialect: sa.Dialect
) -> SqlStrategy:
    local = sa.literal(strategy.local, sa.String)
    domain: sa.ColumnElement[Any]
    if dialect.name == "postgresql":
        # COLLATE "C": lower() then folds ASCII only, whatever the database's locale.
        domain = sa.func.split_part(col, "@", 2).collate("C")
        last = sa.func.right(col, 1)
    elif dialect.name in _MYSQL:
        # as ASCII text: lower() then folds ASCII only, whatever the column's collation
        ascii_text: sa.ColumnElement[Any] = sa.literal_column("CHAR CHARACTER SET ascii")
        domain = sa.func.convert(sa.func.substring_index(col, "@", -1), ascii_text)
        last = sa.func.right(col, 1)
    else:  # SQLite's lower() folds ASCII only
        domain = sa.func.substr(col, sa.func.instr(col, "@") + 1)
        last = sa.func.substr(col, -1)
    ats = sa.func.length(col) - sa.func.length(sa.func.replace(col, "@", ""))
    value = sa.case(
        (col.is_(None), sa.null()),
        # no domain: not exactly one "@", or nothing after it (printable ASCII has no
        # spaces for strip() to remove)
        (sa.or_(ats != 1, last == "@"), local),
        else_=local + "@" + sa.func.lower(domain, type_=sa.String),
    )
    return SqlStrategy(value, sa.or_(col.is_(None), _printable_ascii(col, dialect)))


def _truncate_ip(strategy: TruncateIpStrategy, col: sa.ColumnElement[Any]) -> SqlStrategy:
    ipv4 = _matches(col, "~", IPV4)
    ipv6 = _matches(col, "~", IPV6)
    address = sa.cast(col, postgresql.INET)

    def truncated(bits: int) -> sa.ColumnElement[Any]:
        return sa.func.host(sa.func.network(sa.func.set_masklen(address, bits)), type_=sa.String)

    # Only rows inside `exact` are written: there a dot means IPv4 (the IPv6 pattern has
    # none), which spares a second pattern match per row.
    value = sa.case(
        (col.is_(None), sa.null()),
        (sa.func.strpos(col, ".") > 0, truncated(strategy.ipv4_prefix)),
        else_=truncated(strategy.ipv6_prefix),
    )
    # CASE keeps the cast behind the pattern test (AND may evaluate in any order).
    mapped = address.op("<<", is_comparison=True)(
        sa.cast(sa.literal("::ffff:0:0/96"), postgresql.INET)
    )
    exact = sa.case(
        (col.is_(None), sa.true()),
        (ipv4, sa.true()),
        (ipv6, sa.not_(mapped)),
        else_=sa.false(),
    )
    return SqlStrategy(value, exact, may_fail=True)
