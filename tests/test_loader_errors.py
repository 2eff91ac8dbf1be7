"""Loading a policy file: every problem located as ``FILE:LINE:COL: path: message``."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.errors import ExitCode, PolicyError
from retention.filters import Condition, Op
from retention.loader import LoadedPolicy, load_policy, load_text, render_path
from retention.policy import SqlStore

#: A valid policy of 13 lines; tests append lines 14, 15, ... to its only rule.
BASE = """\
version: 1
title: Example
stores:
  app:
    url: sqlite:///demo.db
rules:
  - name: security-logs-90d
    promise: "Security logs: 90 days"
    source: {policy: Privacy, clause: "8"}
    store: app
    table: security_logs
    timestamp: created_at
    period: 90 days
"""


def load(text: str, env: dict[str, str] | None = None) -> LoadedPolicy:
    return load_text(text, "p.yaml", env=env or {})


def url_of(loaded: LoadedPolicy) -> str:
    """The URL of the store 'app'."""
    store = loaded.policy.stores["app"]
    assert isinstance(store, SqlStore)
    return store.url


def errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The located issues `text` raises, as the CLI prints them."""
    with pytest.raises(PolicyError) as info:
        load(text, env)
    return [str(issue) for issue in info.value.issues]


def test_the_base_policy_is_valid() -> None:
    policy = load(BASE).policy
    assert (policy.title, [r.name for r in policy.rules]) == ("Example", ["security-logs-90d"])


# --- the acceptance test for "all errors at once" ------------------------------


def test_a_misspelled_key_a_bad_period_and_an_unknown_store_are_reported_together() -> None:
    text = """\
version: 1
stores:
  app:
    url: sqlite:///demo.db
rules:
  - name: sessions-30d
    promise: "Sessions: 30 days"
    source: {policy: Privacy, clause: "8"}
    store: ap
    table: sessions
    timestamp: created_at
    perod: 30 days
  - name: logs-90d
    promise: "Logs: 90 days"
    source: {policy: Privacy, clause: "8"}
    store: app
    table: logs
    timestamp: created_at
    period: 90 m
"""
    with pytest.raises(PolicyError) as info:
        load(text)
    assert [str(issue) for issue in info.value.issues] == [
        "p.yaml:9:12: rules[0].store: unknown store 'ap' (stores: app)",
        "p.yaml:12:5: rules[0].perod: unknown key 'perod'; did you mean 'period'?",
        "p.yaml:19:13: rules[1].period: unit 'm' in '90 m' is ambiguous; write 'min' for "
        "minutes or 'mo' for months",
    ]
    assert info.value.exit_code == ExitCode.INVALID == 2


def test_the_error_message_lists_every_issue_on_its_own_line() -> None:
    text = BASE.replace("store: app", "store: ap").replace("90 days", "90 m")
    with pytest.raises(PolicyError) as info:
        load(text)
    assert str(info.value) == (
        "p.yaml:10:12: rules[0].store: unknown store 'ap' (stores: app)\n"
        "p.yaml:13:13: rules[0].period: unit 'm' in '90 m' is ambiguous; write 'min' for "
        "minutes or 'mo' for months"
    )


# --- keys -----------------------------------------------------------------------


def test_an_unknown_key_suggests_the_closest_known_one() -> None:
    assert errors(BASE + "    enabeld: false\n") == [
        "p.yaml:14:5: rules[0].enabeld: unknown key 'enabeld'; did you mean 'enabled'?"
    ]


def test_a_misspelled_required_key_is_not_also_reported_missing() -> None:
    assert errors(BASE.replace("    table:", "    tabel:")) == [
        "p.yaml:11:5: rules[0].tabel: unknown key 'tabel'; did you mean 'table'?",
    ]


