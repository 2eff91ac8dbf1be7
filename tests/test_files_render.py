"""File rules in `plan` output: the JSON document and the text tables."""

from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from retention.loader import LoadedPolicy, load_policy
from retention.planner import build_plan
from retention.render import plan_document, print_plan, size_text
from retention.stores.files import plan_file_rules
from tests.conftest import NOW

POLICY = """\
version: 1
stores:
  app: {url: "sqlite:///app.db"}
  backups: {kind: files, root: tree}
holds:
  - {name: case-17, reason: litigation, paths: {store: backups, paths: ["db/db-2026-03-*"]}}
rules:
  - {name: sessions-30d, promise: p, source: {policy: P, clause: "1"}, store: app,
     table: sessions, timestamp: created_at, period: 30 days}
file_rules:
  - name: backups-90d
    promise: "Backups: 90 days"
    source: {policy: Privacy, clause: "8"}
    store: backups
    pattern: "db/*.sql.gz"
    timestamp: {name: "db-%Y-%m-%d.sql.gz", timezone: UTC}
    period: 90 days
    keep_last: 1
    limits: {max_files: 1}
"""


def _loaded(tmp_path: Path) -> LoadedPolicy:
    for name, size in (
        ("db-2026-01-01", 1500),
        ("db-2026-02-01", 20),
        ("db-2026-03-01", 30),
        ("db-2026-04-01", 40),
        ("db-latest", 7),
    ):
        path = tmp_path / "tree" / "db" / f"{name}.sql.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"z" * size)
        stamp = (NOW - timedelta(days=200)).timestamp()
        os.utime(path, (stamp, stamp))
    (tmp_path / "p.yaml").write_text(POLICY, encoding="utf-8")
    return load_policy(tmp_path / "p.yaml", env={})


def test_without_file_plans_the_json_document_is_unchanged(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    plan = build_plan(loaded.policy, NOW)
    assert plan_document(plan, [], "p.yaml", []) == plan_document(plan, [], "p.yaml")
    assert "file_rules" not in plan_document(plan, [], "p.yaml")


def test_the_json_document_lists_every_matched_file_and_the_totals(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    document = plan_document(
        build_plan(loaded.policy, NOW), [], "p.yaml", plan_file_rules(loaded, NOW)
    )
    [rule] = document["file_rules"]
    assert {k: rule[k] for k in ("rule", "store", "pattern", "action", "period", "cutoff")} == {
        "rule": "backups-90d",
        "store": "backups",
        "pattern": "db/*.sql.gz",
        "action": "delete",
        "period": "90 days",
        "cutoff": "2026-08-25T12:00:00Z",
    }
    assert rule["clock"] == {"name": "db-%Y-%m-%d.sql.gz", "timezone": "UTC"}
    assert rule["files"] == {
        "expired": 2,
        "held": 1,
        "minimum": 0,
        "keep_last": 1,
        "unparsable": 1,
        "newer": 0,
        "matched": 5,
    }
    assert rule["bytes"] == {"expired": 1520, "matched": 1597}
    assert rule["limit_exceeded"] == "2 files exceed max_files 1"
    assert [(p["path"], p["state"]) for p in rule["paths"]] == [
        ("db/db-2026-01-01.sql.gz", "expired"),
        ("db/db-2026-02-01.sql.gz", "expired"),
        ("db/db-2026-03-01.sql.gz", "held"),
        ("db/db-2026-04-01.sql.gz", "keep_last"),
        ("db/db-latest.sql.gz", "unparsable"),
    ]
    assert rule["paths"][2]["reason"] == "case-17"
    assert document["file_totals"] == {
        "files": 2,
        "bytes": 1520,
        "held": 1,
        "minimum": 0,
        "keep_last": 1,
        "unparsable": 1,
        "errors": 0,
    }


def test_the_text_plan_has_a_file_table_and_names_what_would_go(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    plan = build_plan(loaded.policy, NOW)
    print_plan(console, plan, [], "p.yaml", file_plans=plan_file_rules(loaded, NOW))
    text = out.getvalue()
    assert "file rules" in text
    assert "backups-90d" in text
    assert "backups:db/*.sql.gz" in text
    assert (
        "backups-90d: would remove db/db-2026-01-01.sql.gz (1.5 kB), db/db-2026-02-01.sql.gz (20 B)"
    ) in text
    assert "backups-90d: a run would stop here: 2 files exceed max_files 1" in text
    assert (
        "backups-90d: never removed: db/db-latest.sql.gz: name 'db-latest.sql.gz' does not "
        "match the name format 'db-%Y-%m-%d.sql.gz'"
    ) in text
    assert text.rstrip().endswith(
        "2 files (1.5 kB) would be removed; 1 held back by legal holds, 0 by legal minimums, "
        "1 by keep_last; 1 with unreadable timestamps."
    )


def test_the_text_plan_without_file_plans_prints_no_file_table(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    out = io.StringIO()
    print_plan(Console(file=out, width=200), build_plan(loaded.policy, NOW), [], "p.yaml")
    assert "file rules" not in out.getvalue()
    assert (
        out.getvalue()
        .rstrip()
        .endswith("0 rows would be affected; 0 held back by legal holds, 0 by legal minimums.")
    )


def test_sizes_read_as_short_powers_of_1000() -> None:
    assert [size_text(n) for n in (0, 999, 1000, 1_520, 2_000_000, 3 * 10**15)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.5 kB",
        "2.0 MB",
        "3000.0 TB",
    ]


def test_a_missing_root_is_a_warning_in_the_plan(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY, encoding="utf-8")
    loaded = load_policy(tmp_path / "p.yaml", env={})
    file_plans = plan_file_rules(loaded, NOW)
    out = io.StringIO()
    plan = build_plan(loaded.policy, NOW)
    print_plan(Console(file=out, width=300), plan, [], "p.yaml", file_plans=file_plans)
    message = f"files store root {tmp_path / 'tree'} does not exist: no files to judge or remove"
    assert f"backups-90d: warning: {message}" in out.getvalue()
    [rule] = plan_document(plan, [], "p.yaml", file_plans)["file_rules"]
    assert (rule["warnings"], rule["error"]) == ([message], None)
