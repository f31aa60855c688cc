"""The replies API: undo send and send later, the collision check, bad input."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email import message_from_bytes, policy

import httpx
import pytest
from sqlalchemy import select

from inbox_service.app import create_app
from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.mail_settings import apply_smtp_settings
from inbox_service.inboxes.models import Inbox
from inbox_service.replies.models import Reply
from inbox_service.replies.sender import ReplySender
from tests.conftest import CommittedDb, Team
from tests.replies.conftest import CUSTOMER_MAIL, Thread, ingest, smtp_settings
from tests.replies.smtp_sink import SmtpSink
from tests.replies.test_send import post_reply, reply_row
from tests.support.factories import bearer, make_inbox, make_key, make_user

FOLLOW_UP = (
    b"From: Ana Silva <ana@customer.test>\r\nTo: {inbox}\r\nSubject: Re: Parcel 42 is late\r\n"
    b"Date: Mon, 05 Jan 2026 08:30:00 +0000\r\nMessage-ID: <c2@customer.test>\r\n"
    b"In-Reply-To: <c1@customer.test>\r\n\r\nAny news?\r\n"
)


async def set_undo(db: SessionMaker, inbox_id: str, seconds: int) -> None:
    async with transaction(db) as session:
        (await session.get_one(Inbox, inbox_id)).undo_send_seconds = seconds


class TestUndoAndSendLater:
    async def test_undo_window_schedules_and_cancel_means_never_sent(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        await set_undo(db, thread.inbox_id, 10)
        created = await post_reply(client, team, thread)
        assert created["delivery_status"] == "scheduled"
        assert created["send_at"] == (clock.now() + timedelta(seconds=10)).isoformat().replace(
            "+00:00", "Z"
        )
        clock.advance(seconds=5)
        await sender.run_once()
        assert sink.received == []
        cancelled = await client.post(
            f"/v1/replies/{created['id']}/cancel", headers=team.agent_headers
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["delivery_status"] == "cancelled"
        clock.advance(minutes=5)
        await sender.run_once()
        assert sink.received == []
        assert (await reply_row(db, created["id"])).status == "cancelled"

    async def test_the_window_passing_sends_and_cancel_is_then_409(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        await set_undo(db, thread.inbox_id, 10)
        created = await post_reply(client, team, thread)
        clock.advance(seconds=10)
        await sender.run_once()
        assert sink.count(created["message_id"]) == 1
        late = await client.post(f"/v1/replies/{created['id']}/cancel", headers=team.agent_headers)
        assert late.status_code == 409
        assert late.headers["content-type"] == "application/problem+json"

    async def test_send_at_sends_later(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sink: SmtpSink,
        sender: ReplySender,
        clock: FixedClock,
    ) -> None:
        at = clock.now() + timedelta(hours=3)
        created = await post_reply(client, team, thread, send_at=at.isoformat())
        assert created["delivery_status"] == "scheduled"
        clock.advance(hours=2, minutes=59)
        await sender.run_once()
        assert sink.received == []
        clock.advance(minutes=1)
        await sender.run_once()
        msg = message_from_bytes(sink.received[0].raw, policy=policy.default)
        assert msg["Date"].datetime == at  # the Date is the planned sending time


class TestCollision:
    async def test_message_arrived_since_is_409_listing_it_and_nothing_is_queued(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        async with transaction(db) as session:
            inbox = await session.get_one(Inbox, thread.inbox_id)
            await ingest(
                session, inbox, FOLLOW_UP.replace(b"{inbox}", inbox.address.encode()), clock=clock
            )
        response = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"body_text": "Hi", "expected_last_message_id": thread.first_message_id},
            headers=team.agent_headers,
        )
        assert response.status_code == 409
        problem = response.json()
        assert problem["type"].endswith("/reply-collision")
        [unseen] = problem["unseen_messages"]
        assert unseen["snippet"] == "Any news?"
        assert (unseen["direction"], unseen["pending"]) == ("inbound", False)
        async with transaction(db) as session:
            assert list(await session.scalars(select(Reply))) == []
        # replying on what was seen last goes through
        ok = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"body_text": "Hi", "expected_last_message_id": unseen["id"]},
            headers=team.agent_headers,
        )
        assert ok.status_code == 201

    async def test_another_agents_pending_reply_is_unseen_and_its_id_can_be_expected(
        self, client: httpx.AsyncClient, team: Team, thread: Thread, db: SessionMaker
    ) -> None:
        first = await post_reply(
            client, team, thread, expected_last_message_id=thread.first_message_id
        )
        second = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"body_text": "Me too", "expected_last_message_id": thread.first_message_id},
            headers=team.admin_headers,
        )
        assert second.status_code == 409
        [unseen] = second.json()["unseen_messages"]
        assert unseen == unseen | {"id": first["timeline_message_id"], "pending": True}
        third = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"body_text": "Me too", "expected_last_message_id": first["timeline_message_id"]},
            headers=team.admin_headers,
        )
        assert third.status_code == 201

    async def test_expected_id_of_another_conversation_is_422(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        response = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"body_text": "Hi", "expected_last_message_id": "msg_nope"},
            headers=team.agent_headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "expected_last_message_id"]


@pytest.fixture
async def committed_thread(
    committed_db: CommittedDb, sink: SmtpSink
) -> tuple[Thread, list[dict[str, str]]]:
    """Two agents of one inbox, each with a key, and a conversation, all committed."""
    clock = FixedClock()
    async with transaction(committed_db.sessionmaker) as session:
        agents = [await make_user(session), await make_user(session)]
        inbox = await make_inbox(session, members=tuple(agents))
        apply_smtp_settings(inbox, smtp_settings(sink), None)
        raw = CUSTOMER_MAIL.replace(b"{inbox}", inbox.address.encode())
        await ingest(session, inbox, raw, clock=clock)
        conversation = await session.scalar(
            select(Conversation).where(Conversation.inbox_id == inbox.id)
        )
        assert conversation is not None
        message = await session.scalar(
            select(Message).where(Message.conversation_id == conversation.id)
        )
        assert message is not None
        headers = [bearer(await make_key(session, a)) for a in agents]
        thread = Thread(
            inbox.id, inbox.address, conversation.id, conversation.thread_token, message.id
        )
        return thread, headers


async def test_two_concurrent_replies_on_the_same_view_one_201_one_409_one_mail(
    committed_db: CommittedDb, committed_thread: tuple[Thread, list[dict[str, str]]], sink: SmtpSink
) -> None:
    thread, headers = committed_thread
    clock = FixedClock()
    app = create_app(
        Settings(database_url=committed_db.url, rate_limit_per_minute=0),
        sessionmaker=committed_db.sessionmaker,
        clock=clock,
    )
    body = {"body_text": "On it", "expected_last_message_id": thread.first_message_id}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        for _ in range(3):  # a few rounds: each must have exactly one winner
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"/v1/conversations/{thread.conversation_id}/replies", json=body, headers=h
                    )
                    for h in headers
                )
            )
            codes = sorted(r.status_code for r in responses)
            assert codes == [201, 409], [r.text for r in responses]
            winner = next(r.json() for r in responses if r.status_code == 201)
            body["expected_last_message_id"] = winner["timeline_message_id"]
    sender = ReplySender(committed_db.sessionmaker, clock, None, worker_id="t")
    await sender.run_once()
    assert len(sink.received) == 3


class TestBadInput:
    async def test_crlf_in_a_display_name_is_422_and_nothing_is_sent(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sender: ReplySender,
        sink: SmtpSink,
    ) -> None:
        response = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={
                "body_text": "x",
                "to": [{"address": "a@b.test", "name": "x\r\nBcc: y@evil.test"}],
            },
            headers=team.agent_headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"][:2] == ["body", "to"]
        await sender.run_once()
        assert sink.received == []

    async def test_encoded_newline_in_a_template_subject_is_refused_never_injected(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sender: ReplySender,
        sink: SmtpSink,
    ) -> None:
        # CVE-2024-6923: this Python would write the encoded LF out as a real Bcc line
        template = await client.post(
            "/v1/templates",
            json={
                "name": "t",
                "subject": "a=?UTF-8?Q?=0ABcc:_evil@example.com?=",
                "body": "x",
                "inbox_id": thread.inbox_id,
            },
            headers=team.agent_headers,
        )
        assert template.status_code == 201, template.text
        response = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"template_id": template.json()["id"]},
            headers=team.agent_headers,
        )
        assert response.status_code == 422
        assert "line breaks" in response.json()["detail"]
        await sender.run_once()
        assert sink.received == []

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"body_text": "x", "template_id": "tpl_x"},
            {"body_text": 5},
            {"body_text": "x", "to": [{"address": "not-an-address"}]},
            {"body_text": "x", "send_at": "2026-01-05T10:00:00"},  # no time zone
            {"body_text": "x", "surprise": 1},
        ],
    )
    async def test_malformed_bodies_are_422(
        self, client: httpx.AsyncClient, team: Team, thread: Thread, body: dict[str, object]
    ) -> None:
        response = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json=body,
            headers=team.agent_headers,
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"

    async def test_another_inboxs_conversation_and_reply_are_404(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        created = await post_reply(client, team, thread)
        for method, url in (
            ("POST", f"/v1/conversations/{thread.conversation_id}/replies"),
            ("GET", f"/v1/replies/{created['id']}"),
            ("POST", f"/v1/replies/{created['id']}/cancel"),
            ("GET", f"/v1/conversations/{thread.conversation_id}/replies"),
        ):
            response = await client.request(
                method, url, json={"body_text": "x"}, headers=team.outsider_headers
            )
            assert response.status_code == 404, url

    async def test_an_inbox_without_smtp_settings_cannot_reply(
        self, client: httpx.AsyncClient, team: Team, thread: Thread, db: SessionMaker
    ) -> None:
        async with transaction(db) as session:
            (await session.get_one(Inbox, thread.inbox_id)).smtp_host = None
        response = await client.post(
            f"/v1/conversations/{thread.conversation_id}/replies",
            json={"body_text": "x"},
            headers=team.agent_headers,
        )
        assert response.status_code == 409


class TestSignatureAndTemplates:
    async def test_signature_is_appended_and_templates_fill_the_body(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        sender: ReplySender,
        sink: SmtpSink,
    ) -> None:
        put = await client.put(
            "/v1/me/signature", json={"text": "Bruno, Support"}, headers=team.agent_headers
        )
        assert put.status_code == 200
        template = await client.post(
            "/v1/templates",
            json={
                "name": "hi",
                "body": 'Hi {{ contact.first_name | default("there") }}, order {{ vars.order }}.',
                "inbox_id": thread.inbox_id,
            },
            headers=team.agent_headers,
        )
        created = await post_reply(
            client,
            team,
            thread,
            body_text=None,
            template_id=template.json()["id"],
            variables={"order": "A-7"},
        )
        assert created["text"] == "Hi Ana, order A-7.\n\n-- \nBruno, Support\n"
        await sender.run_once()
        msg = message_from_bytes(sink.received[0].raw, policy=policy.default)
        assert msg.get_body(("plain",)).get_content().startswith("Hi Ana, order A-7.")
