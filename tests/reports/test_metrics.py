"""`/metrics` reads the deployment's work from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import update

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.models import InboxSyncState
from inbox_service.replies.sender import ReplySender
from tests.conftest import Team
from tests.replies.smtp_sink import SmtpSink
from tests.reports.support import Play, at


def value(metrics: str, sample: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_database_gauges(
    client: httpx.AsyncClient,
    team: Team,
    db: SessionMaker,
    clock: FixedClock,
    sink: SmtpSink,
) -> None:
    play = Play(db, client, clock, team, ReplySender(db, clock, None, worker_id="m"))
    await play.setup_inbox(team.inbox_a, sink)
    conversation = await play.customer_writes(team.inbox_a, at(5, 9))
    await play.customer_writes(team.inbox_a, at(5, 9, 5))
    async with transaction(db) as session:
        await session.execute(
            update(Inbox).where(Inbox.id == team.inbox_a).values(imap_enabled=True)
        )
        session.add(
            InboxSyncState(inbox_id=team.inbox_a, last_success_at=at(5, 9), consecutive_failures=3)
        )
    response = await client.post(
        f"/v1/conversations/{conversation}/replies",
        json={"body_text": "Later.", "send_at": (at(6, 9)).isoformat()},
        headers=team.admin_headers,
    )
    assert response.status_code == 201, response.text
    clock.set(at(5, 9) + timedelta(minutes=10))

    metrics = (await client.get("/metrics")).text

    inbox = f'{{inbox_id="{team.inbox_a}"}}'
    assert value(metrics, f"inbox_messages_ingested{inbox}") == 2
    assert value(metrics, f"inbox_sync_lag_seconds{inbox}") == 600
    assert value(metrics, f"inbox_sync_consecutive_failures{inbox}") == 3
    assert value(metrics, 'inbox_outbox_depth{status="scheduled"}') == 1
    assert "inbox_http_request_duration_seconds_bucket" in metrics
