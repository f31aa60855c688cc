"""Housekeeping the worker runs periodically."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.idempotency import RETENTION, IdempotencyKey
from inbox_service.core.jobs import Job
from inbox_service.core.ratelimit import WINDOW, RateLimitBucket


async def purge_expired(sessionmaker: SessionMaker, clock: Clock) -> int:
    """Drop idempotency keys past their 24 h and rate-limit windows that have closed."""
    now = clock.now()
    async with transaction(sessionmaker) as session:
        keys = await session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < now - RETENTION)
        )
        buckets = await session.execute(
            delete(RateLimitBucket).where(RateLimitBucket.window_start < now - 2 * WINDOW)
        )
    return int(getattr(keys, "rowcount", 0) or 0) + int(getattr(buckets, "rowcount", 0) or 0)


JOBS = [Job(name="ops.purge_expired", run_once=purge_expired, every=timedelta(minutes=10))]
