"""`retention check` reports broken promises on the demo store before `run` and kept ones
after it; held rows are reported as held, never as overdue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from retention.demo import build_demo
from retention.loader import load_policy
from retention.runner import RunOptions, run_once
from tests.conftest import NOW

SHIPPED = Path(__file__).resolve().parents[1] / "policies" / "infraux.yaml"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    """A copy of the InfraUX policy in the test's folder (so is its default audit store)."""
    copy = tmp_path / "infraux.yaml"
    shutil.copy(SHIPPED, copy)
    return copy


def _check(url: str, policy: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(
        cli,
        ["check", "-c", str(policy), "--as-of", NOW.isoformat(), "--format", "json"],
        env={"RETENTION_DB_URL": url},
    )
    return result.exit_code, json.loads(result.output)


def test_check_fails_before_run_and_passes_after(sqlite_url: str, policy: Path) -> None:
    build_demo(sqlite_url, NOW)
    code, before = _check(sqlite_url, policy)
    assert code == 1
    rules = {r["rule"]: r for r in before["rules"]}  # type: ignore[attr-defined]
    assert rules["security-logs-90d"]["status"] == "broken"
    assert rules["security-logs-90d"]["overdue"] > 1000
    loaded = load_policy(policy, env={"RETENTION_DB_URL": sqlite_url})
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env={"RETENTION_AUDIT_KEY": "k"})
    assert report.exit_code == 0
    code, after = _check(sqlite_url, policy)
    assert code == 0
    statuses = {r["rule"]: r for r in after["rules"]}  # type: ignore[attr-defined]
    assert {r["status"] for r in statuses.values()} == {"kept"}
    assert rules["security-logs-90d"]["last_success"] is None
    assert statuses["security-logs-90d"]["last_success"] is not None  # from the run ledger
    # The litigation hold keeps rows past their cutoff: reported as held, not overdue.
    assert statuses["security-logs-90d"]["held"] == rules["security-logs-90d"]["held"] > 0
    assert statuses["security-logs-90d"]["overdue"] == 0


def test_check_lists_personal_columns_no_rule_covers(sqlite_url: str, policy: Path) -> None:
    build_demo(sqlite_url, NOW)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE newsletter (id INTEGER PRIMARY KEY, email TEXT)")
    engine.dispose()
    _, document = _check(sqlite_url, policy)
    assert "app.newsletter.email" in document["uncovered_personal_columns"]  # type: ignore[operator]
