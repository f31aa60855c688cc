"""PostgreSQL itself misbehaving under real `inbox-service worker` processes.

Two worker processes reach the database only through a `FaultProxy` whose seeded `Chaos`
resets, stalls and truncates their connections (pool, advisory-lock connection, LISTEN
connection alike) while mail arrives in Dovecot, replies are queued for the aiosmtpd sink and
every event goes to a webhook receiver; halfway through, one worker is killed with SIGKILL and
a fresh one starts. The test itself talks to PostgreSQL directly. When the faults stop:
every message stored once, every reply sent once (or `unknown`, handed over at most once),
every event delivered, and the workers still make progress on new work.

The workers run on the real clock, so their timeouts are short (leases of a few seconds);
no retry here waits on a backoff longer than that.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import func, select

from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.auth import Caller
from inbox_service.core.clock import SystemClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker, create_engine, create_sessionmaker, transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.mail_settings import SmtpSettingsIn, apply_smtp_settings
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.models import InboxSyncState
from inbox_service.replies import service as replies_service
from inbox_service.replies.models import Reply
from inbox_service.replies.schemas import ReplyIn
from inbox_service.webhooks import service as webhooks_service
from inbox_service.webhooks.models import WebhookDelivery
from inbox_service.webhooks.schemas import WebhookIn
from inbox_service.webhooks.service import UrlPolicy
from inbox_service.worker import all_services
from tests.conftest import CommittedDb
from tests.hardening.test_faults import SEED, customer_mail
from tests.ingest.conftest import Mailbox, dovecot, mailbox
from tests.ingest.support import imap_inbox
from tests.replies.conftest import sink
from tests.replies.smtp_sink import SmtpSink
from tests.support.factories import make_user
from tests.support.faultproxy import Chaos, FaultProxy
from tests.support.worker import Child, wait_for, worker_process
from tests.webhooks.conftest import receiver
from tests.webhooks.receiver import Receiver

__all__ = ["dovecot", "mailbox", "receiver", "sink"]

MAILS = 16
REPLIES = 8


def now() -> datetime:
    return datetime.now(UTC)


async def test_postgres_faults_and_a_kill_9_under_two_workers_lose_nothing(
    committed_db: CommittedDb, mailbox: Mailbox, sink: SmtpSink, receiver: Receiver
) -> None:
    key = generate_key()
    cipher = CredentialCipher(key)
    sm = committed_db.sessionmaker
    inbox_id = await imap_inbox(sm, mailbox, cipher)
    async with transaction(sm) as session:
        admin = await make_user(session, role="admin", now=now())
        inbox = await session.get_one(Inbox, inbox_id)
        apply_smtp_settings(
            inbox, SmtpSettingsIn(host=sink.host, port=sink.port, security="none"), None
        )
        await webhooks_service.create_webhook(
            session,
            WebhookIn(url=receiver.url(), events=["*"]),
            now=now(),
            cipher=cipher,
            policy=UrlPolicy(allow_private=True),
        )
        # events from here on go to the endpoint (the inbox's own creation came before it)
        first_event = int(await session.scalar(select(func.max(Event.id))) or 0) + 1
    caller = Caller(user_id=admin.id, role="admin", inbox_ids=None)
    host, port = committed_db.url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    proxy = FaultProxy(int(port), host)
    await proxy.start()
    faulty_url = committed_db.url.replace(f"{host}:{port}", f"{proxy.host}:{proxy.port}")
    env = {
        "INBOX_SECRET_KEY": key,
        "WORKER_POLL_SECONDS": "0.1",
        "IMAP_RESCAN_SECONDS": "0.3",
        "IMAP_TIMEOUT_SECONDS": "2",
        "INGEST_BATCH_SIZE": "4",
        "INGEST_PARSE_PROCESSES": "0",
        "SMTP_TIMEOUT_SECONDS": "1",
        "WEBHOOK_TIMEOUT_SECONDS": "1",
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "LOG_LEVEL": "WARNING",
    }

    async def conversation_id() -> str | None:
        async with transaction(sm) as session:
            return await session.scalar(
                select(Conversation.id).where(Conversation.inbox_id == inbox_id).limit(1)
            )

    async def reply(n: int) -> str:
        target = await conversation_id()
        assert target is not None
        async with transaction(sm) as session:
            made = await replies_service.create_reply(
                session, caller, target, ReplyIn(body_text=f"Reply {n}"), now=now()
            )
            return made.id

    try:
        async with (
            worker_process(faulty_url, env) as one,
            worker_process(faulty_url, env) as two,
        ):
            await mailbox_deliver(mailbox, customer_mail(0))

            async def first_conversation() -> bool:
                return await conversation_id() is not None

            await wait_for(one, first_conversation, "the first conversation", within=20)
            replies: list[str] = []
            async with Chaos(proxy, SEED, cut_bytes=(1, 3000), stall_seconds=(0.1, 0.8)) as chaos:
                for n in range(1, MAILS):
                    await mailbox_deliver(mailbox, customer_mail(n))
                    if n <= REPLIES:
                        replies.append(await reply(n))
                    if n == MAILS // 2:
                        one.process.send_signal(signal.SIGKILL)  # mid-flight, mid-faults
                        assert await one.exit_code(within=10) == -signal.SIGKILL
                    await asyncio.sleep(0.4)
            assert {"drop", "cut", "cut_client", "stall"} <= set(chaos.log), chaos.log
            async with worker_process(faulty_url, env) as three:
                await settle(sm, two, inbox_id, sink, receiver, MAILS, replies, first_event)
                # not wedged: new mail and a new reply go through at once
                await mailbox_deliver(mailbox, customer_mail(MAILS))
                replies.append(await reply(MAILS))
                await settle(
                    sm, three, inbox_id, sink, receiver, MAILS + 1, replies, first_event, within=15
                )
                assert two.process.returncode is None
                assert three.process.returncode is None
    finally:
        await proxy.close()


async def test_postgres_faults_never_end_a_worker_service(
    committed_db: CommittedDb, mailbox: Mailbox, sink: SmtpSink, receiver: Receiver
) -> None:
    """The worker's long-running services (mail supervisor, webhook sender, reply sender) as
    the worker runs them, on a pool and lock connection through the faulty proxy: a database
    error of any kind is retried inside each service; none of them may end while the worker
    lives (a dead service is a wedged worker: its jobs stop and nothing restarts them)."""
    key = generate_key()
    cipher = CredentialCipher(key)
    sm = committed_db.sessionmaker
    inbox_id = await imap_inbox(sm, mailbox, cipher)
    async with transaction(sm) as session:
        admin = await make_user(session, role="admin", now=now())
        inbox = await session.get_one(Inbox, inbox_id)
        apply_smtp_settings(
            inbox, SmtpSettingsIn(host=sink.host, port=sink.port, security="none"), None
        )
        await webhooks_service.create_webhook(
            session,
            WebhookIn(url=receiver.url(), events=["*"]),
            now=now(),
            cipher=cipher,
            policy=UrlPolicy(allow_private=True),
        )
        first_event = int(await session.scalar(select(func.max(Event.id))) or 0) + 1
    caller = Caller(user_id=admin.id, role="admin", inbox_ids=None)
    host, port = committed_db.url.rsplit("@", 1)[1].split("/", 1)[0].split(":")
    proxy = FaultProxy(int(port), host)
    await proxy.start()
    settings = Settings(
        database_url=committed_db.url.replace(f"{host}:{port}", f"{proxy.host}:{proxy.port}"),
        inbox_secret_key=key,  # type: ignore[arg-type]
        worker_poll_seconds=0.1,
        imap_rescan_seconds=0.3,
        imap_timeout_seconds=2,
        smtp_timeout_seconds=1,
        webhook_timeout_seconds=1,
        webhook_allow_private=True,
        ingest_parse_processes=0,
        ingest_batch_size=4,
    )
    engine = create_engine(settings.database_url, pool_size=5)
    stopping = asyncio.Event()
    services = {
        name: asyncio.create_task(service(stopping), name=name)
        for name, service in zip(
            ("mail", "webhooks", "replies"),
            all_services(settings, create_sessionmaker(engine), SystemClock(), worker_id="w1"),
            strict=True,
        )
    }
    replies: list[str] = []
    try:
        await mailbox_deliver(mailbox, customer_mail(0))
        await until_true(lambda: conversation_of(sm, inbox_id), "the first conversation", 20)
        target = await conversation_of(sm, inbox_id)
        assert target is not None
        async with Chaos(proxy, SEED, faults=("drop", "cut", "cut_client"), every=(0.05, 0.3)):
            for n in range(1, MAILS):
                await mailbox_deliver(mailbox, customer_mail(n))
                if n <= REPLIES:
                    async with transaction(sm) as session:
                        made = await replies_service.create_reply(
                            session, caller, target, ReplyIn(body_text=f"Reply {n}"), now=now()
                        )
                        replies.append(made.id)
                await asyncio.sleep(0.25)
        ended = {name: task for name, task in services.items() if task.done()}
        assert not ended, {
            name: repr(task.exception()) if not task.cancelled() else "cancelled"
            for name, task in ended.items()
        }
        child = _InProcess(services)
        await settle(sm, child, inbox_id, sink, receiver, MAILS, replies, first_event)  # type: ignore[arg-type]
    finally:
        stopping.set()
        await asyncio.wait(list(services.values()), timeout=15)
        for task in services.values():
            task.cancel()
        await asyncio.gather(*services.values(), return_exceptions=True)
        await engine.dispose()
        await proxy.close()


class _InProcess:
    """Enough of `Child` for `wait_for`: "exited" when any service task ended."""

    def __init__(self, services: dict[str, asyncio.Task[None]]) -> None:
        self.services = services
        self.process = self

    @property
    def returncode(self) -> int | None:
        return 1 if any(t.done() for t in self.services.values()) else None

    async def output(self) -> str:
        return ", ".join(
            f"{n}: {'ended' if t.done() else 'running'}" for n, t in self.services.items()
        )


async def conversation_of(sm: SessionMaker, inbox_id: str) -> str | None:
    async with transaction(sm) as session:
        return await session.scalar(
            select(Conversation.id).where(Conversation.inbox_id == inbox_id).limit(1)
        )


async def until_true(check: Callable[[], Awaitable[object]], what: str, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"no {what} within {within:g} s") from None


async def mailbox_deliver(mailbox: Mailbox, raw: bytes) -> None:
    await asyncio.to_thread(mailbox.deliver, raw)


async def settle(
    maker: SessionMaker,
    child: Child,
    inbox_id: str,
    sink: SmtpSink,
    receiver: Receiver,
    mails: int,
    replies: list[str],
    since: int,
    *,
    within: float = 40,
) -> None:
    """Wait until every mail is stored, every reply final and every event delivered; then
    check each is so exactly as promised."""

    async def inbound() -> Counter[str | None]:
        async with transaction(maker) as session:
            return Counter(
                await session.scalars(
                    select(Message.message_id).where(
                        Message.inbox_id == inbox_id, Message.direction == "inbound"
                    )
                )
            )

    async def reply_rows() -> list[Reply]:
        async with transaction(maker) as session:
            return list(await session.scalars(select(Reply)))

    async def deliveries() -> tuple[list[str], Counter[str]]:
        async with transaction(maker) as session:
            events = [
                f"evt_{n}" for n in await session.scalars(select(Event.id).where(Event.id >= since))
            ]
            states = Counter(await session.scalars(select(WebhookDelivery.state)))
        return events, states

    seen: list[object] = []

    async def done() -> bool:
        stored = await inbound()
        statuses = Counter(r.status for r in await reply_rows())
        events, states = await deliveries()
        received = {r.headers["webhook-id"] for r in receiver.requests}
        seen[:] = [sum(stored.values()), statuses, len(events), states, len(received)]
        return (
            sum(stored.values()) >= mails
            and set(statuses) <= {"sent", "failed", "unknown"}
            and states == Counter({"succeeded": len(events)})
            and set(events) <= received
        )

    try:
        await wait_for(child, done, "everything to settle after the faults", within=within)
    except AssertionError as exc:
        async with transaction(maker) as session:
            sync = await session.get(InboxSyncState, inbox_id)
            state = sync and (sync.worker_id, sync.consecutive_failures, sync.last_error)
            state = (state, sync and sync.last_attempt_at, datetime.now(UTC))
        raise AssertionError(
            f"{exc}\nmails, replies, events, deliveries, ids: {seen}; sync state {state}"
        ) from None
    stored = await inbound()
    assert len(stored) == mails
    assert set(stored.values()) == {1}, stored.most_common(3)
    rows = await reply_rows()
    assert {r.id for r in rows} == set(replies)  # none lost
    handed_over = Counter(str(r.message["Message-ID"]).strip("<>") for r in sink.received)
    for r in rows:
        if r.status == "sent":
            assert handed_over[r.message_id] == 1, (r.id, r.attempts, r.last_error)
        else:
            assert handed_over[r.message_id] <= 1, (r.id, r.status, r.last_error)
    assert Counter(r.status for r in rows)["failed"] == 0  # the SMTP side never failed
    async with transaction(maker) as session:
        outbound = await session.scalar(
            select(func.count()).select_from(Message).where(Message.direction == "outbound")
        )
    assert outbound == sum(1 for r in rows if r.status == "sent")
