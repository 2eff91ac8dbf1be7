"""The policy models: a self-documenting schema, defaults merged field by field, references."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from retention.errors import PolicyError
from retention.loader import load_text
from retention.periods import Period
from retention.policy import Batch, Hold, Limits, Policy, reference_issues

BASE = """\
version: 1
stores:
  app:
    url: sqlite:///demo.db
rules:
  - name: logs-90d
    promise: "Logs: 90 days"
    source: {policy: Privacy, clause: "8"}
    store: app
    table: logs
    timestamp: created_at
    period: 90 days
"""


def policy_of(text: str) -> Policy:
    return load_text(text, "p.yaml", env={}).policy


# --- the schema documents itself ---------------------------------------------------


def _schema_properties() -> Iterator[tuple[str, str, dict[str, Any]]]:
    schema = Policy.model_json_schema()
    definitions = {"Policy": schema, **schema["$defs"]}
    for definition, body in definitions.items():
        for name, prop in body.get("properties", {}).items():
            yield definition, name, prop


def test_the_schema_has_a_definition_for_every_part_of_a_policy() -> None:
    assert sorted(Policy.model_json_schema()["$defs"]) == [
        "AnonymizeSpec",
        "ArchiveSpec",
        "AuditSettings",
        "Batch",
        "BatchOverride",
        "Defaults",
        "Event",
        "FileArchive",
        "FileBatch",
        "FileLimits",
        "FileMinimum",
        "FileRule",
        "FileTimestamp",
        "FilesStore",
        "GeneralizeStrategy",
        "HashStrategy",
        "Hold",
        "Limits",
        "MaskEmailStrategy",
        "Minimum",
        "NullStrategy",
        "PathScope",
        "RedactStrategy",
        "Rule",
        "Source",
        "SqlStore",
        "SubjectScope",
        "Timestamp",
        "TruncateIpStrategy",
    ]


def test_every_field_in_the_schema_has_a_description_and_an_example() -> None:
    undocumented = [
        f"{definition}.{name}"
        for definition, name, prop in _schema_properties()
        if not (isinstance(prop.get("description"), str) and prop["description"].strip())
        or not (isinstance(prop.get("examples"), list) and prop["examples"])
    ]
    assert undocumented == []


def test_every_model_in_the_schema_has_a_description() -> None:
    schema = Policy.model_json_schema()
    bare = [name for name, body in schema["$defs"].items() if not body.get("description")]
    assert (bare, bool(schema.get("description"))) == ([], True)


def _models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in seen:
                seen.append(annotation)
                for info in annotation.model_fields.values():
                    visit(info.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(Policy)
    return seen


_BAD_EXAMPLES: dict[tuple[str, str], str] = {}


def _example_cases() -> Iterator[Any]:
    for model in _models():
        for name, info in model.model_fields.items():
            for index, example in enumerate(info.examples or []):
                reason = _BAD_EXAMPLES.get((model.__name__, name))
                yield pytest.param(
                    model,
                    name,
                    example,
                    id=f"{model.__name__}.{name}[{index}]",
                    marks=[pytest.mark.xfail(strict=True, reason=reason)] if reason else [],
                )


@pytest.mark.parametrize(("model", "field", "example"), list(_example_cases()))
def test_every_example_in_the_schema_is_valid_for_its_field(
    model: type[BaseModel], field: str, example: Any
) -> None:
    info = model.model_fields[field]
    annotation: Any = (
        Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    )
    TypeAdapter(annotation).validate_python(example)


# --- defaults merged field by field ---------------------------------------------------


DEFAULTS = BASE.replace(
    "stores:",
    "defaults:\n"
    "  batch: {size: 2000, min_size: 100, pause_ms: 10}\n"
    "  limits: {max_rows: 1000, max_fraction: 0.5}\n"
    "  schedule: '0 3 * * *'\n"
    "  timezone: Europe/Madrid\n"
    "  grace: 2 days\n"
    "stores:",
)


def test_a_rule_without_overrides_takes_every_default() -> None:
    policy = policy_of(DEFAULTS)
    rule = policy.rules[0]
    assert (
        policy.effective_batch(rule),
        policy.effective_limits(rule),
        str(policy.effective_schedule(rule)),
        policy.effective_timezone(rule),
        policy.effective_grace(rule),
    ) == (
        Batch(size=2000, min_size=100, max_size=50000, target_ms=100, pause_ms=10),
        Limits(max_rows=1000, max_fraction=0.5),
        "0 3 * * *",
        "Europe/Madrid",
        Period(days=2),
    )


def test_rule_batch_settings_override_the_defaults_field_by_field() -> None:
    policy = policy_of(DEFAULTS + "    batch: {pause_ms: 50, max_size: 8000}\n")
    assert policy.effective_batch(policy.rules[0]) == Batch(
        size=2000, min_size=100, max_size=8000, target_ms=100, pause_ms=50
    )


def test_rule_limits_override_the_defaults_field_by_field() -> None:
    policy = policy_of(DEFAULTS + "    limits: {max_fraction: 0.9}\n")
    assert policy.effective_limits(policy.rules[0]) == Limits(max_rows=1000, max_fraction=0.9)


def test_rule_schedule_timezone_and_grace_replace_the_defaults() -> None:
    policy = policy_of(
        DEFAULTS + "    schedule: every 6 hours\n    timezone: UTC\n    grace: 1 hour\n"
    )
    rule = policy.rules[0]
    assert (
        str(policy.effective_schedule(rule)),
        policy.effective_timezone(rule),
        policy.effective_grace(rule),
    ) == ("every 6 hours", "UTC", Period(hours=1))


def test_built_in_defaults_apply_when_the_policy_sets_none() -> None:
    policy = policy_of(BASE)
    rule = policy.rules[0]
    assert (
        policy.effective_batch(rule),
        policy.effective_limits(rule),
        str(policy.effective_schedule(rule)),
        policy.effective_timezone(rule),
        policy.effective_grace(rule),
    ) == (Batch(), Limits(), "0 3 * * *", "UTC", Period(days=1))


def test_a_rule_batch_is_checked_after_merging_with_the_defaults() -> None:
    text = BASE.replace(
        "stores:", "defaults:\n  batch: {size: 100, min_size: 10, max_size: 1000}\nstores:"
    )
    policy = policy_of(text + "    batch: {size: 50}\n")
    assert policy.effective_batch(policy.rules[0]) == Batch(size=50, min_size=10, max_size=1000)


def test_an_effective_batch_that_breaks_the_size_bounds_is_rejected() -> None:
    text = BASE.replace("stores:", "defaults:\n  batch: {size: 2000}\nstores:")
    with pytest.raises(PolicyError, match="min_size <= size <= max_size"):
        policy_of(text + "    batch: {min_size: 4000}\n")


# --- holds ------------------------------------------------------------------------------


def test_a_hold_expiry_without_a_zone_is_utc() -> None:
    hold = Hold(name="h", reason="litigation", rule="logs-90d", expires=datetime(2027, 6, 30))
    assert hold.expires == datetime(2027, 6, 30, tzinfo=UTC)


def test_a_hold_expiry_given_as_a_yaml_date_lasts_through_that_day() -> None:
    text = BASE + "holds:\n  - {name: h, reason: litigation, rule: logs-90d, expires: 2027-06-30}\n"
    assert policy_of(text).holds[0].expires == datetime(2027, 7, 1, tzinfo=UTC)


def test_a_hold_expiry_given_as_a_string_without_a_zone_is_utc() -> None:
    hold = Hold.model_validate(
        {"name": "h", "reason": "litigation", "rule": "logs-90d", "expires": "2027-06-30T10:00:00"}
    )
    assert hold.expires == datetime(2027, 6, 30, 10, tzinfo=UTC)


def test_a_hold_is_active_until_it_expires() -> None:
    hold = Hold(name="h", reason="litigation", rule="r", expires=datetime(2027, 1, 1, tzinfo=UTC))
    moments = [datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)]
    assert [hold.active(m) for m in moments] == [True, False]


# --- references -----------------------------------------------------------------------


def test_reference_issues_finds_every_broken_reference() -> None:
    tree = {
        "stores": {"app": {"url": "x"}, "backups": {"kind": "files", "root": "/b"}},
        "rules": [
            {"name": "a", "store": "ap"},
            {"name": "a", "store": "backups", "archive": {"table": "t", "store": "arch"}},
        ],
        "holds": [{"name": "h", "rule": "b"}, {"name": "h", "rule": "a"}],
        "minimums": [{"name": "m", "store": "nope"}],
        "audit": {"store": "backups"},
    }
    assert reference_issues(tree) == [
        (("rules", 0, "store"), "unknown store 'ap' (stores: app, backups)"),
        (("rules", 1, "store"), "rules on a 'files' store are not supported yet"),
        (("rules", 1, "archive", "store"), "unknown store 'arch' (stores: app, backups)"),
        (("rules", 1, "name"), "duplicate rule name 'a'"),
        (("holds", 0, "rule"), "unknown rule 'b'"),
        (("holds", 1, "name"), "duplicate hold name 'h'"),
        (("minimums", 0, "store"), "unknown store 'nope' (stores: app, backups)"),
        (("audit", "store"), "audit trails on a 'files' store are not supported yet"),
    ]


_keys = st.one_of(
    st.sampled_from(
        [
            "stores",
            "rules",
            "holds",
            "minimums",
            "audit",
            "name",
            "store",
            "rule",
            "archive",
            "kind",
            "files",
            "app",
        ]
    ),
    st.text(max_size=5),
)
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), _keys
)
_trees = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(_trees, st.dictionaries(_keys, _trees, max_size=6)))
def test_reference_issues_never_raises_on_a_malformed_tree(tree: object) -> None:
    issues = reference_issues(tree)
    assert all(isinstance(path, tuple) and isinstance(text, str) for path, text in issues)


def test_reference_issues_never_raises_on_non_string_store_names() -> None:
    tree = {"stores": {12: {}, "app": {}}, "rules": [{"store": "x"}]}
    assert reference_issues(tree) == [
        (("rules", 0, "store"), "unknown store 'x' (stores: 12, app)")
    ]


# --- dumping ----------------------------------------------------------------------------


def test_a_date_in_a_where_stays_a_date_in_python_and_is_iso_text_in_json() -> None:
    policy = policy_of(BASE + "    where: {since: {gte: 2024-01-31}}\n")
    (rule,) = policy.rules
    assert rule.model_dump()["where"] == {"since": {"gte": date(2024, 1, 31)}}
    assert rule.model_dump(mode="json")["where"] == {"since": {"gte": "2024-01-31"}}
    assert type(rule).model_validate(rule.model_dump()) == rule
