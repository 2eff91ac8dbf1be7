"""`retention validate`: static findings, and with --connect, findings against live stores."""

from __future__ import annotations

from datetime import datetime

from retention.errors import Issue, Severity, StoreError
from retention.loader import LoadedPolicy, TreePath
from retention.planner import minimum_conflicts, plan_rule
from retention.stores.archive import ReadOnlyCatalogs
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
