"""The policy language of file rules: models, dated-name formats, globs and located errors."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.errors import PolicyError
from retention.loader import LoadedPolicy, load_text
from retention.policy import (
    FileLimits,
    FileRule,
    FilesStore,
    FileTimestamp,
    Policy,
    compile_glob,
    glob_base,
    parse_file_name,
)

#: A valid policy of 24 lines: one SQL rule (required) and one file rule; tests append.
BASE = """\
version: 1
stores:
  app:
    url: sqlite:///demo.db
  backups:
    kind: files
    root: ${BACKUP_ROOT:-../var/backups}
rules:
  - name: sessions-30d
    promise: "Sessions: 30 days"
    source: {policy: Privacy, clause: "8"}
    store: app
    table: sessions
    timestamp: created_at
    period: 30 days
file_rules:
  - name: backups-90d
    promise: "Backups: 90 days"
    source: {policy: Privacy, clause: "8"}
    store: backups
    pattern: "db/db-*.sql.gz"
    timestamp: {name: "db-%Y-%m-%d.sql.gz", timezone: UTC}
    period: 90 days
    keep_last: 3
"""


def load(text: str, env: dict[str, str] | None = None) -> LoadedPolicy:
    return load_text(text, "p.yaml", env=env or {})


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(text)
    return [str(issue) for issue in info.value.issues]


def test_the_base_policy_has_a_file_rule_on_a_files_store_with_a_default_root() -> None:
    policy = load(BASE).policy
    rule = policy.file_rule("backups-90d")
    store = policy.stores["backups"]
    assert isinstance(store, FilesStore)
    assert (store.root, rule.pattern, str(rule.period), rule.keep_last, rule.action) == (
        "../var/backups",
        "db/db-*.sql.gz",
        "90 days",
        3,
        "delete",
    )
    assert (rule.timestamp.name, rule.timestamp.timezone) == ("db-%Y-%m-%d.sql.gz", "UTC")
    assert [r.name for r in policy.rules] == ["sessions-30d"]


def test_the_root_takes_its_value_from_the_environment() -> None:
    store = load(BASE, {"BACKUP_ROOT": "s3://bucket/backups"}).policy.stores["backups"]
    assert isinstance(store, FilesStore)
    assert store.root == "s3://bucket/backups"


def test_mtime_is_the_default_clock_and_round_trips_as_the_word_mtime() -> None:
    text = BASE.replace('    timestamp: {name: "db-%Y-%m-%d.sql.gz", timezone: UTC}\n', "")
    policy = load(text).policy
    rule = policy.file_rules[0]
    assert rule.timestamp.uses_mtime
    dumped = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["file_rules"][0]["timestamp"] == "mtime"
    assert Policy.model_validate(dumped) == policy


def test_a_policy_with_file_rules_round_trips_through_its_json_form() -> None:
    policy = load(BASE).policy
    dumped = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["file_rules"][0]["timestamp"] == {"name": "db-%Y-%m-%d.sql.gz", "timezone": "UTC"}
    assert Policy.model_validate(dumped) == policy


def test_file_limits_take_max_fraction_from_the_defaults_unless_set() -> None:
    text = BASE + "defaults:\n  limits: {max_fraction: 0.4}\n"
    policy = load(text).policy
    rule = policy.file_rules[0]
    assert policy.effective_file_limits(rule) == FileLimits(max_fraction=0.4)
    own = rule.model_copy(update={"limits": FileLimits(max_files=5, max_fraction=1.0)})
    assert policy.effective_file_limits(own) == FileLimits(max_files=5, max_fraction=1.0)


# --- located errors ---------------------------------------------------------------------


def test_a_file_rule_on_a_sql_store_is_an_error_at_its_store() -> None:
    assert errors(BASE.replace("    store: backups\n", "    store: app\n")) == [
        "p.yaml:20:12: file_rules[0].store: file rules need a 'files' store; 'app' is a SQL "
        "store (kind: sql)"
    ]


def test_a_file_rule_on_an_unknown_store_lists_the_stores() -> None:
    assert errors(BASE.replace("    store: backups\n", "    store: backup\n")) == [
        "p.yaml:20:12: file_rules[0].store: unknown store 'backup' (stores: app, backups)"
    ]


def test_rule_names_are_unique_across_rules_and_file_rules() -> None:
    assert errors(BASE.replace("name: backups-90d", "name: sessions-30d")) == [
        "p.yaml:17:11: file_rules[0].name: duplicate rule name 'sessions-30d'"
    ]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("../etc/*", "the pattern '../etc/*' may not contain '..': paths stay inside the root"),
        ("db/../../x", "the pattern 'db/../../x' may not contain '..': paths stay inside the root"),
        (
            "/var/db/*",
            "the pattern '/var/db/*' must be relative to the store root (no leading '/')",
        ),
        ("db//x", "the pattern 'db//x' has an empty folder name ('//' or a trailing '/')"),
        ("db/a**b", "the pattern 'db/a**b': '**' must be a whole path part, as in 'logs/**/*.gz'"),
        ("db/[ab", "the pattern 'db/[ab' has an unclosed '['"),
    ],
)
def test_a_pattern_that_could_leave_the_root_is_refused(pattern: str, message: str) -> None:
    text = BASE.replace('"db/db-*.sql.gz"', f'"{pattern}"')
    assert errors(text) == [f"p.yaml:21:14: file_rules[0].pattern: {message}"]


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("db-%y-%m-%d.sql.gz", "%y (two-digit year) is ambiguous about the century; use %Y"),
        ("db-%Y-%m.sql.gz", "does not name a whole date: it needs %Y with %m and %d"),
        ("db-%Y-%b-%d.sql.gz", "%b is not supported (names of months and days depend"),
        ("db-%Y-%m-%d-%d.sql.gz", "uses %d twice"),
        ("db-%Y-%m-%d-%M.gz", "has %M without %H"),
        ("db-%Y%j-%m.gz", "mixes %j (day of year) with %m/%d"),
        ("db-%s-%Y.gz", "%s (seconds since 1970) stands alone"),
        ("db-*-%Y-%m-%d.gz", "contains '*': the format states the whole base name"),
        ("db/%Y-%m-%d.gz", "contains '/'; it is matched against base names"),
    ],
)
def test_an_ambiguous_or_incomplete_name_format_is_refused(fmt: str, message: str) -> None:
    text = BASE.replace('"db-%Y-%m-%d.sql.gz"', f'"{fmt}"')
    found = errors(text)
    assert len(found) == 1
    assert found[0].startswith("p.yaml:22:")
    assert message in found[0]


def test_a_time_zone_for_the_modification_time_is_an_error() -> None:
    text = BASE.replace('{name: "db-%Y-%m-%d.sql.gz", timezone: UTC}', "{timezone: UTC}")
    assert errors(text) == [
        "p.yaml:22:16: file_rules[0].timestamp: 'timezone' applies to dates in file names; "
        "modification times are instants"
    ]


def test_an_unknown_timestamp_word_names_the_two_forms() -> None:
    text = BASE.replace('{name: "db-%Y-%m-%d.sql.gz", timezone: UTC}', "ctime")
    assert errors(text) == [
        "p.yaml:22:16: file_rules[0].timestamp: 'ctime' is not a timestamp source; write "
        "'mtime' or {name: 'db-%Y-%m-%d.sql.gz', timezone: UTC}"
    ]


def test_archive_within_the_same_store_needs_a_prefix_and_archive_needs_a_files_store() -> None:
    same = BASE + "    action: archive\n    archive: {}\n"
    assert errors(same) == [
        "p.yaml:17:5: file_rules[0]: archiving within the rule's own store needs a 'prefix' "
        "(a folder such as 'archive/')"
    ]
    other = BASE + "    action: archive\n    archive: {store: app}\n"
    assert errors(other) == [
        "p.yaml:26:22: file_rules[0].archive.store: file archives need a 'files' store; 'app' "
        "is a SQL store (kind: sql)"
    ]
    rule = load(BASE + "    action: archive\n    archive: {prefix: archive/}\n").policy.file_rules[
        0
    ]
    assert (rule.archive_store, rule.archive and rule.archive.prefix) == ("backups", "archive")


def test_an_archive_block_without_action_archive_is_an_error() -> None:
    assert errors(BASE + "    archive: {prefix: old}\n") == [
        "p.yaml:17:5: file_rules[0]: an 'archive' block is only allowed with action 'archive'"
    ]


HOLD = """\
holds:
  - name: case-17
    reason: litigation
    paths: {store: backups, paths: ["db/db-2026-03-*"]}
