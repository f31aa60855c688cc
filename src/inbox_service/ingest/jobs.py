"""The ingest part of the worker: a mail supervisor, built from the settings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from inbox_service.core.clock import Clock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import cipher_from
from inbox_service.core.db import SessionMaker
from inbox_service.ingest.runner import MailSupervisor, RunnerConfig


def mail_service(
    settings: Settings, sessionmaker: SessionMaker, clock: Clock, *, worker_id: str
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The worker service that syncs mailboxes; parsing uses a process pool per core."""
    processes = settings.ingest_parse_processes
    if processes < 0:
        processes = os.cpu_count() or 1

    async def run(stopping: asyncio.Event) -> None:
        # forkserver: children start clean instead of inheriting the event loop and sockets.
        executor = (
            ProcessPoolExecutor(processes, mp_context=get_context("forkserver"))
            if processes
            else None
        )
        supervisor = MailSupervisor(
            sessionmaker,
            settings.database_url,
            clock,
            cipher_from(settings.inbox_secret_key),
            worker_id=worker_id,
            executor=executor,
            config=RunnerConfig(
                idle_renew_seconds=settings.imap_idle_renew_seconds,
                rescan_seconds=settings.imap_rescan_seconds,
                batch_size=settings.ingest_batch_size,
                max_attachment_bytes=settings.ingest_max_attachment_bytes,
                imap_timeout_seconds=settings.imap_timeout_seconds,
            ),
        )
        try:
            await supervisor.run(stopping)
        finally:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    return run
