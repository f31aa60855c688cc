"""The outbox part of the worker: a reply sender service built from the settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from inbox_service.core.clock import Clock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import cipher_from
from inbox_service.core.db import SessionMaker
from inbox_service.replies.sender import ReplySender, SenderConfig


def reply_service(
    settings: Settings, sessionmaker: SessionMaker, clock: Clock, *, worker_id: str
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The worker service that sends queued replies and reconciles uncertain ones."""

    async def run(stopping: asyncio.Event) -> None:
        sender = ReplySender(
            sessionmaker,
            clock,
            cipher_from(settings.inbox_secret_key),
            worker_id=worker_id,
            config=SenderConfig(
                smtp_timeout=settings.smtp_timeout_seconds,
                imap_timeout=settings.imap_timeout_seconds,
                max_attempts=settings.reply_max_attempts,
            ),
        )
        await sender.run(stopping, settings.worker_poll_seconds)

    return run