def test_an_unknown_key_with_no_close_match_lists_the_known_keys() -> None:
    assert errors(BASE + "zzzz: 1\n") == [
        "p.yaml:14:1: zzzz: unknown key 'zzzz'; expected one of audit, defaults, "
        "file_minimums, file_rules, holds, minimums, rules, stores, title, version"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    url: sqlite",
            "    uri: sqlite",
            [
                "p.yaml:5:5: stores.app.uri: unknown key 'uri'; did you mean 'url'?",
            ],
        ),
        (
            "source: {policy: Privacy",
            "source: {polcy: Privacy",
            [
                "p.yaml:9:14: rules[0].source.polcy: unknown key 'polcy'; did you mean 'policy'?",
            ],
        ),
    ],
)
def test_unknown_keys_are_found_in_nested_blocks(old: str, new: str, expected: list[str]) -> None:
    assert errors(BASE.replace(old, new)) == expected


def test_unknown_keys_are_found_in_defaults_and_strategies() -> None:
    text = (
        BASE.replace("title: Example\n", "defaults:\n  batch:\n    sise: 4\n")
        + "    action: anonymize\n"
        + "    anonymize:\n"
        + "      marker: anonymized_at\n"
        + "      columns:\n"
        + "        email: {strategy: hash, lenght: 16}\n"
    )
    assert errors(text) == [
        "p.yaml:4:5: defaults.batch.sise: unknown key 'sise'; did you mean 'size'?",
        "p.yaml:20:33: rules[0].anonymize.columns.email.lenght: unknown key 'lenght'; "
        "did you mean 'length'?",
    ]


def test_a_duplicate_key_in_a_mapping_is_an_error() -> None:
    assert errors(BASE + "    period: 30 days\n") == [
        "p.yaml:14:5: rules[0].period: duplicate key 'period' (first defined at line 13)"
    ]


def test_a_duplicate_top_level_key_is_an_error() -> None:
    assert errors(BASE + "title: Other\n") == [
        "p.yaml:14:1: title: duplicate key 'title' (first defined at line 2)"
    ]


def test_a_missing_top_level_key_is_located_at_the_start_of_the_file() -> None:
    assert errors("version: 1\n") == [
        "p.yaml:1:1: stores: missing required key 'stores'",
        "p.yaml:1:1: rules: missing required key 'rules'",
    ]


# --- types and values --------------------------------------------------------------


def test_a_wrong_type_is_located_at_the_value() -> None:
    assert errors(BASE + "    batch:\n      size: big\n") == [
        "p.yaml:15:13: rules[0].batch.size: Input should be a valid integer, unable to parse "
        "string as an integer (got 'big')"
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "    batch: {size: big}\n",
            "p.yaml:14:19: rules[0].batch.size: Input should be a valid integer, unable to parse "
            "string as an integer (got 'big')",
        ),
        (
            "    enabled: maybe\n",
            "p.yaml:14:14: rules[0].enabled: Input should be a valid boolean, unable to interpret "
            "input (got 'maybe')",
        ),
    ],
)
def test_a_value_that_cannot_be_parsed_is_quoted_in_the_message(line: str, expected: str) -> None:
    assert errors(BASE + line) == [expected]


def test_a_wrong_container_type_shows_the_value() -> None:
    assert errors("version: 1\nstores: abc\nrules: 5\n") == [
        "p.yaml:2:9: stores: Input should be a valid dictionary (got 'abc')",
        "p.yaml:3:8: rules: Input should be a valid list (got 5)",
    ]


def test_a_bad_period_is_located_at_the_value() -> None:
    assert errors(BASE.replace("90 days", "1.5 years")) == [
        "p.yaml:13:13: rules[0].period: period '1.5 years' has a fraction; use whole numbers "
        "(e.g. '18 months')"
    ]


def test_a_bad_rule_name_quotes_the_pattern_and_the_value() -> None:
    assert errors(BASE.replace("name: security-logs-90d", "name: Security Logs")) == [
        "p.yaml:7:11: rules[0].name: String should match pattern '^[a-z0-9][a-z0-9_.-]{0,79}$' "
        "(got 'Security Logs')"
    ]


