"""Fuzzing the loader: whatever the file holds, the answer is a policy or a located PolicyError.

Each crash these found has a named regression test in test_loader_errors.py.
"""

from __future__ import annotations

import copy
import io
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from retention.errors import PolicyError
from retention.loader import LoadedPolicy, load_text
from retention.policy import Policy

ENV = {"PGPASSWORD": "s3cret", "EMPTY": ""}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Tests that parse a whole policy (twice when it is valid) run fewer examples.
FUZZ_TREES = settings(FUZZ, max_examples=75)
FUZZ_VALID = settings(FUZZ, max_examples=50)

#: A valid policy that uses most of the language.
BASE_TREE: dict[str, Any] = {
    "version": 1,
    "title": "Fuzz",
    "stores": {
        "app": {"url": "postgresql+psycopg://app:${PGPASSWORD}@db/app", "naive_timezone": "UTC"},
        "backups": {"kind": "files", "root": "/var/backups/${HOST:-local}"},
    },
    "defaults": {
        "schedule": "0 3 * * *",
        "timezone": "Europe/Madrid",
        "batch": {"size": 1000, "min_size": 100, "max_size": 20000, "time_budget": "30 min"},
        "limits": {"max_rows": 100000, "max_fraction": 0.5},
        "grace": "1 day",
    },
    "audit": {"store": "app", "table_prefix": "retention_"},
    "minimums": [
        {
            "name": "tax-7y",
            "reason": "Tax law: 7 years",
            "store": "app",
            "schema": "billing",
            "table": "invoices",
            "timestamp": "issued_at",
            "period": "7 years",
        }
    ],
    "holds": [
        {
            "name": "case-17",
            "reason": "Acme v. Example",
            "expires": "2027-06-30T00:00:00Z",
            "subjects": {
                "column": "account_id",
                "values": [1042, "x-7"],
                "tables": {"accounts": "id"},
            },
        },
        {
            "name": "ip-hold",
            "reason": "incident",
            "rule": "sessions-30d",
            "where": {"ip": "203.0.113.9"},
        },
    ],
    "rules": [
        {
            "name": "sessions-30d",
            "promise": "Sessions: 30 days",
            "source": {"policy": "Privacy", "clause": "8", "url": "https://example.com/p"},
            "store": "app",
            "table": "sessions",
            "timestamp": "created_at",
            "period": "30 days",
            "where": {"kind": {"in": ["web", "api"]}, "age": {"gte": 13, "lt": 16}},
            "schedule": "every 6 hours",
            "batch": {"pause_ms": 10},
            "limits": {"max_fraction": 0.9},
            "grace": "2 hours",
        },
        {
            "name": "users-anon",
            "promise": "Closed accounts are de-identified after 18 months",
            "source": {"policy": "Privacy", "clause": "9"},
            "store": "app",
            "table": "users",
            "event": {
                "table": "accounts",
                "column": "closed_at",
                "join": {"account_id": "id"},
                "where": {"status": "closed"},
            },
            "period": "P1Y6M",
            "action": "anonymize",
            "anonymize": {
                "marker": "anonymized_at",
                "columns": {
                    "email": "mask_email",
                    "ip": {"strategy": "truncate_ip", "ipv4_prefix": 16},
                    "name": {"strategy": "hash", "length": 16},
                    "note": "null",
                    "born": {"strategy": "generalize", "to": "year"},
                    "bio": {"strategy": "redact", "value": "-"},
                },
            },
        },
        {
            "name": "invoices-8y",
            "promise": "Invoices: 8 years",
            "source": {"policy": "Terms", "clause": "4.2"},
            "enabled": False,
            "store": "app",
            "schema": "billing",
            "table": "invoices",
            "timestamp": {"column": "issued_at", "format": "epoch_seconds"},
            "period": "8y",
            "action": "archive",
            "archive": {"table": "invoices_archive", "schema": "archive"},
            "schedule": "0 4 1 * *",
            "timezone": "UTC",
        },
    ],
}


def to_yaml(tree: Any) -> str:
    """`tree` as block-style YAML (ruamel's flow style writes ``{a: :0}``, which it cannot read)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


def outcome(text: str) -> LoadedPolicy | PolicyError:
    """The loader's answer: a policy or a PolicyError (anything else fails the test)."""
    try:
        return load_text(text, "p.yaml", env=ENV)
    except PolicyError as exc:
        return exc


def assert_located(error: PolicyError, text: str) -> None:
    """Every issue points into the file (only an empty file has no position)."""
    assert error.issues, "a PolicyError without issues"
    last_line = len(text.splitlines()) + 1  # splitlines knows every YAML line break
    for issue in error.issues:
        if issue.message == "the policy file is empty":
            continue
        assert 0 < issue.line <= last_line, str(issue)
        assert issue.column > 0, str(issue)
        assert issue.file == "p.yaml"


