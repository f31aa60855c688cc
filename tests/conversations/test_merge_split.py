"""Merging conversations and splitting one: nothing lost, later replies follow."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def mail(mid: str, subject: str, *, reply_to: str | None = None, hour: int = 9) -> bytes:
    lines = [
        "From: ana@customer.test",
        "To: support@example.com",
        f"Subject: {subject}",
        f"Message-ID: <{mid}@customer.test>",
        f"Date: Mon, 02 Mar 2026 {hour:02d}:00:00 +0000",
    ]
    if reply_to:
        lines.append(f"In-Reply-To: <{reply_to}@customer.test>")
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


async def store(db: SessionMaker, inbox_id: str, *raws: bytes) -> None:
    async with transaction(db) as session:
        items = [Incoming(raw=r, parsed=parse_message(r)) for r in raws]
        await store_batch(
            session, InboxContext(inbox_id=inbox_id, team_addresses=frozenset()), items, now=NOW
        )


async def conversation_of(db: SessionMaker, mid: str) -> str:
    async with transaction(db) as session:
        found = await session.scalar(
            select(Message.conversation_id).where(Message.message_id == f"{mid}@customer.test")
        )
        assert found is not None
        return found


class TestMerge:
    async def test_everything_moves_and_later_replies_follow(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await store(
            db, team.inbox_a, mail("a1", "Login broken", hour=8), mail("b1", "Still broken", hour=9)
        )
        target, source = await conversation_of(db, "a1"), await conversation_of(db, "b1")
        await client.post(
            f"/v1/conversations/{source}/notes",
            json={"body": "checked"},
            headers=team.agent_headers,
        )
        response = await client.post(
            f"/v1/conversations/{target}/merge",
            json={"source_id": source},
            headers=team.agent_headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["message_count"] == 2
        timeline = await client.get(
            f"/v1/conversations/{target}/timeline", headers=team.agent_headers
        )
        kinds = [(e["type"], e["kind"]) for e in timeline.json()["items"]]
        assert ("note", None) in kinds
        assert ("activity", "merged") in kinds
        listed = await client.get("/v1/conversations", headers=team.agent_headers)
        assert [c["id"] for c in listed.json()["items"]] == [target]
        merged = await client.get(f"/v1/conversations/{source}", headers=team.agent_headers)
        assert merged.json()["merged_into_id"] == target
        await store(db, team.inbox_a, mail("b2", "Re: Still broken", reply_to="b1", hour=11))
        assert await conversation_of(db, "b2") == target

    async def test_bad_merges_are_refused_and_change_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await store(db, team.inbox_a, mail("a1", "One"))
        await store(db, team.inbox_b, mail("x1", "Other inbox"))
        mine, theirs = await conversation_of(db, "a1"), await conversation_of(db, "x1")
        itself = await client.post(
            f"/v1/conversations/{mine}/merge", json={"source_id": mine}, headers=team.agent_headers
        )
        assert itself.status_code == 422
        foreign = await client.post(
            f"/v1/conversations/{mine}/merge",
            json={"source_id": theirs},
            headers=team.agent_headers,
        )
        assert foreign.status_code == 404  # the agent cannot see it
        across = await client.post(
            f"/v1/conversations/{mine}/merge",
            json={"source_id": theirs},
            headers=team.admin_headers,
        )
        assert across.status_code == 422
        async with transaction(db) as session:
            versions = await session.scalars(select(Conversation.version))
            assert set(versions) == {1}


class TestSplit:
    async def test_a_message_and_its_replies_move_to_a_new_conversation(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await store(
            db,
            team.inbox_a,
            mail("m1", "Order late", hour=8),
            mail("m2", "Re: Order late", reply_to="m1", hour=9),
            mail("n1", "Re: Order late", reply_to="m1", hour=10),
            mail("n2", "Re: Order late", reply_to="n1", hour=11),
        )
        original = await conversation_of(db, "m1")
        async with transaction(db) as session:
            split_at = await session.scalar(
                select(Message.id).where(Message.message_id == "n1@customer.test")
            )
        response = await client.post(
            f"/v1/conversations/{original}/split",
            json={"message_id": split_at},
            headers=team.agent_headers,
        )
        assert response.status_code == 201, response.text
        new = response.json()["id"]
        assert response.json()["message_count"] == 2
        assert {await conversation_of(db, m) for m in ("n1", "n2")} == {new}
        assert {await conversation_of(db, m) for m in ("m1", "m2")} == {original}
        detail = await client.get(f"/v1/messages/{split_at}", headers=team.agent_headers)
        assert detail.json()["threaded_by"] == "split"
        await store(db, team.inbox_a, mail("n3", "Re: Order late", reply_to="n2", hour=12))
        assert await conversation_of(db, "n3") == new

    async def test_splitting_off_everything_or_a_foreign_message_is_refused(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await store(db, team.inbox_a, mail("s1", "Alone"))
        conversation = await conversation_of(db, "s1")
        async with transaction(db) as session:
            only = await session.scalar(
                select(Message.id).where(Message.message_id == "s1@customer.test")
            )
        everything = await client.post(
            f"/v1/conversations/{conversation}/split",
            json={"message_id": only},
            headers=team.agent_headers,
        )
        assert everything.status_code == 422
        unknown = await client.post(
            f"/v1/conversations/{conversation}/split",
            json={"message_id": "msg_nope"},
            headers=team.agent_headers,
        )
        assert unknown.status_code == 404
