"""File rules on real trees: the local disk (tmp_path) and fsspec's in-memory filesystem.

Every test passes `now` in; file ages are set with os.utime (or, in memory, on the
stored file), never by patching a clock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pytest
import sqlalchemy as sa
import structlog
import structlog.testing

from retention.audit.records import key_digest
from retention.audit.sql import verify
from retention.audit.store import AuditStore, audit_file, open_audit
from retention.errors import StoreError, UsageError
from retention.loader import LoadedPolicy, load_policy
from retention.stores.files import (
    FileOptions,
    FileRuleOutcome,
    check_file_rules,
    plan_file_rules,
    run_file_rules,
)
from retention.stores.files_scan import FsspecTree, LocalTree, check_relative
from retention.stores.purge import BatchDone
from tests.conftest import NOW

KEY = b"test-audit-key"
NAMED = '{name: "db-%Y-%m-%d.sql.gz", timezone: UTC}'


def write(root: Path, rel: str, *, age: timedelta = timedelta(0), size: int = 10) -> Path:
    """A file of `size` bytes at `root/rel` last modified `age` before NOW."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def files_under(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    }


def rule(
    name: str = "backups-90d",
    pattern: str = "db/db-*.sql.gz",
    timestamp: str = NAMED,
    period: str = "90 days",
    extra: str = "",
) -> str:
    return (
        f"  - name: {name}\n    promise: 'Backups: {period}'\n"
        "    source: {policy: Privacy, clause: '8'}\n"
        f"    store: backups\n    pattern: '{pattern}'\n    timestamp: {timestamp}\n"
        f"    period: {period}\n{extra}"
    )


def make_policy(
    tmp_path: Path,
    file_rules: str,
    *,
    root: str = "tree",
    holds: str = "",
    stores: str = "",
    extra: str = "",
) -> LoadedPolicy:
    text = (
        "version: 1\nstores:\n  app: {url: 'sqlite:///app.db'}\n"
        f"  backups: {{kind: files, root: '{root}'}}\n{stores}"
        "defaults:\n  limits: {max_fraction: 1.0}\n"
        f"{holds}{extra}"
        "rules:\n  - {name: sessions-30d, promise: p, source: {policy: P, clause: '1'}, "
        "store: app, table: sessions, timestamp: created_at, period: 30 days}\n"
        f"file_rules:\n{file_rules}"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path, env={})


@pytest.fixture
def audit() -> Iterator[Callable[[LoadedPolicy], AuditStore]]:
    """Opens the policy's audit store (a SQLite file beside the policy) once per test."""
    store: AuditStore | None = None

    def opened(loaded: LoadedPolicy) -> AuditStore:
        nonlocal store
        store = store or open_audit(loaded)
        return store

    yield opened
    if store is not None:
        store.dispose()


def run(
    loaded: LoadedPolicy,
    audit_store: AuditStore,
    *,
    now: datetime = NOW,
    force: bool = False,
    rules: tuple[str, ...] = (),
    run_id: str = "run-1",
    **kwargs: Any,
) -> list[FileRuleOutcome]:
    return run_file_rules(
        loaded,
        now,
        FileOptions(rules=rules, force=force),
        audit_store,
        run_id,
        "test-host",
        KEY,
        **kwargs,
    )


def audit_rows(audit_store: AuditStore) -> list[Any]:
    records = audit_store.tables.records
    with audit_store.engine.connect() as conn:
        return list(conn.execute(sa.select(records).order_by(records.c.seq)))


def chain_intact(audit_store: AuditStore) -> bool:
    with audit_store.engine.connect() as conn:
        _count, problem = verify(conn, audit_store.tables)
    return problem is None


# --- planning --------------------------------------------------------------------------------


def backup_tree(root: Path) -> None:
    for name, age in (
        ("db-2026-01-01", 326),
        ("db-2026-03-01", 267),
        ("db-2026-05-01", 206),
        ("db-2026-11-20", 3),
        ("db-2026-11-22", 1),
    ):
        write(root, f"db/{name}.sql.gz", age=timedelta(days=age), size=100)
    write(root, "db/db-latest.sql.gz", age=timedelta(days=400), size=7)
    write(root, "db/notes.txt", age=timedelta(days=400))
    write(root, "logs/app.log.1", age=timedelta(days=400))


