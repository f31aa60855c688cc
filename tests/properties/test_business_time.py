"""The business-time calculator (sla/business_hours.py, sla/timers.py) on generated
calendars: any weekly windows (several a day, adjacent, up to 24:00), zones with DST at
02:00, at midnight, by 30 minutes, or none, and holidays.

* monotonic: a later start never gives an earlier due time (and a longer target never an
  earlier one);
* exact: the business time between a start and its due time is the target;
* additive: business time over [a, c) is that over [a, b) plus [b, c);
* pause-additive: a clock paused and resumed any number of times is due when the target
  plus the business time spent paused has passed, and pausing never makes it due earlier.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from inbox_service.sla.business_hours import BusinessCalendar
from inbox_service.sla.timers import Timer, WarnRule, pause, resume, start
from tests.properties.conftest import PROPERTIES

HOUR = 3600
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",  # DST moves by 30 minutes
    "America/Santiago",  # DST changes at midnight
    "America/Havana",  # at midnight too (clocks skip 00:00-01:00)
    "Pacific/Chatham",  # +12:45 / +13:45
]
INSTANTS = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(2027, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda instant: instant.replace(microsecond=0))  # the calculator counts whole seconds


@st.composite
def day_spans(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """0-3 sorted, disjoint (possibly adjacent) windows, on a 15-minute grid up to 24:00."""
    points = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
    if len(points) % 2:
        points = points[:-1]
    return tuple((points[i] * 900, points[i + 1] * 900) for i in range(0, len(points), 2))


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    zone = draw(st.sampled_from(ZONES))
    weekly = None if draw(st.integers(0, 4)) == 0 else tuple(draw(day_spans()) for _ in range(7))
    assume(weekly is None or any(spans for spans in weekly))
    holidays = frozenset(draw(st.lists(st.dates(date(2026, 1, 1), date(2028, 1, 31)), max_size=4)))
    return BusinessCalendar(zone=zone, weekly=weekly, holidays=holidays)


def due_of(timer: Timer) -> datetime | None:
    return timer.due_at  # read through a call: mypy would keep narrowing the attribute


TARGETS = st.integers(min_value=1, max_value=60 * HOUR)


@settings(PROPERTIES, max_examples=300)
@given(calendar=calendars(), first=INSTANTS, later_by=st.integers(0, 9 * 86_400), target=TARGETS)
def test_a_later_start_is_never_due_earlier(
    calendar: BusinessCalendar, first: datetime, later_by: int, target: int
) -> None:
    later = first + timedelta(seconds=later_by)
    due = calendar.add(first, target)
    assert calendar.add(later, target) >= due
    assert calendar.add(first, target + 1) > due
    assert calendar.seconds_between(first, due) == target


@settings(PROPERTIES, max_examples=300)
@given(calendar=calendars(), points=st.lists(INSTANTS, min_size=3, max_size=3))
def test_business_time_is_additive(calendar: BusinessCalendar, points: list[datetime]) -> None:
    a, b, c = sorted(points)
    between = calendar.seconds_between
    assert between(a, c) == between(a, b) + between(b, c)
    assert between(a, b) >= 0
    assert between(b, a) == -between(a, b)


@st.composite
def pauses(draw: st.DrawFn, begin: datetime) -> list[tuple[datetime, datetime]]:
    """Ordered, disjoint (pause, resume) instants after `begin`."""
    marks = sorted(draw(st.lists(st.integers(1, 6 * 86_400), max_size=6, unique=True)))
    if len(marks) % 2:
        marks = marks[:-1]
    at = [begin + timedelta(seconds=s) for s in marks]
    return [(at[i], at[i + 1]) for i in range(0, len(at), 2)]


@settings(PROPERTIES, max_examples=300)
@given(calendar=calendars(), begin=INSTANTS, target=TARGETS, data=st.data())
def test_pauses_add_their_business_time_to_the_due_time(
    calendar: BusinessCalendar, begin: datetime, target: int, data: st.DataObject
) -> None:
    warning = WarnRule()
    timer = Timer(metric="first_response")
    start(timer, begin, target, calendar, warning)
    unpaused_due = timer.due_at
    assert unpaused_due is not None
    paused_total = 0
    for paused_at, resumed_at in data.draw(pauses(begin)):
        assert timer.due_at is not None
        if paused_at >= timer.due_at:
            break  # breached before this pause: later pauses cannot help it
        pause(timer, paused_at, calendar, warning)
        assert not timer.running_since
        assert due_of(timer) is None  # no due time while paused
        resume(timer, resumed_at, calendar, warning)
        paused_total += calendar.seconds_between(paused_at, resumed_at)
    assert timer.due_at is not None
    assert timer.due_at >= unpaused_due  # pausing never makes it due earlier
    # Pause-additive: due when target + paused business time have passed since the start.
    assert calendar.seconds_between(begin, timer.due_at) == target + paused_total
    assert timer.due_at == calendar.add(begin, target + paused_total)


def test_the_worked_pause_example() -> None:
    """RELIABILITY §8 (Znuny): created 08:00, 2 h target, pending 09:00-10:05 → 11:05."""
    calendar, warning, timer = BusinessCalendar(), WarnRule(), Timer(metric="resolution")
    day = datetime(2026, 3, 2, tzinfo=UTC)
    start(timer, day.replace(hour=8), 2 * HOUR, calendar, warning)
    pause(timer, day.replace(hour=9), calendar, warning)
    resume(timer, day.replace(hour=10, minute=5), calendar, warning)
    assert timer.due_at == day.replace(hour=11, minute=5)
