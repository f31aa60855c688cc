"""Business-time arithmetic: the pure calendar the timers and the dry run share."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from inbox_service.sla.business_hours import BusinessCalendar
from inbox_service.sla.policies import build_calendar

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600


def office(
    zone: str, start: str = "09:00", end: str = "18:00", **extra: object
) -> BusinessCalendar:
    intervals = [
        {"day": d, "start": start, "end": end} for d in ("mon", "tue", "wed", "thu", "fri")
    ]
    return build_calendar({"timezone": zone, "intervals": intervals, "holidays": [], **extra})


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


class TestWeeklyHours:
    def test_friday_1755_with_one_hour_is_due_monday_0955(self) -> None:
        calendar = office("Europe/Berlin")
        start = local(BERLIN, 2026, 1, 9, 17, 55)  # a Friday
        due = calendar.add(start, HOUR)
        assert due == local(BERLIN, 2026, 1, 12, 9, 55)
        assert due.astimezone(BERLIN).strftime("%a %H:%M") == "Mon 09:55"

    def test_a_budget_ending_with_the_day_is_due_at_closing_not_next_morning(self) -> None:
        calendar = office("Europe/Berlin")
        assert calendar.add(local(BERLIN, 2026, 1, 9, 17, 0), HOUR) == local(
            BERLIN, 2026, 1, 9, 18, 0
        )

    def test_start_outside_hours_counts_from_the_next_opening(self) -> None:
        calendar = office("Europe/Berlin")
        saturday = local(BERLIN, 2026, 1, 10, 11, 0)
        assert calendar.add(saturday, 30 * 60) == local(BERLIN, 2026, 1, 12, 9, 30)

    def test_several_intervals_a_day(self) -> None:
        calendar = build_calendar(
            {
                "timezone": "Europe/Berlin",
                "intervals": [
                    {"day": "mon", "start": "09:00", "end": "12:00"},
                    {"day": "mon", "start": "13:00", "end": "17:00"},
                ],
            }
        )
        start = local(BERLIN, 2026, 1, 5, 11, 30)
        assert calendar.add(start, HOUR) == local(BERLIN, 2026, 1, 5, 13, 30)
        # Monday's 7 hours are used up by 17:00; the next Monday continues.
        assert calendar.add(start, 5 * HOUR) == local(BERLIN, 2026, 1, 12, 9, 30)
        assert calendar.seconds_between(start, local(BERLIN, 2026, 1, 5, 14, 0)) == 1.5 * HOUR

    def test_a_holiday_is_skipped(self) -> None:
        calendar = office("Europe/Berlin", holidays=["2026-01-12"])
        due = calendar.add(local(BERLIN, 2026, 1, 9, 17, 55), HOUR)
        assert due == local(BERLIN, 2026, 1, 13, 9, 55)  # Tuesday, Monday is off

    def test_holidays_are_local_dates_of_the_calendar_zone(self) -> None:
        # 2026-01-12 00:30 in Tokyo is still Sunday the 11th in UTC: the Tokyo date counts.
        calendar = office("Asia/Tokyo", holidays=["2026-01-12"])
        tokyo = ZoneInfo("Asia/Tokyo")
        due = calendar.add(local(tokyo, 2026, 1, 9, 17, 55), HOUR)
        assert due == local(tokyo, 2026, 1, 13, 9, 55)


class TestDaylightSavingTime:
    def test_berlin_spring_forward_over_a_weekend(self) -> None:
        # RELIABILITY §8: Fri 2026-03-27 16:00 CET + 4 business hours (9-17) is
        # Mon 2026-03-30 12:00 CEST = 10:00Z; clocks went forward on Sunday the 29th.
        calendar = office("Europe/Berlin", end="17:00")
        due = calendar.add(datetime(2026, 3, 27, 15, 0, tzinfo=UTC), 4 * HOUR)
        assert due == datetime(2026, 3, 30, 10, 0, tzinfo=UTC)
        assert due.astimezone(BERLIN).hour == 12

    def test_berlin_fall_back_around_the_clock_adds_real_hours(self) -> None:
        # 4 h from 2026-10-25 00:30 CEST (22:30Z) is 02:30Z = 03:30 CET, not the 04:30 CET
        # that wall-clock arithmetic gives (RELIABILITY F7).
        start = local(BERLIN, 2026, 10, 25, 0, 30)
        for calendar in (
            build_calendar(None),
            build_calendar({"timezone": "Europe/Berlin", "intervals": None}),
            # holidays force the per-day windows path: a 25-hour local day
            build_calendar({"timezone": "Europe/Berlin", "holidays": ["2026-12-25"]}),
        ):
            due = calendar.add(start, 4 * HOUR)
            assert due == datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
            assert due.astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CET"
            assert due != (start + timedelta(hours=4)).astimezone(UTC)  # the naive answer

    def test_berlin_days_last_23_and_25_hours(self) -> None:
        calendar = build_calendar({"timezone": "Europe/Berlin", "holidays": ["2026-12-25"]})
        spring = calendar.seconds_between(
            local(BERLIN, 2026, 3, 29, 0, 0), local(BERLIN, 2026, 3, 30, 0, 0)
        )
        autumn = calendar.seconds_between(
            local(BERLIN, 2026, 10, 25, 0, 0), local(BERLIN, 2026, 10, 26, 0, 0)
        )
        assert (spring, autumn) == (23 * HOUR, 25 * HOUR)

    def test_berlin_night_window_over_the_repeated_hour_is_five_real_hours(self) -> None:
        calendar = build_calendar(
            {
                "timezone": "Europe/Berlin",
                "intervals": [{"day": "sun", "start": "00:00", "end": "04:00"}],
            }
        )
        (window,) = calendar.day_windows(date(2026, 10, 25))
        assert window[1] - window[0] == timedelta(hours=5)

    def test_berlin_window_starting_in_the_skipped_hour_starts_after_it(self) -> None:
        calendar = build_calendar(
            {
                "timezone": "Europe/Berlin",
                "intervals": [{"day": "sun", "start": "02:30", "end": "04:00"}],
            }
        )
        (window,) = calendar.day_windows(date(2026, 3, 29))
        assert window == (
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST: 02:30 does not exist
            datetime(2026, 3, 29, 2, 0, tzinfo=UTC),  # 04:00 CEST
        )

    def test_new_york_spring_forward_over_a_weekend(self) -> None:
        # DST starts Sun 2026-03-08. Fri 16:00 EST (21:00Z) + 2 h of 9-17 -> Mon 10:00 EDT.
        calendar = office("America/New_York", end="17:00")
        due = calendar.add(local(NEW_YORK, 2026, 3, 6, 16, 0), 2 * HOUR)
        assert due == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)
        assert due.astimezone(NEW_YORK).strftime("%a %H:%M %Z") == "Mon 10:00 EDT"

    def test_new_york_fall_back_over_a_weekend(self) -> None:
        # DST ends Sun 2026-11-01. Fri 16:00 EDT (20:00Z) + 2 h -> Mon 10:00 EST (15:00Z).
        calendar = office("America/New_York", end="17:00")
        due = calendar.add(local(NEW_YORK, 2026, 10, 30, 16, 0), 2 * HOUR)
        assert due == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
        assert due.astimezone(NEW_YORK).strftime("%a %H:%M %Z") == "Mon 10:00 EST"

    def test_new_york_around_the_clock_across_both_changes(self) -> None:
        calendar = build_calendar({"timezone": "America/New_York", "holidays": ["2026-07-04"]})
        # 01:30 EST + 1 h on the spring night is 03:30 EDT; on the autumn night 01:30 EDT
        # + 1 h is 01:30 EST (the repeated hour).
        assert calendar.add(local(NEW_YORK, 2026, 3, 8, 1, 30), HOUR) == datetime(
            2026, 3, 8, 7, 30, tzinfo=UTC
        )
        assert calendar.add(local(NEW_YORK, 2026, 11, 1, 1, 30), HOUR) == datetime(
            2026, 11, 1, 6, 30, tzinfo=UTC
        )


class TestAroundTheClock:
    def test_24_7_is_plain_elapsed_time(self) -> None:
        calendar = build_calendar(None)
        start = datetime(2026, 1, 9, 17, 55, tzinfo=UTC)
        assert calendar.add(start, HOUR) == start + timedelta(hours=1)
        assert calendar.seconds_between(start, start + timedelta(days=3)) == 3 * 86_400

    def test_24_7_with_a_holiday_skips_that_local_day(self) -> None:
        calendar = build_calendar({"timezone": "Europe/Berlin", "holidays": ["2026-12-25"]})
        start = local(BERLIN, 2026, 12, 24, 23, 0)
        assert calendar.add(start, 2 * HOUR) == local(BERLIN, 2026, 12, 26, 1, 0)


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2026, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=datetime(2027, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    seconds=st.integers(min_value=1, max_value=40 * HOUR),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_business_time_between_start_and_due_is_the_target(
    start: datetime, seconds: int, zone: str
) -> None:
    calendar = office(zone, holidays=["2026-12-25", "2027-01-01"])
    due = calendar.add(start, seconds)
    assert calendar.seconds_between(start, due) == seconds
    # Monotone: a longer target is never due earlier.
    assert calendar.add(start, seconds + 60) > due
