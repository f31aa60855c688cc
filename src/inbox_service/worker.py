"""The background runner: loops over every domain's jobs until told to stop.

Long-running services (the mail supervisor, which keeps one loop per claimed inbox) run
beside the job loop and stop with it. Each pass runs every job once (periodic jobs only
when due and claimed; queue jobs claim their own rows). A pass that found no work sleeps
`worker_poll_seconds`. SIGTERM or SIGINT stops the loop after the job in progress: work is
claimed in rows with leases (or advisory locks), so a worker that is killed instead loses
nothing; its leases expire, its locks drop with its connection, and others take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from inbox_service.assignment.jobs import JOBS as ASSIGNMENT_JOBS
from inbox_service.conversations.jobs import JOBS as CONVERSATION_JOBS
from inbox_service.core.clock import Clock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker
from inbox_service.core.jobs import Job, default_worker_id, run_job
from inbox_service.csat import links as csat_links
from inbox_service.ingest.jobs import mail_service
from inbox_service.ops.jobs import JOBS as OPS_JOBS
from inbox_service.presence.jobs import JOBS as PRESENCE_JOBS
from inbox_service.replies.jobs import reply_service
from inbox_service.sla.jobs import JOBS as SLA_JOBS
from inbox_service.webhooks.jobs import webhook_service

log = logging.getLogger(__name__)


# A long-running part of the worker (the mail supervisor): runs until the event is set.
Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def all_jobs() -> list[Job]:
    return [*OPS_JOBS, *CONVERSATION_JOBS, *ASSIGNMENT_JOBS, *PRESENCE_JOBS, *SLA_JOBS]


def all_services(
    settings: Settings, sessionmaker: SessionMaker, clock: Clock, *, worker_id: str
) -> list[Service]:
    """The long-running parts: mailbox sync, webhook delivery and the reply outbox."""
    # auto-acknowledgements render templates, which may carry `{{ csat.url }}`
    csat_links.configure(settings, clock)
    return [
        mail_service(settings, sessionmaker, clock, worker_id=worker_id),
        webhook_service(settings, sessionmaker, clock),
        reply_service(settings, sessionmaker, clock, worker_id=worker_id),
    ]


class Worker:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        clock: Clock,
        *,
        jobs: Sequence[Job] | None = None,
        worker_id: str | None = None,
        poll_seconds: float = 1.0,
        services: Sequence[Service] = (),
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.jobs = list(jobs if jobs is not None else all_jobs())
        self.worker_id = worker_id or default_worker_id()
        self.poll_seconds = poll_seconds
        self.stopping = asyncio.Event()
        self.services = list(services)

    async def run_pass(self) -> int:
        """Run every job once; the amount of work done. A failing job never stops the others."""
        done = 0
        for job in self.jobs:
            if self.stopping.is_set():
                break
            try:
                done += await run_job(self.sessionmaker, self.clock, job, worker_id=self.worker_id)
            except Exception:
                log.exception("job %s failed; it will be retried", job.name)
        return done

    async def run(self) -> None:
        log.info("worker %s started with %d jobs", self.worker_id, len(self.jobs))
        services = [asyncio.create_task(service(self.stopping)) for service in self.services]
        try:
            while not self.stopping.is_set():
                if await self.run_pass() == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), self.poll_seconds)
        finally:
            self.stopping.set()
            await asyncio.gather(*services, return_exceptions=True)
        log.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
