"""`retention hold add|list|release`: holds kept in the audit store apply to `plan` and
`run` like the policy file's own, every change is audited, and bad holds are refused
with nothing stored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from retention.audit.holds import load_with_holds
from retention.cli import cli
from retention.demo import build_demo
from retention.runner import RunOptions, run_once
from tests.conftest import NOW, audit_records

SHIPPED = Path(__file__).resolve().parents[1] / "policies" / "infraux.yaml"
KEY = "hold-test-key"


@pytest.fixture
def policy(tmp_path: Path, sqlite_url: str) -> Path:
    """The InfraUX policy on a fresh demo store; its audit store is a file beside it."""
    build_demo(sqlite_url, NOW)
    target = tmp_path / "infraux.yaml"
    shutil.copy(SHIPPED, target)
    return target


def _cli(policy: Path, url: str, *args: str, key: str | None = KEY) -> Result:
    env = {"RETENTION_DB_URL": url, "RETENTION_AUDIT_KEY": key}
    return CliRunner().invoke(cli, [*args[:2], "-c", str(policy), *args[2:]], env=env)


def _login_rows(url: str, ip: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(
            sa.text("SELECT count(*) FROM security_logs WHERE ip = :ip"), {"ip": ip}
        ).scalar_one()
    engine.dispose()
    return int(count)


def _expired_ip(url: str) -> str:
    """An IP with rows that the security-logs rule would delete now."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ip = conn.execute(
            sa.text(
                "SELECT ip FROM security_logs WHERE created_at < :cut AND ip <> '203.0.113.9' "
                "GROUP BY ip ORDER BY count(*) DESC LIMIT 1"
            ),
            {"cut": "2026-08-01"},
        ).scalar_one()
    engine.dispose()
    return str(ip)


def _run(policy: Path, url: str) -> None:
    loaded = load_with_holds(policy, env={"RETENTION_DB_URL": url})
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": KEY})
    assert report.exit_code == 0, [o.error for o in report.outcomes]


def test_a_stored_hold_keeps_rows_until_released(policy: Path, sqlite_url: str) -> None:
    ip = _expired_ip(sqlite_url)
    before = _login_rows(sqlite_url, ip)
    placed = _cli(
        policy,
        sqlite_url,
        "hold",
        "add",
        "incident-77",
        "--reason",
        "incident 77: keep this address's logs",
        "--rule",
        "security-logs-90d",
        "--where",
        f"{{ip: '{ip}'}}",
        "--by",
        "dpo@example.com",
    )
    assert placed.exit_code == 0, placed.output
    listed = _cli(policy, sqlite_url, "hold", "list")
    assert "incident-77" in listed.output
    assert "litigation-2026-017" in listed.output  # the file's holds are listed too

    _run(policy, sqlite_url)
    assert _login_rows(sqlite_url, ip) == before, "a held row was deleted"

    released = _cli(policy, sqlite_url, "hold", "release", "incident-77")
    assert released.exit_code == 0, released.output
    _run(policy, sqlite_url)
    assert _login_rows(sqlite_url, ip) < before

    loaded = load_with_holds(policy, env={"RETENTION_DB_URL": sqlite_url})
    changes = [r for r in audit_records(loaded) if r.action.startswith("hold_")]
    assert [(r.action, r.table_name) for r in changes] == [
        ("hold_add", "incident-77"),
        ("hold_release", "incident-77"),
    ]
    assert json.loads(changes[0].detail)["where"] == {"ip": ip}
    verified = _cli(policy, sqlite_url, "audit", "verify")
    assert verified.exit_code == 0, verified.output


def test_subject_values_reach_the_trail_only_as_a_digest(policy: Path, sqlite_url: str) -> None:
    placed = _cli(
        policy,
        sqlite_url,
        "hold",
        "add",
        "dsar-hold",
        "--reason",
        "regulator inquiry",
        "--subject",
        "account_id=3141,2718",
        "--table",
        "accounts=id",
    )
    assert placed.exit_code == 0, placed.output
    loaded = load_with_holds(policy, env={"RETENTION_DB_URL": sqlite_url})
    assert [h.name for h in loaded.policy.holds][-1] == "dsar-hold"
    record = next(r for r in audit_records(loaded) if r.action == "hold_add")
    assert "3141" not in (record.detail or "")
    assert record.key_digest is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rule", "no-such-rule", "--where", "{ip: 1.2.3.4}"), "no-such-rule"),
        (("--subject", "account_id="), "values"),
    ],
)
def test_an_invalid_hold_is_refused_and_nothing_is_stored(
    policy: Path, sqlite_url: str, args: tuple[str, ...], message: str
) -> None:
    result = _cli(policy, sqlite_url, "hold", "add", "bad-hold", "--reason", "a reason", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    listed = _cli(policy, sqlite_url, "hold", "list", "--all")
    assert "bad-hold" not in listed.output


def test_names_are_unique_and_changes_need_the_audit_key(policy: Path, sqlite_url: str) -> None:
    args = ("hold", "add", "h1", "--reason", "first", "--subject", "account_id=5")
    assert _cli(policy, sqlite_url, *args).exit_code == 0
    again = _cli(policy, sqlite_url, *args)
    assert again.exit_code == 2
    assert "already exists" in again.output
    taken = _cli(policy, sqlite_url, "hold", "add", "litigation-2026-017", "--reason", "x y z")
    assert taken.exit_code == 2
    no_key = _cli(policy, sqlite_url, "hold", "release", "h1", key=None)
    assert no_key.exit_code == 2
    assert "RETENTION_AUDIT_KEY" in no_key.output


def test_the_report_lists_a_stored_hold_once_and_marks_its_release(
    policy: Path, sqlite_url: str
) -> None:
    from retention.report import gather

    args = ("hold", "add", "h-report", "--reason", "audit request", "--subject", "account_id=9")
    assert _cli(policy, sqlite_url, *args).exit_code == 0

    def entries() -> list[tuple[str, str, bool]]:
        loaded = load_with_holds(policy, env={"RETENTION_DB_URL": sqlite_url})
        holds = gather(loaded, NOW).holds
        return [(h.name, h.origin, h.active) for h in holds if h.name == "h-report"]

    assert entries() == [("h-report", "audit store", True)]
    assert _cli(policy, sqlite_url, "hold", "release", "h-report").exit_code == 0
    assert entries() == [("h-report", "audit store", False)]