HOLD_MARCH = (
    "holds:\n  - name: case-17\n    reason: litigation\n"
    "    paths: {store: backups, paths: ['db/db-2026-03-*']}\n"
)


def test_plan_gives_each_matched_file_one_state(tmp_path: Path) -> None:
    backup_tree(tmp_path / "tree")
    loaded = make_policy(tmp_path, rule(extra="    keep_last: 3\n"), holds=HOLD_MARCH)
    [plan] = plan_file_rules(loaded, NOW)
    assert {f.path: (f.state, f.reason) for f in plan.files} == {
        "db/db-2026-01-01.sql.gz": ("expired", None),
        "db/db-2026-03-01.sql.gz": ("held", "case-17"),
        "db/db-2026-05-01.sql.gz": ("keep_last", None),
        "db/db-2026-11-20.sql.gz": ("newer", None),
        "db/db-2026-11-22.sql.gz": ("newer", None),
        "db/db-latest.sql.gz": (
            "unparsable",
            "name 'db-latest.sql.gz' does not match the name format 'db-%Y-%m-%d.sql.gz'",
        ),
    }
    assert (plan.matched, plan.bytes("expired"), plan.bytes(), plan.error) == (6, 100, 507, None)
    assert plan.cutoff == datetime(2026, 8, 25, 12, tzinfo=UTC)
    assert plan.oldest_expired == datetime(2026, 1, 1, tzinfo=UTC)
    assert [h.name for h in plan.holds] == ["case-17"]


def test_a_lapsed_hold_no_longer_protects_its_paths(tmp_path: Path) -> None:
    backup_tree(tmp_path / "tree")
    lapsed = HOLD_MARCH.replace(
        "reason: litigation\n", "reason: litigation\n    expires: 2026-06-30\n"
    )
    [plan] = plan_file_rules(loaded := make_policy(tmp_path, rule(), holds=lapsed), NOW)
    assert loaded.policy.holds[0].expires is not None
    assert [f.path for f in plan.expired] == [
        "db/db-2026-01-01.sql.gz",
        "db/db-2026-03-01.sql.gz",
        "db/db-2026-05-01.sql.gz",
    ]
    assert [h.name for h in plan.lapsed_holds] == ["case-17"]


def test_a_hold_on_the_file_rule_keeps_all_its_files(tmp_path: Path) -> None:
    backup_tree(tmp_path / "tree")
    hold = "holds:\n  - {name: audit-2026, reason: external audit, rule: backups-90d}\n"
    [plan] = plan_file_rules(make_policy(tmp_path, rule(), holds=hold), NOW)
    assert (plan.count("held"), plan.count("expired")) == (3, 0)


def test_a_file_minimum_keeps_files_younger_than_its_period(tmp_path: Path) -> None:
    backup_tree(tmp_path / "tree")
    minimum = (
        "file_minimums:\n  - {name: keep-250d, reason: hosting contract, store: backups, "
        "pattern: 'db/*.sql.gz', timestamp: mtime, period: 250 days}\n"
    )
    [plan] = plan_file_rules(make_policy(tmp_path, rule(), extra=minimum), NOW)
    assert {f.path: f.reason for f in plan.files if f.state == "minimum"} == {
        "db/db-2026-05-01.sql.gz": "keep-250d"
    }
    assert [f.path for f in plan.expired] == [
        "db/db-2026-01-01.sql.gz",
        "db/db-2026-03-01.sql.gz",
    ]


