from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from inbox_service.core.deps import CurrentCaller, CurrentClock, Session
from inbox_service.core.errors import problems
from inbox_service.core.inputs import Timestamp
from inbox_service.reports import service
from inbox_service.reports.queries import Window
from inbox_service.reports.schemas import ReportGroupBy, SummaryOut

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problems(401, 404, 422, 429))

From = Annotated[
    Timestamp | None,
    Query(
        alias="from", description="Start (inclusive), with a time zone; default `to` minus 30 days."
    ),
]
To = Annotated[
    Timestamp | None,
    Query(alias="to", description="End (exclusive), with a time zone; default now."),
]
InboxId = Annotated[
    str | None, Query(max_length=40, description="One inbox; default: every inbox you can see.")
]


@router.get("/summary", response_model=SummaryOut)
async def get_report_summary(
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    date_from: From = None,
    date_to: To = None,
    inbox_id: InboxId = None,
    group_by: ReportGroupBy | None = None,
) -> SummaryOut:
    """Volume, first response and resolution times, first contact resolution, replies to
    resolution, SLA compliance and CSAT for the conversations created in the period
    (definitions: README, "Reports")."""
    scope = service.window(
        caller, date_from=date_from, date_to=date_to, inbox_id=inbox_id, now=clock.now()
    )
    return await service.summary(session, scope, group_by, inbox_id=inbox_id)


async def _csv(request: Request, scope: Window) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    async for row in service.export_rows(request.app.state.sessionmaker, scope):
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "One row per conversation."}},
)
async def export_report(
    request: Request,
    caller: CurrentCaller,
    clock: CurrentClock,
    date_from: From = None,
    date_to: To = None,
    inbox_id: InboxId = None,
) -> StreamingResponse:
    """The per-conversation rows behind the summary, as CSV (streamed)."""
    scope = service.window(
        caller, date_from=date_from, date_to=date_to, inbox_id=inbox_id, now=clock.now()
    )
    name = f"report-{scope.date_from:%Y%m%d}-{scope.date_to:%Y%m%d}.csv"
    return StreamingResponse(
        _csv(request, scope),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
