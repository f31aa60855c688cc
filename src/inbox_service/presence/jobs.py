"""Worker job: announce and delete presence heartbeats that were not renewed in time."""

from __future__ import annotations

from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.jobs import Job
from inbox_service.presence import service


async def expire_presence(sessionmaker: SessionMaker, clock: Clock) -> int:
    """One batch of lapsed heartbeats: each deleted once and sent as `presence.changed`."""
    async with transaction(sessionmaker) as session:
        return await service.expire(session, now=clock.now())


JOBS = [Job(name="presence.expire", run_once=expire_presence)]