def test_mtime_rules_use_the_modification_time(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for week in range(1, 6):
        write(root, f"logs/app.log.{week}", age=timedelta(days=7 * week))
    loaded = make_policy(tmp_path, rule("logs-20d", "logs/app.log.*", "mtime", "20 days"))
    [plan] = plan_file_rules(loaded, NOW)
    assert [f.path for f in plan.expired] == ["logs/app.log.5", "logs/app.log.4", "logs/app.log.3"]
    assert plan.having("newer")[0].timestamp == NOW - timedelta(days=14)


def test_disabled_file_rules_are_planned_only_when_named(tmp_path: Path) -> None:
    backup_tree(tmp_path / "tree")
    loaded = make_policy(tmp_path, rule(extra="    enabled: false\n"))
    assert plan_file_rules(loaded, NOW) == []
    assert [p.name for p in plan_file_rules(loaded, NOW, ["backups-90d"])] == ["backups-90d"]
    assert plan_file_rules(loaded, NOW, ["sessions-30d"]) == []
    with pytest.raises(UsageError, match="unknown rule 'nope'"):
        plan_file_rules(loaded, NOW, ["nope"])


def test_a_missing_root_holds_no_files_and_says_so(tmp_path: Path, audit: Any) -> None:
    loaded = make_policy(tmp_path, rule(), root="nowhere")
    [plan] = plan_file_rules(loaded, NOW)
    message = f"files store root {tmp_path / 'nowhere'} does not exist: no files to judge or remove"
    assert (plan.error, plan.warnings, plan.files) == (None, (message,), ())
    [outcome] = run(loaded, audit(loaded))
    assert (outcome.status, outcome.files) == ("ok", 0)
    [status] = check_file_rules(loaded, NOW)
    assert (status.kept, status.notes) == (True, [message])


def test_a_root_that_is_a_file_fails_the_plan(tmp_path: Path) -> None:
    write(tmp_path, "tree")
    [plan] = plan_file_rules(make_policy(tmp_path, rule()), NOW)
    assert plan.error == f"files store root {tmp_path / 'tree'} is not a folder"


# --- running ----------------------------------------------------------------------------------


def test_run_removes_only_expired_files_and_audits_each_batch(tmp_path: Path, audit: Any) -> None:
    root = tmp_path / "tree"
    backup_tree(root)
    loaded = make_policy(tmp_path, rule(extra="    batch: {size: 1}\n"), holds=HOLD_MARCH)
    store = audit(loaded)
    [outcome] = run(loaded, store)
    assert (outcome.status, outcome.files, outcome.bytes, outcome.error) == ("ok", 2, 200, None)
    assert files_under(root) == {
        "db/db-2026-03-01.sql.gz",  # held
        "db/db-2026-11-20.sql.gz",  # newer than the cutoff
        "db/db-2026-11-22.sql.gz",
        "db/db-latest.sql.gz",  # unparsable
        "db/notes.txt",  # not matched
        "logs/app.log.1",
    }
    rows = audit_rows(store)
    assert [(r.outcome, r.batch, r.rows, r.key_min) for r in rows] == [
        ("intent", 1, 0, "db/db-2026-01-01.sql.gz"),
        ("committed", 2, 1, "db/db-2026-01-01.sql.gz"),
        ("intent", 3, 0, "db/db-2026-05-01.sql.gz"),
        ("committed", 4, 1, "db/db-2026-05-01.sql.gz"),
    ]
    assert {(r.rule, r.store, r.table_name, r.action) for r in rows} == {
        ("backups-90d", "backups", "db/db-*.sql.gz", "delete")
    }
    assert rows[1].key_digest == key_digest(["db/db-2026-01-01.sql.gz"], KEY)
    assert json.loads(rows[1].detail) == {
        "batch": 1,
        "bytes": 100,
        "files": [{"path": "db/db-2026-01-01.sql.gz", "size": 100}],
        "gone": [],
        "intent": {"record": 1, "run_id": "run-1"},
        "kept": [],
        "root": str(root),
    }
    assert chain_intact(store)
    assert store.where == str(audit_file(loaded)) == str(tmp_path / "p.audit.db")


def test_batches_are_logged_and_reported(tmp_path: Path, audit: Any) -> None:
    backup_tree(tmp_path / "tree")
    loaded = make_policy(tmp_path, rule(extra="    batch: {size: 2}\n"))
    done: list[BatchDone] = []
    [outcome] = run(loaded, audit(loaded), on_batch=done.append)
    assert [(d.rule, d.batch, d.rows, d.size, d.key_min, d.key_max) for d in done] == [
        ("backups-90d", 1, 2, 2, "db/db-2026-01-01.sql.gz", "db/db-2026-03-01.sql.gz"),
        ("backups-90d", 2, 1, 1, "db/db-2026-05-01.sql.gz", "db/db-2026-05-01.sql.gz"),
    ]
    assert outcome.result is not None
    assert (outcome.result.batches, outcome.rows, outcome.planned) == (2, 3, 3)


def test_a_given_logger_gets_one_line_per_batch_and_per_rule(tmp_path: Path, audit: Any) -> None:
    backup_tree(tmp_path / "tree")
    loaded = make_policy(tmp_path, rule(extra="    batch: {size: 2}\n"))
    with structlog.testing.capture_logs() as logs:
        run(loaded, audit(loaded), log=structlog.get_logger())
        run(loaded, audit(loaded), run_id="run-2")  # no logger given: silent
    assert [{k: v for k, v in line.items() if k not in {"ms", "log_level"}} for line in logs] == [
        {
            "event": "files.batch",
            "rule": "backups-90d",
            "batch": 1,
            "files": 2,
            "bytes": 200,
            "kept": 0,
        },
        {
            "event": "files.batch",
            "rule": "backups-90d",
            "batch": 2,
            "files": 1,
            "bytes": 100,
            "kept": 0,
        },
        {
            "event": "files.rule.done",
            "rule": "backups-90d",
            "action": "delete",
            "status": "ok",
            "files": 3,
            "bytes": 300,
            "batches": 2,
            "reconciled": 0,
            "error": None,
        },
    ]


def test_keep_last_keeps_the_newest_files_even_when_all_are_expired(
    tmp_path: Path, audit: Any
) -> None:
    root = tmp_path / "tree"
    for month in range(1, 6):
        write(root, f"db/db-2026-0{month}-01.sql.gz", size=5)
    loaded = make_policy(tmp_path, rule(extra="    keep_last: 2\n"))
    [plan] = plan_file_rules(loaded, NOW)
    assert [f.path for f in plan.having("keep_last")] == [
        "db/db-2026-04-01.sql.gz",
        "db/db-2026-05-01.sql.gz",
    ]
    [outcome] = run(loaded, audit(loaded))
    assert outcome.files == 3
    assert files_under(root) == {"db/db-2026-04-01.sql.gz", "db/db-2026-05-01.sql.gz"}
    [again] = run(loaded, audit(loaded), run_id="run-2")
    assert (again.status, again.files) == ("ok", 0)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{max_files: 2}", "3 files exceed max_files 2"),
        ("{max_bytes: 250}", "300 bytes exceed max_bytes 250"),
        ("{max_fraction: 0.4}", "3 of 6 files (50.0%) exceed max_fraction 40%"),
    ],
)
def test_a_safety_limit_stops_before_touching_a_file_unless_forced(
    tmp_path: Path, audit: Any, limits: str, message: str
) -> None:
    root = tmp_path / "tree"
    backup_tree(root)
    before = files_under(root)
    loaded = make_policy(tmp_path, rule(extra=f"    limits: {limits}\n"))
    store = audit(loaded)
    [outcome] = run(loaded, store)
    assert (outcome.status, outcome.files) == ("limit", 0)
    assert outcome.error == (f"safety limit: {message}; nothing touched (use --force to override)")
    assert files_under(root) == before
    assert audit_rows(store) == []
    [forced] = run(loaded, store, force=True, run_id="run-2")
    assert (forced.status, forced.files) == ("ok", 3)


