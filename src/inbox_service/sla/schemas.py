"""SLA policy bodies. Field-level rules live here (pydantic names the field); rules that
span fields (overlapping intervals, a warning lead not shorter than a target) are checked
in `policies.validate` and answered as 422s naming the field too."""

from __future__ import annotations

import re
import zoneinfo
from datetime import date, datetime
from functools import cache
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from inbox_service.core.pagination import Page
from inbox_service.sla.timers import MetricStatus

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")

# Durations are integer seconds (API conventions); a target of more than a year is a typo.
Seconds = Annotated[int, Field(gt=0, le=366 * 86_400)]


def _clock_time(value: str) -> str:
    if not _CLOCK.match(value):
        raise ValueError("must be HH:MM (00:00 to 24:00)")
    return value


ClockTime = Annotated[str, AfterValidator(_clock_time)]


def seconds_of(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class Targets(BaseModel):
    """Business seconds allowed per metric; null or absent: no target."""

    model_config = ConfigDict(extra="forbid")

    first_response: Seconds | None = None
    next_response: Seconds | None = None
    resolution: Seconds | None = None


class IntervalIn(BaseModel):
    """A weekly opening interval in local time; a day may have several."""

    model_config = ConfigDict(extra="forbid")

    day: Day
    start: ClockTime = Field(examples=["09:00"])
    end: ClockTime = Field(examples=["18:00"], description="24:00 is midnight at the end.")

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        if start is not None and seconds_of(end) <= seconds_of(start):
            raise ValueError("end must be after start")
        return end


class BusinessHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(description="An IANA time zone, e.g. Europe/Berlin.")
    intervals: list[IntervalIn] | None = Field(
        default=None,
        max_length=100,
        description="Weekly opening hours in `timezone`; null: around the clock (24/7).",
    )
    holidays: list[date] = Field(
        default_factory=list, max_length=1000, description="Local dates without business time."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in _zones():
            raise ValueError(f"unknown time zone {value!r} (want an IANA name)")
        return value

    @field_validator("intervals")
    @classmethod
    def _some_hours(cls, value: list[IntervalIn] | None) -> list[IntervalIn] | None:
        if value is not None and not value:
            raise ValueError("give at least one interval, or null for around the clock")
        return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PriorityName = Literal["urgent", "high", "normal", "low"]


class PolicyIn(BaseModel):
    """An SLA policy. Warn with `warn_before` (seconds before due) or `warn_before_percent`
    (that share of the target before due), not both."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    inbox_ids: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        default_factory=list, max_length=1000, description="Inboxes whose conversations follow it."
    )
    targets: dict[PriorityName, Targets] = Field(
        description="Per priority; a priority left out has no targets."
    )
    warn_before: Seconds | None = None
    warn_before_percent: Annotated[int, Field(gt=0, lt=100)] | None = None
    business_hours: BusinessHoursIn | None = Field(
        default=None, description="null: around the clock in UTC."
    )


class PolicyPatch(BaseModel):
    """Any of the fields; the policy as a whole is checked again."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    inbox_ids: list[Annotated[str, StringConstraints(max_length=40)]] | None = Field(
        default=None, max_length=1000
    )
    targets: dict[PriorityName, Targets] | None = None
    warn_before: Seconds | None = None
    warn_before_percent: Annotated[int, Field(gt=0, lt=100)] | None = None
    business_hours: BusinessHoursIn | None = None


class PolicyOut(BaseModel):
    id: str
    name: str
    inbox_ids: list[str]
    targets: dict[PriorityName, Targets]
    warn_before: int | None
    warn_before_percent: int | None
    business_hours: BusinessHoursIn | None
    version: int
    created_at: datetime
    updated_at: datetime


class PolicyPage(Page[PolicyOut]):
    """A page of SLA policies."""


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_at: datetime = Field(description="The conversation went pending or snoozed.")
    end_at: datetime = Field(description="It was open again.")


class SimulateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start_at: datetime = Field(description="When the customer's message arrived.")
    priority: PriorityName = "normal"
    pauses: list[PauseIn] = Field(default_factory=list, max_length=100)


Metric = Literal["first_response", "next_response", "resolution"]


class SimulatedMetric(BaseModel):
    metric: Metric
    target_seconds: int | None
    due_at: datetime | None
    warn_at: datetime | None


class SimulateOut(BaseModel):
    """Each metric's due and warning time for a conversation that starts at `start_at`
    (next_response: as if this were a customer's follow-up)."""

    policy_id: str
    metrics: list[SimulatedMetric]


class SlaMetricOut(BaseModel):
    """One metric's current cycle on a conversation."""

    metric: Metric
    cycle: int = Field(
        description="1 for the first; next_response and reopened resolution count up."
    )
    status: MetricStatus
    target_seconds: int | None
    started_at: datetime | None
    due_at: datetime | None = Field(description="null while paused (pending, snoozed).")
    warn_at: datetime | None
    remaining_seconds: int | None = Field(
        description="Business seconds left; negative: overdue by that much; null once met."
    )
    paused: bool
    met_at: datetime | None
    met_by: str | None = Field(description="Who met it (null: the system or a mail client).")


class ConversationSlaOut(BaseModel):
    policy_id: str
    metrics: list[SlaMetricOut]