def assert_round_trips(loaded: LoadedPolicy) -> None:
    dumped = loaded.policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    again = load_text(to_yaml(dumped), "again.yaml", env={}).policy
    assert again == loaded.policy


def test_the_base_tree_is_a_valid_policy_that_round_trips() -> None:
    loaded = load_text(to_yaml(BASE_TREE), "p.yaml", env=ENV)
    assert [r.name for r in loaded.policy.rules] == ["sessions-30d", "users-anon", "invoices-8y"]
    assert_round_trips(loaded)


# --- mutated trees ----------------------------------------------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


PATHS = _paths(BASE_TREE)
FIELD_NAMES = sorted(
    {name for body in Policy.model_json_schema()["$defs"].values() for name in body["properties"]}
    | set(Policy.model_json_schema()["properties"])
)
# fmt: off
INTERESTING = [
    "90 days", "7y", "P1M", "PT6H", "0 days", "12 m", "-1 days", "1.5 years", "",
    "every 1 month", "every 6 hours", "0 3 * * *", "61 * * * *", "UTC", "Mars/Base",
    "${PGPASSWORD}", "${UNSET}", "${UNSET:-x}", "$$", "null", "hash", "redact", "delete",
    "anonymize", "archive", "sql", "files", "app", "backups", "sessions-30d", "users-anon",
    "created_at", "a-b", "1x", "Upper", "2027-06-30", "2027-06-30T10:00:00+02:00",
]
# fmt: on
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_keys = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(INTERESTING),
    _text,
    st.integers(-2, 2),
    st.none(),
    st.booleans(),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(INTERESTING),
    _text,
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=3),
    max_leaves=8,
)
_mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(PATHS[1:]), st.none(), st.none()),
    st.tuples(st.just("replace"), st.sampled_from(PATHS[1:]), st.none(), _values),
    st.tuples(st.just("insert"), st.sampled_from(PATHS), _keys, _values),
)


def _mutate(tree: dict[str, Any], mutation: tuple[str, tuple[Any, ...], Any, Any]) -> None:
    op, path, key, value = mutation
    node: Any = tree
    for part in path[:-1] if op != "insert" else path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed this part of the tree
    if op == "insert":
        if isinstance(node, dict):
            node[key] = value
        elif isinstance(node, list):
            node.append(value)
        return
    if not isinstance(node, dict | list):
        return
    last = path[-1]
    if isinstance(node, dict) and last not in node:
        return
    if isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
        return
    if op == "delete":
        del node[last]
    else:
        node[last] = value


@FUZZ_TREES
@given(st.lists(_mutation, min_size=1, max_size=4))
def test_a_mutated_policy_loads_or_gives_located_issues(mutations: list[Any]) -> None:
    tree = copy.deepcopy(BASE_TREE)
    for mutation in mutations:
        _mutate(tree, mutation)
    text = to_yaml(tree)
    result = outcome(text)
    if isinstance(result, PolicyError):
        assert_located(result, text)
    else:
        assert_round_trips(result)


# --- valid variations round-trip ------------------------------------------------------------