def test_a_file_that_changes_between_plan_and_removal_is_kept(tmp_path: Path, audit: Any) -> None:
    """TOCTOU: the timestamp is read again right before each file goes."""
    root = tmp_path / "tree"
    for week in range(20, 23):
        write(root, f"logs/app.log.{week}", age=timedelta(days=7 * week))
    loaded = make_policy(
        tmp_path,
        rule("logs-90d", "logs/app.log.*", "mtime", extra="    batch: {size: 1}\n"),
    )

    def touch_the_next(done: BatchDone) -> None:
        if done.batch == 1:
            write(root, "logs/app.log.21", age=timedelta(0))  # rewritten just now

    store = audit(loaded)
    [outcome] = run(loaded, store, on_batch=touch_the_next)
    assert outcome.files == 2
    assert files_under(root) == {"logs/app.log.21"}
    assert outcome.kept == [
        (
            "logs/app.log.21",
            "changed: its timestamp 2026-11-23T12:00:00+00:00 is now after the cutoff",
        )
    ]
    committed = [r for r in audit_rows(store) if r.outcome == "committed"]
    assert json.loads(committed[1].detail)["kept"] == [
        {"path": "logs/app.log.21", "reason": outcome.kept[0][1]}
    ]


def test_a_hold_that_appears_during_the_run_keeps_the_file(tmp_path: Path, audit: Any) -> None:
    """TOCTOU: holds are asked again right before each file goes."""
    root = tmp_path / "tree"
    backup_tree(root)
    loaded = make_policy(tmp_path, rule())

    def new_hold(file_rule: Any, path: str) -> str | None:
        return "dsar-2026-9" if path.endswith("03-01.sql.gz") else None

    [outcome] = run(loaded, audit(loaded), late_hold=new_hold)
    assert outcome.files == 2
    assert outcome.kept == [("db/db-2026-03-01.sql.gz", "held by dsar-2026-9")]
    assert "db/db-2026-03-01.sql.gz" in files_under(root)


