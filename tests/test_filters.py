"""Structured ``where`` filters: parsing the YAML form, rejections, and the inverse."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.filters import Condition, FilterError, Op, parse_where, where_to_yaml


def test_a_scalar_means_equality() -> None:
    assert parse_where({"status": "closed", "attempts": 3, "verified": True}) == (
        Condition("status", Op.EQ, "closed"),
        Condition("attempts", Op.EQ, 3),
        Condition("verified", Op.EQ, True),
    )


def test_in_and_not_in_take_lists_and_keep_them_as_tuples() -> None:
    assert parse_where({"level": {"in": ["debug", "info"]}, "kind": {"not_in": [1, 2]}}) == (
        Condition("level", Op.IN, ("debug", "info")),
        Condition("kind", Op.NOT_IN, (1, 2)),
    )


def test_is_null_true_and_false() -> None:
    assert parse_where({"deleted_at": {"is_null": True}, "closed_at": {"is_null": False}}) == (
        Condition("deleted_at", Op.IS_NULL, True),
        Condition("closed_at", Op.IS_NULL, False),
    )


def test_several_operators_on_one_column_are_anded_in_order() -> None:
    assert parse_where({"age": {"gte": 13, "lt": 16, "ne": 14}}) == (
        Condition("age", Op.GTE, 13),
        Condition("age", Op.LT, 16),
        Condition("age", Op.NE, 14),
    )


def test_every_comparison_operator_is_accepted() -> None:
    spec = {"eq": 1, "ne": 2, "lt": 3, "lte": 4, "gt": 5, "gte": 6}
    assert parse_where({"n": spec}) == tuple(
        Condition("n", Op(name), value) for name, value in spec.items()
    )


def test_no_where_means_no_conditions() -> None:
    assert (parse_where(None), parse_where({})) == ((), ())


def test_parsed_conditions_pass_through_unchanged() -> None:
    conditions = (Condition("a", Op.EQ, 1),)
    assert parse_where(conditions) is conditions


@pytest.mark.parametrize(
    ("condition", "text"),
    [
        (Condition("status", Op.EQ, "closed"), "status = 'closed'"),
        (Condition("level", Op.IN, ("debug", "info")), "level IN ('debug', 'info')"),
        (Condition("n", Op.NOT_IN, (1,)), "n NOT IN (1,)"),
        (Condition("age", Op.GTE, 13), "age >= 13"),
        (Condition("deleted_at", Op.IS_NULL, True), "deleted_at IS NULL"),
        (Condition("deleted_at", Op.IS_NULL, False), "deleted_at IS NOT NULL"),
    ],
)
def test_a_condition_prints_readably(condition: Condition, text: str) -> None:
    assert str(condition) == text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"age": {"between": [1, 2]}},
            "age: unknown operator 'between'; use one of eq, ne, in, not_in, lt, lte, gt, gte, "
            "is_null",
        ),
        ({"level": {"in": []}}, "level.in: the list is empty"),
        ({"level": {"not_in": []}}, "level.not_in: the list is empty"),
        ({"level": {"in": "debug"}}, "level.in: expected a list of values"),
        ({"level": {"in": {"a": 1}}}, "level.in: expected a list of values"),
        (
            {"level": {"in": [None]}},
            "level.in: expected a string, number, boolean or date, got None",
        ),
        ({"level": {"in": [[1]]}}, "level.in: expected a string, number, boolean or date, got [1]"),
        (
            {"deleted_at": None},
            "deleted_at: no condition; to match NULL write 'deleted_at: {is_null: true}'",
        ),
        ({"deleted_at": {"eq": None}}, "deleted_at.eq: null never compares equal; use is_null"),
        ({"deleted_at": {"is_null": "yes"}}, "deleted_at.is_null: expected true or false"),
        ({"deleted_at": {"is_null": 1}}, "deleted_at.is_null: expected true or false"),
        ({"status": {}}, "status: empty condition"),
        (
            {"status": ["a", "b"]},
            "status: expected a string, number, boolean or date, got ['a', 'b']",
        ),
        ({"n": {"gt": [1]}}, "n.gt: expected a string, number, boolean or date, got [1]"),
        ({"a-b": 1}, "'a-b' is not a valid column name"),
        ({"1x": 1}, "'1x' is not a valid column name"),
        ({"a b": 1}, "'a b' is not a valid column name"),
        ({"x; DROP TABLE t": 1}, "'x; DROP TABLE t' is not a valid column name"),
        ({"": 1}, "'' is not a valid column name"),
        ({"a" * 64: 1}, f"'{'a' * 64}' is not a valid column name"),
        ({1: "x"}, "1 is not a valid column name"),
        ("status = 'closed'", "expected a mapping of column name to condition"),
        (["status"], "expected a mapping of column name to condition"),
    ],
)
def test_malformed_filters_are_rejected(raw: object, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_where(raw)
    assert str(info.value) == message


def test_column_names_may_use_underscores_digits_and_dollar() -> None:
    assert parse_where({"_a1$": 1, "a" * 63: 2}) == (
        Condition("_a1$", Op.EQ, 1),
        Condition("a" * 63, Op.EQ, 2),
    )


def test_where_to_yaml_writes_every_condition_as_an_operator_mapping() -> None:
    conditions = parse_where(
        {"status": "closed", "level": {"in": ["debug", "info"]}, "age": {"gte": 13, "lt": 16}}
    )
    assert where_to_yaml(conditions) == {
        "status": {"eq": "closed"},
        "level": {"in": ["debug", "info"]},
        "age": {"gte": 13, "lt": 16},
    }


def test_where_to_yaml_is_the_inverse_of_parse_where() -> None:
    conditions = parse_where(
        {
            "status": "closed",
            "level": {"not_in": ["debug", "info"]},
            "deleted_at": {"is_null": False},
            "age": {"gte": 13, "lt": 16.5},
        }
    )
    assert parse_where(where_to_yaml(conditions)) == conditions


def test_where_to_yaml_keeps_a_date_value_a_date() -> None:
    conditions = parse_where({"since": {"gte": date(2024, 1, 1)}})
    assert parse_where(where_to_yaml(conditions)) == conditions


_columns = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_$]{0,20}\Z")
_scalars = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_comparisons = st.sampled_from(["eq", "ne", "lt", "lte", "gt", "gte"])
_specs: st.SearchStrategy[Any] = st.one_of(
    _scalars,
    st.dictionaries(_comparisons, _scalars, min_size=1),
    st.fixed_dictionaries({"in": st.lists(_scalars, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"not_in": st.lists(_scalars, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"is_null": st.booleans()}),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_columns, _specs, max_size=5))
def test_any_valid_filter_round_trips_through_where_to_yaml(raw: dict[str, Any]) -> None:
    conditions = parse_where(raw)
    assert parse_where(where_to_yaml(conditions)) == conditions