_names = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_lowercase + string.digits),
    st.text(alphabet=string.ascii_lowercase + string.digits + "_.-", max_size=12),
)
_identifiers = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters + "_"),
    st.text(alphabet=string.ascii_letters + string.digits + "_", max_size=10),
)
_periods = st.sampled_from(
    [
        "0 days",
        "90 days",
        "90d",
        "12 months",
        "12mo",
        "7y",
        "1 year 6 months",
        "2w",
        "6 hours",
        "30 min",
        "P90D",
        "P12M",
        "P1Y6M",
        "PT6H",
        "P0D",
        "P1DT12H",
    ]
)
_where_values = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + " -_.@", max_size=10),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.booleans(),
)
_where = st.dictionaries(
    _identifiers,
    st.one_of(
        _where_values,
        st.fixed_dictionaries({"in": st.lists(_where_values, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"is_null": st.booleans()}),
        st.dictionaries(
            st.sampled_from(["ne", "lt", "lte", "gt", "gte"]), _where_values, min_size=1
        ),
    ),
    max_size=3,
)
_strategies = st.one_of(
    st.sampled_from(["null", "redact", "truncate_ip", "generalize", "mask_email"]),
    st.builds(lambda n: {"strategy": "truncate_ip", "ipv4_prefix": n}, st.integers(0, 32)),
    st.builds(lambda to: {"strategy": "generalize", "to": to}, st.sampled_from(["month", "year"])),
    st.builds(lambda v: {"strategy": "redact", "value": v}, st.text(max_size=8)),
)


@st.composite
def _rules(draw: st.DrawFn, name: str) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": name,
        "promise": draw(st.text(min_size=1, max_size=20).filter(str.strip)),
        "source": {"policy": draw(st.text(max_size=10)), "clause": draw(st.text(max_size=5))},
        "store": "app",
        "table": draw(_identifiers),
        "period": draw(_periods),
        "enabled": draw(st.booleans()),
    }
    column = draw(_identifiers)
    if draw(st.booleans()):
        rule["timestamp"] = draw(
            st.sampled_from([column, {"column": column, "format": "epoch_milliseconds"}])
        )
    else:
        rule["event"] = {"table": draw(_identifiers), "column": column, "join": {"a_id": "id"}}
    if where := draw(_where):
        rule["where"] = where
    action = draw(st.sampled_from(["delete", "anonymize", "archive"]))
    rule["action"] = action
    if action == "anonymize":
        columns = draw(st.dictionaries(_identifiers, _strategies, min_size=1, max_size=3))
        columns = {c: s for c, s in columns.items() if c not in (column, "a_id")} or {"zz": "null"}
        rule["anonymize"] = {"columns": columns, "marker": "anonymized_at"}
    if action == "archive":
        rule["archive"] = {"table": draw(_identifiers)}
    if draw(st.booleans()):
        rule["schedule"] = draw(st.sampled_from(["every 6 hours", "*/15 * * * *", "0 3 1 * *"]))
    if draw(st.booleans()):
        rule["batch"] = {"pause_ms": draw(st.integers(0, 1000))}
    if draw(st.booleans()):
        rule["limits"] = {"max_rows": draw(st.integers(0, 10**9))}
    return rule


@st.composite
def _valid_trees(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_names, min_size=1, max_size=3, unique=True))
    tree: dict[str, Any] = {
        "version": 1,
        "stores": {"app": {"url": "sqlite:///demo.db"}},
        "rules": [draw(_rules(name)) for name in names],
    }
    if draw(st.booleans()):
        tree["holds"] = [
            {"name": "h1", "reason": "litigation", "rule": names[0], "where": draw(_where)},
            {
                "name": "h2",
                "reason": "litigation",
                "subjects": {"column": "a_id", "values": draw(st.lists(st.integers(), min_size=1))},
            },
        ]
    if draw(st.booleans()):
        tree["minimums"] = [
            {
                "name": "m1",
                "reason": "tax law",
                "store": "app",
                "table": tree["rules"][0]["table"],
                "timestamp": "issued_at",
                "period": draw(_periods),
            }
        ]
    return tree


@FUZZ_VALID
@given(_valid_trees())
def test_a_valid_policy_round_trips_through_yaml(tree: dict[str, Any]) -> None:
    loaded = load_text(to_yaml(tree), "p.yaml", env={})
    assert_round_trips(loaded)


# --- arbitrary text -------------------------------------------------------------------------

# fmt: off
_TOKENS = [
    "\n", "\n", "\n  ", "  ", "    ", ": ", ":", "- ", "-", "{", "}", "[", "]", ", ", "'", '"', "#",
    "? ", "---\n", "...\n", "|\n", ">\n", "!!str ", "!!map ", "!!seq ", "!!binary ",
    "!!int ", "!!float ", "!!bool ", "!x ", "&a ", "*a", "<<: ", "\t", "version", "1", "2",
    "stores", "app", "url", "rules", "name",
    "period", "90 days", "12 m", "null", "~", "true", "no", "012", "0o12", "1e3", ".nan",
    "${PGPASSWORD}", "${UNSET}", "\\", "%YAML 1.2\n", "%TAG ! tag:x,2000:\n", "@", "`",
]
# fmt: on
_printable = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)


@FUZZ
@given(st.lists(st.sampled_from(_TOKENS) | _printable, max_size=40).map("".join))
def test_arbitrary_text_loads_or_gives_located_issues(text: str) -> None:
    result = outcome(text)
    if isinstance(result, PolicyError):
        assert_located(result, text)


BASE_TEXT = to_yaml(BASE_TREE)


@FUZZ_TREES
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(BASE_TEXT)),
            st.integers(0, 3),
            st.sampled_from([":", "-", " ", "  ", "\n", "'", '"', "{", "[", "#", "&", "*", "!"])
            | _printable,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_an_edited_policy_text_loads_or_gives_located_issues(
    edits: list[tuple[int, int, str]],
) -> None:
    text = BASE_TEXT
    for position, removed, inserted in edits:
        text = text[:position] + inserted + text[position + removed :]
    result = outcome(text)
    if isinstance(result, PolicyError):
        assert_located(result, text)
    else:
        assert_round_trips(result)