def test_a_failing_rule_does_not_stop_the_next(tmp_path: Path, audit: Any) -> None:
    backup_tree(tmp_path / "tree")
    other = (
        "  - name: elsewhere\n    promise: p\n    source: {policy: P, clause: '1'}\n"
        "    store: gone\n    pattern: '*'\n    period: 1 day\n"
    )
    write(tmp_path, "a-file")
    loaded = make_policy(tmp_path, other + rule(), stores="  gone: {kind: files, root: a-file}\n")
    first, second = run(loaded, audit(loaded))
    assert (first.rule, first.status, first.error) == (
        "elsewhere",
        "failed",
        f"files store root {tmp_path / 'a-file'} is not a folder",
    )
    assert (second.rule, second.status, second.files) == ("backups-90d", "ok", 3)


def test_should_stop_ends_the_run_at_a_batch_boundary(tmp_path: Path, audit: Any) -> None:
    backup_tree(tmp_path / "tree")
    loaded = make_policy(tmp_path, rule(extra="    batch: {size: 1}\n"))
    batches: list[BatchDone] = []
    [outcome] = run(
        loaded, audit(loaded), on_batch=batches.append, should_stop=lambda: len(batches) == 1
    )
    assert (outcome.status, outcome.files) == ("stopped", 1)


# --- crashes ----------------------------------------------------------------------------------


class Crash(BaseException):
    """The process dying: nothing catches it."""


def test_a_crash_between_intent_and_commit_is_reconciled_by_the_next_run(
    tmp_path: Path, audit: Any
) -> None:
    root = tmp_path / "tree"
    backup_tree(root)
    loaded = make_policy(tmp_path, rule())
    store = audit(loaded)
    calls = 0

    def dies_before_commit() -> datetime:
        nonlocal calls
        calls += 1
        if calls == 3:  # 1: batch start, 2: intent written, 3: commit
            raise Crash
        return NOW

    with pytest.raises(Crash):
        run(loaded, store, wall_clock=dies_before_commit)
    assert [r.outcome for r in audit_rows(store)] == ["intent"]
    assert "db/db-2026-01-01.sql.gz" not in files_under(root)

    [outcome] = run(loaded, store, run_id="run-2")
    assert (outcome.status, outcome.reconciled, outcome.files) == ("ok", 3, 0)
    rows = audit_rows(store)
    assert [(r.run_id, r.outcome, r.rows) for r in rows] == [
        ("run-1", "intent", 0),
        ("run-2", "reconciled", 3),
    ]
    detail = json.loads(rows[1].detail)
    assert (detail["intent"], detail["present"]) == ({"run_id": "run-1", "record": 1}, [])
    assert [f["path"] for f in detail["files"]] == [
        "db/db-2026-01-01.sql.gz",
        "db/db-2026-03-01.sql.gz",
        "db/db-2026-05-01.sql.gz",
    ]
    assert chain_intact(store)
    [third] = run(loaded, store, run_id="run-3")
    assert (third.reconciled, third.files, len(audit_rows(store))) == (0, 0, 2)


