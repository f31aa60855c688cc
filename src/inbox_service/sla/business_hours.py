"""Business time: which instants count towards an SLA target, and adding durations to them.

A calendar is an IANA time zone, weekly intervals in local wall time (several a day
allowed), and holidays (local dates). No intervals means around the clock (24/7).

Everything is computed in UTC (RELIABILITY F7): aware-datetime arithmetic in Python is wall
clock arithmetic, so `Berlin 00:30 + 4 h` on the night clocks go back lands an hour late.
Local time is used only to place each day's windows; each window boundary is converted to
UTC on its own, so a day with a DST change has the right length. A boundary that does not
exist (the hour skipped in spring) resolves forward; an ambiguous one (the hour repeated in
autumn) takes its first occurrence.

Pure: no I/O, no clock. The timers, the API's dry run and the tests share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

DAY_SECONDS = 86_400
# A calendar whose every day is a holiday for this long has no business time at all.
MAX_DAYS_WITHOUT_BUSINESS = 3_660

Window = tuple[datetime, datetime]


@dataclass(frozen=True)
class BusinessCalendar:
    """`weekly[d]` lists the (start, end) second-of-day pairs of weekday `d` (0 = Monday),
    sorted and disjoint; `weekly=None` is around the clock."""

    zone: str = "UTC"
    weekly: tuple[tuple[tuple[int, int], ...], ...] | None = None
    holidays: frozenset[date] = frozenset()

    @property
    def always_open(self) -> bool:
        return self.weekly is None and not self.holidays

    def day_windows(self, day: date) -> tuple[Window, ...]:
        """The UTC windows of one local date (none on a holiday)."""
        return _day_windows(self, day)

    def windows(self, start: datetime) -> Iterator[Window]:
        """Business windows in UTC, in order, from the one holding `start` (clipped) on."""
        start = start.astimezone(UTC)
        if self.always_open:
            yield start, datetime.max.replace(tzinfo=UTC)
            return
        day = start.astimezone(ZoneInfo(self.zone)).date() - timedelta(days=1)
        empty_days = 0
        while empty_days < MAX_DAYS_WITHOUT_BUSINESS:
            found = False
            for begin, end in _day_windows(self, day):
                found = True
                if end > start:
                    yield max(begin, start), end
            empty_days = 0 if found else empty_days + 1
            day += timedelta(days=1)

    def add(self, start: datetime, seconds: int) -> datetime:
        """The instant by which `seconds` of business time have passed since `start`.

        A budget that runs out exactly at a window's end is due then (Friday 18:00), not
        at the next window's start."""
        start = start.astimezone(UTC)  # arithmetic on a local time would be wall-clock time
        if seconds <= 0:
            return start
        if self.always_open:
            return start + timedelta(seconds=seconds)
        left = timedelta(seconds=seconds)
        for begin, end in self.windows(start):
            if end - begin >= left:
                return begin + left
            left -= end - begin
        raise ValueError("the calendar has no business time left")

    def seconds_between(self, start: datetime, end: datetime) -> int:
        """Business seconds in [start, end); negative when `end` comes first."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end < start:
            return -self.seconds_between(end, start)
        if self.always_open:
            return int((end - start).total_seconds())
        total = timedelta()
        for begin, stop in self.windows(start):
            if begin >= end:
                break
            total += min(stop, end) - begin
        return int(total.total_seconds())


def _to_utc(day: date, second: int, zone: ZoneInfo) -> datetime:
    if second >= DAY_SECONDS:  # 24:00 is the next day's midnight
        day, second = day + timedelta(days=1), second - DAY_SECONDS
    local = datetime.combine(day, time(second // 3600, second // 60 % 60, second % 60), zone)
    # fold=0: a skipped time takes the offset before the change, which lands it after the
    # gap (02:30 on a spring-forward night is 03:30); a repeated time is its first pass.
    return local.astimezone(UTC)


@lru_cache(maxsize=4096)
def _day_windows(calendar: BusinessCalendar, day: date) -> tuple[Window, ...]:
    if day in calendar.holidays:
        return ()
    zone = ZoneInfo(calendar.zone)
    spans = ((0, DAY_SECONDS),) if calendar.weekly is None else calendar.weekly[day.weekday()]
    windows = []
    for start, end in spans:
        begin, stop = _to_utc(day, start, zone), _to_utc(day, end, zone)
        if stop > begin:  # a window inside the skipped hour is empty
            windows.append((begin, stop))
    return tuple(windows)
