"""File rules: plan, run and check retention on 'files' stores (backups, rotated logs).

Plan: scan the rule's tree below the pattern's fixed folder, keep the paths the
pattern matches, read each file's timestamp (modification time, or a date in its
name), and give each file one state, first match wins:

    unparsable  no timestamp (a name that does not parse): reported, never removed
    newer       timestamp at or after the cutoff
    held        an active legal hold covers it (by path, or the whole rule)
    minimum     a legal file minimum still protects it
    keep_last   among the newest `keep_last` files (by timestamp) the pattern matches
    expired     removed by a run

Run: stop before touching a file when a safety limit would be exceeded (unless
forced); then, per batch of N expired files, oldest first: append an ``intent``
audit record (paths and sizes in `detail`, a keyed digest of the names), remove
the files one by one (archive first: copy, check the copy's size, then delete),
re-reading each file and re-checking its timestamp and holds right before it
goes, then append a ``committed`` record listing what was actually removed. A
run that finds an ``intent`` with no ``committed`` (a crash in between) first
appends a ``reconciled`` record: files that are gone count as removed; files
still there are planned again like any other.

Check: a file is overdue when it would be expired under the rule planned at
``now - grace``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import sqlalchemy as sa
import structlog

from retention.audit.records import BatchRecord, key_digest, rule_hash
from retention.audit.sql import AuditTables, append, ensure_tables
from retention.errors import StoreError, UsageError
from retention.loader import LoadedPolicy
from retention.policy import (
    FileBatch,
    FileLimits,
    FileMinimum,
    FileRule,
    FilesStore,
    FileTimestamp,
    Hold,
    Policy,
    Schedule,
    compile_glob,
    glob_base,
)
from retention.stores.check import PromiseStatus
from retention.stores.files_scan import (
    FileEntry,
    MissingRoot,
    Removal,
    Skipped,
    Tree,
    open_tree,
)
from retention.stores.purge import BatchDone, RuleResult

__all__ = [
    "AppliedFileMinimum",
    "FileOptions",
    "FilePromiseStatus",
    "FileRuleOutcome",
    "FileRulePlan",
    "FileState",
    "PlannedFile",
    "check_file_rules",
    "classify",
    "disabled_file_rules",
    "file_limit_breach",
    "plan_file_rule",
    "plan_file_rules",
    "run_file_rule",
    "run_file_rules",
    "selected_file_rules",
]

FileState = Literal["expired", "newer", "held", "minimum", "keep_last", "unparsable"]
Status = Literal["ok", "failed", "limit", "stopped"]

#: audit column widths (see retention.audit.sql)
_KEY_WIDTH = 128
_TABLE_WIDTH = 128


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One matched file and what a run would do with it."""

    path: str
    size: int
    #: The instant its age is measured from (None when unparsable).
    timestamp: datetime | None
    state: FileState
    #: The hold or minimum that keeps it, or why its timestamp cannot be read.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AppliedFileMinimum:
    """A legal file minimum that covers some of a rule's files: younger than `cutoff`, kept."""

    minimum: FileMinimum
    cutoff: datetime