def test_files_an_unfinished_batch_left_in_place_are_planned_again(
    tmp_path: Path, audit: Any
) -> None:
    root = tmp_path / "tree"
    backup_tree(root)
    loaded = make_policy(tmp_path, rule())
    store = audit(loaded)
    calls = 0

    def dies_before_commit() -> datetime:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Crash
        return NOW

    with pytest.raises(Crash):
        run(loaded, store, wall_clock=dies_before_commit)
    # As if the process had died before unlinking the last file of the batch.
    write(root, "db/db-2026-05-01.sql.gz", size=100)
    [outcome] = run(loaded, store, run_id="run-2")
    assert (outcome.reconciled, outcome.files) == (2, 1)
    reconciled = next(r for r in audit_rows(store) if r.outcome == "reconciled")
    assert json.loads(reconciled.detail)["present"] == ["db/db-2026-05-01.sql.gz"]
    assert "db/db-2026-05-01.sql.gz" not in files_under(root)
    assert chain_intact(store)


# --- symbolic links and paths outside the root ------------------------------------------------


def test_symlinks_out_of_the_root_are_reported_and_never_followed_or_deleted(
    tmp_path: Path, audit: Any
) -> None:
    root = tmp_path / "tree"
    outside = tmp_path / "outside"
    secret = write(outside, "db-2026-01-02.sql.gz", age=timedelta(days=300))
    write(outside, "nested/db-2026-01-03.sql.gz", age=timedelta(days=300))
    write(root, "db/db-2026-01-01.sql.gz", age=timedelta(days=300))
    (root / "db" / "db-2026-01-02.sql.gz").symlink_to(secret)
    (root / "db" / "sub").symlink_to(outside / "nested", target_is_directory=True)
    loaded = make_policy(tmp_path, rule(pattern="db/**"))
    [plan] = plan_file_rules(loaded, NOW)
    assert [f.path for f in plan.files] == ["db/db-2026-01-01.sql.gz"]
    assert [(s.path, s.reason) for s in plan.skipped] == [
        (
            "db/db-2026-01-02.sql.gz",
            f"symbolic link to {secret}, outside the root: not followed",
        ),
        ("db/sub", f"symbolic link to {outside / 'nested'}, outside the root: not followed"),
    ]
    [outcome] = run(loaded, audit(loaded))
    assert outcome.files == 1
    assert files_under(outside) == {"db-2026-01-02.sql.gz", "nested/db-2026-01-03.sql.gz"}
    assert (root / "db" / "db-2026-01-02.sql.gz").is_symlink()
    assert (root / "db" / "sub").is_symlink()
    assert check_file_rules(loaded, NOW)[0].skipped == tuple(
        f"{s.path}: {s.reason}" for s in plan.skipped
    )


def test_a_link_inside_the_root_is_removed_as_a_link_never_its_target(
    tmp_path: Path, audit: Any
) -> None:
    root = tmp_path / "tree"
    target = write(root, "keep/db-2026-01-01.sql.gz", age=timedelta(days=300))
    (root / "db").mkdir()
    (root / "db" / "db-2026-01-01.sql.gz").symlink_to(target)
    loaded = make_policy(tmp_path, rule())
    [outcome] = run(loaded, audit(loaded))
    assert outcome.files == 1
    assert files_under(root) == {"keep/db-2026-01-01.sql.gz"}


def test_a_folder_swapped_for_a_link_after_the_scan_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root, "db/db-2026-01-01.sql.gz")
    tree = LocalTree(root)
    entries, _ = tree.scan("db")
    assert [e.path for e in entries] == ["db/db-2026-01-01.sql.gz"]
    victim = write(tmp_path / "outside", "db-2026-01-01.sql.gz")
    (root / "db" / "db-2026-01-01.sql.gz").unlink()
    (root / "db").rmdir()
    (root / "db").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(StoreError, match="'db' on its path is not a plain folder"):
        tree.remove("db/db-2026-01-01.sql.gz", lambda _entry: None)
    assert victim.exists()


@pytest.mark.parametrize("path", ["../x", "db/../../x", "/etc/passwd", "db//x", "./x", ""])
def test_paths_that_could_leave_the_root_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="refusing path"):
        check_relative(path)
    with pytest.raises(ValueError, match="refusing path"):
        LocalTree(tmp_path).remove(path, lambda _entry: None)
    with pytest.raises(ValueError, match="refusing path"):
        FsspecTree(f"memory://{tmp_path.name}-refuse").stat(path)


