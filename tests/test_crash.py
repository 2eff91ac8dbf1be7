"""SIGKILL at any moment of `retention run` leaves every table consistent: the audit
trail counts exactly what was deleted, nothing unexpired or held is touched, and a
re-run finishes the job."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.loader import load_policy
from tests.conftest import audited_rows, outbox_records

META = sa.MetaData()
EVENTS = sa.Table(
    "crash_events",
    META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("account_id", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
)
HELD = 7
ROWS = 4000

POLICY = """\
version: 1
stores: {{app: {{url: "{url}"}}}}
holds:
  - name: held-account
    reason: "litigation"
    subjects: {{column: account_id, values: [{held}]}}
rules:
  - name: events-90d
    promise: "events 90 days"
    source: {{policy: test, clause: "1"}}
    store: app
    table: crash_events
    timestamp: created_at
    period: 90 days
    batch: {{size: 40, min_size: 40, max_size: 40, pause_ms: 15}}
"""


def _fill(url: str) -> set[int]:
    """Rows in time order, 60 % expired by a wide margin; return the ids that must survive."""
    rnd = random.Random(3)
    # The CLI reads the real clock, so the data is laid out around it with wide margins.
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    rows, survivors = [], set()
    for i in range(1, ROWS + 1):
        expired = i <= ROWS * 0.6
        age = timedelta(days=rnd.randint(120, 900) if expired else rnd.randint(0, 60))
        account = rnd.randint(1, 20)
        rows.append({"id": i, "account_id": account, "created_at": now - age})
        if not expired or account == HELD:
            survivors.add(i)
    engine = sa.create_engine(url)
    META.create_all(engine)
    with engine.begin() as conn:
        conn.execute(EVENTS.insert(), rows)
    engine.dispose()
    return survivors


def _state(url: str, policy: Path) -> tuple[set[int], int]:
    """The ids left, and the rows the audit trail (audit store plus outbox) says went."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(sa.select(EVENTS.c.id))}
    engine.dispose()
    return ids, audited_rows(load_policy(policy, env={}), url)


def _run(policy: Path, kill_after: float | None) -> int:
    env = {**os.environ, "RETENTION_AUDIT_KEY": "crash-test"}
    command = [sys.executable, "-m", "retention", "run", "-c", str(policy)]
    if kill_after is None:
        done = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()[-2000:]
        return done.returncode
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["beside the policy", "in the rule's store"])
def test_sigkill_mid_purge_never_loses_the_audit_or_a_protected_row(
    db_url: str, tmp_path: Path, placement: str
) -> None:
    """The audit store is a SQLite file beside the policy (records go through the
    outbox) or the rule's own database (records commit with their batch)."""
    survivors = _fill(db_url)
    everything = set(range(1, ROWS + 1))
    policy = tmp_path / "policy.yaml"
    text = POLICY.format(url=db_url, held=HELD)
    policy.write_text(text + ("audit: {store: app}\n" if placement != "beside the policy" else ""))
    killed_mid_run = 0
    for kill_after in (1.2, 2.0, 2.8):
        _run(policy, kill_after)
        ids, audited = _state(db_url, policy)
        assert survivors <= ids, "a protected or unexpired row was deleted"
        assert audited == len(everything - ids), "audit trail and deletions disagree"
        if ids != survivors:
            killed_mid_run += 1
    assert killed_mid_run >= 1, "no kill landed mid-purge; the test proved nothing"
    _run(policy, None)
    ids, audited = _state(db_url, policy)
    assert ids == survivors
    assert audited == len(everything - survivors)
    assert not outbox_records(db_url), "the re-run left records in the outbox"


@pytest.mark.slow
def test_sigterm_stops_at_a_batch_boundary_and_exits_0(sqlite_url: str, tmp_path: Path) -> None:
    _fill(sqlite_url)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=sqlite_url, held=HELD))
    env = {**os.environ, "RETENTION_AUDIT_KEY": "crash-test"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retention", "run", "-c", str(policy)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    batches = 0
    for line in proc.stdout:  # wait until the purge is under way
        batches += '"event": "batch"' in line
        if batches == 5:
            break
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a second signal must not crash it either
    proc.stdout.read()
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - sent < 5
    proc.stdout.close()
    ids, audited = _state(sqlite_url, policy)
    assert audited == ROWS - len(ids)
    assert 0 < audited < ROWS * 0.6 - 100, "the run was not stopped part-way"