"""


def test_a_hold_scoped_by_paths_holds_matching_files_of_its_store_only() -> None:
    hold = load(BASE + HOLD).policy.holds[0]
    assert hold.paths is not None
    assert [hold.holds_path("backups", p) for p in ("db/db-2026-03-01.sql.gz", "db/x")] == [
        True,
        False,
    ]
    assert not hold.holds_path("other", "db/db-2026-03-01.sql.gz")


def test_a_paths_hold_on_a_sql_store_and_a_where_on_a_file_rule_are_errors() -> None:
    assert errors(BASE + HOLD.replace("store: backups", "store: app")) == [
        "p.yaml:28:20: holds[0].paths.store: holds need a 'files' store; 'app' is a SQL store "
        "(kind: sql)"
    ]
    on_rule = "holds:\n  - name: h\n    reason: litigation\n    rule: backups-90d\n"
    assert load(BASE + on_rule).policy.holds[0].rule == "backups-90d"
    assert errors(on_rule.join([BASE, ""]) + "    where: {ip: x}\n") == [
        "p.yaml:29:12: holds[0].where: 'backups-90d' is a file rule: a hold on it keeps all its "
        "files; narrow it with a 'paths' hold instead of 'where'"
    ]


def test_a_hold_with_two_scopes_is_an_error() -> None:
    text = BASE + HOLD + "    rule: backups-90d\n"
    assert errors(text) == [
        "p.yaml:26:5: holds[0]: give exactly one scope: 'subjects', 'rule' (with optional "
        "'where') or 'paths'"
    ]


def test_file_minimums_name_a_files_store() -> None:
    text = BASE + (
        "file_minimums:\n  - name: keep-30d\n    reason: hosting contract\n    store: app\n"
        "    pattern: 'db/*'\n    period: 30 days\n"
    )
    assert errors(text) == [
        "p.yaml:28:12: file_minimums[0].store: file minimums need a 'files' store; 'app' is a "
        "SQL store (kind: sql)"
    ]
    ok = load(text.replace("store: app\n    pattern", "store: backups\n    pattern")).policy
    assert [(m.name, m.pattern, str(m.period)) for m in ok.file_minimums] == [
        ("keep-30d", "db/*", "30 days")
    ]


def test_a_misspelled_file_rule_key_suggests_the_right_one() -> None:
    assert errors(BASE + "    keep_lats: 2\n") == [
        "p.yaml:25:5: file_rules[0].keep_lats: unknown key 'keep_lats'; did you mean 'keep_last'?"
    ]


# --- dated names -----------------------------------------------------------------------


def test_a_dated_name_is_read_in_its_time_zone() -> None:
    madrid = FileTimestamp(name="db-%Y-%m-%d_%H%M.sql.gz", timezone="Europe/Madrid")
    assert madrid.from_name("db-2026-07-01_0300.sql.gz") == datetime(2026, 7, 1, 1, tzinfo=UTC)
    assert madrid.from_name("db-2026-01-01_0300.sql.gz") == datetime(2026, 1, 1, 2, tzinfo=UTC)
    utc = FileTimestamp(name="db-%Y-%m-%d.sql.gz")
    assert utc.from_name("db-2026-03-01.sql.gz") == datetime(2026, 3, 1, tzinfo=UTC)


def test_an_offset_in_the_name_wins_over_the_time_zone() -> None:
    stamp = FileTimestamp(name="dump_%Y%m%dT%H%M%S%z.tar", timezone="Asia/Kolkata")
    assert stamp.from_name("dump_20261123T020000+0530.tar") == datetime(
        2026, 11, 22, 20, 30, tzinfo=UTC
    )
    assert stamp.from_name("dump_20261123T020000Z.tar") == datetime(2026, 11, 23, 2, tzinfo=UTC)
    assert stamp.from_name("dump_20261123T020000-03:00.tar") == datetime(
        2026, 11, 23, 5, tzinfo=UTC
    )


def test_a_local_time_that_happens_twice_reads_as_the_later_instant() -> None:
    """2026-10-25 02:30 happens twice in Madrid (CEST, then CET): the file is never older."""
    stamp = FileTimestamp(name="app-%Y-%m-%d_%H%M.log", timezone="Europe/Madrid")
    assert stamp.from_name("app-2026-10-25_0230.log") == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_a_local_time_that_never_happens_reads_as_the_later_instant() -> None:
    """2026-03-29 02:30 does not exist in Madrid (clocks jump from 02:00 to 03:00)."""
    stamp = FileTimestamp(name="app-%Y-%m-%d_%H%M.log", timezone="Europe/Madrid")
    assert stamp.from_name("app-2026-03-29_0230.log") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_29_february_parses_in_leap_years_only() -> None:
    stamp = FileTimestamp(name="db-%Y-%m-%d.sql.gz")
    assert stamp.from_name("db-2028-02-29.sql.gz") == datetime(2028, 2, 29, tzinfo=UTC)
    with pytest.raises(ValueError, match="states no real date or time"):
        stamp.from_name("db-2026-02-29.sql.gz")


@pytest.mark.parametrize(
    "name",
    [
        "db-latest.sql.gz",
        "db-2026-3-1.sql.gz",  # widths are fixed: no single-digit months or days
        "db-2026-13-01.sql.gz",
        "db-2026-11-31.sql.gz",
        "db-2026-11-23.sql.gz.tmp",
        "db-2026-11-23.sql",
        "DB-2026-11-23.sql.gz",
        "db-２０２６-11-23.sql.gz",  # fullwidth digits are not digits here
    ],
)
def test_a_name_that_does_not_state_a_real_date_does_not_parse(name: str) -> None:
    with pytest.raises(ValueError, match=r"does not match|states no real"):
        parse_file_name("db-%Y-%m-%d.sql.gz", "UTC", name)


def test_day_of_year_and_epoch_seconds_formats() -> None:
    assert parse_file_name("log-%Y-%j.gz", "UTC", "log-2028-366.gz") == datetime(
        2028, 12, 31, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="out of range"):
        parse_file_name("log-%Y-%j.gz", "UTC", "log-2026-366.gz")
    assert parse_file_name("snap-%s.tar", "UTC", "snap-1795440000.tar") == datetime.fromtimestamp(
        1795440000, UTC
    )


def test_compact_formats_have_one_reading() -> None:
    """Fixed widths: '2026111' is not Jan 11 or Nov 1, it does not parse."""
    assert parse_file_name("%Y%m%d.gz", "UTC", "20261101.gz") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="does not match"):
        parse_file_name("%Y%m%d.gz", "UTC", "2026111.gz")


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2999, 12, 31),
        timezones=st.just(timezone(timedelta(hours=5, minutes=30))),
    )
)
def test_a_formatted_instant_parses_back_to_itself(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    fmt = "backup-%Y%m%dT%H%M%S%z.tar.zst"
    assert parse_file_name(fmt, "UTC", moment.strftime(fmt)) == moment.astimezone(UTC)


@given(st.text(max_size=30))
def test_any_name_either_parses_or_raises_value_error(name: str) -> None:
    with contextlib.suppress(ValueError):
        parse_file_name("db-%Y-%m-%d_%H%M%S%z.sql.gz", "Europe/Madrid", name)


# --- globs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("db/*.sql.gz", "db/db-2026-01-01.sql.gz", True),
        ("db/*.sql.gz", "db/old/db-2026-01-01.sql.gz", False),
        ("db/*.sql.gz", "other/db.sql.gz", False),
        ("**/*.gz", "a.gz", True),
        ("**/*.gz", "x/y/z/a.gz", True),
        ("logs/**", "logs/a/b", True),
        ("logs/app.log.?", "logs/app.log.1", True),
        ("logs/app.log.?", "logs/app.log.10", False),
        ("logs/app.log.[!0]", "logs/app.log.0", False),
        ("logs/app.log.[0-9]", "logs/app.log.7", True),
        ("db/db-2026-03-*", "db/db-2026-03-01.sql.gz", True),
        ("a+b(c)/*", "a+b(c)/x", True),
    ],
)
def test_glob_matching(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(path)) is matches


def test_the_scan_starts_below_the_fixed_part_of_the_pattern() -> None:
    assert [glob_base(p) for p in ("db/x/*.gz", "*.gz", "logs/**/a", "a/b[0]/c", "a/b")] == [
        "db/x",
        "",
        "logs",
        "a",
        "a",
    ]


def test_the_schema_documents_every_file_rule_field() -> None:
    schema = Policy.model_json_schema(by_alias=True)
    for definition in ("FileRule", "FileTimestamp", "FileArchive", "FileLimits", "PathScope"):
        for name, prop in schema["$defs"][definition]["properties"].items():
            assert prop.get("description"), f"{definition}.{name}"
    assert set(FileRule.model_fields) >= {"pattern", "timestamp", "keep_last", "archive"}