# --- archive -------------------------------------------------------------------------------


def test_archive_copies_to_another_store_then_deletes(tmp_path: Path, audit: Any) -> None:
    root = tmp_path / "tree"
    backup_tree(root)
    (tmp_path / "cold").mkdir()
    loaded = make_policy(
        tmp_path,
        rule(extra="    action: archive\n    archive: {store: offsite, prefix: infraux/}\n"),
        stores="  offsite: {kind: files, root: cold}\n",
    )
    [outcome] = run(loaded, audit(loaded))
    assert (outcome.status, outcome.action, outcome.files) == ("ok", "archive", 3)
    assert files_under(tmp_path / "cold") == {
        "infraux/db/db-2026-01-01.sql.gz",
        "infraux/db/db-2026-03-01.sql.gz",
        "infraux/db/db-2026-05-01.sql.gz",
    }
    copy = tmp_path / "cold" / "infraux" / "db" / "db-2026-01-01.sql.gz"
    assert copy.read_bytes() == b"x" * 100
    assert copy.stat().st_mtime == (NOW - timedelta(days=326)).timestamp()
    assert "db/db-2026-01-01.sql.gz" not in files_under(root)


def test_a_missing_local_archive_root_fails_the_rule_before_touching_a_file(
    tmp_path: Path, audit: Any
) -> None:
    """An unmounted disk's mount point is not a place to archive to."""
    root = tmp_path / "tree"
    backup_tree(root)
    before = files_under(root)
    loaded = make_policy(
        tmp_path,
        rule(extra="    action: archive\n    archive: {store: offsite, prefix: infraux/}\n"),
        stores="  offsite: {kind: files, root: /mnt/retention-test-absent}\n",
    )
    store = audit(loaded)
    [outcome] = run(loaded, store)
    assert (outcome.status, outcome.error) == (
        "failed",
        "archive store 'offsite': files store root /mnt/retention-test-absent does not exist; "
        "nothing touched",
    )
    assert files_under(root) == before
    assert audit_rows(store) == []


def test_archive_within_the_store_is_never_matched_again(tmp_path: Path, audit: Any) -> None:
    root = tmp_path / "tree"
    backup_tree(root)
    loaded = make_policy(
        tmp_path,
        rule(pattern="**/db-*.sql.gz", extra="    action: archive\n    archive: {prefix: old}\n"),
    )
    [first] = run(loaded, audit(loaded))
    assert first.files == 3
    assert {p for p in files_under(root) if p.startswith("old/")} == {
        "old/db/db-2026-01-01.sql.gz",
        "old/db/db-2026-03-01.sql.gz",
        "old/db/db-2026-05-01.sql.gz",
    }
    [plan] = plan_file_rules(loaded, NOW)
    assert not any(f.path.startswith("old/") for f in plan.files)


# --- check -------------------------------------------------------------------------------------


def test_check_counts_files_overdue_past_the_grace(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root, "logs/app.log.1", age=timedelta(days=90, hours=12))  # due, within grace
    write(root, "logs/app.log.2", age=timedelta(days=95), size=30)  # overdue
    write(root, "logs/app.log.3", age=timedelta(days=120), size=40)  # overdue
    loaded = make_policy(
        tmp_path, rule("logs-90d", "logs/app.log.*", "mtime", extra="    grace: 1 day\n")
    )
    [status] = check_file_rules(loaded, NOW)
    assert (status.rule, status.overdue, status.overdue_bytes, status.kept) == (
        "logs-90d",
        2,
        70,
        False,
    )
    assert status.oldest_overdue == NOW - timedelta(days=120)
    [plan] = plan_file_rules(loaded, NOW)
    assert plan.count("expired") == 3