def test_version_2_is_rejected() -> None:
    assert errors(BASE.replace("version: 1", "version: 2")) == [
        "p.yaml:1:10: version: Input should be 1 (got 2)"
    ]


def test_an_empty_rule_list_is_rejected() -> None:
    assert errors(BASE.split("rules:")[0] + "rules: []\n") == [
        "p.yaml:6:8: rules: List should have at least 1 item after validation, not 0"
    ]


# --- cross-references ---------------------------------------------------------------


def test_an_unknown_store_lists_the_known_stores() -> None:
    assert errors(BASE.replace("store: app", "store: main")) == [
        "p.yaml:10:12: rules[0].store: unknown store 'main' (stores: app)"
    ]


def test_a_rule_on_a_files_store_is_not_supported_yet() -> None:
    text = BASE.replace("    url: sqlite:///demo.db", "    kind: files\n    root: /var/backups")
    assert errors(text) == [
        "p.yaml:11:12: rules[0].store: rules on a 'files' store are not supported yet"
    ]


def test_duplicate_rule_names_are_reported_at_the_second_rule() -> None:
    rule = BASE.split("rules:\n")[1]
    assert errors(BASE + rule) == [
        "p.yaml:14:11: rules[1].name: duplicate rule name 'security-logs-90d'"
    ]


def test_a_hold_on_an_unknown_rule_is_an_error() -> None:
    text = BASE + "holds:\n  - name: case-17\n    reason: litigation\n    rule: sessions-30d\n"
    assert errors(text) == ["p.yaml:17:11: holds[0].rule: unknown rule 'sessions-30d'"]


def test_a_minimum_on_an_unknown_store_is_an_error() -> None:
    text = BASE + (
        "minimums:\n"
        "  - name: tax-7y\n"
        "    reason: tax law\n"
        "    store: billing\n"
        "    table: invoices\n"
        "    timestamp: issued_at\n"
        "    period: 7 years\n"
    )
    assert errors(text) == [
        "p.yaml:17:12: minimums[0].store: unknown store 'billing' (stores: app)"
    ]


def test_an_audit_store_must_exist() -> None:
    assert errors(BASE + "audit:\n  store: audit\n") == [
        "p.yaml:15:10: audit.store: unknown store 'audit' (stores: app)"
    ]


# --- environment substitution ---------------------------------------------------------


PG = BASE.replace("sqlite:///demo.db", "postgresql+psycopg://app:${PGPASSWORD}@db/app")


def test_a_variable_in_a_store_url_is_substituted_and_kept_secret() -> None:
    loaded = load(PG, env={"PGPASSWORD": "s3cret"})
    assert (url_of(loaded), loaded.secrets) == (
        "postgresql+psycopg://app:s3cret@db/app",
        ("s3cret",),
    )


def test_an_unset_variable_in_a_store_url_is_an_error() -> None:
    assert errors(PG) == ["p.yaml:5:10: stores.app.url: environment variable PGPASSWORD is not set"]


def test_a_default_is_used_when_the_variable_is_unset_or_empty() -> None:
    text = BASE.replace("sqlite:///demo.db", "sqlite:///${DB_FILE:-demo}.db")
    urls = [url_of(load(text, env)) for env in ({}, {"DB_FILE": ""})]
    assert urls == ["sqlite:///demo.db", "sqlite:///demo.db"]


def test_a_set_variable_overrides_the_default() -> None:
    text = BASE.replace("sqlite:///demo.db", "sqlite:///${DB_FILE:-demo}.db")
    assert url_of(load(text, {"DB_FILE": "prod"})) == "sqlite:///prod.db"


def test_a_doubled_dollar_is_a_literal_dollar() -> None:
    text = BASE.replace("sqlite:///demo.db", "sqlite:///a$${X}.db")
    assert url_of(load(text)) == "sqlite:///a${X}.db"


