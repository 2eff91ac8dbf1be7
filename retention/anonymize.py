"""De-identification strategies: what a column value becomes when its row is anonymized.

Pure functions over one value or one row; no I/O and no environment access (the
HMAC keys are passed in). Every strategy maps ``None`` to ``None`` and is idempotent,
except ``hash``: hashing a hash gives a new value, which is why a policy that uses
``hash`` must declare a marker column (see `retention.policy.AnonymizeSpec`).

Error messages never repeat the value being anonymized: it is personal data, and
errors end up in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import TypeAlias, assert_never
from uuid import UUID

from retention.policy import (
    GeneralizeStrategy,
    HashStrategy,
    MaskEmailStrategy,
    NullStrategy,
    RedactStrategy,
    Strategy,
    TruncateIpStrategy,
)

__all__ = ["AnonymizeError", "anonymize_row", "anonymize_value", "is_anonymized"]

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Interface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


class AnonymizeError(ValueError):
    """A value cannot be de-identified by its strategy, or a needed key is missing."""


def anonymize_value(strategy: Strategy, value: object, *, key: bytes | None = None) -> object:
    """The de-identified replacement for one column value.

    ``None`` stays ``None`` under every strategy. `key` is the HMAC key and is only
    used (and then required) by the ``hash`` strategy; a missing key is refused
    even when the value is ``None``, so a misconfiguration never depends on the data.
    Raises `AnonymizeError` for a missing key or a value the strategy cannot read
    (``truncate_ip`` and ``mask_email`` instead remove values they cannot read).
    """
    if isinstance(strategy, HashStrategy):
        if not key:
            raise AnonymizeError(
                f"hash needs a key: set {strategy.key_env} to a secret; there is no unkeyed hash"
            )
        return None if value is None else _hash(strategy, value, key)
    if value is None or isinstance(strategy, NullStrategy):
        return None
    if isinstance(strategy, RedactStrategy):
        return strategy.value
    if isinstance(strategy, TruncateIpStrategy):
        return _truncate_ip(strategy, value)
    if isinstance(strategy, GeneralizeStrategy):
        return _generalize(strategy, value)
    if isinstance(strategy, MaskEmailStrategy):
        return _mask_email(strategy, value)
    assert_never(strategy)  # a new strategy must be handled above (mypy checks it)


def anonymize_row(
    columns: Mapping[str, Strategy], row: Mapping[str, object], *, keys: Mapping[str, bytes]
) -> dict[str, object]:
    """New values for the columns listed in `columns`, computed from `row`.

    `keys` maps a hash strategy's ``key_env`` name to its key bytes. Raises
    `AnonymizeError` when a key is missing or empty (naming the environment
    variable), when `row` lacks a listed column, or when a value cannot be read.
    Columns of `row` that are not listed are not returned.
    """
    result: dict[str, object] = {}
    for column, strategy in columns.items():
        key: bytes | None = None
        if isinstance(strategy, HashStrategy):
            key = keys.get(strategy.key_env)
            if not key:
                raise AnonymizeError(
                    f"column {column!r} uses hash, which needs a key: "
                    f"environment variable {strategy.key_env} is not set or empty"
                )
        if column not in row:
            raise AnonymizeError(f"the row has no column {column!r}")
        try:
            result[column] = anonymize_value(strategy, row[column], key=key)
        except AnonymizeError as error:
            raise AnonymizeError(f"column {column!r}: {error}") from None
    return result


def is_anonymized(strategy: Strategy, value: object) -> bool:
    """Whether `value` is already what `strategy` makes of it, so its row can be skipped.

    Always False for ``hash`` (a hash cannot be told from an original value), and
    False for a value the strategy cannot read.
    """
    if isinstance(strategy, HashStrategy):
        return False
    try:
        result = anonymize_value(strategy, value)
    except AnonymizeError:
        return False
    return result == value


# --- hash ---------------------------------------------------------------------------


def _canonical_bytes(value: object) -> bytes:
    """The bytes hashed for `value`: equal values of the types a join compares agree.

    ``42`` and ``"42"`` give the same bytes, as do ``date(2024, 1, 31)`` and
    ``"2024-01-31"``. Floats, decimals and booleans are refused: their text is not
    canonical (``1.0`` / ``1``), or hashing two values protects nothing.
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value)).encode("ascii")
    if isinstance(value, date):  # datetime included
        return value.isoformat().encode("ascii")
    if isinstance(value, UUID):
        return str(value).encode("ascii")
    raise AnonymizeError(
        f"hash cannot use a value of type {type(value).__name__}; "
        "it hashes text, integers, bytes, dates, datetimes and UUIDs"
    )


def _hash(strategy: HashStrategy, value: object, key: bytes) -> str:
    digest = hmac.new(key, _canonical_bytes(value), hashlib.sha256).hexdigest()
    return digest if strategy.length is None else digest[: strategy.length]


# --- truncate_ip --------------------------------------------------------------------


