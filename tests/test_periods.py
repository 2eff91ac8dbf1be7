"""Retention periods: the short and ISO 8601 forms, calendar arithmetic, and rejections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.periods import Period, PeriodError, parse_period
from tests.conftest import NOW

# --- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90 days", Period(days=90)),
        ("90d", Period(days=90)),
        ("12 months", Period(months=12)),
        ("12mo", Period(months=12)),
        ("7y", Period(years=7)),
        ("1 year 6 months", Period(years=1, months=6)),
        ("1 year, 6 months", Period(years=1, months=6)),
        ("1y6mo", Period(years=1, months=6)),
        ("2w", Period(weeks=2)),
        ("6 hours", Period(hours=6)),
        ("30 min", Period(minutes=30)),
        ("  90 days  ", Period(days=90)),
        ("0 days", Period()),
        ("0d", Period()),
    ],
)
def test_short_forms_parse_to_their_parts(text: str, expected: Period) -> None:
    assert parse_period(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P90D", Period(days=90)),
        ("P12M", Period(months=12)),
        ("P7Y", Period(years=7)),
        ("P1Y6M", Period(years=1, months=6)),
        ("PT6H", Period(hours=6)),
        ("PT30M", Period(minutes=30)),
        ("P2W", Period(weeks=2)),
        ("P1DT12H", Period(days=1, hours=12)),
        ("p90d", Period(days=90)),
        ("P0D", Period()),
    ],
)
def test_iso_8601_durations_parse_to_their_parts(text: str, expected: Period) -> None:
    assert parse_period(text) == expected


def test_iso_month_and_minute_are_told_apart_by_the_time_designator() -> None:
    assert (parse_period("P1M"), parse_period("PT1M")) == (Period(months=1), Period(minutes=1))


def test_a_period_passes_through_parse_period_unchanged() -> None:
    period = Period(years=7)
    assert parse_period(period) is period


# --- calendar arithmetic -------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "moment", "expected"),
    [
        # 12 calendar months, not 360 days (which would give 2024-04-05)
        ("12 months", _utc(2025, 3, 31), _utc(2024, 3, 31)),
        ("P12M", _utc(2025, 3, 31), _utc(2024, 3, 31)),
        ("1 month", _utc(2025, 3, 31), _utc(2025, 2, 28)),
        ("1 month", _utc(2024, 3, 31), _utc(2024, 2, 29)),
        ("1 year", _utc(2024, 2, 29), _utc(2023, 2, 28)),
        ("4 years", _utc(2028, 2, 29), _utc(2024, 2, 29)),
        ("1 year 6 months", _utc(2025, 8, 31, 12), _utc(2024, 2, 29, 12)),
        ("90 days", _utc(2025, 3, 31), _utc(2024, 12, 31)),
        ("6 hours", _utc(2025, 1, 1, 3), _utc(2024, 12, 31, 21)),
        ("0 days", _utc(2025, 1, 1), _utc(2025, 1, 1)),
    ],
)
def test_before_counts_calendar_units_back_from_the_moment(
    period: str, moment: datetime, expected: datetime
) -> None:
    assert parse_period(period).before(moment) == expected


def test_twelve_months_is_not_three_hundred_and_sixty_days() -> None:
    moment = _utc(2025, 3, 31)
    assert moment - parse_period("12 months").before(moment) == timedelta(days=365)


def test_before_returns_utc_for_an_aware_non_utc_moment() -> None:
    madrid = datetime(2025, 3, 31, 2, 0, tzinfo=ZoneInfo("Europe/Madrid"))  # 00:00 UTC (CEST)
    result = Period(days=1).before(madrid)
    assert (result, result.tzinfo) == (_utc(2025, 3, 30), UTC)


def test_calendar_arithmetic_happens_in_utc_not_in_the_moments_zone() -> None:
    # 00:30 on 1 March in Madrid (CET, UTC+1) is still 28 February in UTC.
    madrid = datetime(2025, 3, 1, 0, 30, tzinfo=ZoneInfo("Europe/Madrid"))
    assert Period(months=1).before(madrid) == datetime(2025, 1, 28, 23, 30, tzinfo=UTC)


def test_before_rejects_a_naive_moment() -> None:
    with pytest.raises(ValueError, match=r"^moment must be timezone-aware$"):
        Period(days=1).before(datetime(2025, 1, 1))


def test_after_rejects_a_naive_moment() -> None:
    with pytest.raises(ValueError, match=r"^moment must be timezone-aware$"):
        Period(days=1).after(datetime(2025, 1, 1))


def test_calendar_periods_are_not_invertible_at_month_ends() -> None:
    """One month before 31 March is 28 February; one month after that is 28 March."""
    month = Period(months=1)
    assert month.after(month.before(_utc(2025, 3, 31))) == _utc(2025, 3, 28)


# --- rejections ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 m", "unit 'm' in '5 m' is ambiguous; write 'min' for minutes or 'mo' for months"),
        ("5M", "unit 'M' in '5M' is ambiguous; write 'min' for minutes or 'mo' for months"),
        (
            "1 year 6 m",
            "unit 'm' in '1 year 6 m' is ambiguous; write 'min' for minutes or 'mo' for months",
        ),
        ("-5 days", "period '-5 days' is negative; retention periods must be positive"),
        ("1.5 years", "period '1.5 years' has a fraction; use whole numbers (e.g. '18 months')"),
        (
            "0 months",
            "period '0 months' is zero; write '0 days' to mean 'as soon as the event happens'",
        ),
        (
            "0 days 0 hours",
            "period '0 days 0 hours' is zero; write '0 days' to mean 'as soon as the event "
            "happens'",
        ),
        ("0y", "period '0y' is zero; write '0 days' to mean 'as soon as the event happens'"),
        ("P0Y", "'P0Y' is zero; write 'P0D' or '0 days' to mean 'immediately'"),
        ("PT0H", "'PT0H' is zero; write 'P0D' or '0 days' to mean 'immediately'"),
        ("", "empty period; write e.g. '90 days', '12 months' or 'P7Y'"),
        ("   ", "empty period; write e.g. '90 days', '12 months' or 'P7Y'"),
        (
            "90 fortnights",
            "unknown unit 'fortnights' in '90 fortnights'; use seconds, min, hours, days, weeks, "
            "months or years",
        ),
        ("1 day 2 days", "period '1 day 2 days' names days twice"),
        (
            "ninety days",
            "cannot read 'ninety days' as a period; write e.g. '90 days', '12 months', '7y' "
            "or 'P7Y'",
        ),
        ("90", "cannot read '90' as a period; write e.g. '90 days', '12 months', '7y' or 'P7Y'"),
        ("P", "cannot read 'P' as a period; write e.g. '90 days', '12 months', '7y' or 'P7Y'"),
        ("PT", "invalid ISO 8601 duration 'PT'; expected e.g. 'P90D', 'P12M', 'P7Y'"),
        ("P1H", "invalid ISO 8601 duration 'P1H'; expected e.g. 'P90D', 'P12M', 'P7Y'"),
        ("P1DT", "invalid ISO 8601 duration 'P1DT'; expected e.g. 'P90D', 'P12M', 'P7Y'"),
        ("P1.5Y", "invalid ISO 8601 duration 'P1.5Y'; expected e.g. 'P90D', 'P12M', 'P7Y'"),
    ],
)
def test_bad_periods_are_rejected_with_advice(text: str, message: str) -> None:
    with pytest.raises(PeriodError) as info:
        parse_period(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "shown"), [(90, "90"), (True, "True"), (None, "None"), (1.5, "1.5")]
)
def test_non_string_periods_are_rejected(value: object, shown: str) -> None:
    with pytest.raises(PeriodError) as info:
        parse_period(value)
    assert str(info.value) == (
        f"expected a period such as '90 days', '12 months' or 'P7Y', got {shown}"
    )


def test_period_error_is_a_value_error_so_pydantic_reports_it() -> None:
    assert issubclass(PeriodError, ValueError)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30 seconds", 30), ("30s", 30), ("1 second", 1), ("45 sec", 45), ("PT45S", 45)],
)
def test_seconds_are_a_short_form_unit(text: str, seconds: int) -> None:
    assert parse_period(text) == Period(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["1001 years", "10000 years", "12013 months", "365251 days", "P99999999999D"]
)
def test_periods_longer_than_1000_years_are_rejected(text: str) -> None:
    """Beyond that a cutoff may not be computable (year 1 is the earliest datetime)."""
    with pytest.raises(PeriodError) as info:
        parse_period(text)
    assert str(info.value) == f"period {text!r} is longer than 1000 years"


@pytest.mark.parametrize(
    ("text", "cutoff"),
    [
        ("365250 days", datetime(1026, 11, 16, 12, tzinfo=UTC)),
        ("52178 weeks", datetime(1026, 11, 20, 12, tzinfo=UTC)),
        ("999 years", datetime(1027, 11, 23, 12, tzinfo=UTC)),
        ("1000 years", datetime(1026, 11, 23, 12, tzinfo=UTC)),
        ("P1000Y", datetime(1026, 11, 23, 12, tzinfo=UTC)),
        ("12000 months", datetime(1026, 11, 23, 12, tzinfo=UTC)),
    ],
)
def test_periods_up_to_1000_years_are_accepted_and_give_a_cutoff(
    text: str, cutoff: datetime
) -> None:
    assert parse_period(text).before(NOW) == cutoff


# --- properties ---------------------------------------------------------------


def test_properties_of_zero_and_fixed_periods() -> None:
    assert (Period().is_zero, Period(days=1).is_zero) == (True, False)
    assert (Period(weeks=2, hours=3).is_fixed, Period(months=1).is_fixed) == (True, False)


def test_a_fixed_period_has_an_exact_length() -> None:
    assert Period(weeks=1, days=2, hours=3, minutes=4, seconds=5).as_timedelta() == timedelta(
        days=9, hours=3, minutes=4, seconds=5
    )


def test_a_calendar_period_has_no_fixed_length() -> None:
    with pytest.raises(ValueError, match=r"^1 month has calendar units and no fixed length$"):
        Period(months=1).as_timedelta()


# --- text forms --------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "text", "iso"),
    [
        (Period(), "0 days", "P0D"),
        (Period(days=90), "90 days", "P90D"),
        (Period(days=1), "1 day", "P1D"),
        (Period(years=1, months=6), "1 year 6 months", "P1Y6M"),
        (Period(weeks=2, days=3), "2 weeks 3 days", "P2W3D"),
        (Period(hours=6), "6 hours", "PT6H"),
        (Period(days=1, hours=1, minutes=30), "1 day 1 hour 30 minutes", "P1DT1H30M"),
    ],
)
def test_str_and_iso_write_the_period_and_read_back(period: Period, text: str, iso: str) -> None:
    assert (str(period), period.iso()) == (text, iso)
    assert (parse_period(text), parse_period(iso)) == (period, period)


_part = st.integers(min_value=0, max_value=500)


@st.composite
def _periods(draw: st.DrawFn) -> Period:
    period = Period(
        years=draw(_part),
        months=draw(_part),
        weeks=draw(_part),
        days=draw(_part),
        hours=draw(_part),
        minutes=draw(_part),
        seconds=draw(_part),
    )
    if period.is_zero:
        return Period(days=1)
    return period


@settings(max_examples=200, deadline=None)
@given(_periods())
def test_str_round_trips_through_parse_period(period: Period) -> None:
    assert parse_period(str(period)) == period


@settings(max_examples=200, deadline=None)
@given(_periods())
def test_iso_round_trips_through_parse_period(period: Period) -> None:
    assert parse_period(period.iso()) == period


def test_str_round_trips_a_period_with_seconds() -> None:
    period = Period(minutes=1, seconds=30)
    assert parse_period(str(period)) == period


_fixed = st.builds(
    Period,
    weeks=_part,
    days=_part,
    hours=_part,
    minutes=_part,
    seconds=_part,
)
_zones = st.sampled_from([UTC, ZoneInfo("Europe/Madrid"), ZoneInfo("America/New_York")])


@settings(max_examples=100, deadline=None)
@given(
    _fixed,
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=_zones),
)
def test_before_then_after_of_a_fixed_period_returns_the_same_instant(
    period: Period, moment: datetime
) -> None:
    # Compared in UTC: Python never calls a DST-ambiguous local time equal to another zone's.
    assert period.after(period.before(moment)) == moment.astimezone(UTC)


@settings(max_examples=100, deadline=None)
@given(_fixed)
def test_before_of_a_fixed_period_subtracts_its_exact_length(period: Period) -> None:
    assert NOW - period.before(NOW) == period.as_timedelta()
