"""One SLA metric's clock on one conversation, as a pure state machine.

    start ──► running ──pause──► paused ──resume──► running ──meet──► met
                 │                                     │
                 └──────── alarms: warning, breach ────┘   (each at most once per cycle)

A cycle's budget is its target in business seconds. `consumed` banks the business time
used before the clock last stopped; while running, the due time is `running_since` plus
what is left, in business time. Pausing (pending, snoozed) banks what ran; resuming starts
a new run with the remainder; a new target (priority or policy change) only moves the due
and warning times. `due_at = f(policy, calendar, events)` (RELIABILITY §8): the stored
columns are this function's result, kept for the indexes.

The worker's tick, the API's hooks and `POST /v1/sla-policies/{id}/simulate` all move
timers through these functions, so the dry run answers what the timers will do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

from inbox_service.sla.business_hours import BusinessCalendar

Metric = Literal["first_response", "next_response", "resolution"]
METRICS: tuple[Metric, ...] = ("first_response", "next_response", "resolution")
MetricStatus = Literal["ok", "at_risk", "breached", "met"]


@dataclass(frozen=True)
class WarnRule:
    """How long before the due time to warn: a duration, or a share of the target."""

    seconds: int | None = None
    percent: int | None = None

    def lead(self, target: int) -> int | None:
        if self.seconds is not None:
            return self.seconds
        if self.percent is not None:
            return math.ceil(target * self.percent / 100)
        return None


@dataclass
class Timer:
    """The state of one metric's current cycle (the fields of `conversation_slas`)."""

    metric: Metric
    cycle: int = 0
    target_seconds: int | None = None
    started_at: datetime | None = None
    consumed_seconds: int = 0
    running_since: datetime | None = None
    due_at: datetime | None = None
    warn_at: datetime | None = None
    warned_at: datetime | None = None
    breached_at: datetime | None = None
    met_at: datetime | None = None
    met_by: str | None = None

    @property
    def active(self) -> bool:
        """Started in this cycle and not met yet (running or paused)."""
        return self.started_at is not None and self.met_at is None

    @property
    def next_alarm(self) -> datetime | None:
        """When the tick must look at this timer next (None: nothing left to announce)."""
        if self.running_since is None or self.due_at is None or self.breached_at is not None:
            return None
        if self.warn_at is not None and self.warned_at is None:
            return min(self.warn_at, self.due_at)
        return self.due_at


# The fields of a `Timer` kept in `conversation_slas` besides the metric, in the
# dataclass's order (the tick builds timers from claimed rows positionally).
STORED_FIELDS = tuple(f.name for f in fields(Timer) if f.name != "metric")


def start(
    timer: Timer,
    at: datetime,
    target: int | None,
    calendar: BusinessCalendar,
    warning: WarnRule,
    *,
    running: bool = True,
) -> None:
    """A new cycle from `at` (paused from the start when the conversation waits on them)."""
    timer.cycle += 1
    timer.target_seconds = target
    timer.started_at = at
    timer.consumed_seconds = 0
    timer.running_since = at if running else None
    timer.warned_at = timer.breached_at = timer.met_at = None
    timer.met_by = None
    schedule(timer, calendar, warning)


def pause(timer: Timer, at: datetime, calendar: BusinessCalendar, warning: WarnRule) -> None:
    """Stop the clock, banking the business time it ran."""
    if not timer.active or timer.running_since is None:
        return
    timer.consumed_seconds += max(0, calendar.seconds_between(timer.running_since, at))
    timer.running_since = None
    schedule(timer, calendar, warning)


def resume(timer: Timer, at: datetime, calendar: BusinessCalendar, warning: WarnRule) -> None:
    """Start the clock again with what is left of the budget."""
    if not timer.active or timer.running_since is not None:
        return
    timer.running_since = at
    schedule(timer, calendar, warning)


def retarget(
    timer: Timer, target: int | None, calendar: BusinessCalendar, warning: WarnRule
) -> None:
    """A new target (priority or policy changed) for the cycle in progress."""
    if not timer.active:
        return
    timer.target_seconds = target
    schedule(timer, calendar, warning)


def meet(
    timer: Timer, at: datetime, by: str | None, calendar: BusinessCalendar, warning: WarnRule
) -> bool:
    """The target is met (a reply, a resolution); False when there was nothing to meet."""
    if not timer.active:
        return False
    due_at = timer.due_at
    pause(timer, at, calendar, warning)
    timer.met_at = at
    timer.met_by = by
    timer.due_at = due_at  # the deadline it was held to (None: met while paused)
    timer.warn_at = None
    return True


def schedule(timer: Timer, calendar: BusinessCalendar, warning: WarnRule) -> None:
    """Due and warning times of a running clock; none while paused, met or untargeted."""
    target = timer.target_seconds
    if timer.running_since is None or target is None or not timer.active:
        timer.due_at = timer.warn_at = None
        return
    left = target - timer.consumed_seconds
    timer.due_at = calendar.add(timer.running_since, left)
    lead = warning.lead(target)
    timer.warn_at = None if lead is None else calendar.add(timer.running_since, left - lead)


Alarm = Literal["warning", "breach"]


def alarms_due(timer: Timer, now: datetime) -> list[Alarm]:
    """What the tick announces now, marking it so it is announced once per cycle.

    Both come together when the tick is late for both (a worker was down): a breach is
    always preceded by its warning."""
    fired: list[Alarm] = []
    if timer.running_since is None or timer.due_at is None or timer.breached_at is not None:
        return fired
    if timer.warn_at is not None and timer.warned_at is None and timer.warn_at <= now:
        timer.warned_at = now
        fired.append("warning")
    if timer.due_at <= now:
        timer.breached_at = now
        fired.append("breach")
    return fired


def status(
    timer: Timer, now: datetime, calendar: BusinessCalendar, warning: WarnRule
) -> MetricStatus:
    """ok, at_risk (within the warning lead), breached (past due, met or not) or met."""
    target = timer.target_seconds
    if timer.met_at is not None:
        late = timer.due_at is not None and timer.due_at < timer.met_at
        return "breached" if late or timer.breached_at is not None else "met"
    if timer.breached_at is not None or (timer.due_at is not None and timer.due_at <= now):
        return "breached"
    if target is None:
        return "ok"
    if timer.running_since is None:  # paused: judge by the budget left
        lead = warning.lead(target)
        left = target - timer.consumed_seconds
        if left <= 0:
            return "breached"
        return "at_risk" if lead is not None and left <= lead else "ok"
    if timer.warn_at is not None and timer.warn_at <= now:
        return "at_risk"
    return "ok"


def remaining(timer: Timer, now: datetime, calendar: BusinessCalendar) -> int | None:
    """Business seconds left (negative: overdue by that much); None when met or untargeted."""
    if not timer.active or timer.target_seconds is None:
        return None
    if timer.running_since is None or timer.due_at is None:
        return timer.target_seconds - timer.consumed_seconds
    return calendar.seconds_between(now, timer.due_at)