def test_a_variable_outside_a_store_url_is_an_error() -> None:
    assert errors(BASE.replace("title: Example", "title: ${TITLE}"), {"TITLE": "x"}) == [
        "p.yaml:2:8: title: ${...} substitution is only done in store 'url' and 'root'"
    ]


# --- YAML ---------------------------------------------------------------------------


def test_a_yaml_syntax_error_is_located() -> None:
    assert errors(BASE.replace("period: 90 days", "period: [90 days")) == [
        "p.yaml:14:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"
    ]


def test_a_tab_indent_is_a_located_syntax_error() -> None:
    assert errors("version: 1\n\tstores: x\n") == [
        "p.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n", "---\n"])
def test_an_empty_file_is_an_error(text: str) -> None:
    assert errors(text) == ["p.yaml: the policy file is empty"]


def test_a_top_level_list_is_an_error() -> None:
    assert errors("- version: 1\n") == ["p.yaml:1:1: the policy must be a mapping (key: value)"]


def test_yaml_1_2_keeps_no_and_yes_as_strings_and_reads_012_as_decimal() -> None:
    text = BASE + "    where:\n      flag: no\n      other: yes\n      n: 012\n      o: 0o12\n"
    assert load(text).policy.rules[0].where == (
        Condition("flag", Op.EQ, "no"),
        Condition("other", Op.EQ, "yes"),
        Condition("n", Op.EQ, 12),
        Condition("o", Op.EQ, 10),
    )


def test_a_byte_order_mark_is_ignored() -> None:
    assert load("\ufeff" + BASE).policy.title == "Example"


def test_anchors_and_aliases_are_expanded() -> None:
    rule = BASE.split("rules:\n")[1]
    text = BASE.replace(
        'source: {policy: Privacy, clause: "8"}', "source: &src {policy: P, clause: '8'}"
    )
    text += rule.replace("security-logs-90d", "other").replace(
        'source: {policy: Privacy, clause: "8"}', "source: *src"
    )
    policy = load(text).policy
    assert [r.source.policy for r in policy.rules] == ["P", "P"]


def test_a_merge_key_gives_one_clear_issue() -> None:
    text = BASE + "    batch:\n      <<: {size: 10}\n"
    assert errors(text) == ["p.yaml:15:7: rules[0].batch: YAML merge keys ('<<') are not supported"]


def test_an_unknown_tag_is_a_one_line_issue() -> None:
    assert errors(BASE.replace("title: Example", "title: !secret Example")) == [
        "p.yaml:2:8: title: cannot read value 'Example' (!secret): could not determine a "
        "constructor for the tag '!secret'"
    ]


@pytest.mark.parametrize("value", ["!!int", "!!int _", "!!float ''", "!!bool maybe"])
def test_a_tagged_scalar_that_cannot_be_constructed_is_an_issue(value: str) -> None:
    """ruamel raises IndexError or KeyError for these, not a YAMLError."""
    with pytest.raises(PolicyError) as info:
        load(BASE.replace("title: Example", f"title: {value}"))
    assert [(i.line, i.column, i.path) for i in info.value.issues] == [(2, 8, "title")]


def test_a_recursive_alias_is_an_error() -> None:
    assert errors(BASE + "x: &loop [*loop]\n") == [
        "p.yaml:14:1: x: unknown key 'x'; expected one of audit, defaults, file_minimums, "
        "file_rules, holds, minimums, rules, stores, title, version",
        "p.yaml:14:4: x[0]: recursive YAML alias",
    ]


def test_a_control_character_is_located() -> None:
    assert errors(BASE.replace("title: Example", "title: Ex\x00ample")) == [
        "p.yaml:2:10: YAML error: special characters are not allowed (character 0)"
    ]


@pytest.mark.parametrize(("key", "shown"), [("null", "None"), ("1.5", "1.5"), ("true", "True")])
def test_a_non_string_key_is_located_at_the_key(key: str, shown: str) -> None:
    assert errors(BASE + f"{key}: x\n") == [f"p.yaml:14:1: keys must be strings, got {shown}"]