def _kept_bits(strategy: TruncateIpStrategy, address: _Address) -> int:
    if isinstance(address, ipaddress.IPv4Address):
        return strategy.ipv4_prefix
    if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d: the 96-bit prefix, then IPv4 rules
        return 96 + strategy.ipv4_prefix
    return strategy.ipv6_prefix


def _truncate_address(strategy: TruncateIpStrategy, address: _Address) -> _Address:
    bits = _kept_bits(strategy, address)
    width = address.max_prefixlen
    mask = ((1 << bits) - 1) << (width - bits)
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv4Address(int(address) & mask)
    return ipaddress.IPv6Address(int(address) & mask)  # drops any %scope


def _format_address(address: _Address) -> str:
    """Compressed text; IPv4-mapped IPv6 keeps the dotted ``::ffff:a.b.c.d`` form."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def _truncate_ip(strategy: TruncateIpStrategy, value: object) -> object:
    """Zero the host bits; the same kind comes out as went in; anything else -> None."""
    if type(value) is str and _PLAIN_IPV4.fullmatch(text := value.strip()):
        fast = _truncate_plain_ipv4(strategy, text)  # the common case first
        if fast is not None:
            return fast
    # Interfaces first: IPv4Interface is a subclass of IPv4Address.
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return _truncate_interface(strategy, value)
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return _truncate_address(strategy, value)
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return _truncate_network(strategy, value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if "/" in text:
            interface = _truncate_interface(strategy, ipaddress.ip_interface(text))
            return f"{_format_address(interface.ip)}/{interface.network.prefixlen}"
        return _format_address(_truncate_address(strategy, ipaddress.ip_address(text)))
    except ValueError:
        return None


#: Dotted-quad IPv4 text without leading zeros: the common case, done without `ipaddress`.
_PLAIN_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


def _truncate_plain_ipv4(strategy: TruncateIpStrategy, text: str) -> str | None:
    """`text` (matched by `_PLAIN_IPV4`) truncated like `_truncate_address` would; None
    when an octet is out of range (the general path then decides)."""
    octets = [int(part) for part in text.split(".")]
    if max(octets) > 255:
        return None
    number = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
    bits = strategy.ipv4_prefix
    number &= ((1 << bits) - 1) << (32 - bits)
    return f"{number >> 24}.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"


def _truncate_interface(strategy: TruncateIpStrategy, value: _Interface) -> _Interface:
    """An address with a netmask (PostgreSQL ``inet``): the address is truncated, the mask kept."""
    return ipaddress.ip_interface((_truncate_address(strategy, value.ip), value.network.prefixlen))


def _truncate_network(strategy: TruncateIpStrategy, value: _Network) -> _Network:
    """A network (PostgreSQL ``cidr``): widened to the kept prefix when it is narrower."""
    address = value.network_address
    prefix = min(value.prefixlen, _kept_bits(strategy, address))
    return ipaddress.ip_network((_truncate_address(strategy, address), prefix))


# --- generalize ---------------------------------------------------------------------


def _generalize(strategy: GeneralizeStrategy, value: object) -> object:
    """Round down to the first day of the month or year; the same kind comes out."""
    if isinstance(value, datetime):
        return _round_datetime(strategy, value)
    if isinstance(value, date):
        return _round_date(strategy, value)
    if isinstance(value, str):
        return _generalize_text(strategy, value)
    raise AnonymizeError(
        f"generalize needs a date, a datetime or an ISO 8601 string, not {type(value).__name__}"
    )


def _round_date(strategy: GeneralizeStrategy, value: date) -> date:
    month = 1 if strategy.to == "year" else value.month
    return value.replace(month=month, day=1)


def _round_datetime(strategy: GeneralizeStrategy, value: datetime) -> datetime:
    # fold=0: when midnight on the 1st happens twice (clocks set back), take the first.
    month = 1 if strategy.to == "year" else value.month
    return value.replace(month=month, day=1, hour=0, minute=0, second=0, microsecond=0, fold=0)


def _generalize_text(strategy: GeneralizeStrategy, value: str) -> str:
    text = value.strip()
    try:
        return _round_date(strategy, date.fromisoformat(text)).isoformat()
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise AnonymizeError(
            "generalize could not read the text as an ISO 8601 date or datetime"
        ) from None
    separator = " " if len(text) > 10 and text[10] == " " else "T"
    rounded = _round_datetime(strategy, parsed).isoformat(sep=separator)
    if text.endswith(("Z", "z")) and rounded.endswith("+00:00"):
        rounded = rounded[: -len("+00:00")] + "Z"
    return rounded


# --- mask_email ---------------------------------------------------------------------


def _mask_email(strategy: MaskEmailStrategy, value: object) -> str:
    """``local@domain`` with the domain lower-cased; just ``local`` when there is no domain."""
    if not isinstance(value, str) or value.count("@") != 1:
        return strategy.local
    domain = value.partition("@")[2].strip().lower()
    return f"{strategy.local}@{domain}" if domain else strategy.local
