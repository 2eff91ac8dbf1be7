"""Retention periods: parsing and calendar-aware arithmetic.

A period is written either in a short form (``90 days``, ``90d``, ``12 months``,
``7y``, ``1 year 6 months``) or in ISO 8601 (``P90D``, ``P12M``, ``P7Y``,
``PT6H``). Months and years are calendar units: 12 months before 31 March is
31 March a year earlier, and one month before 31 March is the last day of
February. A day is 24 hours (cutoffs are computed in UTC, which has no DST).

The unit ``m`` is rejected as ambiguous (minutes or months?), and a period must
be positive, except an explicit ``0 days`` for "as soon as the event happens".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil.relativedelta import relativedelta

__all__ = ["Period", "PeriodError", "parse_period"]


class PeriodError(ValueError):
    """A period string cannot be parsed; the message says why and what to write."""


_UNITS: dict[str, str] = {
    "s": "seconds",
    "sec": "seconds",
    "secs": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "wk": "weeks",
    "week": "weeks",
    "weeks": "weeks",
    "mo": "months",
    "mon": "months",
    "month": "months",
    "months": "months",
    "y": "years",
    "yr": "years",
    "yrs": "years",
    "year": "years",
    "years": "years",
}
_AMBIGUOUS = {"m", "M"}
_TERM = re.compile(r"\s*(?P<n>[+-]?\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]+)\s*,?")
_ISO = re.compile(
    r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
_FIELDS = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")


@dataclass(frozen=True, slots=True, order=False)
class Period:
    """A calendar-aware length of time. All parts are non-negative integers."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    @property
    def is_zero(self) -> bool:
        """True for ``0 days``: the row is due as soon as its timestamp passes."""
        return not any(getattr(self, name) for name in _FIELDS)

    @property
    def is_fixed(self) -> bool:
        """True when the period has no calendar units (months, years)."""
        return not (self.years or self.months)

    def as_timedelta(self) -> timedelta:
        """The exact length of a fixed period (no months or years)."""
        if not self.is_fixed:
            raise ValueError(f"{self} has calendar units and no fixed length")
        return timedelta(
            weeks=self.weeks,
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        )

    def _delta(self) -> relativedelta:
        return relativedelta(
            years=self.years,
            months=self.months,
            weeks=self.weeks,
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        )

    def before(self, moment: datetime) -> datetime:
        """The instant this period before `moment`, in UTC (`moment` must be aware)."""
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware")
        return moment.astimezone(UTC) - self._delta()

    def after(self, moment: datetime) -> datetime:
        """The instant this period after `moment`, in UTC (`moment` must be aware)."""
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware")
        return moment.astimezone(UTC) + self._delta()

    def iso(self) -> str:
        """ISO 8601 form, e.g. ``P1Y6M`` or ``P0D``."""
        date = "".join(
            f"{value}{letter}"
            for value, letter in (
                (self.years, "Y"),
                (self.months, "M"),
                (self.weeks, "W"),
                (self.days, "D"),
            )
            if value
        )
        time = "".join(
            f"{value}{letter}"
            for value, letter in ((self.hours, "H"), (self.minutes, "M"), (self.seconds, "S"))
            if value
        )
        if not date and not time:
            return "P0D"
        return "P" + date + (f"T{time}" if time else "")

    def __str__(self) -> str:
        if self.is_zero:
            return "0 days"
        parts = []
        for name in _FIELDS:
            value = getattr(self, name)
            if value:
                unit = name if value != 1 else name[:-1]
                parts.append(f"{value} {unit}")
        return " ".join(parts)


#: Longest accepted period, in approximate days (a sanity bound: 1000 Julian years).
MAX_DAYS = 365_250


def parse_period(text: object) -> Period:
    """Parse a period from the short form or ISO 8601; raise `PeriodError` with advice."""
    if isinstance(text, Period):
        return text
    period = _parse(text)
    year = 365.2425
    approx_days = (
        (period.years + period.months / 12) * year
        + period.weeks * 7
        + period.days
        + (period.hours * 3600 + period.minutes * 60 + period.seconds) / 86400
    )
    if approx_days > MAX_DAYS:
        raise PeriodError(f"period {text!r} is longer than 1000 years")
    return period


def _parse(text: object) -> Period:
    if isinstance(text, bool) or not isinstance(text, str):
        raise PeriodError(
            f"expected a period such as '90 days', '12 months' or 'P7Y', got {text!r}"
        )
    raw = text.strip()
    if not raw:
        raise PeriodError("empty period; write e.g. '90 days', '12 months' or 'P7Y'")
    if raw.startswith(("P", "p")) and (raw[1:2].isdigit() or raw[1:2] in ("T", "t")):
        return _parse_iso(raw.upper())
    return _parse_short(raw)


def _parse_iso(raw: str) -> Period:
    match = _ISO.match(raw)
    if not match or raw in ("P", "PT") or raw.endswith("T"):
        raise PeriodError(f"invalid ISO 8601 duration {raw!r}; expected e.g. 'P90D', 'P12M', 'P7Y'")
    values = {name: int(v) for name, v in match.groupdict().items() if v is not None}
    period = Period(**values)
    if period.is_zero and raw != "P0D":
        raise PeriodError(f"{raw!r} is zero; write 'P0D' or '0 days' to mean 'immediately'")
    return period


def _parse_short(raw: str) -> Period:
    values: dict[str, int] = {}
    pos = 0
    while pos < len(raw):
        match = _TERM.match(raw, pos)
        if not match or match.end() == pos:
            raise PeriodError(
                f"cannot read {raw!r} as a period; write e.g. '90 days', '12 months', '7y' or 'P7Y'"
            )
        number, unit = match.group("n"), match.group("unit")
        if unit in _AMBIGUOUS:
            raise PeriodError(
                f"unit {unit!r} in {raw!r} is ambiguous; write 'min' for minutes or 'mo' for months"
            )
        field = _UNITS.get(unit.lower())
        if field is None:
            raise PeriodError(
                f"unknown unit {unit!r} in {raw!r}; use seconds, min, hours, days, weeks, "
                "months or years"
            )
        if number.startswith("-"):
            raise PeriodError(f"period {raw!r} is negative; retention periods must be positive")
        if "." in number:
            raise PeriodError(
                f"period {raw!r} has a fraction; use whole numbers (e.g. '18 months')"
            )
        if field in values:
            raise PeriodError(f"period {raw!r} names {field} twice")
        values[field] = int(number)
        pos = match.end()
    period = Period(**values)
    if period.is_zero and set(values) != {"days"}:
        raise PeriodError(
            f"period {raw!r} is zero; write '0 days' to mean 'as soon as the event happens'"
        )
    return period


def utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
