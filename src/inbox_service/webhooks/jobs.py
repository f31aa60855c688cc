"""The webhook part of the worker: a sender service built from the settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from inbox_service.core.clock import Clock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import cipher_from
from inbox_service.core.db import SessionMaker
from inbox_service.webhooks.delivery import SenderConfig, WebhookSender


def webhook_service(
    settings: Settings, sessionmaker: SessionMaker, clock: Clock
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The worker service that fans events out to endpoints and delivers them."""

    async def run(stopping: asyncio.Event) -> None:
        sender = WebhookSender(
            sessionmaker,
            clock,
            cipher_from(settings.inbox_secret_key),
            config=SenderConfig(
                allow_private=settings.webhook_allow_private,
                timeout_seconds=settings.webhook_timeout_seconds,
                concurrency=settings.webhook_concurrency,
                poll_seconds=settings.worker_poll_seconds,
            ),
            database_url=settings.database_url,
        )
        await sender.run(stopping)

    return run
