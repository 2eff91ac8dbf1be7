"""The command line: exit codes and output of validate, plan and schema, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from retention.demo import build_demo
from tests.conftest import NOW

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def _retention(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retention", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", ["infraux", "andron", "aurigen", "indigo"])
def test_validate_connect_accepts_each_shipped_policy_on_the_demo_store(
    name: str, sqlite_url: str
) -> None:
    build_demo(sqlite_url, NOW)
    done = _retention(
        "validate",
        "-c",
        str(POLICIES / f"{name}.yaml"),
        "--connect",
        env={"RETENTION_DB_URL": sqlite_url},
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
    assert "checked against the stores" in done.stdout


def test_three_mistakes_give_three_located_errors_and_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(
        "version: 1\n"
        "stores:\n"
        "  app: {url: 'sqlite:///x.db'}\n"
        "rules:\n"
        "  - name: logs\n"
        "    promise: logs 90 days\n"
        "    source: {policy: p, clause: c}\n"
        "    store: ap\n"
        "    tabel: logs\n"
        "    timestamp: created_at\n"
        "    period: 90 m\n"
    )
    done = _retention("validate", "-c", str(policy))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith(str(policy))]
    assert lines == [
        f"{policy}:8:12: rules[0].store: unknown store 'ap' (stores: app)",
        f"{policy}:9:5: rules[0].tabel: unknown key 'tabel'; did you mean 'table'?",
        f"{policy}:11:13: rules[0].period: unit 'm' in '90 m' is ambiguous; write 'min' for "
        "minutes or 'mo' for months",
    ]
    assert "nothing was run" in done.stderr


def test_validate_connect_reports_a_schema_error_once_with_its_location(
    tmp_path: Path, sqlite_url: str
) -> None:
    build_demo(sqlite_url, NOW)
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\n"
        f"stores:\n  app: {{url: '{sqlite_url}'}}\n"
        "rules:\n"
        "  - name: logs\n"
        "    promise: logs 90 days\n"
        "    source: {policy: p, clause: c}\n"
        "    store: app\n"
        "    table: no_such_table\n"
        "    timestamp: created_at\n"
        "    period: 90 days\n"
    )
    done = _retention("validate", "-c", str(policy), "--connect")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith(str(policy))]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{policy}:9:12: rules[0].table: table 'no_such_table' not found")
    assert "policy invalid: 1 error(s); nothing was run" in done.stderr


def test_plan_json_is_the_documented_structure(sqlite_url: str) -> None:
    build_demo(sqlite_url, NOW)
    done = _retention(
        "plan",
        "-c",
        str(POLICIES / "infraux.yaml"),
        "--as-of",
        NOW.isoformat(),
        "--format",
        "json",
        env={"RETENTION_DB_URL": sqlite_url},
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["format"] == 1
    assert [r["rule"] for r in document["file_rules"]] == ["backups-90d", "security-log-files-90d"]
    assert document["now"] == "2026-11-23T12:00:00Z"
    rule = document["rules"][0]
    assert set(rule) >= {
        "rule",
        "action",
        "cutoff",
        "rows",
        "oldest_affected",
        "estimated_batches",
        "sql",
        "holds",
        "minimums",
        "path",
        "limit_exceeded",
        "error",
    }
    assert set(rule["rows"]) == {"affected", "held", "minimum", "candidates", "table"}
    assert document["totals"]["affected"] == sum(r["rows"]["affected"] for r in document["rules"])


def test_unknown_rule_is_a_usage_error(sqlite_url: str) -> None:
    build_demo(sqlite_url, NOW)
    done = _retention(
        "plan",
        "-c",
        str(POLICIES / "infraux.yaml"),
        "--rule",
        "nope",
        env={"RETENTION_DB_URL": sqlite_url},
    )
    assert done.returncode == 2
    assert "unknown rule 'nope'" in done.stderr


def test_schema_is_valid_json_with_every_top_level_key() -> None:
    done = _retention("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert set(schema["properties"]) == {
        "version",
        "title",
        "stores",
        "defaults",
        "audit",
        "minimums",
        "holds",
        "rules",
        "file_rules",
        "file_minimums",
    }


# --- validate --connect: the roots of files stores ------------------------------------


def _files_policy(path: Path, sqlite_url: str, root: Path, archive_root: Path) -> Path:
    path.write_text(
        "version: 1\n"
        "stores:\n"
        f"  app: {{url: '{sqlite_url}'}}\n"
        f"  backups: {{kind: files, root: '{root}'}}\n"
        f"  cold: {{kind: files, root: '{archive_root}'}}\n"
        "rules:\n"
        "  - {name: sessions, promise: p, source: {policy: p, clause: c}, store: app,\n"
        "     table: sessions, timestamp: created_at, period: 30 days}\n"
        "file_rules:\n"
        "  - {name: dumps, promise: p, source: {policy: p, clause: c}, store: backups,\n"
        "     pattern: 'db/*.gz', period: 90 days, action: archive, archive: {store: cold}}\n"
        "  - {name: logs, promise: p, source: {policy: p, clause: c}, store: backups,\n"
        "     pattern: 'logs/*.log', period: 30 days}\n"
    )
    return path


def test_validate_connect_accepts_existing_file_roots(tmp_path: Path, sqlite_url: str) -> None:
    build_demo(sqlite_url, NOW)
    (tmp_path / "dumps").mkdir()
    (tmp_path / "cold").mkdir()
    policy = _files_policy(tmp_path / "p.yaml", sqlite_url, tmp_path / "dumps", tmp_path / "cold")
    done = _retention("validate", "-c", str(policy), "--connect", "--strict")
    assert done.returncode == 0, done.stderr
    assert "0 warnings" in done.stdout


def test_validate_connect_warns_of_a_missing_root_and_refuses_a_missing_archive_root(
    tmp_path: Path, sqlite_url: str
) -> None:
    build_demo(sqlite_url, NOW)
    (tmp_path / "cold").mkdir()
    policy = _files_policy(tmp_path / "p.yaml", sqlite_url, tmp_path / "dumps", tmp_path / "cold")
    done = _retention("validate", "-c", str(policy), "--connect")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith(str(policy))] == [
        f"{policy}:4:32: warning: stores.backups.root: files store root {tmp_path / 'dumps'} "
        "does not exist: no files to judge or remove (rules dumps, logs)"
    ]
    assert "1 warnings" in done.stdout

    (tmp_path / "dumps").mkdir()
    (tmp_path / "cold").rmdir()
    done = _retention("validate", "-c", str(policy), "--connect")
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if line.startswith(str(policy))] == [
        f"{policy}:5:29: stores.cold.root: files store root {tmp_path / 'cold'} does not exist: "
        "archiving into it fails (rules dumps)"
    ]


def test_validate_connect_on_object_stores_warns_of_a_missing_root_and_accepts_any_prefix(
    tmp_path: Path, sqlite_url: str
) -> None:
    """memory:// is empty in a new process: the rules' root is missing (a warning); an
    archive prefix that does not exist yet is fine, as it is for a run."""
    build_demo(sqlite_url, NOW)
    policy = tmp_path / "p.yaml"
    policy.write_text(
        _files_policy(policy, sqlite_url, tmp_path, tmp_path)
        .read_text()
        .replace(f"root: '{tmp_path}'}}", "root: 'memory://backups'}", 1)
        .replace(f"root: '{tmp_path}'}}", "root: 'memory://cold'}", 1)
    )
    done = _retention("validate", "-c", str(policy), "--connect")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith(str(policy))] == [
        f"{policy}:4:32: warning: stores.backups.root: files store root memory://backups does "
        "not exist: no files to judge or remove (rules dumps, logs)"
    ]


def test_validate_connect_refuses_a_root_that_is_a_file(tmp_path: Path, sqlite_url: str) -> None:
    build_demo(sqlite_url, NOW)
    (tmp_path / "dumps").write_text("not a folder")
    (tmp_path / "cold").mkdir()
    policy = _files_policy(tmp_path / "p.yaml", sqlite_url, tmp_path / "dumps", tmp_path / "cold")
    done = _retention("validate", "-c", str(policy), "--connect")
    assert done.returncode == 2
    assert f"files store root {tmp_path / 'dumps'} is not a folder" in done.stderr


def test_validate_connect_refuses_a_root_this_process_cannot_remove_files_from(
    sqlite_url: str,
) -> None:
    from retention.loader import load_policy
    from retention.validate import connected_findings

    build_demo(sqlite_url, NOW)
    # Outside pytest's private tmp folder, so that an unprivileged user can reach it.
    outside = Path(tempfile.mkdtemp(prefix="retention-root-"))
    try:
        outside.chmod(0o755)
        (outside / "dumps").mkdir(mode=0o555)
        (outside / "cold").mkdir()
        (outside / "cold").chmod(0o777)
        policy = _files_policy(outside / "p.yaml", sqlite_url, outside / "dumps", outside / "cold")
        loaded = load_policy(policy)
        # root may write anywhere: check as the unprivileged user 'nobody' instead.
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            issues = connected_findings(loaded, NOW)
        finally:
            if as_root:
                os.seteuid(0)
        (outside / "dumps").chmod(0o755)
        # The SQLite file lies in pytest's folder, which 'nobody' may not enter.
        if as_root:
            assert [(i.path, i.message) for i in issues if i.path == "stores.app.url"] == [
                ("stores.app.url", f"SQLite database {sqlite_url[10:]}: Permission denied")
            ]
        roots = [(i.path, i.severity.value, i.message) for i in issues if i.path.endswith("root")]
        assert roots == [
            (
                "stores.backups.root",
                "error",
                f"files store root {outside / 'dumps'} is not writable by this process (files "
                "could not be removed from it or archived into it) (rules dumps, logs)",
            )
        ]
    finally:
        shutil.rmtree(outside)