# --- rule shape -----------------------------------------------------------------------


def test_a_rule_with_both_timestamp_and_event_is_an_error() -> None:
    text = BASE + (
        "    event:\n      table: accounts\n      column: closed_at\n      join: {account_id: id}\n"
    )
    assert errors(text) == [
        "p.yaml:7:5: rules[0]: give exactly one of 'timestamp' (a column) and 'event' "
        "(a related table)"
    ]


def test_a_rule_with_neither_timestamp_nor_event_is_an_error() -> None:
    assert errors(BASE.replace("    timestamp: created_at\n", "")) == [
        "p.yaml:7:5: rules[0]: give exactly one of 'timestamp' (a column) and 'event' "
        "(a related table)"
    ]


def test_anonymize_without_its_block_is_an_error() -> None:
    assert errors(BASE + "    action: anonymize\n") == [
        "p.yaml:7:5: rules[0]: action 'anonymize' needs an 'anonymize' block"
    ]


def test_an_anonymize_block_with_action_delete_is_an_error() -> None:
    assert errors(BASE + "    anonymize:\n      columns: {email: mask_email}\n") == [
        "p.yaml:7:5: rules[0]: an 'anonymize' block is only allowed with action 'anonymize'"
    ]


ANON = BASE + "    action: anonymize\n    anonymize:\n      columns:\n"


def test_the_hash_strategy_needs_a_marker_column() -> None:
    assert errors(ANON + "        email: hash\n") == [
        "p.yaml:16:7: rules[0].anonymize: columns email use 'hash', which is not idempotent: "
        "declare a 'marker' column so rows are de-identified once"
    ]


def test_hash_with_a_marker_is_valid() -> None:
    spec = (
        load(ANON + "        email: hash\n      marker: anonymized_at\n").policy.rules[0].anonymize
    )
    assert spec is not None
    assert (spec.marker, spec.columns["email"].strategy) == ("anonymized_at", "hash")


def test_an_unquoted_null_strategy_asks_for_quotes() -> None:
    assert errors(ANON + "        email: null\n") == [
        "p.yaml:17:16: rules[0].anonymize.columns.email: no strategy given; to set the column "
        'to NULL write the strategy name in quotes: "null"'
    ]


def test_a_quoted_null_strategy_sets_null() -> None:
    spec = load(ANON + '        email: "null"\n').policy.rules[0].anonymize
    assert spec is not None
    assert spec.columns["email"].strategy == "null"


@pytest.mark.parametrize("value", ["scramble", "{strategy: scramble}"])
def test_an_unknown_strategy_lists_the_known_ones(value: str) -> None:
    assert errors(ANON + f"        email: {value}\n") == [
        "p.yaml:17:16: rules[0].anonymize.columns.email: unknown strategy; use one of null, "
        "redact, hash, truncate_ip, generalize, mask_email (got 'scramble')"
    ]


def test_the_timestamp_column_may_only_be_generalized() -> None:
    assert errors(ANON + "        created_at: redact\n") == [
        "p.yaml:7:5: rules[0]: the timestamp column 'created_at' may only be generalized"
    ]


def test_an_unknown_store_kind_lists_the_known_ones() -> None:
    text = BASE.replace("    url: sqlite:///demo.db", "    kind: nosql\n    url: x")
    assert errors(text) == [
        "p.yaml:5:5: stores.app: unknown store kind; use 'sql' (the default) or 'files' "
        "(got 'nosql')"
    ]


