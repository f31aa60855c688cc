"""The SLA timer tick: announce the warnings and breaches that came due.

`conversation_slas.next_alarm_at` is each timer's next alarm (NULL: none), indexed where
set. A tick claims the due timers and their conversations, in alarm order, with FOR NO KEY
UPDATE SKIP LOCKED (the claim the snooze wake-ups use too), fires their alarms and moves
`next_alarm_at` on, all in one transaction. Another worker skips the rows being handled
and, after the commit, finds them announced, so each alarm is announced once per
conversation, metric and cycle however many workers run; a worker killed mid-tick rolls
back and the rows come due again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select

from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.jobs import Job
from inbox_service.sla import alarms

TICK_BATCH = 1000


def due_conversations(now: datetime, limit: int = TICK_BATCH) -> Select[Any]:
    """The claim: due rows, earliest first, skipping those another worker holds."""
    return alarms.claim(now, limit)


async def tick(sessionmaker: SessionMaker, clock: Clock, limit: int = TICK_BATCH) -> int:
    """Fire the alarms due now on up to `limit` timers; how many fired."""
    now = clock.now()
    async with transaction(sessionmaker) as session:
        due = (await session.execute(due_conversations(now, limit))).all()
        return await alarms.fire(session, due, now=now)


JOBS = [Job(name="sla.tick", run_once=tick)]
