"""Replies through a real SMTP server (aiosmtpd): the mail, retries, failures, unknowns."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from typing import Any

import httpx
from sqlalchemy import func, select

from inbox_service.alerts.models import Alert
from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.replies.models import Reply
from inbox_service.replies.sender import ReplySender
from tests.conftest import Team
from tests.replies.conftest import Thread
from tests.replies.smtp_sink import SmtpSink


async def post_reply(
    client: httpx.AsyncClient, team: Team, thread: Thread, **body: Any
) -> dict[str, Any]:
    body.setdefault("body_text", "Hello Ana,\nit ships today.")
    response = await client.post(
        f"/v1/conversations/{thread.conversation_id}/replies",
        json=body,
        headers=team.agent_headers,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def reply_row(db: SessionMaker, reply_id: str) -> Reply:
    async with transaction(db) as session:
        return await session.get_one(Reply, reply_id)


async def events_of(db: SessionMaker, kind: str) -> list[Event]:
    async with transaction(db) as session:
        return list(await session.scalars(select(Event).where(Event.type == kind)))


class TestTheMail:
    async def test_headers_mime_structure_and_body(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
    ) -> None:
        created = await post_reply(
            client,
            team,
            thread,
            body_text="Hello Ana,\nit ships today.",
            body_html="<p>Hello Ana,<br>it <b>ships</b> today.</p>",
        )
        assert created["delivery_status"] == "queued"
        assert await sender.run_once() >= 1

        [received] = sink.received
        assert received.rcpt_tos == ["ana@customer.test"]
        assert received.mail_from == thread.inbox_address
        msg = message_from_bytes(received.raw, policy=policy.default)
        assert msg["Message-ID"] == f"<{created['message_id']}>"
        # <ULID.token@inbox-domain>: the token that threads replies back
        assert re.fullmatch(
            rf"<[0-9A-Z]{{26}}\.{thread.thread_token}@example\.com>", msg["Message-ID"]
        )
        assert msg["In-Reply-To"] == "<c1@customer.test>"
        assert msg["References"] == "<a0@customer.test> <b0@customer.test> <c1@customer.test>"
        assert msg["Subject"] == "Re: Parcel 42 is late"
        assert msg["From"].addresses[0].addr_spec == thread.inbox_address
        assert re.fullmatch(r"User \d+ via Inbox \d+", msg["From"].addresses[0].display_name)
        assert msg["Reply-To"] == thread.inbox_address
        assert msg["To"] == "Ana Silva <ana@customer.test>"
        assert msg["Date"] is not None
        assert "Auto-Submitted" not in msg
        assert msg.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in msg.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        assert "it ships today." in msg.get_body(("plain",)).get_content()
        assert "<b>ships</b>" in msg.get_body(("html",)).get_content()

    async def test_sent_reply_joins_the_timeline_and_counts_as_first_response(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        created = await post_reply(client, team, thread)
        clock.advance(seconds=5)
        await sender.run_once()
        row = await reply_row(db, created["id"])
        assert row.status == "sent"
        assert (row.smtp_response or "").startswith("250")
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, thread.conversation_id)
            assert conversation.first_response_at == clock.now()
            assert conversation.reply_count == 1
            assert conversation.waiting_since is None
            assert conversation.message_count == 2
            outbound = await session.get_one(Message, created["timeline_message_id"])
            assert outbound.direction == "outbound"
            assert outbound.message_id == created["message_id"]
        [event] = await events_of(db, "reply.sent")
        assert event.data["reply"]["id"] == created["id"]
        assert event.conversation_id == thread.conversation_id
        timeline = await client.get(
            f"/v1/conversations/{thread.conversation_id}/timeline", headers=team.agent_headers
        )
        ids = [e["id"] for e in timeline.json()["items"] if e["type"] == "message"]
        assert ids == [thread.first_message_id, created["timeline_message_id"]]
        got = await client.get(f"/v1/replies/{created['id']}", headers=team.agent_headers)
        assert got.json()["delivery_status"] == "sent"

    async def test_html_only_gets_a_derived_text_part(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
    ) -> None:
        await post_reply(
            client, team, thread, body_text=None, body_html="<p>Line one</p><p>Two</p>"
        )
        await sender.run_once()
        msg = message_from_bytes(sink.received[0].raw, policy=policy.default)
        text = msg.get_body(("plain",)).get_content()
        assert "Line one" in text
        assert "Two" in text
        assert "<p>" not in text


class TestRetries:
    async def test_temporary_failure_is_retried_with_backoff_then_sent(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        sink.state.temp_failures = 2
        created = await post_reply(client, team, thread)
        await sender.run_once()
        row = await reply_row(db, created["id"])
        assert (row.status, row.attempts) == ("queued", 1)
        assert (row.last_error or "").startswith("451")
        assert row.next_attempt_at == clock.now() + timedelta(seconds=30)
        await sender.run_once()  # not due yet
        assert (await reply_row(db, created["id"])).attempts == 1
        clock.advance(seconds=30)
        await sender.run_once()
        row = await reply_row(db, created["id"])
        assert (row.status, row.attempts) == ("queued", 2)
        assert row.next_attempt_at == clock.now() + timedelta(seconds=60)
        clock.advance(seconds=60)
        await sender.run_once()
        row = await reply_row(db, created["id"])
        assert (row.status, row.attempts) == ("sent", 3)
        assert sink.count(created["message_id"]) == 1

    async def test_permanent_failure_is_failed_with_reason_and_event_never_retried(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        sink.state.permanent = True
        created = await post_reply(client, team, thread)
        await sender.run_once()
        row = await reply_row(db, created["id"])
        assert row.status == "failed"
        assert row.last_error == "550 5.1.1 No such user"
        [event] = await events_of(db, "reply.failed")
        assert event.data["error"] == "550 5.1.1 No such user"
        assert event.data["reply"]["id"] == created["id"]
        sink.state.permanent = False
        clock.advance(hours=2)
        await sender.run_once()
        assert (await reply_row(db, created["id"])).attempts == 1
        assert sink.received == []
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, thread.conversation_id)
            assert conversation.first_response_at is None
            assert conversation.waiting_since is not None

    async def test_server_down_stays_queued_and_is_sent_when_it_returns(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        sink.stop()
        created = await post_reply(client, team, thread)
        for _ in range(3):
            await sender.run_once()
            row = await reply_row(db, created["id"])
            assert row.status == "queued"
            assert row.last_error is not None
            clock.advance(minutes=10)
        sink.start()
        await sender.run_once()
        assert (await reply_row(db, created["id"])).status == "sent"
        assert sink.count(created["message_id"]) == 1

    async def test_connection_lost_after_the_final_dot_is_unknown_and_never_resent(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        sink.state.drop_after_data = 1
        created = await post_reply(client, team, thread)
        await sender.run_once()
        row = await reply_row(db, created["id"])
        assert row.status == "unknown"
        assert row.data_started_at is not None
        for _ in range(3):
            clock.advance(hours=1)
            await sender.run_once()
        assert (await reply_row(db, created["id"])).status == "unknown"
        assert sink.count(created["message_id"]) == 1  # received once, never sent again
        async with transaction(db) as session:
            alerts = list(await session.scalars(select(Alert).where(Alert.kind == "reply_unknown")))
            assert [a.conversation_id for a in alerts] == [thread.conversation_id]
        # the agent decides: retry sends the very same bytes (same Message-ID)
        retried = await client.post(
            f"/v1/replies/{created['id']}/retry", headers=team.agent_headers
        )
        assert retried.json()["delivery_status"] == "queued"
        await sender.run_once()
        assert (await reply_row(db, created["id"])).status == "sent"
        assert sink.received[0].raw == sink.received[1].raw

    async def test_two_senders_at_once_send_each_reply_once(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        ids = [(await post_reply(client, team, thread))["message_id"] for _ in range(6)]
        a = ReplySender(db, clock, None, worker_id="a")
        b = ReplySender(db, clock, None, worker_id="b")
        # the test session is one connection: the two run interleaved, not in parallel;
        # the process test (test_worker_kill) runs real workers side by side
        while await a.run_once() + await b.run_once():
            pass
        assert [sink.count(i) for i in ids] == [1] * 6
        async with transaction(db) as session:
            assert (
                await session.scalar(
                    select(func.count()).select_from(Reply).where(Reply.status == "sent")
                )
                == 6
            )
