"""Turn the report's SQL rows into figures; check what a caller may ask for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta

from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.errors import Invalid
from inbox_service.reports import queries
from inbox_service.reports.queries import GroupBy, Window
from inbox_service.reports.schemas import (
    Csat,
    Durations,
    Figures,
    FirstResponse,
    ReportGroup,
    Resolution,
    SlaCompliance,
    SlaOutcome,
    SummaryOut,
    Volume,
)

MAX_PERIOD = timedelta(days=366)
DEFAULT_PERIOD = timedelta(days=30)


def window(
    caller: Caller,
    *,
    date_from: datetime | None,
    date_to: datetime | None,
    inbox_id: str | None,
    now: datetime,
) -> Window:
    """The period (default: the last 30 days) and inboxes the caller may report on."""
    for name, value in (("from", date_from), ("to", date_to)):
        if value is not None and value.tzinfo is None:
            raise Invalid(f"`{name}` needs a time zone (e.g. Z)", loc=["query", name])
    end = date_to or now
    start = date_from or end - DEFAULT_PERIOD
    if start >= end:
        raise Invalid("`from` must come before `to`", loc=["query", "from"])
    if end - start > MAX_PERIOD:
        raise Invalid("a report covers at most 366 days", loc=["query", "from"])
    if inbox_id is not None:
        caller.require_visible(inbox_id)  # 404 for an inbox you cannot see
        inbox_ids: list[str] | None = [inbox_id]
    else:
        inbox_ids = None if caller.inbox_ids is None else sorted(caller.inbox_ids)
    return Window(start, end, inbox_ids, now)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _figures(row: RowMapping) -> Figures:
    def sla(metric: str) -> SlaOutcome:
        met, breached = row[f"sla_{metric}_met"], row[f"sla_{metric}_breached"]
        return SlaOutcome(met=met, breached=breached, compliance=_rate(met, met + breached))

    responses = int(row["csat_count"] or 0)
    return Figures(
        volume=Volume(new=row["new"], resolved=row["resolved"], reopened=row["reopened"]),
        first_response=FirstResponse(
            count=row["frt_count"],
            median_seconds=row["frt_median"],
            p90_seconds=row["frt_p90"],
            business_median_seconds=row["frt_business_median"],
            business_p90_seconds=row["frt_business_p90"],
        ),
        resolution=Resolution(
            time=Durations(
                count=row["resolved"],
                median_seconds=row["resolution_median"],
                p90_seconds=row["resolution_p90"],
            ),
            first_contact_rate=_rate(row["fcr"], row["resolved"]),
            first_contact_count=row["fcr"],
            replies_to_resolution=row["replies_to_resolution"],
        ),
        sla=SlaCompliance(
            first_response=sla("first_response"),
            next_response=sla("next_response"),
            resolution=sla("resolution"),
        ),
        csat=Csat(
            average=float(row["csat_sum"]) / responses if responses else None,
            responses=responses,
            distribution={str(s): int(row[f"csat_{s}"] or 0) for s in range(1, 6)},
        ),
    )


async def summary(
    session: AsyncSession, scope: Window, group_by: GroupBy | None, *, inbox_id: str | None
) -> SummaryOut:
    await session.execute(queries.REPORT_WORK_MEM)
    rows = (await session.execute(queries.summary_sql(group_by), scope.params())).mappings().all()
    total = next(row for row in rows if row["total"])
    groups = None
    if group_by is not None:
        groups = [
            ReportGroup(key=row["key"], **_figures(row).model_dump())
            for row in rows
            if not row["total"]
        ]
    return SummaryOut(
        date_from=scope.date_from,
        date_to=scope.date_to,
        inbox_id=inbox_id,
        group_by=group_by,
        totals=_figures(total),
        groups=groups,
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


async def export_rows(sessionmaker: SessionMaker, scope: Window) -> AsyncIterator[list[str]]:
    """The per-conversation rows behind the summary, read through a server-side cursor."""
    yield list(queries.EXPORT_COLUMNS)
    async with transaction(sessionmaker) as session:
        await session.execute(queries.REPORT_WORK_MEM)
        result = await session.stream(queries.export_sql(), scope.params())
        async for partition in result.partitions(500):
            for row in partition:
                yield [_cell(v) for v in row]