def test_check_reports_keep_last_and_unparsable_files_without_breaking_the_promise(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tree"
    write(root, "db/db-2026-01-01.sql.gz")
    write(root, "db/db-latest.sql.gz")
    [status] = check_file_rules(make_policy(tmp_path, rule(extra="    keep_last: 1\n")), NOW)
    assert (status.overdue, status.keep_last, status.unparsable, status.kept) == (0, 1, 1, True)
    assert status.notes == [
        "1 past the period kept by keep_last",
        "1 with a name that does not parse (never removed)",
    ]


# --- fsspec: the in-memory filesystem ---------------------------------------------------------


@pytest.fixture
def memory_root(tmp_path: Path) -> Iterator[str]:
    """A fresh folder on fsspec's (process-wide) in-memory filesystem."""
    url = f"memory://{tmp_path.name}/backups"
    fs = fsspec.filesystem("memory")
    yield url
    if fs.exists(f"/{tmp_path.name}"):
        fs.rm(f"/{tmp_path.name}", recursive=True)


def memory_write(url: str, rel: str, *, age: timedelta = timedelta(0), size: int = 10) -> None:
    fs = fsspec.filesystem("memory")
    path = f"{url.removeprefix('memory://').rstrip('/')}/{rel}"
    fs.pipe(f"/{path}", b"y" * size)
    fs.store[f"/{path}"].modified = NOW - age


def memory_files(url: str) -> set[str]:
    fs = fsspec.filesystem("memory")
    base = "/" + url.removeprefix("memory://")
    return {name.removeprefix(base + "/") for name in fs.find(base)}


def test_memory_filesystem_plan_and_run_with_holds_and_dated_names(
    tmp_path: Path, memory_root: str, audit: Any
) -> None:
    for name, age in (("2026-01-01", 326), ("2026-03-01", 267), ("2026-11-20", 3)):
        memory_write(memory_root, f"db/db-{name}.sql.gz", age=timedelta(days=age), size=50)
    memory_write(memory_root, "db/db-latest.sql.gz")
    loaded = make_policy(tmp_path, rule(), root=memory_root, holds=HOLD_MARCH)
    [plan] = plan_file_rules(loaded, NOW)
    assert {f.path: f.state for f in plan.files} == {
        "db/db-2026-01-01.sql.gz": "expired",
        "db/db-2026-03-01.sql.gz": "held",
        "db/db-2026-11-20.sql.gz": "newer",
        "db/db-latest.sql.gz": "unparsable",
    }
    assert plan.root == memory_root
    store = audit(loaded)
    [outcome] = run(loaded, store)
    assert (outcome.status, outcome.files, outcome.bytes) == ("ok", 1, 50)
    assert memory_files(memory_root) == {
        "db/db-2026-03-01.sql.gz",
        "db/db-2026-11-20.sql.gz",
        "db/db-latest.sql.gz",
    }
    assert [r.outcome for r in audit_rows(store)] == ["intent", "committed"]
    assert chain_intact(store)


def test_memory_filesystem_mtime_rules_and_keep_last(
    tmp_path: Path, memory_root: str, audit: Any
) -> None:
    for week in range(1, 7):
        memory_write(memory_root, f"logs/app.log.{week}", age=timedelta(days=30 * week))
    loaded = make_policy(
        tmp_path,
        rule("logs-1mo", "logs/app.log.*", "mtime", "20 days", "    keep_last: 4\n"),
        root=memory_root,
    )
    [outcome] = run(loaded, audit(loaded))
    assert outcome.files == 2
    assert memory_files(memory_root) == {f"logs/app.log.{w}" for w in range(1, 5)}


def test_memory_filesystem_archive_into_a_local_store(
    tmp_path: Path, memory_root: str, audit: Any
) -> None:
    memory_write(memory_root, "db/db-2026-01-01.sql.gz", size=33)
    (tmp_path / "cold").mkdir()
    loaded = make_policy(
        tmp_path,
        rule(extra="    action: archive\n    archive: {store: local, prefix: from-memory}\n"),
        root=memory_root,
        stores="  local: {kind: files, root: cold}\n",
    )
    [outcome] = run(loaded, audit(loaded))
    assert (outcome.status, outcome.files) == ("ok", 1)
    assert (tmp_path / "cold/from-memory/db/db-2026-01-01.sql.gz").read_bytes() == b"y" * 33
    assert memory_files(memory_root) == set()


def test_memory_filesystem_missing_root_holds_no_files(tmp_path: Path) -> None:
    url = f"memory://{tmp_path.name}-absent/backups"
    [plan] = plan_file_rules(make_policy(tmp_path, rule(), root=url), NOW)
    assert (plan.error, plan.warnings) == (
        None,
        (f"files store root {url} does not exist: no files to judge or remove",),
    )