@dataclass(frozen=True)
class FileRulePlan:
    """Everything decided about one file rule at `now`, with the files it matched."""

    rule: FileRule
    store_name: str
    store: FilesStore
    #: Printable root of the store.
    root: str
    now: datetime
    cutoff: datetime
    overdue_cutoff: datetime
    batch: FileBatch
    limits: FileLimits
    schedule: Schedule
    timezone: str
    holds: tuple[Hold, ...]
    lapsed_holds: tuple[Hold, ...]
    minimums: tuple[AppliedFileMinimum, ...]
    files: tuple[PlannedFile, ...] = ()
    #: Entries the scan did not follow (links out of the root, unreadable folders).
    skipped: tuple[Skipped, ...] = ()
    #: Worth saying, but no failure: a root that does not exist holds no files to remove.
    warnings: tuple[str, ...] = ()
    error: str | None = None

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.rule.name

    def having(self, state: FileState) -> tuple[PlannedFile, ...]:
        """The matched files in `state`, oldest first (unparsable ones by path)."""
        found = [f for f in self.files if f.state == state]
        return tuple(sorted(found, key=lambda f: (f.timestamp or self.now, f.path)))

    def count(self, state: FileState) -> int:
        """How many matched files are in `state`."""
        return sum(1 for f in self.files if f.state == state)

    def bytes(self, state: FileState | None = None) -> int:
        """Total size of the matched files in `state` (all matched files when None)."""
        return sum(f.size for f in self.files if state is None or f.state == state)

    def newest(self) -> tuple[str, ...]:
        """Paths of the newest `keep_last` matched files (by timestamp), newest first."""
        dated = [f for f in self.files if f.timestamp is not None]
        dated.sort(key=lambda f: (f.timestamp, f.path), reverse=True)
        return tuple(f.path for f in dated[: self.rule.keep_last])

    @property
    def expired(self) -> tuple[PlannedFile, ...]:
        """The files a run removes, oldest first."""
        return self.having("expired")

    @property
    def matched(self) -> int:
        """How many files the pattern matched."""
        return len(self.files)

    @property
    def oldest_expired(self) -> datetime | None:
        """The timestamp of the oldest file a run removes."""
        expired = self.expired
        return expired[0].timestamp if expired else None

    @property
    def estimated_batches(self) -> int:
        """Batches a run takes."""
        return -(-len(self.expired) // self.batch.size)

    @property
    def limit_exceeded(self) -> str | None:
        """Why a run would stop before touching a file, or None."""
        expired = self.expired
        return file_limit_breach(
            self.limits, len(expired), sum(f.size for f in expired), self.matched
        )


def file_limit_breach(limits: FileLimits, files: int, size: int, matched: int) -> str | None:
    """Why removing `files` files of `size` bytes out of `matched` would break a limit."""
    if limits.max_files is not None and files > limits.max_files:
        return f"{files} files exceed max_files {limits.max_files}"
    if limits.max_bytes is not None and size > limits.max_bytes:
        return f"{size} bytes exceed max_bytes {limits.max_bytes}"
    if limits.max_fraction is not None and matched and files / matched > limits.max_fraction:
        return (
            f"{files} of {matched} files ({files / matched:.1%}) exceed "
            f"max_fraction {limits.max_fraction:.0%}"
        )
    return None


# --- planning ---------------------------------------------------------------------------


def disabled_file_rules(policy: Policy, selected: Sequence[str] = ()) -> tuple[str, ...]:
    """Names of disabled file rules a run leaves out (none when rules are named)."""
    return () if selected else tuple(r.name for r in policy.file_rules if not r.enabled)


def _chosen(policy: Policy, selected: Sequence[str]) -> list[FileRule]:
    known = {r.name for r in policy.rules} | {r.name for r in policy.file_rules}
    unknown = [name for name in selected if name not in known]
    if unknown:
        raise UsageError(
            f"unknown rule {', '.join(map(repr, unknown))}; rules: {', '.join(sorted(known))}"
        )
    return [r for r in policy.file_rules if (r.name in selected if selected else r.enabled)]


def plan_file_rules(
    loaded: LoadedPolicy, now: datetime, selected: Sequence[str] = ()
) -> list[FileRulePlan]:
    """Plan the file rules named in `selected` (every enabled one when empty) at `now`,
    scanning each rule's tree (read-only). Names of SQL rules in `selected` are allowed and
    ignored; an unknown name is a UsageError. A tree that cannot be read gives a plan with
    `error` set."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    trees: dict[str, Tree | StoreError] = {}
    plans = []
    for rule in _chosen(loaded.policy, selected):
        if rule.store not in trees:
            trees[rule.store] = _open(loaded, rule.store)
        plans.append(plan_file_rule(loaded, rule, now, trees[rule.store]))
    return plans


def _open(loaded: LoadedPolicy, store_name: str) -> Tree | StoreError:
    store = loaded.policy.stores[store_name]
    if not isinstance(store, FilesStore):  # refused at load time
        return StoreError(f"store {store_name!r} is not a 'files' store")
    try:
        return open_tree(store, loaded.base_dir)
    except StoreError as exc:
        return exc


def plan_file_rule(
    loaded: LoadedPolicy, rule: FileRule, now: datetime, tree: Tree | StoreError | None = None
) -> FileRulePlan:
    """Plan one file rule at `now` and classify the files it matches (see module doc)."""
    policy = loaded.policy
    store = policy.stores[rule.store]
    if not isinstance(store, FilesStore):
        raise UsageError(f"file rule {rule.name}: store {rule.store!r} is not a 'files' store")
    tree = _open(loaded, rule.store) if tree is None else tree
    cutoff = rule.period.before(now)
    scoped = [
        h
        for h in policy.holds
        if h.rule == rule.name or (h.paths is not None and h.paths.store == rule.store)
    ]
    plan = FileRulePlan(
        rule=rule,
        store_name=rule.store,
        store=store,
        root=tree.where if not isinstance(tree, StoreError) else store.root,
        now=now,
        cutoff=cutoff,
        overdue_cutoff=policy.effective_grace(rule).before(cutoff),
        batch=policy.effective_file_batch(rule),
        limits=policy.effective_file_limits(rule),
        schedule=policy.effective_schedule(rule),
        timezone=policy.effective_timezone(rule),
        holds=tuple(h for h in scoped if h.active(now)),
        lapsed_holds=tuple(h for h in scoped if not h.active(now)),
        minimums=tuple(
            AppliedFileMinimum(m, m.period.before(now))
            for m in policy.file_minimums
            if m.store == rule.store
        ),
    )
    if isinstance(tree, StoreError):
        return replace(plan, error=str(tree))
    try:
        entries, skipped = tree.scan(glob_base(rule.pattern))
    except MissingRoot as exc:
        return replace(plan, warnings=(f"{exc}: no files to judge or remove",))
    except Exception as exc:  # any filesystem backend's error fails this rule only
        return replace(plan, error=_message(exc))
    entries = matching(rule, entries)
    pattern = compile_glob(rule.pattern)
    shown = tuple(s for s in skipped if s.folder or pattern.fullmatch(s.path))
    return replace(plan, files=classify(plan, entries), skipped=shown)


def _message(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, StoreError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def matching(rule: FileRule, entries: Iterable[FileEntry]) -> list[FileEntry]:
    """The entries `rule`'s pattern matches, leaving out its own archive folder."""
    pattern = compile_glob(rule.pattern)
    archive = rule.archive
    own_archive = (
        f"{archive.prefix}/"
        if archive and rule.archive_store == rule.store and archive.prefix
        else None
    )
    return [
        e
        for e in entries
        if pattern.fullmatch(e.path) and not (own_archive and e.path.startswith(own_archive))
    ]


def _timestamp(spec: FileTimestamp, entry: FileEntry) -> datetime | str:
    """The entry's timestamp under `spec`, or why it has none."""
    if spec.uses_mtime:
        return entry.mtime if entry.mtime is not None else "the store reports no modification time"
    try:
        return spec.from_name(entry.base_name)
    except ValueError as exc:
        return f"name {entry.base_name!r} {exc}"


def held_by(plan: FileRulePlan, path: str) -> str | None:
    """The name of an active hold of `plan` that covers `path`, or None."""
    for hold in plan.holds:
        if hold.rule == plan.rule.name or hold.holds_path(plan.store_name, path):
            return hold.name
    return None


def _minimum_for(plan: FileRulePlan, entry: FileEntry) -> str | None:
    for applied in plan.minimums:
        minimum = applied.minimum
        if not compile_glob(minimum.pattern).fullmatch(entry.path):
            continue
        stamp = _timestamp(minimum.timestamp, entry)
        if isinstance(stamp, str) or stamp >= applied.cutoff:
            return minimum.name
    return None


def classify(plan: FileRulePlan, entries: Sequence[FileEntry]) -> tuple[PlannedFile, ...]:
    """Give each matched entry its state under `plan` (pure; see the module doc)."""
    stamps = {e.path: _timestamp(plan.rule.timestamp, e) for e in entries}
    dated = [e for e in entries if isinstance(stamps[e.path], datetime)]
    dated.sort(key=lambda e: (stamps[e.path], e.path), reverse=True)
    newest = {e.path for e in dated[: plan.rule.keep_last]}
    out: list[PlannedFile] = []
    for entry in entries:
        stamp = stamps[entry.path]
        if isinstance(stamp, str):
            out.append(PlannedFile(entry.path, entry.size, None, "unparsable", stamp))
            continue
        state: FileState = "expired"
        reason = None
        if stamp >= plan.cutoff:
            state = "newer"
        elif (hold := held_by(plan, entry.path)) is not None:
            state, reason = "held", hold
        elif (minimum := _minimum_for(plan, entry)) is not None:
            state, reason = "minimum", minimum
        elif entry.path in newest:
            state = "keep_last"
        out.append(PlannedFile(entry.path, entry.size, stamp, state, reason))
    return tuple(sorted(out, key=lambda f: f.path))


# --- running ------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Where audit records go: `retention.audit.store.AuditStore` fits."""

    @property
    def engine(self) -> sa.Engine: ...

    @property
    def tables(self) -> AuditTables: ...


class RunSelection(Protocol):
    """The parts of the runner's options file rules use: `retention.runner.RunOptions` fits."""

    @property
    def rules(self) -> Sequence[str]: ...

    @property
    def force(self) -> bool: ...


#: A structlog logger that drops everything (`run_file_rule` logs only when given one).
def _drop(_logger: Any, _method: str, _event: Any) -> Any:
    raise structlog.DropEvent


_SILENT = structlog.wrap_logger(structlog.PrintLogger(), processors=[_drop])

#: Asked right before a file goes: the name of a hold that now covers (rule, path), or None.
LateHold = Callable[[FileRule, str], str | None]


@dataclass(frozen=True)
class FileOptions:
    """Options for `run_file_rules` when no `RunOptions` is at hand."""

    rules: Sequence[str] = ()
    force: bool = False


@dataclass
class FileRuleOutcome:
    """What happened to one file rule (the fields of the runner's `RuleOutcome`, plus bytes)."""

    rule: str
    action: str
    status: Status
    planned: int = 0
    result: RuleResult | None = None
    error: str | None = None
    #: Bytes of the files removed.
    bytes: int = 0
    #: Files found gone while reconciling an earlier run's unfinished batches.
    reconciled: int = 0
    #: Files left in place at removal time, and why (changed, came under a hold, failed).
    kept: list[tuple[str, str]] = field(default_factory=list)
    #: The rule's cutoff (None when it could not be planned).
    cutoff: datetime | None = None

    @property
    def rows(self) -> int:
        """Files removed (named `rows` like the SQL outcome's)."""
        return self.result.rows if self.result else 0

    @property
    def files(self) -> int:
        """Files removed."""
        return self.rows


@dataclass
class _Writer:
    """Appends one rule's audit records, numbering them within the run."""

    audit: AuditSink
    plan: FileRulePlan
    run_id: str
    host: str
    digest_key: bytes
    wall_clock: Callable[[], datetime]
    rule_hash: str = ""
    number: int = 0

    def write(
        self,
        outcome: str,
        files: Sequence[tuple[str, int]],
        rows: int,
        detail: dict[str, Any],
        started_at: datetime,
    ) -> int:
        self.number += 1
        paths = [p for p, _ in files]
        detail = {
            "root": self.plan.root,
            **detail,
            "files": [{"path": p, "size": s} for p, s in files],
            "bytes": sum(s for _, s in files),
        }
        record = BatchRecord(
            run_id=self.run_id,
            rule=self.plan.name,
            rule_hash=self.rule_hash,
            store=self.plan.store_name,
            table_name=self.plan.rule.pattern[:_TABLE_WIDTH],
            action=self.plan.rule.action,
            cutoff=self.plan.cutoff,
            batch=self.number,
            rows=rows,
            key_min=paths[0][:_KEY_WIDTH] if paths else None,
            key_max=paths[-1][:_KEY_WIDTH] if paths else None,
            key_digest=key_digest(paths, self.digest_key),
            started_at=started_at,
            committed_at=self.wall_clock(),
            host=self.host,
            dry_run=False,
            outcome=outcome,
            detail=json.dumps(detail, sort_keys=True, separators=(",", ":")),
        )
        with self.audit.engine.begin() as conn:
            append(conn, self.audit.tables, record)
        return self.number


def selected_file_rules(policy: Policy, selected: Sequence[str] = ()) -> list[FileRule]:
    """The file rules a run of `selected` names covers (every enabled one when empty), in
    policy order; names of SQL rules are allowed and ignored, unknown names a UsageError."""
    return _chosen(policy, selected)


def run_file_rules(
    loaded: LoadedPolicy,
    now: datetime,
    options: RunSelection,
    audit: AuditSink,
    run_id: str,
    host: str,
    digest_key: bytes,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    on_rule: Callable[[FileRuleOutcome], None] = lambda _outcome: None,
    **hooks: Any,
) -> list[FileRuleOutcome]:
    """Run the selected file rules once at `now`; one outcome per rule, in policy order.

    `run_file_rule` for each of `selected_file_rules(policy, options.rules)` until
    `should_stop`; `on_rule` hears each outcome; `hooks` go to `run_file_rule`.
    """
    outcomes: list[FileRuleOutcome] = []
    for rule in selected_file_rules(loaded.policy, options.rules):
        if should_stop():
            break
        outcome = run_file_rule(
            loaded, rule, now, options, audit, run_id, host, digest_key, should_stop, **hooks
        )
        outcomes.append(outcome)
        on_rule(outcome)
    return outcomes


def run_file_rule(
    loaded: LoadedPolicy,
    rule: FileRule,
    now: datetime,
    options: RunSelection,
    audit: AuditSink,
    run_id: str,
    host: str,
    digest_key: bytes,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    on_batch: Callable[[BatchDone], None] = lambda _done: None,
    on_start: Callable[[FileRulePlan, int], None] = lambda _plan, _files: None,
    late_hold: LateHold = lambda _rule, _path: None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    log: Any = None,
) -> FileRuleOutcome:
    """Run one file rule once at `now` (see the module doc); never raises for a store error.

    First closes any batch an earlier run left unfinished; then plans, checks the safety
    limits (unless `options.force`) and removes in batches. `should_stop` is asked before
    each batch. Audit records go to `audit` (the policy's audit store). `late_hold` is
    asked right before each file goes, besides the policy's holds (e.g. holds added to the
    audit store since the run started): the name of a hold keeps the file. `on_start`
    hears the plan and its expired-file count before the first batch, `on_batch` each
    batch. `log`, a structlog logger, gets a 'files.batch' line per batch (files, bytes,
    kept) and a 'files.rule.done' line per rule; by default nothing is logged here, as the
    runner's progress already logs each `on_batch`.
    """
    log = log if log is not None else _SILENT
    tree = _open(loaded, rule.store)
    plan = plan_file_rule(loaded, rule, now, tree)
    writer = _Writer(
        audit,
        plan,
        run_id,
        host,
        digest_key,
        wall_clock,
        rule_hash(rule.model_dump(mode="json", by_alias=True)),
    )
    outcome = FileRuleOutcome(
        rule.name, rule.action, "failed", planned=len(plan.expired), cutoff=plan.cutoff
    )
    try:
        with audit.engine.begin() as conn:
            ensure_tables(conn, audit.tables)
        if not isinstance(tree, StoreError):
            outcome.reconciled = _reconcile(plan, tree, writer, log)
        if plan.error is not None or isinstance(tree, StoreError):
            outcome.error = plan.error or str(tree)
        else:
            if plan.limit_exceeded is None or options.force:
                on_start(plan, len(plan.expired))
            _run_rule(
                plan,
                tree,
                loaded,
                options,
                writer,
                outcome,
                should_stop,
                on_batch,
                log,
                late_hold,
            )
    except (sa.exc.SQLAlchemyError, StoreError, OSError, ValueError) as exc:
        outcome.status = "failed"
        outcome.error = _message(exc)
    log.info(
        "files.rule.done",
        rule=rule.name,
        action=rule.action,
        status=outcome.status,
        files=outcome.files,
        bytes=outcome.bytes,
        batches=outcome.result.batches if outcome.result else 0,
        reconciled=outcome.reconciled,
        error=outcome.error,
    )
    return outcome


def _run_rule(
    plan: FileRulePlan,
    tree: Tree,
    loaded: LoadedPolicy,
    options: RunSelection,
    writer: _Writer,
    outcome: FileRuleOutcome,
    should_stop: Callable[[], bool],
    on_batch: Callable[[BatchDone], None],
    log: Any,
    late_hold: LateHold,
) -> None:
    rule = plan.rule
    breach = plan.limit_exceeded
    if breach and not options.force:
        outcome.status = "limit"
        outcome.error = f"safety limit: {breach}; nothing touched (use --force to override)"
        return
    archive_tree: Tree | None = None
    if rule.archive is not None:
        target = rule.archive_store or rule.store
        opened = tree if target == rule.store else _open(loaded, target)
        if not isinstance(opened, StoreError):
            try:
                opened.ready()
            except StoreError as exc:
                opened = exc
        if isinstance(opened, StoreError):
            outcome.error = f"archive store {target!r}: {opened}; nothing touched"
            return
        archive_tree = opened
    result = RuleResult(rule.name, rule.action)
    outcome.result = result
    started = time.monotonic()
    expired = plan.expired
    newest = plan.newest()
    failed: list[str] = []
    for start in range(0, len(expired), plan.batch.size):
        if should_stop():
            result.stopped = "signal"
            break
        vanished = [path for path in newest if tree.stat(path) is None]
        if vanished:
            raise StoreError(
                f"the newest files that keep_last protects vanished during the run "
                f"({', '.join(vanished[:3])}); stopping so the last ones survive"
            )
        batch = expired[start : start + plan.batch.size]
        batch_started = time.monotonic()
        started_at = writer.wall_clock()
        number = result.batches + 1
        intent = writer.write(
            "intent", [(f.path, f.size) for f in batch], 0, {"batch": number}, started_at
        )
        removed: list[tuple[str, int]] = []
        gone: list[str] = []
        kept: list[tuple[str, str]] = []
        for planned in batch:
            try:
                removal = _remove(plan, tree, archive_tree, planned, late_hold)
            except (StoreError, OSError, ValueError) as exc:
                removal = Removal("kept", reason=f"failed: {_message(exc)}")
                failed.append(planned.path)
            if removal.status == "removed" and removal.entry is not None:
                removed.append((planned.path, removal.entry.size))
            elif removal.status == "gone":
                gone.append(planned.path)
            else:
                kept.append((planned.path, removal.reason or "kept"))
        outcome.kept.extend(kept)
        writer.write(
            "committed",
            removed,
            len(removed),
            {
                "batch": number,
                "intent": {"run_id": writer.run_id, "record": intent},
                "gone": gone,
                "kept": [{"path": p, "reason": r} for p, r in kept],
            },
            started_at,
        )
        seconds = time.monotonic() - batch_started
        result.batches += 1
        result.rows += len(removed)
        result.longest_batch = max(result.longest_batch, seconds)
        outcome.bytes += sum(s for _, s in removed)
        first = batch[0].path
        last = batch[-1].path
        log.info(
            "files.batch",
            rule=rule.name,
            batch=number,
            files=len(removed),
            bytes=sum(s for _, s in removed),
            kept=len(kept),
            ms=round(seconds * 1000, 1),
        )
        on_batch(BatchDone(rule.name, number, len(removed), len(batch), seconds, first, last))
        if plan.batch.pause_ms and start + plan.batch.size < len(expired):
            time.sleep(plan.batch.pause_ms / 1000)
    result.seconds = time.monotonic() - started
    if failed:
        outcome.status = "failed"
        outcome.error = f"{len(failed)} file(s) could not be removed (first: {failed[0]})"
    else:
        outcome.status = "stopped" if result.stopped == "signal" else "ok"


def _recheck(
    plan: FileRulePlan, planned: PlannedFile, copied: int | None, late_hold: LateHold
) -> Callable[[FileEntry], str | None]:
    """The last check before `planned` goes: still expired, still not held, unchanged copy."""

    def check(entry: FileEntry) -> str | None:
        stamp = _timestamp(plan.rule.timestamp, entry)
        if isinstance(stamp, str):
            return f"changed: {stamp}"
        if stamp >= plan.cutoff:
            return f"changed: its timestamp {stamp.isoformat()} is now after the cutoff"
        hold = held_by(plan, entry.path) or late_hold(plan.rule, entry.path)
        if hold is not None:
            return f"held by {hold}"
        minimum = _minimum_for(plan, entry)
        if minimum is not None:
            return f"kept by the legal minimum {minimum}"
        if copied is not None and entry.size != copied:
            return f"changed while being archived ({copied} bytes copied, {entry.size} now)"
        return None

    return check


def _remove(
    plan: FileRulePlan,
    tree: Tree,
    archive_tree: Tree | None,
    planned: PlannedFile,
    late_hold: LateHold,
) -> Removal:
    copied: int | None = None
    if archive_tree is not None:
        archive = plan.rule.archive
        assert archive is not None
        entry = tree.stat(planned.path)
        if entry is None:
            return Removal("gone")
        reason = _recheck(plan, planned, None, late_hold)(entry)
        if reason is not None:
            return Removal("kept", entry, reason)
        target = f"{archive.prefix}/{planned.path}" if archive.prefix else planned.path
        present = archive_tree.stat(target)
        if present is None or present.size != entry.size:
            with tree.open_read(planned.path) as source:
                archive_tree.write(target, source, entry.mtime)
            present = archive_tree.stat(target)
        if present is None or present.size != entry.size:
            raise StoreError(f"the archived copy of {planned.path} does not match its size")
        copied = entry.size
    return tree.remove(planned.path, _recheck(plan, planned, copied, late_hold))


# --- reconciling after a crash ------------------------------------------------------------


def _reconcile(plan: FileRulePlan, tree: Tree, writer: _Writer, log: Any) -> int:
    """Close every `intent` of this rule that has no `committed`/`reconciled` record."""
    table = writer.audit.tables.records
    query = (
        sa.select(table.c.run_id, table.c.batch, table.c.outcome, table.c.detail)
        .where(table.c.rule == plan.name)
        .where(table.c.outcome.in_(["intent", "committed", "reconciled"]))
        .order_by(table.c.seq)
    )
    with writer.audit.engine.connect() as conn:
        rows = conn.execute(query).all()
    pending: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        detail = json.loads(row.detail) if row.detail else {}
        if row.outcome == "intent":
            pending[(row.run_id, row.batch)] = detail
        elif isinstance(detail.get("intent"), dict):
            ref = detail["intent"]
            pending.pop((str(ref.get("run_id")), int(ref.get("record", 0))), None)
    found = 0
    for (run_id, record), detail in pending.items():
        files = [(str(f["path"]), int(f["size"])) for f in detail.get("files", [])]
        gone: list[tuple[str, int]] = []
        present: list[str] = []
        for path, size in files:
            if tree.stat(path) is None:
                gone.append((path, size))
            else:
                present.append(path)
        writer.write(
            "reconciled",
            gone,
            len(gone),
            {"intent": {"run_id": run_id, "record": record}, "present": present},
            writer.wall_clock(),
        )
        log.info(
            "files.reconciled",
            rule=plan.name,
            intent_run=run_id,
            intent_record=record,
            gone=len(gone),
            present=len(present),
        )
        found += len(gone)
    return found


# --- check ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilePromiseStatus(PromiseStatus):
    """One file rule's promise, judged at `now`: a `PromiseStatus` counting files, plus
    bytes and what kept files back."""

    overdue_bytes: int = 0
    #: Overdue files kept only because they are among the newest `keep_last`.
    keep_last: int = 0
    #: Files whose timestamp cannot be read: never removed, so never judged.
    unparsable: int = 0
    skipped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def notes(self) -> list[str]:
        """Things worth saying besides the counts."""
        out = []
        if self.keep_last:
            out.append(f"{self.keep_last} past the period kept by keep_last")
        if self.unparsable:
            out.append(f"{self.unparsable} with a name that does not parse (never removed)")
        out.extend(self.skipped)
        out.extend(self.warnings)
        return out


def check_file_rules(loaded: LoadedPolicy, now: datetime) -> list[FilePromiseStatus]:
    """Judge every enabled file rule's promise at `now` (read-only)."""
    policy = loaded.policy
    out: list[FilePromiseStatus] = []
    trees: dict[str, Tree | StoreError] = {}
    for rule in (r for r in policy.file_rules if r.enabled):
        if rule.store not in trees:
            trees[rule.store] = _open(loaded, rule.store)
        late = plan_file_rule(
            loaded, rule, policy.effective_grace(rule).before(now), trees[rule.store]
        )
        if late.error is not None:
            out.append(FilePromiseStatus(rule.name, rule.promise, error=late.error))
            continue
        expired = late.expired
        out.append(
            FilePromiseStatus(
                rule.name,
                rule.promise,
                overdue=len(expired),
                held=late.count("held"),
                minimum=late.count("minimum"),
                oldest_overdue=late.oldest_expired,
                overdue_bytes=sum(f.size for f in expired),
                keep_last=late.count("keep_last"),
                unparsable=late.count("unparsable"),
                skipped=tuple(f"{s.path}: {s.reason}" for s in late.skipped),
                warnings=late.warnings,
            )
        )
    return out
