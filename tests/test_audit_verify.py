"""`retention audit verify` passes on an untouched trail and names the first broken record
after an edit, a deletion, an insertion or a swap, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.audit.sql import AuditTables, verify
from retention.cli import cli
from tests.test_plan_counts import POLICY, _fill
from tests.test_run import _run

TABLES = AuditTables()
R = TABLES.records


#: The trail lives in the rules' own database here, to tamper with it on each server.
IN_STORE = "audit:\n  store: app\n"


def _trail(url: str) -> None:
    _fill(url)
    policy = POLICY.format(url=url).replace(
        "rules:\n", "defaults:\n  batch: {size: 40, min_size: 20, max_size: 60}\nrules:\n", 1
    )
    assert _run(url, policy + IN_STORE).exit_code == 0


def _verify(url: str) -> tuple[int, int | None]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count, problem = verify(conn, TABLES)
    engine.dispose()
    return count, None if problem is None else problem.seq


def _tamper(url: str, change: Callable[[sa.Connection], None]) -> None:
    """Change the trail as its owner could (on PostgreSQL, after disabling the triggers
    that refuse changes)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE retention_audit DISABLE TRIGGER USER")
        change(conn)
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE retention_audit SET rows = rows + 1 WHERE seq = 2",
        "DELETE FROM retention_audit WHERE seq = 2",
        "TRUNCATE retention_audit",
    ],
)
def test_postgresql_refuses_to_change_audit_records(postgres_url: str, statement: str) -> None:
    _trail(postgres_url)
    engine = sa.create_engine(postgres_url)
    try:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    assert _verify(postgres_url)[1] is None


def test_an_untouched_trail_verifies(db_url: str, tmp_path: Path) -> None:
    _trail(db_url)
    count, broken = _verify(db_url)
    assert broken is None
    assert count > 10
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(url=db_url) + IN_STORE)
    result = CliRunner().invoke(cli, ["audit", "verify", "-c", str(policy)])
    assert result.exit_code == 0, result.output
    assert f"{count} records, chain intact" in result.output


def test_an_edited_record_is_named(db_url: str) -> None:
    _trail(db_url)
    _tamper(db_url, lambda c: c.execute(sa.update(R).where(R.c.seq == 5).values(rows=R.c.rows + 1)))
    assert _verify(db_url)[1] == 5


def test_a_deleted_record_is_found(db_url: str) -> None:
    _trail(db_url)
    _tamper(db_url, lambda c: c.execute(sa.delete(R).where(R.c.seq == 4)))
    assert _verify(db_url)[1] == 5


def test_a_removed_tail_is_found(db_url: str) -> None:
    _trail(db_url)
    last = _verify(db_url)[0]
    _tamper(db_url, lambda c: c.execute(sa.delete(R).where(R.c.seq == last)))
    assert _verify(db_url)[1] == last - 1


def test_an_inserted_record_is_found(db_url: str) -> None:
    _trail(db_url)

    def insert(conn: sa.Connection) -> None:
        row = conn.execute(sa.select(R).where(R.c.seq == 3)).one()._asdict()
        row.update(seq=1000, rows=1, batch=999)
        conn.execute(sa.insert(R).values(**row))

    _tamper(db_url, insert)
    assert _verify(db_url)[1] == 1000


def test_two_swapped_records_are_found(db_url: str) -> None:
    _trail(db_url)

    def swap(conn: sa.Connection) -> None:
        conn.execute(sa.update(R).where(R.c.seq == 6).values(seq=-6))
        conn.execute(sa.update(R).where(R.c.seq == 7).values(seq=6))
        conn.execute(sa.update(R).where(R.c.seq == -6).values(seq=7))

    _tamper(db_url, swap)
    assert _verify(db_url)[1] == 6


def test_the_cli_exits_1_naming_the_broken_record(sqlite_url: str, tmp_path: Path) -> None:
    _trail(sqlite_url)
    _tamper(sqlite_url, lambda c: c.execute(sa.update(R).where(R.c.seq == 2).values(rows=0)))
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(url=sqlite_url) + IN_STORE)
    result = CliRunner().invoke(cli, ["audit", "verify", "-c", str(policy)])
    assert result.exit_code == 1
    assert "BROKEN at record seq=2: its content does not match its hash" in result.output


def test_audit_export_lists_every_record_and_filters_by_rule(
    sqlite_url: str, tmp_path: Path
) -> None:
    _trail(sqlite_url)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(url=sqlite_url) + IN_STORE)
    runner = CliRunner()
    everything = runner.invoke(cli, ["audit", "export", "-c", str(policy)])
    assert everything.exit_code == 0, everything.output
    lines = [json.loads(line) for line in everything.output.splitlines()]
    assert len(lines) == _verify(sqlite_url)[0]
    assert [r["seq"] for r in lines] == sorted(r["seq"] for r in lines)
    one = runner.invoke(
        cli, ["audit", "export", "-c", str(policy), "--rule", "ms-30d", "--format", "csv"]
    )
    rows = list(csv.DictReader(io.StringIO(one.output)))
    assert {r["rule"] for r in rows} == {"ms-30d"}
    assert sum(int(r["rows"]) for r in rows) == sum(
        r["rows"] for r in lines if r["rule"] == "ms-30d"
    )
    shown = runner.invoke(cli, ["audit", "show", "-c", str(policy), "--rule", "ms-30d"])
    assert shown.exit_code == 0
    assert "ms-30d" in shown.output


def test_records_left_in_an_outbox_are_listed_and_forwarded_by_the_next_run(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A crash after a batch committed but before its record reached the audit store
    (a SQLite file beside the policy here) leaves the record in the outbox of the
    rule's database: `audit verify` says so, and the next run forwards it first."""
    from retention.audit.outbox import Outbox, put
    from retention.audit.records import BatchRecord
    from retention.loader import load_policy
    from retention.runner import RunOptions, run_once
    from tests.conftest import NOW, audit_records, outbox_records

    _fill(sqlite_url)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.format(url=sqlite_url))
    stranded = BatchRecord(
        run_id="crashed-run",
        rule="ms-30d",
        rule_hash="0" * 64,
        store="app",
        table_name="events",
        action="delete",
        cutoff=NOW,
        batch=1,
        rows=7,
        key_min="1",
        key_max="9",
        key_digest="d" * 64,
        started_at=NOW,
        committed_at=NOW,
        host="elsewhere",
        dry_run=False,
        outcome="committed",
    )
    outbox = Outbox()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        outbox.ensure(conn)
        put(conn, outbox, stranded)
    engine.dispose()
    waiting = CliRunner().invoke(cli, ["audit", "verify", "-c", str(policy)])
    assert "store app: 1 records waiting in its outbox" in waiting.output
    loaded = load_policy(policy, env={})
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": "k"})
    assert report.exit_code == 0
    trail = audit_records(loaded)
    assert (trail[0].run_id, trail[0].rows, trail[0].host) == ("crashed-run", 7, "elsewhere")
    assert not outbox_records(sqlite_url)
    intact = CliRunner().invoke(cli, ["audit", "verify", "-c", str(policy)])
    assert intact.exit_code == 0
    assert "chain intact" in intact.output
