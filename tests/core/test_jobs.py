"""Periodic job claims (`core/jobs.py`), the worker pass, and the housekeeping job.

Real commits on a database of its own (`committed_db`): the claims are only interesting
when several connections race for the same row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select

from inbox_service.core.clock import Clock, FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.core.jobs import (
    Job,
    PeriodicJob,
    RunOnce,
    claim_periodic,
    finish_periodic,
    run_job,
)
from inbox_service.core.ratelimit import RateLimitBucket
from inbox_service.ops.jobs import JOBS as OPS_JOBS
from inbox_service.ops.jobs import purge_expired
from inbox_service.worker import Worker, all_jobs
from tests.conftest import CommittedDb

EVERY = timedelta(minutes=10)
LEASE = timedelta(minutes=5)
TICK = timedelta(microseconds=1)


@dataclass
class Recorder:
    """Job bodies that note who ran them, and can be told to fail."""

    runs: list[str] = field(default_factory=list)
    failures_left: int = 0
    ran: asyncio.Event = field(default_factory=asyncio.Event)

    def body(self, who: str) -> RunOnce:
        async def run_once(sessionmaker: SessionMaker, clock: Clock) -> int:
            self.runs.append(who)
            self.ran.set()
            await asyncio.sleep(0)  # let a racing worker interleave here
            if self.failures_left > 0:
                self.failures_left -= 1
                raise RuntimeError(f"{who} failed on purpose")
            return 1

        return run_once


def periodic(name: str, run_once: RunOnce, *, every: timedelta = EVERY) -> Job:
    return Job(name=name, run_once=run_once, every=every, lease=LEASE)


async def row(sessionmaker: SessionMaker, name: str) -> PeriodicJob | None:
    async with transaction(sessionmaker) as session:
        return await session.get(PeriodicJob, name)


def workers(
    committed_db: CommittedDb, clock: FixedClock, jobs_for: Callable[[str], list[Job]], n: int
) -> list[Worker]:
    return [
        Worker(committed_db.sessionmaker, clock, jobs=jobs_for(f"w{i}"), worker_id=f"w{i}")
        for i in range(n)
    ]


class TestClaimPeriodic:
    async def test_first_claim_creates_the_row_and_takes_the_lease(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.first", Recorder().body("x"))
        sm = committed_db.sessionmaker
        assert await claim_periodic(sm, job, worker_id="w1", now=clock.now())
        claimed = await row(sm, "t.first")
        assert claimed is not None
        assert claimed.next_run_at == clock.now()
        assert claimed.locked_by == "w1"
        assert claimed.locked_until == clock.now() + LEASE

    async def test_concurrent_claimers_exactly_one_wins(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.race", Recorder().body("x"))
        sm = committed_db.sessionmaker
        for _ in range(3):  # the first round also races to create the row
            results = await asyncio.gather(
                *(claim_periodic(sm, job, worker_id=f"w{i}", now=clock.now()) for i in range(8))
            )
            assert sum(results) == 1
            winner = f"w{results.index(True)}"
            claimed = await row(sm, "t.race")
            assert claimed is not None
            assert claimed.locked_by == winner
            assert await finish_periodic(sm, job, worker_id=winner, now=clock.now())
            clock.advance(EVERY)

    async def test_claimed_job_is_not_claimable_until_the_lease_expires(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.lease", Recorder().body("x"))
        sm = committed_db.sessionmaker
        assert await claim_periodic(sm, job, worker_id="dead", now=clock.now())
        # The claimer "dies" here: it never finishes.
        clock.advance(LEASE - timedelta(seconds=1))
        assert not await claim_periodic(sm, job, worker_id="w2", now=clock.now())
        clock.advance(timedelta(seconds=1))  # exactly at locked_until: still held
        assert not await claim_periodic(sm, job, worker_id="w2", now=clock.now())
        clock.advance(TICK)
        assert await claim_periodic(sm, job, worker_id="w2", now=clock.now())
        taken = await row(sm, "t.lease")
        assert taken is not None
        assert taken.locked_by == "w2"

    async def test_finished_job_is_not_due_until_every_has_passed(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.every", Recorder().body("x"))
        sm = committed_db.sessionmaker
        assert await claim_periodic(sm, job, worker_id="w1", now=clock.now())
        assert await finish_periodic(sm, job, worker_id="w1", now=clock.now())
        assert not await claim_periodic(sm, job, worker_id="w1", now=clock.now())
        clock.advance(EVERY - TICK)
        assert not await claim_periodic(sm, job, worker_id="w2", now=clock.now())
        clock.advance(TICK)
        assert await claim_periodic(sm, job, worker_id="w2", now=clock.now())

    async def test_jobs_are_claimed_independently(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        sm = committed_db.sessionmaker
        one = periodic("t.one", Recorder().body("x"))
        two = periodic("t.two", Recorder().body("x"))
        assert await claim_periodic(sm, one, worker_id="w1", now=clock.now())
        assert await claim_periodic(sm, two, worker_id="w2", now=clock.now())


class TestFinishPeriodic:
    async def test_finish_schedules_the_next_run_and_releases_the_lease(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.finish", Recorder().body("x"))
        sm = committed_db.sessionmaker
        started = clock.now()
        assert await claim_periodic(sm, job, worker_id="w1", now=started)
        finished_at = clock.advance(seconds=30)
        assert await finish_periodic(sm, job, worker_id="w1", now=finished_at)
        done = await row(sm, "t.finish")
        assert done is not None
        assert done.locked_by is None
        assert done.locked_until is None
        assert done.last_finished_at == finished_at
        assert done.next_run_at == finished_at + EVERY

    async def test_finish_after_the_lease_was_taken_over_returns_false(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.takeover", Recorder().body("x"))
        sm = committed_db.sessionmaker
        assert await claim_periodic(sm, job, worker_id="slow", now=clock.now())
        clock.advance(LEASE + TICK)
        assert await claim_periodic(sm, job, worker_id="fast", now=clock.now())

        assert not await finish_periodic(sm, job, worker_id="slow", now=clock.now())
        still = await row(sm, "t.takeover")
        assert still is not None
        assert still.locked_by == "fast"  # the slow worker did not clear the new lease
        assert still.last_finished_at is None

        assert await finish_periodic(sm, job, worker_id="fast", now=clock.now())
        assert not await finish_periodic(sm, job, worker_id="slow", now=clock.now())

    async def test_finish_by_a_worker_that_never_claimed_returns_false(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = periodic("t.stranger", Recorder().body("x"))
        sm = committed_db.sessionmaker
        assert await claim_periodic(sm, job, worker_id="w1", now=clock.now())
        assert not await finish_periodic(sm, job, worker_id="w2", now=clock.now())

    async def test_queue_job_cannot_be_finished(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        job = Job(name="t.queue", run_once=Recorder().body("x"))
        with pytest.raises(ValueError, match="not periodic"):
            await finish_periodic(committed_db.sessionmaker, job, worker_id="w1", now=clock.now())


class TestRunJob:
    async def test_lease_lost_while_running_is_logged_and_leaves_the_new_lease(
        self,
        committed_db: CommittedDb,
        clock: FixedClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        sm = committed_db.sessionmaker
        other = periodic("t.slow", Recorder().body("other"))

        async def slow_body(sessionmaker: SessionMaker, job_clock: Clock) -> int:
            # The run outlives its lease, and another worker takes the job over meanwhile.
            clock.advance(LEASE + TICK)
            assert await claim_periodic(sm, other, worker_id="w2", now=clock.now())
            return 1

        job = periodic("t.slow", slow_body)
        with caplog.at_level(logging.WARNING, logger="inbox_service.core.jobs"):
            assert await run_job(sm, clock, job, worker_id="w1") == 1
        assert "lease on periodic job t.slow was lost" in caplog.text
        current = await row(sm, "t.slow")
        assert current is not None
        assert current.locked_by == "w2"

    async def test_queue_job_runs_every_time(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        recorder = Recorder()
        job = Job(name="t.queue", run_once=recorder.body("w1"))
        for _ in range(3):
            assert await run_job(committed_db.sessionmaker, clock, job, worker_id="w1") == 1
        assert recorder.runs == ["w1", "w1", "w1"]
        assert await row(committed_db.sessionmaker, "t.queue") is None


class TestWorkerRunPass:
    async def test_racing_workers_run_a_due_job_once_per_tick(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        recorder = Recorder()
        racers = workers(committed_db, clock, lambda w: [periodic("t.tick", recorder.body(w))], 3)
        for tick in range(1, 4):
            await asyncio.gather(*(w.run_pass() for w in racers))
            assert len(recorder.runs) == tick
            # Within the same tick nobody runs it again.
            await asyncio.gather(*(w.run_pass() for w in racers))
            assert len(recorder.runs) == tick
            clock.advance(EVERY - TICK)
            await asyncio.gather(*(w.run_pass() for w in racers))
            assert len(recorder.runs) == tick
            clock.advance(TICK)

    async def test_dead_workers_job_is_run_by_another_after_the_lease(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        sm = committed_db.sessionmaker
        recorder = Recorder()
        job = periodic("t.orphan", recorder.body("w2"))
        assert await claim_periodic(sm, job, worker_id="dead", now=clock.now())
        survivor = Worker(sm, clock, jobs=[job], worker_id="w2")

        assert await survivor.run_pass() == 0
        clock.advance(LEASE)
        assert await survivor.run_pass() == 0
        assert recorder.runs == []

        clock.advance(TICK)
        assert await survivor.run_pass() == 1
        assert recorder.runs == ["w2"]
        done = await row(sm, "t.orphan")
        assert done is not None
        assert done.locked_by is None
        assert done.next_run_at == clock.now() + EVERY

    async def test_failing_job_does_not_stop_the_others_and_is_retried_after_its_lease(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        sm = committed_db.sessionmaker
        flaky = Recorder(failures_left=1)
        steady = Recorder()
        queue = Recorder()
        worker = Worker(
            sm,
            clock,
            jobs=[
                periodic("t.flaky", flaky.body("w1")),
                periodic("t.steady", steady.body("w1")),
                Job(name="t.queue", run_once=queue.body("w1")),
            ],
            worker_id="w1",
        )
        assert await worker.run_pass() == 2  # steady + queue; flaky raised
        assert (len(flaky.runs), len(steady.runs), len(queue.runs)) == (1, 1, 1)
        failed = await row(sm, "t.flaky")
        assert failed is not None
        assert failed.locked_by == "w1"  # the lease stays: that is the retry delay
        assert failed.last_finished_at is None

        clock.advance(LEASE)
        await worker.run_pass()
        assert len(flaky.runs) == 1  # not retried before the lease expires

        clock.advance(TICK)
        await worker.run_pass()
        assert len(flaky.runs) == 2  # retried, and this time it succeeds
        retried = await row(sm, "t.flaky")
        assert retried is not None
        assert retried.locked_by is None
        assert retried.last_finished_at == clock.now()
        assert len(steady.runs) == 1  # steady is not due yet (every > lease)

    async def test_stopped_worker_starts_no_more_jobs(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        recorder = Recorder()
        worker = Worker(
            committed_db.sessionmaker,
            clock,
            jobs=[Job(name="t.q", run_once=recorder.body("w1"))],
            worker_id="w1",
        )
        worker.stop()
        assert await worker.run_pass() == 0
        assert recorder.runs == []

    async def test_run_returns_once_stopped(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        recorder = Recorder()
        worker = Worker(
            committed_db.sessionmaker,
            clock,
            jobs=[periodic("t.loop", recorder.body("w1"))],
            worker_id="w1",
            poll_seconds=3600,  # idle waits end on stop(), not on time
        )
        running = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(10):
                await recorder.ran.wait()
                worker.stop()
                await running
        finally:
            running.cancel()
        assert recorder.runs == ["w1"]

    def test_default_jobs_include_housekeeping(self) -> None:
        assert "ops.purge_expired" in {job.name for job in all_jobs()}


class TestPurgeExpired:
    async def _seed(self, sm: SessionMaker, clock: FixedClock) -> None:
        now = clock.now()
        async with transaction(sm) as session:
            for key, age in [
                ("old", timedelta(hours=24, seconds=1)),
                ("edge", timedelta(hours=24)),
                ("fresh", timedelta(hours=23)),
            ]:
                session.add(
                    IdempotencyKey(owner="o", key=key, request_hash="h", created_at=now - age)
                )
            for bucket, age in [
                ("old", timedelta(minutes=2, seconds=1)),
                ("current", timedelta(seconds=10)),
                ("previous", timedelta(minutes=1)),
            ]:
                session.add(RateLimitBucket(bucket=bucket, window_start=now - age, hits=3))

    async def _left(self, sm: SessionMaker) -> tuple[set[str], set[str]]:
        async with transaction(sm) as session:
            keys = set(await session.scalars(select(IdempotencyKey.key)))
            buckets = set(await session.scalars(select(RateLimitBucket.bucket)))
        return keys, buckets

    async def test_deletes_only_expired_rows(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        sm = committed_db.sessionmaker
        await self._seed(sm, clock)
        assert await purge_expired(sm, clock) == 2
        assert await self._left(sm) == ({"edge", "fresh"}, {"current", "previous"})
        assert await purge_expired(sm, clock) == 0

        clock.advance(hours=1)
        assert await purge_expired(sm, clock) == 3
        assert await self._left(sm) == ({"fresh"}, set())

    async def test_worker_runs_it_as_a_periodic_job(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        sm = committed_db.sessionmaker
        await self._seed(sm, clock)
        worker = Worker(sm, clock, jobs=OPS_JOBS, worker_id="w1")
        assert await worker.run_pass() == 2
        assert await self._left(sm) == ({"edge", "fresh"}, {"current", "previous"})
        scheduled = await row(sm, "ops.purge_expired")
        assert scheduled is not None
        assert scheduled.next_run_at == clock.now() + timedelta(minutes=10)
