"""Audit records and their hash chain. Pure: no I/O.

Every record carries the hash of the record before it in the same trail; its
own hash covers its canonical JSON form plus that previous hash, so editing,
deleting, inserting or reordering a record breaks the chain from there on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

__all__ = ["GENESIS", "BatchRecord", "chain_hash", "key_digest", "rule_hash"]

#: The "previous hash" of the first record of a trail.
GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One committed batch (or a run event with `batch` 0): never personal data, only keys'
    range and a keyed digest of them."""

    run_id: str
    rule: str
    rule_hash: str
    store: str
    table_name: str
    action: str
    cutoff: datetime
    batch: int
    rows: int
    key_min: str | None
    key_max: str | None
    key_digest: str | None
    started_at: datetime
    committed_at: datetime
    host: str
    dry_run: bool
    outcome: str
    error: str | None = None
    #: Extra facts as compact JSON (file stores: paths and sizes); never personal data values.
    detail: str | None = None

    def canonical(self) -> str:
        """Stable JSON form the chain hash covers (an absent `detail` is left out, so
        records written before it existed keep their hashes)."""

        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, datetime) else value

        fields = {k: plain(v) for k, v in asdict(self).items()}
        if fields["detail"] is None:
            del fields["detail"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def chain_hash(previous: str, record: BatchRecord) -> str:
    """The hash of `record` chained after a record whose hash is `previous`."""
    return hashlib.sha256(f"{previous}\n{record.canonical()}".encode()).hexdigest()


def key_digest(keys: Iterable[object], secret: bytes) -> str:
    """Keyed digest (HMAC-SHA256) of the affected primary keys, in order.

    It proves which keys a batch removed to whoever holds the key and the
    candidate keys, without storing the keys' values themselves in the trail.
    """
    lines = list(map(repr, keys))  # every key's repr and a newline, hashed in one update
    text = "\n".join(lines) + "\n" if lines else ""
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def rule_hash(definition: dict[str, Any]) -> str:
    """SHA-256 of a rule's definition as run (its canonical JSON)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
