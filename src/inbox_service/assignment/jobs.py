"""Worker job: hand waiting conversations to agents, one inbox per transaction."""

from __future__ import annotations

from inbox_service.assignment import service
from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.jobs import Job

INBOXES_PER_RUN = 20


async def assign_waiting(sessionmaker: SessionMaker, clock: Clock) -> int:
    """Assign due requests, inbox by inbox (each under its cursor lock, so any number of
    workers can run this at once); the number of conversations assigned."""
    assigned = 0
    for _ in range(INBOXES_PER_RUN):
        async with transaction(sessionmaker) as session:
            done = await service.assign_next_inbox(session, now=clock.now())
        if done is None:
            break
        assigned += done
    return assigned


JOBS = [Job(name="assignment.assign_waiting", run_once=assign_waiting)]
