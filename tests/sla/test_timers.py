"""The timer state machine on its own: pauses, retargets, alarms (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inbox_service.sla import timers
from inbox_service.sla.business_hours import BusinessCalendar
from inbox_service.sla.timers import Timer, WarnRule

ALWAYS = BusinessCalendar()
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class TestPauses:
    def test_znuny_example_pending_0900_to_1005_moves_the_breach_to_1105(self) -> None:
        # RELIABILITY §8: created 08:00 with 2 h; pending 09:00; customer answers 10:05.
        timer = Timer(metric="resolution")
        timers.start(timer, T0, 7200, ALWAYS, WarnRule())
        assert timer.due_at == at(2)
        timers.pause(timer, at(1), ALWAYS, WarnRule())
        assert (timer.due_at, timer.consumed_seconds, timer.next_alarm) == (None, 3600, None)
        assert timers.alarms_due(timer, at(2)) == []  # no breach at 10:00 while paused
        timers.resume(timer, at(1) + timedelta(minutes=65), ALWAYS, WarnRule())
        assert timer.due_at == datetime(2026, 1, 5, 11, 5, tzinfo=UTC)
        assert timers.alarms_due(timer, timer.due_at - timedelta(seconds=1)) == []
        assert timers.alarms_due(timer, timer.due_at) == ["breach"]

    def test_paused_remaining_is_the_budget_left(self) -> None:
        timer = Timer(metric="first_response")
        timers.start(timer, T0, 3600, ALWAYS, WarnRule(seconds=600))
        timers.pause(timer, at(0.5), ALWAYS, WarnRule(seconds=600))
        assert timers.remaining(timer, at(10), ALWAYS) == 1800
        assert timers.status(timer, at(10), ALWAYS, WarnRule(seconds=600)) == "ok"


class TestAlarms:
    def test_warning_then_breach_each_once_per_cycle(self) -> None:
        warn = WarnRule(percent=25)
        timer = Timer(metric="first_response")
        timers.start(timer, T0, 3600, ALWAYS, warn)
        assert timer.warn_at == at(0.75)
        assert timer.next_alarm == at(0.75)
        assert timers.alarms_due(timer, at(0.8)) == ["warning"]
        assert timers.alarms_due(timer, at(0.9)) == []
        assert timer.next_alarm == at(1)
        assert timers.alarms_due(timer, at(1)) == ["breach"]
        assert timers.alarms_due(timer, at(5)) == []
        assert timer.next_alarm is None
        timers.start(timer, at(6), 3600, ALWAYS, warn)  # a new cycle announces again
        assert timer.cycle == 2
        assert timers.alarms_due(timer, at(8)) == ["warning", "breach"]

    def test_met_target_never_alarms_and_records_who(self) -> None:
        timer = Timer(metric="first_response")
        timers.start(timer, T0, 3600, ALWAYS, WarnRule(seconds=600))
        assert timers.meet(timer, at(0.5), "usr_1", ALWAYS, WarnRule(seconds=600))
        assert (timer.met_at, timer.met_by, timer.next_alarm) == (at(0.5), "usr_1", None)
        assert timers.alarms_due(timer, at(3)) == []
        assert timers.status(timer, at(3), ALWAYS, WarnRule()) == "met"
        assert not timers.meet(timer, at(1), "usr_2", ALWAYS, WarnRule())  # once

    def test_met_after_due_shows_breached(self) -> None:
        timer = Timer(metric="first_response")
        timers.start(timer, T0, 3600, ALWAYS, WarnRule())
        timers.meet(timer, at(2), None, ALWAYS, WarnRule())
        assert timers.status(timer, at(3), ALWAYS, WarnRule()) == "breached"

    def test_retarget_keeps_the_time_used(self) -> None:
        timer = Timer(metric="first_response")
        timers.start(timer, T0, 3600, ALWAYS, WarnRule())
        timers.pause(timer, at(0.25), ALWAYS, WarnRule())
        timers.resume(timer, at(1), ALWAYS, WarnRule())
        timers.retarget(timer, 1800, ALWAYS, WarnRule())
        assert timer.due_at == at(1.25)  # 15 min used, 15 min left from 09:00
