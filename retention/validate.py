"""`retention validate`: static findings, and with --connect, findings against live stores."""

from __future__ import annotations

from datetime import datetime

from retention.errors import Issue, Severity, StoreError
from retention.loader import LoadedPolicy, TreePath
from retention.planner import minimum_conflicts, plan_rule
from retention.policy import FilesStore
from retention.stores.archive import ReadOnlyCatalogs
from retention.stores.files_scan import MissingRoot, open_tree
from retention.stores.rulesql import ArchiveCatalogs, RuleSchemaError, compile_rule
from retention.stores.schema import Catalog
from retention.stores.sql import read_only

__all__ = ["connected_findings", "static_findings"]


def static_findings(loaded: LoadedPolicy, now: datetime) -> list[Issue]:
    """Warnings that need no database: rules that undercut a legal minimum."""
    return [
        loaded.issue(("rules", c.rule_index, "period"), c.message, Severity.WARNING)
        for c in minimum_conflicts(loaded.policy, now)
    ]


def _policy_path(loaded: LoadedPolicy, rule_index: int, path: TreePath) -> TreePath:
    """Map a problem path inside a rule to its place in the file (holds live elsewhere)."""
    if path[:1] == ("holds",) and len(path) >= 2:
        names = [h.name for h in loaded.policy.holds]
        if path[1] in names:
            return ("holds", names.index(str(path[1])), *path[2:])
    if path[:1] == ("minimums",) and len(path) >= 2:
        names = [m.name for m in loaded.policy.minimums]
        if path[1] in names:
            return ("minimums", names.index(str(path[1])), "timestamp")
    return ("rules", rule_index, *path)


def connected_findings(loaded: LoadedPolicy, now: datetime) -> list[Issue]:
    """Reflect each store (read-only) and check every rule against it.

    Errors: missing tables or columns, timestamp columns without a date/time (or
    declared epoch) type, missing or composite primary keys, keys being anonymized,
    archive tables (in another store too) lacking columns or, across stores, a unique
    key matching the rule's table's key.
    Warnings: timestamp columns without an index, holds that cannot apply to a table.
    Files stores: see `_file_findings`.
    """
    policy = loaded.policy
    issues: list[Issue] = []
    by_store: dict[str, list[int]] = {}
    for index, rule in enumerate(policy.rules):
        by_store.setdefault(rule.store, []).append(index)
    with ReadOnlyCatalogs(policy.stores, loaded.base_dir) as archives:
        for store_name, indexes in by_store.items():
            store = policy.stores[store_name]
            try:
                with read_only(store, loaded.base_dir, store_name) as conn:  # type: ignore[arg-type]
                    catalog = Catalog(conn, store_name)
                    for index in indexes:
                        issues += _rule_findings(loaded, index, catalog, now, archives)
            except StoreError as exc:
                issues.append(loaded.issue(("stores", store_name, "url"), str(exc)))
    return issues + _file_findings(loaded)


def _file_findings(loaded: LoadedPolicy) -> list[Issue]:
    """The roots of the files stores the file rules act on, checked without writing.

    A rule's own root that is missing is a warning (a run finds no files there and says
    so); one this process cannot list or remove files from is an error. An archive
    store's local root must exist too: a run refuses to archive into a missing one (an
    object store's prefix need not exist before files are written into it).
    """
    policy = loaded.policy
    sources: dict[str, list[str]] = {}
    targets: dict[str, list[str]] = {}
    for rule in policy.file_rules:
        sources.setdefault(rule.store, []).append(rule.name)
        if rule.archive_store is not None:
            targets.setdefault(rule.archive_store, []).append(rule.name)
    issues: list[Issue] = []
    for name in dict.fromkeys([*sources, *targets]):
        store = policy.stores.get(name)
        if not isinstance(store, FilesStore):  # refused at load time
            continue
        rules = sorted({*sources.get(name, ()), *targets.get(name, ())})
        archived = name in targets
        try:
            open_tree(store, loaded.base_dir).check_access(target=archived)
        except MissingRoot as exc:
            issues.append(
                loaded.issue(
                    ("stores", name, "root"),
                    f"{exc}: "
                    + ("archiving into it fails" if archived else "no files to judge or remove")
                    + f" (rules {', '.join(rules)})",
                    Severity.ERROR if archived else Severity.WARNING,
                )
            )
        except StoreError as exc:
            issues.append(
                loaded.issue(("stores", name, "root"), f"{exc} (rules {', '.join(rules)})")
            )
    return issues


def _rule_findings(
    loaded: LoadedPolicy, index: int, catalog: Catalog, now: datetime, archives: ArchiveCatalogs
) -> list[Issue]:
    rule = loaded.policy.rules[index]
    plan = plan_rule(loaded.policy, rule, now)
    try:
        sql = compile_rule(plan, catalog, archives)
    except RuleSchemaError as exc:
        return [
            loaded.issue(
                _policy_path(loaded, index, p.path),
                p.message,
                Severity.WARNING if p.warning else Severity.ERROR,
            )
            for p in exc.problems
        ]
    issues = [
        loaded.issue(_policy_path(loaded, index, w.path), w.message, Severity.WARNING)
        for w in sql.warnings
    ]
    for hold, why in sql.skipped_holds:
        issues.append(
            loaded.issue(
                ("rules", index, "table"),
                f"hold {hold.name!r} does not protect this rule: {why}",
                Severity.WARNING,
            )
        )
    return issues
