"""Fault injection, one dependency at a time: a `FaultProxy` with seeded `Chaos` (drops, RSTs,
stalls, truncations on either side) between the service and Dovecot, aiosmtpd and the webhook
receiver, while mail flows, replies go out and events are delivered. Then the faults stop and
the suite checks the documented outcome (README "Guarantees"):

* ingest: every message stored exactly once, byte for byte, the watermark at the last UID;
* replies: every reply in a final state — `sent` (in the sink exactly once), `failed` (never
  handed over) or `unknown` (handed over at most once) — none lost, none sent twice;
* webhooks: every event delivered at least once, duplicates only with the same webhook-id;
* and each component keeps working once the faults stop (a fresh message, reply or event
  goes through promptly): nothing is wedged.

The services run in-process on a FixedClock: retry delays are made due by moving the clock,
never by sleeping. `FAULT_SEED=n` replays another sequence of fault choices.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.conversations.models import Conversation, Message, MessageRaw
from inbox_service.core.auth import Caller
from inbox_service.core.clock import FixedClock
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import transaction
from inbox_service.core.events import Event, EventType, emit
from inbox_service.inboxes.mail_settings import SmtpSettingsIn, apply_smtp_settings
from inbox_service.ingest.models import FolderSyncState
from inbox_service.replies import service as replies_service
from inbox_service.replies.models import Reply
from inbox_service.replies.schemas import ReplyIn
from inbox_service.replies.sender import ReplySender, SenderConfig
from inbox_service.webhooks import service as webhooks_service
from inbox_service.webhooks.delivery import SenderConfig as WebhookConfig
from inbox_service.webhooks.delivery import WebhookSender
from inbox_service.webhooks.models import WebhookDelivery
from inbox_service.webhooks.schemas import WebhookIn
from inbox_service.webhooks.service import UrlPolicy
from tests.conftest import CommittedDb
from tests.ingest.conftest import Mailbox, dovecot, mailbox
from tests.ingest.support import imap_inbox
from tests.ingest.test_supervisor import deliver, running, until
from tests.replies.conftest import CUSTOMER_MAIL, ingest, sink
from tests.replies.smtp_sink import SmtpSink
from tests.support.factories import make_inbox, make_user
from tests.support.faultproxy import Chaos, FaultProxy
from tests.webhooks.conftest import receiver
from tests.webhooks.receiver import Receiver

__all__ = ["dovecot", "mailbox", "receiver", "sink"]

log = logging.getLogger(__name__)
SEED = int(os.environ.get("FAULT_SEED", "11"))
CHAOS_SECONDS = 5.0


def customer_mail(n: int) -> bytes:
    # every fifth one is big, so cuts also land inside a FETCH literal
    body = f"Message {n}.\r\n" + ("0123456789" * 7 + "abcdef\r\n") * (600 if n % 5 == 0 else 1)
    return (
        f"From: c{n % 7}@customer.test\r\nTo: support@example.com\r\nSubject: Question {n}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <fault{n}@customer.test>\r\n"
        f"\r\n{body}"
    ).encode()


@pytest.fixture
async def cipher() -> CredentialCipher:
    return CredentialCipher(generate_key())


@pytest.fixture
async def proxy_factory() -> AsyncIterator[list[FaultProxy]]:
    proxies: list[FaultProxy] = []
    yield proxies
    for proxy in proxies:
        await proxy.close()


async def proxied(proxies: list[FaultProxy], port: int) -> FaultProxy:
    proxy = FaultProxy(port)
    await proxy.start()
    proxies.append(proxy)
    return proxy


# -- IMAP ------------------------------------------------------------------------------------


async def test_imap_faults_every_message_ingested_exactly_once(
    committed_db: CommittedDb,
    mailbox: Mailbox,
    cipher: CredentialCipher,
    proxy_factory: list[FaultProxy],
) -> None:
    total = 30
    proxy = await proxied(proxy_factory, mailbox.server.port)
    sm = committed_db.sessionmaker
    inbox_id = await imap_inbox(sm, mailbox, cipher, port=proxy.port)
    sent = [customer_mail(n) for n in range(total + 1)]

    async def stored_count() -> int:
        async with transaction(sm) as session:
            return int(
                await session.scalar(
                    select(func.count()).select_from(Message).where(Message.inbox_id == inbox_id)
                )
                or 0
            )

    async with running(
        committed_db, cipher, imap_timeout_seconds=0.7, batch_size=4, idle_renew_seconds=0.5
    ):
        async with Chaos(proxy, SEED) as chaos:
            for raw in sent[:total]:  # mail keeps arriving while the faults run
                await deliver(mailbox, raw)
                await asyncio.sleep(CHAOS_SECONDS / total)
        assert {"drop", "cut", "stall"} <= set(chaos.log), chaos.log

        async def all_stored() -> bool:
            return await stored_count() >= total

        await until("every message after the faults", all_stored, 30)
        # not wedged: a new message is stored promptly once the network is good again
        await deliver(mailbox, sent[total])

        async def the_last_one() -> bool:
            return await stored_count() >= total + 1

        await until("a message sent after the faults", the_last_one, 5)

    async with transaction(sm) as session:
        rows = list(
            await session.execute(
                select(Message.message_id, MessageRaw.raw)
                .join(MessageRaw, MessageRaw.message_id == Message.id)
                .where(Message.inbox_id == inbox_id)
            )
        )
        folder = await session.get_one(FolderSyncState, (inbox_id, "INBOX"))
    ids = Counter(message_id for message_id, _ in rows)
    assert len(ids) == total + 1
    assert set(ids.values()) == {1}, ids.most_common(3)
    assert sorted(raw for _, raw in rows) == sorted(sent)  # nothing torn, nothing partial
    assert folder.last_uid == total + 1
    assert proxy.connections > 2  # the faults did make it reconnect


# -- SMTP ------------------------------------------------------------------------------------


async def test_smtp_faults_every_reply_final_and_none_sent_twice(
    committed_db: CommittedDb, sink: SmtpSink, proxy_factory: list[FaultProxy]
) -> None:
    replies = 30
    clock = FixedClock(datetime(2026, 3, 2, 10, tzinfo=UTC))
    sm = committed_db.sessionmaker
    proxy = await proxied(proxy_factory, sink.port)
    async with transaction(sm) as session:
        agent = await make_user(session, role="admin", now=clock.now())
        inbox = await make_inbox(session, now=clock.now())
        apply_smtp_settings(
            inbox, SmtpSettingsIn(host=proxy.host, port=proxy.port, security="none"), None
        )
        await ingest(
            session, inbox, CUSTOMER_MAIL.replace(b"{inbox}", inbox.address.encode()), clock=clock
        )
        conversation = await session.scalar(
            select(Conversation).where(Conversation.inbox_id == inbox.id)
        )
        assert conversation is not None
        caller = Caller(user_id=agent.id, role="admin", inbox_ids=None)

    async def reply(n: int) -> str:
        async with transaction(sm) as session:
            made = await replies_service.create_reply(
                session, caller, conversation.id, ReplyIn(body_text=f"Reply {n}"), now=clock.now()
            )
            return made.id

    # short timeouts so stalls become timeouts; few attempts so `failed` happens too
    sender = ReplySender(
        sm, clock, None, worker_id="w1", config=SenderConfig(smtp_timeout=0.3, max_attempts=4)
    )
    sink.state.temp_failures = 3  # the server says 451 now and then, as well
    ids = []
    async with Chaos(proxy, SEED, stall_seconds=(0.1, 1.2), cut_bytes=(1, 800)) as chaos:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CHAOS_SECONDS
        n = 0
        while loop.time() < deadline or n < replies:
            if n < replies:
                ids.append(await reply(n))
                n += 1
            await sender.run_once()
            await asyncio.sleep(CHAOS_SECONDS / replies / 2)  # spread over the faults
            clock.advance(minutes=20)  # the next backoff (30 s … 4 min here) is due
    assert {"drop", "cut", "cut_client", "stall"} <= set(chaos.log), chaos.log
    assert len(ids) == replies

    async def statuses() -> dict[str, Reply]:
        async with transaction(sm) as session:
            return {r.id: r for r in await session.scalars(select(Reply))}

    for _ in range(30):  # faults over: everything settles within a few passes
        if all(r.status in ("sent", "failed", "unknown") for r in (await statuses()).values()):
            break
        await sender.run_once()
        clock.advance(hours=2)
    final = await statuses()
    assert set(final) == set(ids)  # none lost
    # by the Message-ID header: later replies quote earlier ids in In-Reply-To/References
    handed_over = Counter(str(r.message["Message-ID"]).strip("<>") for r in sink.received)
    by_status = Counter(r.status for r in final.values())
    assert set(by_status) <= {"sent", "failed", "unknown"}, by_status
    assert by_status["sent"] > 0, by_status
    log.info("replies after faults %s: %s", chaos.log, dict(by_status))
    for r in final.values():
        copies = handed_over[r.message_id]
        if r.status == "sent":
            assert copies == 1, (r.id, r.attempts, r.last_error)
        elif r.status == "failed":
            assert copies == 0, (r.id, r.last_error)  # failed means never handed over
        else:
            assert copies <= 1, (r.id, r.last_error)  # unknown: at most once, never resent
    async with transaction(sm) as session:
        outbound = await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == conversation.id, Message.direction == "outbound")
        )
        sent_events = await session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "reply.sent")
        )
    assert outbound == sent_events == by_status["sent"]  # one timeline message, one event each

    # not wedged: a reply made after the faults goes out on the next pass, once
    last = await reply(replies)
    await sender.run_once()
    done = (await statuses())[last]
    assert done.status == "sent"
    assert [str(r.message["Message-ID"]) for r in sink.received].count(f"<{done.message_id}>") == 1


# -- webhooks --------------------------------------------------------------------------------


async def test_webhook_faults_every_event_delivered_at_least_once(
    committed_db: CommittedDb, receiver: Receiver, proxy_factory: list[FaultProxy]
) -> None:
    events = 60
    sm = committed_db.sessionmaker
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    cipher = CredentialCipher(generate_key())
    proxy = await proxied(proxy_factory, receiver.port)
    async with transaction(sm) as session:
        inbox = await make_inbox(session, now=clock.now())
    clock.advance(seconds=1)
    async with transaction(sm) as session:
        await webhooks_service.create_webhook(
            session,
            WebhookIn(url=f"http://{proxy.host}:{proxy.port}/hook", events=["*"]),
            now=clock.now(),
            cipher=cipher,
            policy=UrlPolicy(allow_private=True),
        )
    sender = WebhookSender(
        sm,
        clock,
        cipher,
        config=WebhookConfig(allow_private=True, timeout_seconds=0.3),
        client=httpx.AsyncClient(trust_env=False),
    )

    async def event(n: int) -> str:
        async with transaction(sm) as session:
            made = await emit(
                session,
                EventType.CONVERSATION_ASSIGNED,
                {"n": n},
                now=clock.now(),
                inbox_id=inbox.id,
                conversation_id=f"cnv_fault{n % 6}",
            )
            return made.public_id

    emitted: list[str] = []
    chaos = Chaos(proxy, SEED, every=(0.1, 0.5), stall_seconds=(0.1, 0.8), cut_bytes=(1, 600))
    async with chaos:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CHAOS_SECONDS
        while loop.time() < deadline or len(emitted) < events:
            for _ in range(2):
                if len(emitted) < events:
                    emitted.append(await event(len(emitted)))
            await sender.run_once()
            await asyncio.sleep(CHAOS_SECONDS / events)  # spread over the faults
            # 5 min a pass: early retries are due at once, later ones only after several
            # passes, so no delivery can use up its ~day of attempts while the faults run
            clock.advance(minutes=5)
    assert {"drop", "cut", "stall"} <= set(chaos.log), chaos.log
    assert len(emitted) == events

    async def states() -> Counter[str]:
        async with transaction(sm) as session:
            return Counter(await session.scalars(select(WebhookDelivery.state)))

    for _ in range(40):
        if (await states())["succeeded"] == events:
            break
        await sender.run_once()
        clock.advance(hours=9)  # beyond the longest retry delay: everything pending is due
    assert await states() == Counter({"succeeded": events})
    received = Counter(r.headers["webhook-id"] for r in receiver.requests)
    log.info("webhooks after %s: %d requests, %d ids", chaos.log, received.total(), events)
    assert set(received) == set(emitted)  # every event arrived; no stranger ids
    bodies: dict[str, set[bytes]] = {}
    for r in receiver.requests:
        bodies.setdefault(r.headers["webhook-id"], set()).add(r.body)
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate is the same event
    async with transaction(sm) as session:
        failed_attempts = await session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.attempts > 1)
        )
    assert failed_attempts, "the faults never made a delivery retry"

    # not wedged: an event emitted after the faults is delivered on the next pass
    last = await event(events)
    before = len(receiver.requests)
    await sender.run_once()
    assert [r.headers["webhook-id"] for r in receiver.requests[before:]] == [last]
