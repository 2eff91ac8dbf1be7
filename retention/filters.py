"""Structured row filters: ``where`` clauses written as data, never as SQL text.

In YAML a filter is a mapping from column name to a condition, all combined
with AND::

    where:
      status: closed                 # equality
      level: {in: [debug, info]}     # IN
      deleted_at: {is_null: false}   # IS NOT NULL
      age: {gte: 13, lt: 16}         # several comparisons on one column

Values are always bound as parameters by the SQL adapter; names are checked
against the reflected schema before any statement runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeAlias

__all__ = [
    "IDENTIFIER",
    "Condition",
    "FilterError",
    "Op",
    "Scalar",
    "parse_where",
]

Scalar: TypeAlias = str | int | float | bool | date | datetime
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class FilterError(ValueError):
    """A ``where`` clause is malformed."""


class Op(StrEnum):
    """Comparison operators a filter may use."""

    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IS_NULL = "is_null"


_SQL = {
    Op.EQ: "=",
    Op.NE: "<>",
    Op.IN: "IN",
    Op.NOT_IN: "NOT IN",
    Op.LT: "<",
    Op.LTE: "<=",
    Op.GT: ">",
    Op.GTE: ">=",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition on one column. For IN / NOT IN, `value` is a tuple."""

    column: str
    op: Op
    value: Scalar | tuple[Scalar, ...] | None

    def __str__(self) -> str:
        if self.op is Op.IS_NULL:
            return f"{self.column} IS {'' if self.value else 'NOT '}NULL"
        return f"{self.column} {_SQL[self.op]} {self.value!r}"


def _scalar(value: object, where: str) -> Scalar:
    if isinstance(value, str | int | float | bool | date | datetime):
        return value
    raise FilterError(f"{where}: expected a string, number, boolean or date, got {value!r}")


def parse_where(raw: object) -> tuple[Condition, ...]:
    """Turn the YAML form of a ``where`` mapping into conditions (raises `FilterError`)."""
    if raw is None:
        return ()
    if isinstance(raw, tuple) and all(isinstance(c, Condition) for c in raw):
        return raw
    if not isinstance(raw, Mapping):
        raise FilterError("expected a mapping of column name to condition")
    conditions: list[Condition] = []
    for column, spec in raw.items():
        if not isinstance(column, str) or not IDENTIFIER.match(column):
            raise FilterError(f"{column!r} is not a valid column name")
        if spec is None:
            raise FilterError(
                f"{column}: no condition; to match NULL write '{column}: {{is_null: true}}'"
            )
        if not isinstance(spec, Mapping):
            conditions.append(Condition(column, Op.EQ, _scalar(spec, column)))
            continue
        if not spec:
            raise FilterError(f"{column}: empty condition")
        for op_name, value in spec.items():
            try:
                op = Op(op_name)
            except ValueError:
                known = ", ".join(o.value for o in Op)
                raise FilterError(
                    f"{column}: unknown operator {op_name!r}; use one of {known}"
                ) from None
            conditions.append(_condition(column, op, value))
    return tuple(conditions)


def _condition(column: str, op: Op, value: Any) -> Condition:
    where = f"{column}.{op.value}"
    if op is Op.IS_NULL:
        if not isinstance(value, bool):
            raise FilterError(f"{where}: expected true or false")
        return Condition(column, op, value)
    if op in (Op.IN, Op.NOT_IN):
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise FilterError(f"{where}: expected a list of values")
        if not value:
            raise FilterError(f"{where}: the list is empty")
        return Condition(column, op, tuple(_scalar(v, where) for v in value))
    if value is None:
        raise FilterError(f"{where}: null never compares equal; use is_null")
    return Condition(column, op, _scalar(value, where))


def where_to_yaml(conditions: tuple[Condition, ...]) -> dict[str, Any]:
    """The YAML form of `conditions`, the inverse of `parse_where`.

    Dates stay dates (YAML has timestamps); pydantic's JSON mode writes them as ISO text.
    """
    out: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        value: Any = list(cond.value) if isinstance(cond.value, tuple) else cond.value
        out.setdefault(cond.column, {})[cond.op.value] = value
    return dict(out)
