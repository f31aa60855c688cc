from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from inbox_service.core.openapi import named_enum

ReportGroupBy = Annotated[Literal["agent", "inbox", "day", "tag"], named_enum("ReportGroupBy")]


class Volume(BaseModel):
    new: int = Field(description="Conversations created in the period.")
    resolved: int = Field(description="Of those, resolved now.")
    reopened: int = Field(description="Of those, reopened at least once.")


class Durations(BaseModel):
    """Seconds; null when no conversation has the figure."""

    count: int = Field(description="Conversations with a value.")
    median_seconds: float | None
    p90_seconds: float | None


class FirstResponse(Durations):
    business_median_seconds: float | None = Field(
        description="Median in business time (the SLA policy's first-response clock)."
    )
    business_p90_seconds: float | None


class Resolution(BaseModel):
    time: Durations = Field(description="Creation to the latest resolution.")
    first_contact_rate: float | None = Field(
        description="Share of resolved conversations resolved with exactly one reply from us "
        "and never reopened."
    )
    first_contact_count: int
    replies_to_resolution: float | None = Field(
        description="Mean number of our replies per resolved conversation."
    )


class SlaOutcome(BaseModel):
    met: int
    breached: int
    compliance: float | None = Field(description="met / (met + breached).")


class SlaCompliance(BaseModel):
    first_response: SlaOutcome
    next_response: SlaOutcome
    resolution: SlaOutcome


class Csat(BaseModel):
    average: float | None
    responses: int
    distribution: dict[str, int] = Field(description='Ratings per score, "1" to "5".')


class Figures(BaseModel):
    volume: Volume
    first_response: FirstResponse
    resolution: Resolution
    sla: SlaCompliance
    csat: Csat


class ReportGroup(Figures):
    key: str | None = Field(
        description="The agent id, inbox id, local date (YYYY-MM-DD) or tag name; null: "
        "unassigned / untagged."
    )


class SummaryOut(BaseModel):
    date_from: datetime = Field(serialization_alias="from")
    date_to: datetime = Field(serialization_alias="to")
    inbox_id: str | None
    group_by: str | None
    totals: Figures
    groups: list[ReportGroup] | None = Field(description="Present with `group_by`.")
