"""`kill -9` of the worker in the middle of a delivery, then a new worker: nothing is lost.

The worker is a real `inbox-service worker` process on the real clock; the receiver holds
one request open so the kill lands while that attempt is in flight. The next worker sends
it again once its lease has run out (twice the timeout plus 2 s, here 6 s), with the same id.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime

from sqlalchemy import select

from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import transaction
from inbox_service.core.events import EventType, emit
from inbox_service.webhooks import service
from inbox_service.webhooks.models import WebhookDelivery
from inbox_service.webhooks.schemas import WebhookIn
from inbox_service.webhooks.service import UrlPolicy
from tests.conftest import CommittedDb
from tests.support.factories import make_inbox
from tests.support.worker import STOP_TIMEOUT, wait_for, worker_process
from tests.webhooks.receiver import Receiver, Reply

EVENTS = 30


async def test_kill_9_mid_delivery_then_restart_delivers_every_event(
    committed_db: CommittedDb, receiver: Receiver
) -> None:
    key = generate_key()
    sm = committed_db.sessionmaker
    async with transaction(sm) as session:
        inbox = await make_inbox(session, now=datetime.now(UTC))
        await service.create_webhook(
            session,
            WebhookIn(url=receiver.url(), events=["*"]),
            now=datetime.now(UTC),
            cipher=CredentialCipher(key),
            policy=UrlPolicy(allow_private=True),
        )
    sent = []
    for n in range(EVENTS):
        async with transaction(sm) as session:
            event = await emit(
                session,
                EventType.CONVERSATION_ASSIGNED,
                {"n": n},
                now=datetime.now(UTC),
                inbox_id=inbox.id,
                conversation_id=f"cnv_{n % 4}",
            )
            sent.append(event.public_id)
    receiver.respond(Reply(delay=60))  # the first request hangs: the kill lands during it
    env = {
        "INBOX_SECRET_KEY": key,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "IMAP_RESCAN_SECONDS": "60",
    }

    async def a_request_arrived() -> bool:
        return bool(receiver.requests)

    async with worker_process(committed_db.url, env) as first:
        await wait_for(first, a_request_arrived, "a webhook request", within=20)
        first.process.kill()
        assert await first.exit_code(within=STOP_TIMEOUT) == -signal.SIGKILL
    hung = receiver.requests[0].headers["webhook-id"]

    async def all_succeeded() -> bool:
        async with transaction(sm) as session:
            states = list(await session.scalars(select(WebhookDelivery.state)))
        return len(states) == EVENTS and set(states) == {"succeeded"}

    async with worker_process(committed_db.url, env) as second:
        await wait_for(second, all_succeeded, "every delivery succeeded", within=40)
        second.process.send_signal(signal.SIGTERM)
        assert await second.exit_code(within=STOP_TIMEOUT) == 0, await second.output()

    received = [r.headers["webhook-id"] for r in receiver.requests]
    assert set(received) == set(sent)  # at least once: none lost
    assert received.count(hung) == 2  # the one in flight at the kill went out again
    async with transaction(sm) as session:
        hung_delivery = await session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.event_id == int(hung[4:]))
        )
    assert hung_delivery is not None
    assert hung_delivery.attempts == 2
