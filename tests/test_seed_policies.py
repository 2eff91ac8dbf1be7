"""The four seed privacy policies, encoded in policies/*.yaml against the demo store.

The seed texts live outside the repository; point ``RETENTION_SEEDS_DIR`` at them
(default: ../shared/seeds beside the repository). Tests that read them skip when it is absent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention.audit.sql import verify
from retention.audit.store import audit_file, open_audit
from retention.demo import HOLD_SUBJECTS, METADATA, build_demo_backups
from retention.loader import LoadedPolicy, load_policy
from retention.planner import build_plan, minimum_conflicts
from retention.policy import FileRule, FilesStore, Policy, Rule, SqlStore
from retention.stores.files import FileOptions, check_file_rules, plan_file_rules, run_file_rules
from retention.stores.sql import resolve_url
from tests.conftest import NOW

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "policies"
SEEDS = Path(
    os.environ.get("RETENTION_SEEDS_DIR", Path(__file__).resolve().parents[2] / "shared" / "seeds")
)

#: Seed privacy policy text -> the policy file that encodes it.
SEED_POLICIES = {
    "infraux-privacy-policy.txt": "infraux.yaml",
    "andron-privacy-policy.txt": "andron.yaml",
    "aurigen-labs-privacy-policy.txt": "aurigen.yaml",
    "indigo-bioautomation-privacy-policy.txt": "indigo.yaml",
}
FILES = sorted(SEED_POLICIES.values())
SEED_OF = {policy: seed for seed, policy in SEED_POLICIES.items()}

needs_seeds = pytest.mark.skipif(
    not SEEDS.is_dir(), reason=f"seed policies not found in {SEEDS} (set RETENTION_SEEDS_DIR)"
)


def _load(name: str) -> LoadedPolicy:
    return load_policy(POLICIES / name, env={})


def _policy(name: str) -> Policy:
    return _load(name).policy


def _seed_text(name: str) -> str:
    """The seed text of policy file `name`, with runs of whitespace made single spaces."""
    return " ".join((SEEDS / SEED_OF[name]).read_text(encoding="utf-8").split())


@needs_seeds
def test_every_seed_policy_has_a_policy_file() -> None:
    seeds = {path.name for path in SEEDS.glob("*.txt")}
    files = {path.name for path in POLICIES.glob("*.yaml")}
    assert seeds == set(SEED_POLICIES)
    assert set(FILES) <= files


@pytest.mark.parametrize("name", FILES)
def test_policy_file_loads_without_errors_or_warnings(name: str) -> None:
    loaded = _load(name)
    assert loaded.warnings == ()
    assert loaded.policy.version == 1


def _all_rules(policy: Policy) -> list[Rule | FileRule]:
    return [*policy.rules, *policy.file_rules]


@pytest.mark.parametrize("name", FILES)
def test_every_rule_has_a_promise_and_a_source(name: str) -> None:
    policy = _policy(name)
    titles = {rule.source.policy for rule in _all_rules(policy)}
    assert len(titles) == 1, titles
    for rule in _all_rules(policy):
        assert rule.promise.strip(), rule.name
        assert rule.source.policy.strip(), rule.name
        assert rule.source.clause.strip(), rule.name


@needs_seeds
@pytest.mark.parametrize("name", FILES)
def test_every_promise_quotes_its_seed_word_for_word(name: str) -> None:
    """A promise is one quote, or several joined by ' ... ', each found in the seed text."""
    seed = _seed_text(name)
    for rule in _all_rules(_policy(name)):
        for quote in rule.promise.split(" ... "):
            assert " ".join(quote.split()) in seed, (rule.name, quote)


@needs_seeds
@pytest.mark.parametrize("name", FILES)
def test_every_source_clause_names_sections_of_its_seed(name: str) -> None:
    """Clause 'A: B (note); C' names sections A, B and C; each heading is in the seed."""
    seed = _seed_text(name)
    for rule in _all_rules(_policy(name)):
        clause = re.sub(r"\s*\(.*?\)", "", rule.source.clause)
        for part in re.split(r"; |: ", clause):
            assert part in seed, (rule.name, part)


@pytest.mark.parametrize("name", FILES)
def test_rules_holds_and_minimums_name_demo_tables_and_columns(name: str) -> None:
    policy = _policy(name)
    tables = METADATA.tables

    def check(table: str, *columns: str) -> None:
        assert table in tables, table
        missing = set(columns) - set(tables[table].columns.keys())
        assert not missing, (table, missing)

    def check_clock(table: str, column: str, fmt: str) -> None:
        kind = tables[table].columns[column].type
        wanted = sa.DateTime if fmt == "datetime" else sa.Integer
        assert isinstance(kind, wanted), (table, column, fmt)

    for rule in policy.rules:
        check(rule.table, *(c.column for c in rule.where))
        if rule.timestamp is not None:
            check(rule.table, rule.timestamp.column)
            check_clock(rule.table, rule.timestamp.column, rule.timestamp.format)
        if rule.event is not None:
            event = rule.event
            check(rule.table, *event.join)
            check(event.table, event.column, *event.join.values(), *(c.column for c in event.where))
            check_clock(event.table, event.column, event.format)
        if rule.anonymize is not None:
            check(rule.table, *rule.anonymize.columns)
            if rule.anonymize.marker is not None:
                check(rule.table, rule.anonymize.marker)
    for minimum in policy.minimums:
        check(minimum.table, minimum.timestamp.column)
    for hold in policy.holds:
        if hold.rule is not None:
            check(policy.rule(hold.rule).table, *(c.column for c in hold.where))
        if hold.subjects is not None:
            for table in tables:
                if table != "deletion_requests":
                    column = hold.subjects.column_for(table)
                    assert column in tables[table].columns, (hold.name, table)


@pytest.mark.parametrize("name", FILES)
def test_store_defaults_to_the_demo_database_in_the_repository(name: str) -> None:
    loaded = _load(name)
    store = loaded.policy.stores["app"]
    assert isinstance(store, SqlStore)
    assert resolve_url(store.url, loaded.base_dir).database == str(REPO / "var" / "demo.db")
    pg = "postgresql+psycopg://retention@db:5432/app"
    other = load_policy(POLICIES / name, env={"RETENTION_DB_URL": pg}).policy.stores["app"]
    assert isinstance(other, SqlStore)
    assert other.url == pg


@pytest.mark.parametrize("name", FILES)
def test_holds_cover_the_litigation_subjects_a_rule_and_a_lapsed_case(name: str) -> None:
    policy = _policy(name)
    subjects = [h for h in policy.holds if h.subjects and h.expires is None]
    assert [(h.subjects.values, h.subjects.tables) for h in subjects if h.subjects] == [
        (list(HOLD_SUBJECTS), {"accounts": "id"})
    ]
    assert [bool(h.where) for h in policy.holds if h.rule is not None and h.expires is None] == [
        True
    ]
    plan = build_plan(policy, NOW)
    lapsed = {h.name for rule in plan.rules for h in rule.lapsed_holds}
    active = {h.name for rule in plan.rules for h in rule.holds}
    expired = [h for h in policy.holds if h.expires is not None]
    assert len(expired) == 1
    assert lapsed == {expired[0].name}
    assert expired[0].expires is not None
    assert expired[0].expires < NOW
    assert active == {h.name for h in policy.holds if h.paths is None} - lapsed


EXPECTED_MINIMUMS = {
    "infraux.yaml": {("invoices", "issued_at", "7 years"), ("payments", "paid_at", "7 years")},
    "andron.yaml": {("invoices", "issued_at", "6 years"), ("payments", "paid_at", "6 years")},
    "aurigen.yaml": {("invoices", "issued_at", "8 years"), ("payments", "paid_at", "8 years")},
    "indigo.yaml": {("invoices", "issued_at", "7 years"), ("payments", "paid_at", "7 years")},
}

#: Rules whose clock is not the minimum's: the minimum wins on younger billing rows.
EXPECTED_CONFLICTS = {
    "infraux.yaml": set(),
    "andron.yaml": {
        "invoices-closed",
        "payments-closed",
        "invoices-deletion-request",
        "payments-deletion-request",
    },
    "aurigen.yaml": {
        "invoices-closed-24mo",
        "payments-closed-24mo",
        "invoices-deletion-request",
        "payments-deletion-request",
    },
    "indigo.yaml": set(),
}


@pytest.mark.parametrize("name", FILES)
def test_billing_records_have_legal_minimums_that_win_over_other_rules(name: str) -> None:
    policy = _policy(name)
    minimums = {(m.table, m.timestamp.column, str(m.period)) for m in policy.minimums}
    assert minimums == EXPECTED_MINIMUMS[name]
    conflicts = {policy.rules[c.rule_index].name for c in minimum_conflicts(policy, NOW)}
    assert conflicts == EXPECTED_CONFLICTS[name]


#: (table, clock, period, action) of every rule: the encoding at a glance.
EXPECTED_RULES: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "andron.yaml": {
        "accounts-closed": ("accounts", "closed_at", "0 days", "anonymize"),
        "profiles-closed": ("profiles", "accounts.closed_at", "0 days", "delete"),
        "sessions-closed": ("sessions", "accounts.closed_at", "0 days", "delete"),
        "telemetry-closed": ("telemetry_events", "accounts.closed_at", "0 days", "delete"),
        "workflow-runs-closed": ("workflow_runs", "accounts.closed_at", "0 days", "delete"),
        "access-logs-closed": ("access_logs", "accounts.closed_at", "0 days", "delete"),
        "security-logs-closed": ("security_logs", "accounts.closed_at", "0 days", "delete"),
        "invoices-closed": ("invoices", "accounts.closed_at", "0 days", "anonymize"),
        "payments-closed": ("payments", "accounts.closed_at", "0 days", "anonymize"),
        "accounts-deletion-request": (
            "accounts",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "profiles-deletion-request": (
            "profiles",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "sessions-deletion-request": (
            "sessions",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "telemetry-deletion-request": (
            "telemetry_events",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "workflow-runs-deletion-request": (
            "workflow_runs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "access-logs-deletion-request": (
            "access_logs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "security-logs-deletion-request": (
            "security_logs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "invoices-deletion-request": (
            "invoices",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "payments-deletion-request": (
            "payments",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "accounts-child": ("accounts", "minor_reported_at", "0 days", "anonymize"),
        "profiles-child": ("profiles", "accounts.minor_reported_at", "0 days", "delete"),
        "sessions-child": ("sessions", "accounts.minor_reported_at", "0 days", "delete"),
        "telemetry-child": ("telemetry_events", "accounts.minor_reported_at", "0 days", "delete"),
        "workflow-runs-child": ("workflow_runs", "accounts.minor_reported_at", "0 days", "delete"),
        "access-logs-child": ("access_logs", "accounts.minor_reported_at", "0 days", "delete"),
        "security-logs-child": ("security_logs", "accounts.minor_reported_at", "0 days", "delete"),
    },
    "aurigen.yaml": {
        "telemetry-12mo": ("telemetry_events", "ts_ms", "12 months", "delete"),
        "access-logs-12mo": ("access_logs", "created_at", "12 months", "delete"),
        "security-logs-12mo": ("security_logs", "created_at", "12 months", "delete"),
        "sessions-12mo": ("sessions", "created_at", "12 months", "delete"),
        "workflow-runs-12mo": ("workflow_runs", "started_at", "12 months", "delete"),
        "accounts-closed-24mo": ("accounts", "closed_at", "24 months", "anonymize"),
        "profiles-closed-24mo": ("profiles", "accounts.closed_at", "24 months", "delete"),
        "invoices-closed-24mo": ("invoices", "accounts.closed_at", "24 months", "anonymize"),
        "payments-closed-24mo": ("payments", "accounts.closed_at", "24 months", "anonymize"),
        "accounts-deletion-request": (
            "accounts",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "profiles-deletion-request": (
            "profiles",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "sessions-deletion-request": (
            "sessions",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "telemetry-deletion-request": (
            "telemetry_events",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "workflow-runs-deletion-request": (
            "workflow_runs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "access-logs-deletion-request": (
            "access_logs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "security-logs-deletion-request": (
            "security_logs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "invoices-deletion-request": (
            "invoices",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "payments-deletion-request": (
            "payments",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "accounts-child": ("accounts", "minor_reported_at", "0 days", "anonymize"),
        "profiles-child": ("profiles", "accounts.minor_reported_at", "0 days", "delete"),
        "sessions-child": ("sessions", "accounts.minor_reported_at", "0 days", "delete"),
        "telemetry-child": ("telemetry_events", "accounts.minor_reported_at", "0 days", "delete"),
        "workflow-runs-child": ("workflow_runs", "accounts.minor_reported_at", "0 days", "delete"),
        "access-logs-child": ("access_logs", "accounts.minor_reported_at", "0 days", "delete"),
        "security-logs-child": ("security_logs", "accounts.minor_reported_at", "0 days", "delete"),
    },
    "indigo.yaml": {
        "accounts-closed-30d": ("accounts", "closed_at", "30 days", "anonymize"),
        "profiles-closed-30d": ("profiles", "accounts.closed_at", "30 days", "delete"),
        "workflow-runs-closed-30d": ("workflow_runs", "accounts.closed_at", "30 days", "delete"),
        "sessions-closed-30d": ("sessions", "accounts.closed_at", "30 days", "delete"),
        "telemetry-closed-30d": ("telemetry_events", "accounts.closed_at", "30 days", "delete"),
        "access-logs-12mo": ("access_logs", "created_at", "12 months", "anonymize"),
        "security-logs-12mo": ("security_logs", "created_at", "12 months", "delete"),
        "sessions-12mo": ("sessions", "created_at", "12 months", "delete"),
        "telemetry-12mo": ("telemetry_events", "ts_ms", "12 months", "delete"),
        "invoices-7y": ("invoices", "issued_at", "7 years", "anonymize"),
        "payments-7y": ("payments", "paid_at", "7 years", "delete"),
        "accounts-deletion-request": (
            "accounts",
            "deletion_requests.verified_at",
            "0 days",
            "anonymize",
        ),
        "profiles-deletion-request": (
            "profiles",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "sessions-deletion-request": (
            "sessions",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "telemetry-deletion-request": (
            "telemetry_events",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "workflow-runs-deletion-request": (
            "workflow_runs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "access-logs-deletion-request": (
            "access_logs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
        "security-logs-deletion-request": (
            "security_logs",
            "deletion_requests.verified_at",
            "0 days",
            "delete",
        ),
    },
    "infraux.yaml": {
        "security-logs-90d": ("security_logs", "created_at", "90 days", "delete"),
        "access-logs-90d": ("access_logs", "created_at", "90 days", "anonymize"),
        "invoices-7y": ("invoices", "issued_at", "7 years", "anonymize"),
        "payments-7y": ("payments", "paid_at", "7 years", "delete"),
        "accounts-closed-30d": ("accounts", "closed_at", "30 days", "anonymize"),
        "profiles-closed-30d": ("profiles", "accounts.closed_at", "30 days", "delete"),
        "sessions-closed-30d": ("sessions", "accounts.closed_at", "30 days", "delete"),
        "telemetry-closed-30d": ("telemetry_events", "accounts.closed_at", "30 days", "delete"),
        "workflow-runs-closed-30d": ("workflow_runs", "accounts.closed_at", "30 days", "delete"),
        "accounts-deletion-request": (
            "accounts",
            "deletion_requests.requested_at",
            "0 days",
            "anonymize",
        ),
        "profiles-deletion-request": (
            "profiles",
            "deletion_requests.requested_at",
            "0 days",
            "delete",
        ),
        "sessions-deletion-request": (
            "sessions",
            "deletion_requests.requested_at",
            "0 days",
            "delete",
        ),
        "telemetry-deletion-request": (
            "telemetry_events",
            "deletion_requests.requested_at",
            "0 days",
            "delete",
        ),
        "workflow-runs-deletion-request": (
            "workflow_runs",
            "deletion_requests.requested_at",
            "0 days",
            "delete",
        ),
        "access-logs-deletion-request": (
            "access_logs",
            "deletion_requests.requested_at",
            "0 days",
            "delete",
        ),
        "security-logs-deletion-request": (
            "security_logs",
            "deletion_requests.requested_at",
            "0 days",
            "delete",
        ),
        "accounts-minor": ("accounts", "minor_reported_at", "0 days", "anonymize"),
        "profiles-minor": ("profiles", "accounts.minor_reported_at", "0 days", "delete"),
        "sessions-minor": ("sessions", "accounts.minor_reported_at", "0 days", "delete"),
        "telemetry-minor": ("telemetry_events", "accounts.minor_reported_at", "0 days", "delete"),
        "workflow-runs-minor": ("workflow_runs", "accounts.minor_reported_at", "0 days", "delete"),
        "access-logs-minor": ("access_logs", "accounts.minor_reported_at", "0 days", "delete"),
        "security-logs-minor": ("security_logs", "accounts.minor_reported_at", "0 days", "delete"),
    },
}


def _clock(policy: Policy, rule_name: str) -> str:
    rule = policy.rule(rule_name)
    if rule.timestamp is not None:
        return rule.timestamp.column
    assert rule.event is not None
    return f"{rule.event.table}.{rule.event.column}"


@pytest.mark.parametrize("name", FILES)
def test_rules_encode_the_expected_periods_and_actions(name: str) -> None:
    policy = _policy(name)
    got = {
        rule.name: (rule.table, _clock(policy, rule.name), str(rule.period), rule.action)
        for rule in policy.rules
    }
    assert got == EXPECTED_RULES[name]


@pytest.mark.parametrize("name", FILES)
def test_event_rules_act_only_on_closed_accounts_and_verified_requests(name: str) -> None:
    for rule in _policy(name).rules:
        if rule.event is None:
            continue
        where = {(c.column, c.op.value, c.value) for c in rule.event.where}
        if rule.event.column == "closed_at":
            assert where == {("status", "eq", "closed")}, rule.name
        elif rule.event.table == "deletion_requests":
            assert where == {("status", "eq", "verified")}, rule.name
        else:
            assert (rule.event.table, rule.event.column) == ("accounts", "minor_reported_at")


@pytest.mark.parametrize("name", FILES)
def test_accounts_are_anonymized_never_deleted(name: str) -> None:
    """Invoices reference accounts: deleting an account row would break the foreign key."""
    for rule in _policy(name).rules:
        if rule.table in {"accounts", "invoices"}:
            assert rule.action == "anonymize", rule.name


# --- file rules: backups and log files -------------------------------------------------------

#: (pattern, clock, period, keep_last) of every file rule.
EXPECTED_FILE_RULES: dict[str, dict[str, tuple[str, str, str, int]]] = {
    "andron.yaml": {},
    "aurigen.yaml": {"log-files-12mo": ("logs/*.log.*", "mtime", "12 months", 1)},
    "indigo.yaml": {"log-files-12mo": ("logs/*.log.*", "mtime", "12 months", 1)},
    "infraux.yaml": {
        "backups-90d": ("db/db-*.sql.gz", "name db-%Y-%m-%d.sql.gz (UTC)", "90 days", 7),
        "security-log-files-90d": ("logs/security.log.*", "mtime", "90 days", 1),
    },
}


@pytest.mark.parametrize("name", FILES)
def test_file_rules_encode_the_backup_and_log_file_promises(name: str) -> None:
    policy = _policy(name)
    got = {
        r.name: (r.pattern, str(r.timestamp), str(r.period), r.keep_last) for r in policy.file_rules
    }
    assert got == EXPECTED_FILE_RULES[name]
    assert all(r.action == "delete" and r.enabled for r in policy.file_rules)


@pytest.mark.parametrize("name", [n for n in FILES if EXPECTED_FILE_RULES[n]])
def test_the_backup_tree_defaults_to_the_demo_tree_in_the_repository(name: str) -> None:
    loaded = _load(name)
    store = loaded.policy.stores["backups"]
    assert isinstance(store, FilesStore)
    assert (loaded.base_dir / store.root).resolve() == REPO / "var" / "backups"
    other = load_policy(POLICIES / name, env={"RETENTION_BACKUP_ROOT": "s3://bkp/app"})
    assert other.policy.stores["backups"] == FilesStore(kind="files", root="s3://bkp/app")


def test_infraux_holds_the_july_2026_dumps_of_the_litigation_case() -> None:
    [hold] = [h for h in _policy("infraux.yaml").holds if h.paths is not None]
    assert hold.paths is not None
    assert (hold.name, hold.paths.store, hold.paths.paths) == (
        "litigation-2026-017-backups",
        "backups",
        ["db/db-2026-07-*.sql.gz"],
    )


def _demo_tree(tmp_path: Path, name: str) -> tuple[LoadedPolicy, Path]:
    """The policy, copied into `tmp_path` (so its default audit file lands there too), on a
    fresh demo backup tree."""
    root = tmp_path / "backups"
    build_demo_backups(root, NOW)
    policy = tmp_path / name
    policy.write_text((POLICIES / name).read_text(encoding="utf-8"), encoding="utf-8")
    return load_policy(policy, env={"RETENTION_BACKUP_ROOT": str(root)}), root


#: name -> rule -> (expired, held, keep_last, unparsable, newer) on the demo tree at NOW.
EXPECTED_FILE_PLANS = {
    "aurigen.yaml": {"log-files-12mo": (18, 0, 0, 0, 76)},
    "indigo.yaml": {"log-files-12mo": (18, 0, 0, 0, 76)},
    "infraux.yaml": {
        "backups-90d": (12, 4, 0, 1, 26),
        "security-log-files-90d": (12, 0, 0, 0, 12),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILE_PLANS))
def test_file_rules_find_files_on_both_sides_of_their_cutoff_in_the_demo_tree(
    tmp_path: Path, name: str
) -> None:
    loaded, _root = _demo_tree(tmp_path, name)
    plans = plan_file_rules(loaded, NOW)
    got = {
        p.name: tuple(p.count(s) for s in ("expired", "held", "keep_last", "unparsable", "newer"))
        for p in plans
    }
    assert got == EXPECTED_FILE_PLANS[name]
    for plan in plans:
        assert (plan.error, plan.limit_exceeded, plan.skipped) == (None, None, ())


@pytest.mark.parametrize("name", sorted(EXPECTED_FILE_PLANS))
def test_running_the_file_rules_on_the_demo_tree_keeps_every_promise(
    tmp_path: Path, name: str
) -> None:
    loaded, root = _demo_tree(tmp_path, name)
    assert audit_file(loaded).parent == tmp_path
    before = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    expired = {f.path for p in plan_file_rules(loaded, NOW) for f in p.expired}
    audit = open_audit(loaded)
    try:
        outcomes = run_file_rules(
            loaded, NOW, FileOptions(), audit, "run-1", "test", b"demo-only-audit-key"
        )
        with audit.engine.connect() as conn:
            _count, problem = verify(conn, audit.tables)
    finally:
        audit.dispose()
    assert {(o.status, o.error) for o in outcomes} == {("ok", None)}
    after = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert before - after == expired
    assert problem is None
    assert all(s.kept for s in check_file_rules(loaded, NOW))
    assert all(p.count("expired") == 0 for p in plan_file_rules(loaded, NOW))
