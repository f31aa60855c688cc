"""`inbox-service worker` as a real process: it starts, works, stops on SIGTERM, and a
`kill -9` leaves nothing that stops the next worker.

The child runs on the real clock, so these tests poll the database in bounded loops.
Every wait has a timeout, and the child is always killed at the end.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.core.jobs import PeriodicJob
from tests.conftest import CommittedDb
from tests.support.worker import STOP_TIMEOUT, wait_for, worker_process

JOB = "ops.purge_expired"
START_TIMEOUT = 15.0


async def periodic_row(sm: SessionMaker) -> PeriodicJob | None:
    async with transaction(sm) as session:
        return await session.get(PeriodicJob, JOB)


async def job_finished(sm: SessionMaker) -> bool:
    job = await periodic_row(sm)
    return job is not None and job.last_finished_at is not None and job.locked_by is None


class TestWorkerProcess:
    async def test_sigterm_stops_it_cleanly(self, committed_db: CommittedDb) -> None:
        sm = committed_db.sessionmaker
        async with worker_process(committed_db.url) as child:

            async def job_row_exists() -> bool:
                return await periodic_row(sm) is not None

            await wait_for(child, job_row_exists, f"{JOB} row", within=START_TIMEOUT)
            await wait_for(child, lambda: job_finished(sm), f"finished {JOB}", within=START_TIMEOUT)

            child.process.send_signal(signal.SIGTERM)
            code = await child.exit_code(within=STOP_TIMEOUT)
            log = await child.output()
            assert code == 0, log
            assert "stopped" in log

    async def test_after_kill_9_the_next_worker_runs_fine(self, committed_db: CommittedDb) -> None:
        sm = committed_db.sessionmaker
        async with worker_process(committed_db.url) as first:

            async def claimed_or_finished() -> bool:
                return await periodic_row(sm) is not None

            await wait_for(first, claimed_or_finished, f"{JOB} row", within=START_TIMEOUT)
            first.process.kill()
            assert await first.exit_code(within=STOP_TIMEOUT) == -signal.SIGKILL

        # Whatever line it died on, the job is left claimed or scheduled. The child runs on
        # the real clock, so stand in for "the lease expired and the job is due" by moving
        # the row into the past, as if the dead worker held it; add work for the next run.
        now = datetime.now(UTC)
        async with transaction(sm) as session:
            await session.execute(
                update(PeriodicJob)
                .where(PeriodicJob.name == JOB)
                .values(
                    next_run_at=now - timedelta(minutes=1),
                    locked_by="dead-worker",
                    locked_until=now - timedelta(seconds=1),
                    last_finished_at=None,
                )
            )
            session.add(
                IdempotencyKey(
                    owner="o", key="stale", request_hash="h", created_at=now - timedelta(days=2)
                )
            )
            session.add(IdempotencyKey(owner="o", key="fresh", request_hash="h", created_at=now))

        async with worker_process(committed_db.url) as second:
            await wait_for(
                second, lambda: job_finished(sm), f"rerun of {JOB}", within=START_TIMEOUT
            )
            async with transaction(sm) as session:
                keys = set(await session.scalars(select(IdempotencyKey.key)))
            assert keys == {"fresh"}
            job = await periodic_row(sm)
            assert job is not None
            assert job.next_run_at > now  # scheduled again, not stuck

            second.process.send_signal(signal.SIGTERM)
            code = await second.exit_code(within=STOP_TIMEOUT)
            assert code == 0, await second.output()