# --- schedules and time zones --------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            "'0 3 * *'",
            "cron expression '0 3 * *' has 4 fields; expected 5 (minute hour day-of-month month "
            "day-of-week), or write 'every 6 hours'",
        ),
        ("'61 3 * * *'", "cron minute '61' is outside 0-59"),
        ("'0 24 * * *'", "cron hour '24' is outside 0-23"),
        ("'0 3 * * 1-9'", "cron day of week '9' is outside 0-7"),
        ("'0 3 */0 * *'", "cron day of month step '0' must be a positive number"),
        ("'0 3 * dec-jan *'", "cron month range 'dec-jan' runs backwards"),
        (
            "every 1 month",
            "an interval must be a positive number of minutes, hours, days or weeks; for monthly "
            "runs use a cron expression such as '0 3 1 * *'",
        ),
        (
            "every 0 days",
            "an interval must be a positive number of minutes, hours, days or weeks; for monthly "
            "runs use a cron expression such as '0 3 1 * *'",
        ),
    ],
)
def test_bad_schedules_are_rejected(schedule: str, message: str) -> None:
    assert errors(BASE + f"    schedule: {schedule}\n") == [
        f"p.yaml:14:15: rules[0].schedule: {message}"
    ]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("'0 3 * * *'", "0 3 * * *"),
        ("'*/15  2-4 1,15 jan-mar mon-fri'", "*/15 2-4 1,15 jan-mar mon-fri"),
        ("every 6 hours", "every 6 hours"),
        ("every 2w", "every 2 weeks"),
    ],
)
def test_good_schedules_are_read(schedule: str, expected: str) -> None:
    rule = load(BASE + f"    schedule: {schedule}\n").policy.rules[0]
    assert str(rule.schedule) == expected


def test_an_unknown_time_zone_is_rejected() -> None:
    assert errors(BASE + "    timezone: Mars/Base\n") == [
        "p.yaml:14:15: rules[0].timezone: unknown time zone 'Mars/Base'; use an IANA name such "
        "as 'UTC'"
    ]


def test_a_time_zone_that_names_a_directory_is_rejected() -> None:
    assert errors(BASE + "    timezone: Europe\n") == [
        "p.yaml:14:15: rules[0].timezone: unknown time zone 'Europe'; use an IANA name such "
        "as 'UTC'"
    ]


def test_a_numeric_store_name_is_a_policy_error() -> None:
    assert errors(BASE.replace("  app:\n", "  12:\n")) == [
        "p.yaml:4:3: stores: keys must be strings, got 12",
        "p.yaml:4:3: stores: Dictionary should have at least 1 item after validation, not 0",
        "p.yaml:10:12: rules[0].store: unknown store 'app' (stores: none)",
    ]


# --- files ------------------------------------------------------------------------------


def test_load_policy_reads_a_file_and_locates_issues_in_it(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE.replace("90 days", "90 m"), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path, env={})
    assert [str(issue) for issue in info.value.issues] == [
        f"{path}:13:13: rules[0].period: unit 'm' in '90 m' is ambiguous; write 'min' for "
        "minutes or 'mo' for months"
    ]


def test_load_policy_returns_the_policy_and_its_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE, encoding="utf-8")
    loaded = load_policy(path, env={})
    assert (loaded.file, loaded.base_dir, loaded.policy.title) == (str(path), tmp_path, "Example")


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(path, env={})
    assert [str(issue) for issue in info.value.issues] == [f"{path}: no such policy file"]


def test_a_file_that_is_not_utf8_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PolicyError) as info:
        load_policy(path, env={})
    assert [str(issue) for issue in info.value.issues] == [
        f"{path}: cannot read the policy file: 'utf-8' codec can't decode byte 0xe9 in "
        "position 10: invalid continuation byte"
    ]


def test_loaded_policy_locates_any_field_for_later_issues() -> None:
    loaded = load(BASE)
    assert str(loaded.issue(("rules", 0, "period"), "too short")) == (
        "p.yaml:13:13: rules[0].period: too short"
    )


def test_render_path_writes_indexes_in_brackets() -> None:
    assert render_path(("rules", 2, "anonymize", "columns", "email")) == (
        "rules[2].anonymize.columns.email"
    )
