"""Background work as rows: the claim helpers every worker job shares.

Periodic jobs (maintenance, later SLA ticks and sync scheduling) each own one row in
`periodic_jobs`. A worker runs a job only after claiming its row:

    UPDATE periodic_jobs SET locked_by = me, locked_until = now + lease
     WHERE name = :name AND next_run_at <= now AND (locked_until IS NULL OR locked_until < now)

Only one of any number of workers wins that update for a given tick. A worker that dies
mid-run (kill -9) leaves the lease behind; it expires and the next claim runs the job
again, so a job body must be safe to repeat. Finishing sets `next_run_at` and clears the
lease only while the lease is still ours.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.clock import Clock
from inbox_service.core.db import Base, SessionMaker, transaction

log = logging.getLogger(__name__)

RunOnce = Callable[[SessionMaker, Clock], Awaitable[int]]


@dataclass(frozen=True)
class Job:
    """A unit of background work. `every` set: periodic, claimed via `periodic_jobs`.
    `every` None: a queue job that claims its own rows each time the loop runs."""

    name: str
    run_once: RunOnce
    every: timedelta | None = None
    lease: timedelta = timedelta(minutes=5)


class PeriodicJob(Base):
    __tablename__ = "periodic_jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column()
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None] = mapped_column()
    last_finished_at: Mapped[datetime | None] = mapped_column()


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def claim_periodic(
    sessionmaker: SessionMaker, job: Job, *, worker_id: str, now: datetime
) -> bool:
    """True when this worker won the right to run `job` now."""
    async with transaction(sessionmaker) as session:
        # First run ever: the row appears already due; concurrent creators collapse to one.
        await session.execute(
            insert(PeriodicJob).values(name=job.name, next_run_at=now).on_conflict_do_nothing()
        )
        won = await session.scalar(
            update(PeriodicJob)
            .where(
                PeriodicJob.name == job.name,
                PeriodicJob.next_run_at <= now,
                (PeriodicJob.locked_until.is_(None)) | (PeriodicJob.locked_until < now),
            )
            .values(locked_by=worker_id, locked_until=now + job.lease)
            .returning(PeriodicJob.name)
        )
        return won is not None


async def finish_periodic(
    sessionmaker: SessionMaker, job: Job, *, worker_id: str, now: datetime
) -> bool:
    """Schedule the next run; False when our lease was lost (someone else took over)."""
    if job.every is None:
        raise ValueError(f"{job.name} is not periodic")
    async with transaction(sessionmaker) as session:
        done = await session.scalar(
            update(PeriodicJob)
            .where(PeriodicJob.name == job.name, PeriodicJob.locked_by == worker_id)
            .values(
                next_run_at=now + job.every,
                locked_by=None,
                locked_until=None,
                last_finished_at=now,
            )
            .returning(PeriodicJob.name)
        )
        return done is not None


async def run_job(sessionmaker: SessionMaker, clock: Clock, job: Job, *, worker_id: str) -> int:
    """Run `job` once if it is due (periodic) or always (queue); the amount of work done."""
    if job.every is None:
        return await job.run_once(sessionmaker, clock)
    if not await claim_periodic(sessionmaker, job, worker_id=worker_id, now=clock.now()):
        return 0
    done = await job.run_once(sessionmaker, clock)
    if not await finish_periodic(sessionmaker, job, worker_id=worker_id, now=clock.now()):
        log.warning("lease on periodic job %s was lost while it ran", job.name)
    return done
