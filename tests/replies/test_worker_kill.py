"""`kill -9` of a worker process while it sends, then a new worker: the documented guarantee.

The first reply's DATA is held open by the SMTP server (received whole, no answer yet) when
the worker dies. Nobody can know whether it was delivered, so it must become `unknown` and
never be sent again; the replies the dead worker had claimed but not started go back to the
queue when its lease runs out (3 timeouts of 3 s, plus 5 s) and are sent once each. Nothing is lost.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime

from sqlalchemy import select

from inbox_service.conversations.models import Conversation
from inbox_service.core.auth import Caller
from inbox_service.core.db import transaction
from inbox_service.inboxes.mail_settings import apply_smtp_settings
from inbox_service.replies import service
from inbox_service.replies.models import Reply
from inbox_service.replies.schemas import ReplyIn
from tests.conftest import CommittedDb
from tests.replies.conftest import CUSTOMER_MAIL, ingest, smtp_settings
from tests.replies.smtp_sink import SmtpSink
from tests.support.factories import make_inbox, make_user
from tests.support.worker import wait_for, worker_process

REPLIES = 5


async def test_kill_9_mid_data_then_restart_unknown_once_and_the_rest_sent_once(
    committed_db: CommittedDb, sink: SmtpSink
) -> None:
    sm = committed_db.sessionmaker

    class Now:
        def now(self) -> datetime:
            return datetime.now(UTC)

    async with transaction(sm) as session:
        agent = await make_user(session, role="admin", now=Now().now())
        inbox = await make_inbox(session, now=Now().now())
        apply_smtp_settings(inbox, smtp_settings(sink), None)
        await ingest(
            session, inbox, CUSTOMER_MAIL.replace(b"{inbox}", inbox.address.encode()), clock=Now()
        )
        conversation = await session.scalar(
            select(Conversation).where(Conversation.inbox_id == inbox.id)
        )
        assert conversation is not None
        caller = Caller(user_id=agent.id, role="admin", inbox_ids=None)
        ids = [
            (
                await service.create_reply(
                    session,
                    caller,
                    conversation.id,
                    ReplyIn(body_text=f"Reply {n}"),
                    now=Now().now(),
                )
            ).id
            for n in range(REPLIES)
        ]

    async def rows() -> list[Reply]:
        async with transaction(sm) as session:
            return list(await session.scalars(select(Reply).order_by(Reply.created_at, Reply.id)))

    async def in_data() -> bool:
        return bool(sink.received) and any(r.data_started_at for r in await rows())

    async def settled() -> bool:
        return all(r.status in ("sent", "unknown") for r in await rows())

    sink.state.hang_after_data = 60
    env = {"SMTP_TIMEOUT_SECONDS": "3"}
    async with worker_process(committed_db.url, env) as first:
        await wait_for(first, in_data, "a reply in DATA", within=30)
        first.process.send_signal(signal.SIGKILL)
        assert await first.exit_code(within=10) == -signal.SIGKILL
    [held] = sink.received
    async with worker_process(committed_db.url, env) as second:
        await wait_for(second, settled, "every reply settled", within=60)
    final = {r.id: r for r in await rows()}
    unknown = [r for r in final.values() if r.status == "unknown"]
    assert len(unknown) == 1
    assert f"<{unknown[0].message_id}>".encode() in held.raw
    assert sorted(r.status for r in final.values()) == ["sent"] * (REPLIES - 1) + ["unknown"]
    assert set(final) == set(ids)  # nothing lost
    for reply in final.values():
        assert sink.count(reply.message_id) == 1  # and nothing sent twice


async def test_two_worker_processes_at_once_send_every_reply_exactly_once(
    committed_db: CommittedDb, sink: SmtpSink
) -> None:
    sm = committed_db.sessionmaker
    now = datetime.now(UTC)

    class Now:
        def now(self) -> datetime:
            return now

    async with transaction(sm) as session:
        agent = await make_user(session, role="admin", now=now)
        inbox = await make_inbox(session, now=now)
        apply_smtp_settings(inbox, smtp_settings(sink), None)
        raw = CUSTOMER_MAIL.replace(b"{inbox}", inbox.address.encode())
        await ingest(session, inbox, raw, clock=Now())
        conversation = await session.scalar(
            select(Conversation).where(Conversation.inbox_id == inbox.id)
        )
        assert conversation is not None
        caller = Caller(user_id=agent.id, role="admin", inbox_ids=None)
        for n in range(20):
            await service.create_reply(
                session, caller, conversation.id, ReplyIn(body_text=f"Reply {n}"), now=now
            )

    async def all_sent() -> bool:
        async with transaction(sm) as session:
            statuses = list(await session.scalars(select(Reply.status)))
        return statuses == ["sent"] * 20

    async with (
        worker_process(committed_db.url) as one,
        worker_process(committed_db.url) as two,
    ):
        await wait_for(one, all_sent, "every reply sent", within=60)
        assert two.process.returncode is None
    async with transaction(sm) as session:
        replies = list(await session.scalars(select(Reply)))
    assert len(sink.received) == 20
    for reply in replies:
        assert sink.count(reply.message_id) == 1
