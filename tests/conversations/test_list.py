"""`GET /v1/conversations`: each filter, each sort, keyset pages, scoping and full text."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.app import create_app
from inbox_service.conversations import queries
from inbox_service.conversations.models import Conversation, ConversationTag, Message, Tag
from inbox_service.conversations.schemas import ConversationPage
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.ids import new_id
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.users.models import ApiKey
from tests.conftest import CommittedDb, Team
from tests.support.factories import make_inbox, make_key, make_user

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the FixedClock's start
_seq = itertools.count(1)


def _mail(*, subject: str, sender: str, body: str, at: datetime, message_id: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Date: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <{message_id}>\r\n\r\n{body}\r\n"
    ).encode()


async def converse(
    session: AsyncSession,
    inbox_id: str,
    *,
    subject: str,
    sender: str = "Ana Lopez <ana@customer.test>",
    body: str = "Hello there",
    at: datetime = NOW - timedelta(hours=1),
) -> Conversation:
    """A new conversation made the way mail makes one: through `store_batch`."""
    message_id = f"list{next(_seq)}.{new_id('x')}@customer.test"
    raw = _mail(subject=subject, sender=sender, body=body, at=at, message_id=message_id)
    context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
    await store_batch(session, context, [Incoming(raw=raw, parsed=parse_message(raw))], now=NOW)
    message = await session.scalar(select(Message).where(Message.message_id == message_id))
    assert message is not None
    assert message.conversation_id is not None
    return await session.get_one(Conversation, message.conversation_id)


async def tag(session: AsyncSession, conversation: Conversation, name: str) -> None:
    found = await session.scalar(select(Tag).where(Tag.name.ilike(name)))
    if found is None:
        found = Tag(id=new_id("tag"), name=name, created_at=NOW)
        session.add(found)
        await session.flush()
    session.add(ConversationTag(conversation_id=conversation.id, tag_id=found.id, created_at=NOW))
    await session.flush()


@dataclass
class World:
    """Six conversations with known fields: c1..c5 in inbox A, c6 in inbox B."""

    ids: dict[str, str]  # "c1" → id
    contacts: dict[str, str]  # "ana" → contact id

    def names(self, items: list[dict[str, Any]]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id.get(item["id"], item["id"]) for item in items]


# name: inbox, contact, status, priority, assignee, tag, last message (h ago), waiting (h ago)
SPEC: dict[str, tuple[str, str, str, str, str | None, str | None, float, float | None]] = {
    "c1": ("a", "ana", "open", "urgent", "agent", "Billing", 1, 5),
    "c2": ("a", "bob", "pending", "high", "admin", None, 2, None),
    "c3": ("a", "ana", "snoozed", "normal", None, "billing", 3, 3),
    "c4": ("a", "cat", "resolved", "low", None, "vip", 4, None),
    "c5": ("a", "bob", "open", "urgent", None, None, 5, 6),
    "c6": ("b", "ana", "open", "urgent", "outsider", "BILLING", 0.5, 7),
}
SENDERS = {
    "ana": "Ana Lopez <ana@customer.test>",
    "bob": "Bob Stone <bob@customer.test>",
    "cat": "Cat Wu <cat@customer.test>",
}


@pytest.fixture
async def world(db: SessionMaker, team: Team) -> World:
    inboxes = {"a": team.inbox_a, "b": team.inbox_b}
    users = {"agent": team.agent_id, "admin": team.admin_id, "outsider": team.outsider_id}
    ids: dict[str, str] = {}
    contacts: dict[str, str] = {}
    async with transaction(db) as session:
        for name, (inbox, who, status, priority, assignee, tag_name, last, waiting) in SPEC.items():
            conversation = await converse(
                session,
                inboxes[inbox],
                subject=f"Subject of {name}",
                sender=SENDERS[who],
                at=NOW - timedelta(hours=12),
            )
            conversation.status = status
            conversation.priority = priority
            conversation.assignee_id = users[assignee] if assignee else None
            conversation.snoozed_until = NOW + timedelta(days=1) if status == "snoozed" else None
            conversation.last_message_at = NOW - timedelta(hours=last)
            conversation.waiting_since = (
                NOW - timedelta(hours=waiting) if waiting is not None else None
            )
            if tag_name:
                # One tag, however it is spelled: names are case-insensitive.
                await tag(session, conversation, tag_name)
            ids[name] = conversation.id
            assert conversation.contact_id is not None
            contacts[who] = conversation.contact_id
    return World(ids=ids, contacts=contacts)


async def list_names(
    client: httpx.AsyncClient, world: World, headers: dict[str, str], params: Any
) -> list[str]:
    response = await client.get("/v1/conversations", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    return world.names(body["items"])


async def walk(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, Any],
    *,
    between: Any = None,
) -> list[dict[str, Any]]:
    """Every page of a list; `between` (async, no arguments) runs after the first page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/conversations", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= params["limit"]
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if pages == 1 and between is not None:
            await between()
        if cursor is None:
            return items
        assert pages < 50, "the walk does not end"


class TestListFilters:
    async def test_admin_without_filters_sees_every_inbox(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        names = await list_names(client, world, team.admin_headers, {})
        assert sorted(names) == ["c1", "c2", "c3", "c4", "c5", "c6"]

    async def test_agent_sees_only_their_inboxes(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        assert sorted(await list_names(client, world, team.agent_headers, {})) == [
            "c1",
            "c2",
            "c3",
            "c4",
            "c5",
        ]
        assert await list_names(client, world, team.outsider_headers, {}) == ["c6"]

    async def test_agent_filtering_on_a_foreign_inbox_gets_nothing(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        params = {"inbox_id": team.inbox_b}
        assert await list_names(client, world, team.agent_headers, params) == []

    async def test_inbox_id(self, client: httpx.AsyncClient, team: Team, world: World) -> None:
        a = await list_names(client, world, team.admin_headers, {"inbox_id": team.inbox_a})
        b = await list_names(client, world, team.admin_headers, {"inbox_id": team.inbox_b})
        assert sorted(a) == ["c1", "c2", "c3", "c4", "c5"]
        assert b == ["c6"]

    @pytest.mark.parametrize(
        ("statuses", "expected"),
        [
            (["open"], ["c1", "c5", "c6"]),
            (["pending"], ["c2"]),
            (["snoozed"], ["c3"]),
            (["resolved"], ["c4"]),
            (["open", "pending"], ["c1", "c2", "c5", "c6"]),
        ],
    )
    async def test_status_repeatable(
        self,
        client: httpx.AsyncClient,
        team: Team,
        world: World,
        statuses: list[str],
        expected: list[str],
    ) -> None:
        names = await list_names(client, world, team.admin_headers, {"status": statuses})
        assert sorted(names) == expected

    @pytest.mark.parametrize(
        ("priorities", "expected"),
        [
            (["urgent"], ["c1", "c5", "c6"]),
            (["normal"], ["c3"]),
            (["high", "low"], ["c2", "c4"]),
        ],
    )
    async def test_priority_repeatable(
        self,
        client: httpx.AsyncClient,
        team: Team,
        world: World,
        priorities: list[str],
        expected: list[str],
    ) -> None:
        names = await list_names(client, world, team.admin_headers, {"priority": priorities})
        assert sorted(names) == expected

    async def test_assignee_me_is_the_caller(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        params = {"assignee_id": "me"}
        assert await list_names(client, world, team.agent_headers, params) == ["c1"]
        assert await list_names(client, world, team.admin_headers, params) == ["c2"]
        assert await list_names(client, world, team.outsider_headers, params) == ["c6"]

    async def test_assignee_none_is_unassigned(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        names = await list_names(client, world, team.admin_headers, {"assignee_id": "none"})
        assert sorted(names) == ["c3", "c4", "c5"]

    async def test_assignee_by_user_id(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        params = {"assignee_id": team.agent_id}
        assert await list_names(client, world, team.admin_headers, params) == ["c1"]
        params = {"assignee_id": team.outsider_id}
        # The outsider's conversation is in inbox B: the agent may not see it.
        assert await list_names(client, world, team.agent_headers, params) == []

    @pytest.mark.parametrize("spelling", ["billing", "BILLING", "Billing"])
    async def test_tag_is_case_insensitive(
        self, client: httpx.AsyncClient, team: Team, world: World, spelling: str
    ) -> None:
        names = await list_names(client, world, team.admin_headers, {"tag": spelling})
        assert sorted(names) == ["c1", "c3", "c6"]

    async def test_tag_other_and_unknown(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        assert await list_names(client, world, team.admin_headers, {"tag": "vip"}) == ["c4"]
        assert await list_names(client, world, team.admin_headers, {"tag": "nope"}) == []

    async def test_contact_id(self, client: httpx.AsyncClient, team: Team, world: World) -> None:
        ana = {"contact_id": world.contacts["ana"]}
        assert sorted(await list_names(client, world, team.admin_headers, ana)) == [
            "c1",
            "c3",
            "c6",
        ]
        assert sorted(await list_names(client, world, team.agent_headers, ana)) == ["c1", "c3"]
        bob = {"contact_id": world.contacts["bob"]}
        assert sorted(await list_names(client, world, team.admin_headers, bob)) == ["c2", "c5"]

    async def test_filters_combine(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        params = {
            "status": ["open", "snoozed"],
            "priority": ["urgent", "normal"],
            "assignee_id": "none",
            "inbox_id": team.inbox_a,
        }
        assert sorted(await list_names(client, world, team.admin_headers, params)) == ["c3", "c5"]

    async def test_rows_carry_what_a_list_view_shows(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        response = await client.get(
            "/v1/conversations", params={"tag": "vip"}, headers=team.admin_headers
        )
        (row,) = response.json()["items"]
        assert row["id"] == world.ids["c4"]
        assert row["subject"] == "Subject of c4"
        assert row["status"] == "resolved"
        assert row["priority"] == "low"
        assert row["assignee_id"] is None
        assert row["tags"] == ["vip"]
        assert row["contact"] == {
            "id": world.contacts["cat"],
            "email": "cat@customer.test",
            "name": "Cat Wu",
        }
        assert row["snippet"] == "Hello there"
        assert row["message_count"] == 1
        assert row["waiting_since"] is None
        assert datetime.fromisoformat(row["last_message_at"]) == NOW - timedelta(hours=4)

    async def test_rows_are_the_conversations_as_get_shows_them(
        self, client: httpx.AsyncClient, team: Team, world: World, db: SessionMaker
    ) -> None:
        # The list renders its JSON from plain columns; a field out of place would show
        # here, so every timestamp and count of c1 differs from the others.
        async with transaction(db) as session:
            c1 = await session.get_one(Conversation, world.ids["c1"])
            c1.snoozed_until = NOW + timedelta(hours=7)
            c1.created_at = NOW - timedelta(hours=30)
            c1.updated_at = NOW - timedelta(hours=20)
            c1.message_count = 5
            c1.version = 9

        response = await client.get("/v1/conversations", headers=team.admin_headers)

        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        items = response.json()["items"]
        assert len(items) == len(SPEC)
        for item in items:
            one = await client.get(f"/v1/conversations/{item['id']}", headers=team.admin_headers)
            detail = one.json()  # the detail adds who is in it now (presence)
            assert (detail.pop("viewers"), detail.pop("composers")) == ([], [])
            assert item == detail
        # Byte for byte what the declared response model would have written.
        page = ConversationPage.model_validate_json(response.content)
        assert page.model_dump_json().encode() == response.content

    async def test_contact_conversations_are_the_same_rows(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        contact = world.contacts["ana"]

        by_contact = await client.get(
            f"/v1/contacts/{contact}/conversations", headers=team.admin_headers
        )
        filtered = await client.get(
            "/v1/conversations", params={"contact_id": contact}, headers=team.admin_headers
        )

        assert by_contact.status_code == 200, by_contact.text
        assert by_contact.json() == filtered.json()
        assert world.names(by_contact.json()["items"]) == ["c6", "c1", "c3"]


def _by_id(world: World, *names: str) -> list[str]:
    """`names` in the order of their ids (the tie-breaker of every sort)."""
    return sorted(names, key=lambda name: world.ids[name])


class TestListSorts:
    @pytest.mark.parametrize("limit", [1, 2, 50])
    async def test_newest_is_latest_message_first(
        self, client: httpx.AsyncClient, team: Team, world: World, limit: int
    ) -> None:
        items = await walk(client, team.admin_headers, {"sort": "newest", "limit": limit})
        assert world.names(items) == ["c6", "c1", "c2", "c3", "c4", "c5"]

    async def test_newest_is_the_default(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        items = await walk(client, team.admin_headers, {"limit": 2})
        assert world.names(items) == ["c6", "c1", "c2", "c3", "c4", "c5"]

    @pytest.mark.parametrize("limit", [1, 2])
    async def test_oldest_is_earliest_message_first(
        self, client: httpx.AsyncClient, team: Team, world: World, limit: int
    ) -> None:
        items = await walk(client, team.admin_headers, {"sort": "oldest", "limit": limit})
        assert world.names(items) == ["c5", "c4", "c3", "c2", "c1", "c6"]

    @pytest.mark.parametrize("limit", [1, 2])
    async def test_waiting_longest_puts_not_waiting_last(
        self, client: httpx.AsyncClient, team: Team, world: World, limit: int
    ) -> None:
        items = await walk(client, team.admin_headers, {"sort": "waiting_longest", "limit": limit})
        assert world.names(items) == ["c6", "c5", "c1", "c3", *_by_id(world, "c2", "c4")]

    @pytest.mark.parametrize("limit", [1, 2])
    async def test_priority_then_waiting_time(
        self, client: httpx.AsyncClient, team: Team, world: World, limit: int
    ) -> None:
        items = await walk(client, team.admin_headers, {"sort": "priority", "limit": limit})
        assert world.names(items) == ["c6", "c5", "c1", "c2", "c3", "c4"]

    async def test_sort_with_filters_and_scope(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        params = {"sort": "priority", "limit": 2, "status": ["open", "pending"]}
        items = await walk(client, team.agent_headers, params)
        assert world.names(items) == ["c5", "c1", "c2"]


class TestListPagesWhileRowsChange:
    async def test_newest_row_moved_behind_and_row_inserted_ahead(
        self, client: httpx.AsyncClient, team: Team, world: World, db: SessionMaker
    ) -> None:
        new: dict[str, str] = {}

        async def change() -> None:
            async with transaction(db) as session:
                c3 = await session.get_one(Conversation, world.ids["c3"])
                c3.last_message_at = NOW  # now the newest: behind the cursor
                c7 = await converse(session, team.inbox_a, subject="Late", sender=SENDERS["cat"])
                c7.last_message_at = NOW - timedelta(hours=3.5)  # between c3 and c4
                c8 = await converse(session, team.inbox_a, subject="Newer", sender=SENDERS["bob"])
                c8.last_message_at = NOW - timedelta(minutes=1)  # behind the cursor
                new["c7"], new["c8"] = c7.id, c8.id

        items = await walk(client, team.admin_headers, {"limit": 2}, between=change)
        world.ids.update(new)
        assert world.names(items) == ["c6", "c1", "c2", "c7", "c4", "c5"]

    async def test_oldest_row_moved_to_the_end_is_seen_once(
        self, client: httpx.AsyncClient, team: Team, world: World, db: SessionMaker
    ) -> None:
        async def change() -> None:
            async with transaction(db) as session:
                c3 = await session.get_one(Conversation, world.ids["c3"])
                c3.last_message_at = NOW  # from the middle to the very end
                c5 = await session.get_one(Conversation, world.ids["c5"])
                c5.last_message_at = NOW + timedelta(minutes=1)  # seen already; moves on
                c9 = await converse(session, team.inbox_b, subject="Old", sender=SENDERS["cat"])
                c9.last_message_at = NOW - timedelta(days=3)  # behind the cursor

        items = await walk(
            client, team.admin_headers, {"sort": "oldest", "limit": 2}, between=change
        )
        names = world.names(items)
        # c5 changed after it was returned and so shows up again at its new place; every
        # unchanged row exactly once, in order.
        assert names == ["c5", "c4", "c2", "c1", "c6", "c3", "c5"]

    async def test_waiting_longest_row_answered_moves_among_the_not_waiting(
        self, client: httpx.AsyncClient, team: Team, world: World, db: SessionMaker
    ) -> None:
        async def change() -> None:
            async with transaction(db) as session:
                c1 = await session.get_one(Conversation, world.ids["c1"])
                c1.waiting_since = None  # answered: no longer waits
                c7 = await converse(session, team.inbox_a, subject="Ancient", sender=SENDERS["cat"])
                c7.waiting_since = NOW - timedelta(days=2)  # waits longest: behind the cursor

        params = {"sort": "waiting_longest", "limit": 2}
        items = await walk(client, team.admin_headers, params, between=change)
        assert world.names(items) == ["c6", "c5", "c3", *_by_id(world, "c1", "c2", "c4")]

    async def test_priority_row_raised_ahead_of_the_cursor_is_seen_once(
        self, client: httpx.AsyncClient, team: Team, world: World, db: SessionMaker
    ) -> None:
        new: dict[str, str] = {}

        async def change() -> None:
            async with transaction(db) as session:
                c4 = await session.get_one(Conversation, world.ids["c4"])
                c4.priority = "urgent"  # urgent, not waiting: after c1
                c3 = await session.get_one(Conversation, world.ids["c3"])
                c3.priority = "low"
                c7 = await converse(session, team.inbox_a, subject="Fresh", sender=SENDERS["cat"])
                c7.priority = "high"
                c7.waiting_since = NOW - timedelta(minutes=5)  # before c2, which is not waiting
                new["c7"] = c7.id

        items = await walk(
            client, team.admin_headers, {"sort": "priority", "limit": 2}, between=change
        )
        world.ids.update(new)
        assert world.names(items) == ["c6", "c5", "c1", "c4", "c7", "c2", "c3"]


def _cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


class TestListBadInput:
    @pytest.mark.parametrize(
        ("from_sort", "to_sort"),
        [
            ("newest", "oldest"),
            ("newest", "waiting_longest"),
            ("newest", "priority"),
            ("waiting_longest", "newest"),
            ("priority", "waiting_longest"),
            ("oldest", "priority"),
        ],
    )
    async def test_cursor_of_another_sort_is_422(
        self, client: httpx.AsyncClient, team: Team, world: World, from_sort: str, to_sort: str
    ) -> None:
        first = await client.get(
            "/v1/conversations", params={"sort": from_sort, "limit": 2}, headers=team.admin_headers
        )
        cursor = first.json()["next_cursor"]
        assert cursor is not None
        response = await client.get(
            "/v1/conversations",
            params={"sort": to_sort, "limit": 2, "cursor": cursor},
            headers=team.admin_headers,
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage!!",
            "bm90IGpzb24",  # "not json"
            _cursor([]),
            _cursor(["newest", "2026-01-01T00:00:00+00:00"]),
            _cursor(["newest", "yesterday", "cnv_x"]),
            _cursor(["newest", "2026-01-01T00:00:00", "cnv_x"]),  # naive
            _cursor(["newest", "2026-01-01T00:00:00+00:00", "cnv_\u0000"]),
            _cursor(["newest", 5, "cnv_x"]),
            _cursor({"sort": "newest"}),  # type: ignore[arg-type]
        ],
    )
    async def test_garbage_cursor_is_422(
        self, client: httpx.AsyncClient, team: Team, cursor: str
    ) -> None:
        response = await client.get(
            "/v1/conversations", params={"cursor": cursor}, headers=team.admin_headers
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")

    @pytest.mark.parametrize(
        ("params", "loc"),
        [
            ({"status": "closed"}, ["query", "status", 0]),
            ({"status": ["open", "bogus"]}, ["query", "status", 1]),
            ({"priority": "critical"}, ["query", "priority", 0]),
            ({"sort": "random"}, ["query", "sort"]),
            ({"limit": 0}, ["query", "limit"]),
            ({"limit": 201}, ["query", "limit"]),
            ({"limit": "ten"}, ["query", "limit"]),
            ({"q": ""}, ["query", "q"]),
            ({"q": "x" * 201}, ["query", "q"]),
            ({"tag": "x" * 65}, ["query", "tag"]),
            ({"assignee_id": "x" * 41}, ["query", "assignee_id"]),
            ({"sla": "late"}, ["query", "sla"]),
            ({"cursor": "x" * 513}, ["query", "cursor"]),
        ],
    )
    async def test_unknown_values_are_422(
        self, client: httpx.AsyncClient, team: Team, params: dict[str, Any], loc: list[Any]
    ) -> None:
        response = await client.get("/v1/conversations", params=params, headers=team.admin_headers)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["status"] == 422
        assert [error["loc"] for error in body["errors"]] == [loc]

    async def test_no_key_is_401(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/v1/conversations")).status_code == 401


@pytest.fixture
async def searchable(db: SessionMaker, team: Team) -> dict[str, str]:
    async with transaction(db) as session:
        parcel = await converse(
            session,
            team.inbox_a,
            subject="Where is my order",
            sender="Ana Lopez <ana@customer.test>",
            body="The parcel with the Zebrafish aquarium never arrived.",
        )
        refund = await converse(
            session,
            team.inbox_a,
            subject="Refund Kumquat request",
            sender="Bob Stone <bob@customer.test>",
            body="Please send my money back.",
        )
        other = await converse(
            session,
            team.inbox_b,
            subject="Another inbox",
            sender="Dan Kim <dan@elsewhere.test>",
            body="A refund question from inbox B about an aquarium.",
        )
    return {"parcel": parcel.id, "refund": refund.id, "other": other.id}


class TestListSearch:
    @pytest.fixture(autouse=True, params=["matches_first", "walk"])
    def strategy(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        """Both ways of searching find the same (so few test messages are read first
        unless the bound says that every search is a common word)."""
        if request.param == "walk":
            monkeypatch.setattr(queries, "SEARCH_WALK_MIN_MATCHES", 0)

    async def _q(self, client: httpx.AsyncClient, headers: dict[str, str], q: str) -> set[str]:
        response = await client.get("/v1/conversations", params={"q": q}, headers=headers)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    async def test_finds_a_word_of_a_body(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        assert await self._q(client, team.agent_headers, "zebrafish") == {searchable["parcel"]}

    async def test_finds_a_word_of_a_subject(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        assert await self._q(client, team.agent_headers, "kumquat") == {searchable["refund"]}

    async def test_finds_a_sender_address(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        found = await self._q(client, team.admin_headers, "bob@customer.test")
        assert found == {searchable["refund"]}

    async def test_is_case_insensitive(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        assert await self._q(client, team.agent_headers, "ZEBRAfish") == {searchable["parcel"]}
        assert await self._q(client, team.agent_headers, "KUMQUAT") == {searchable["refund"]}

    async def test_all_words_must_match(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        assert await self._q(client, team.admin_headers, "parcel aquarium") == {
            searchable["parcel"]
        }
        assert await self._q(client, team.admin_headers, "parcel kumquat") == set()
        assert await self._q(client, team.admin_headers, "nonexistentword") == set()

    async def test_admin_finds_in_every_inbox(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        found = await self._q(client, team.admin_headers, "aquarium")
        assert found == {searchable["parcel"], searchable["other"]}

    async def test_never_returns_other_inboxes(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str]
    ) -> None:
        # Words only in inbox A (body, subject, address): the outsider finds nothing.
        for q in ("zebrafish", "kumquat", "ana@customer.test"):
            assert await self._q(client, team.outsider_headers, q) == set()
        # A word in both inboxes: each agent finds only their own.
        assert await self._q(client, team.outsider_headers, "aquarium") == {searchable["other"]}
        assert await self._q(client, team.agent_headers, "aquarium") == {searchable["parcel"]}
        assert await self._q(client, team.agent_headers, "refund") == {searchable["refund"]}

    async def test_combines_with_filters(
        self, client: httpx.AsyncClient, team: Team, searchable: dict[str, str], db: SessionMaker
    ) -> None:
        async with transaction(db) as session:
            (await session.get_one(Conversation, searchable["parcel"])).status = "resolved"
        params = {"q": "aquarium", "status": "open"}
        response = await client.get("/v1/conversations", params=params, headers=team.admin_headers)
        assert [item["id"] for item in response.json()["items"]] == [searchable["other"]]


class TestConversationScoping:
    async def test_foreign_conversation_is_404_everywhere_without_leaking(
        self, client: httpx.AsyncClient, team: Team, world: World, db: SessionMaker
    ) -> None:
        foreign = world.ids["c6"]  # inbox B
        for method, path, body in (
            ("GET", f"/v1/conversations/{foreign}", None),
            ("PATCH", f"/v1/conversations/{foreign}", {"status": "resolved"}),
            ("GET", f"/v1/conversations/{foreign}/messages", None),
            ("GET", f"/v1/conversations/{foreign}/timeline", None),
        ):
            response = await client.request(method, path, json=body, headers=team.agent_headers)
            assert response.status_code == 404, (method, path)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "Subject of c6" not in response.text
        async with transaction(db) as session:
            c6 = await session.get_one(Conversation, foreign)
            assert (c6.status, c6.version) == ("open", 1)

    async def test_unknown_id_is_404_like_a_foreign_one(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        unknown = await client.get("/v1/conversations/cnv_nope", headers=team.agent_headers)
        foreign = await client.get(
            f"/v1/conversations/{world.ids['c6']}", headers=team.agent_headers
        )
        assert unknown.status_code == foreign.status_code == 404
        assert unknown.json()["title"] == foreign.json()["title"]

    async def test_member_and_admin_can_read(
        self, client: httpx.AsyncClient, team: Team, world: World
    ) -> None:
        for headers in (team.agent_headers, team.admin_headers):
            response = await client.get(f"/v1/conversations/{world.ids['c1']}", headers=headers)
            assert response.status_code == 200
            assert response.json()["subject"] == "Subject of c1"
            assert response.json()["tags"] == ["Billing"]


class TestDeployedReadPath:
    """The list as `serve` wires it: an engine of its own, reads without a transaction."""

    async def test_a_page_is_one_round_trip_with_no_begin_and_key_use_is_recorded(
        self, committed_db: CommittedDb, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with transaction(committed_db.sessionmaker) as session:
            agent = await make_user(session)
            key = await make_key(session, agent)
            inbox = await make_inbox(session, members=(agent,))
            billing = await converse(session, inbox.id, subject="Invoice twice")
            await tag(session, billing, "Billing")
            await tag(session, billing, "angry")
            await converse(session, inbox.id, subject="Untagged", at=NOW)
        begins: list[object] = []
        statements: list[str] = []
        start_transaction = AsyncAdapt_asyncpg_connection._start_transaction

        async def counting_begin(connection: AsyncAdapt_asyncpg_connection) -> None:
            await start_transaction(connection)
            if connection._transaction is not None:  # BEGIN was sent (not AUTOCOMMIT)
                begins.append(connection)

        def count_statement(*args: Any) -> None:
            statements.append(args[2])

        settings = Settings(database_url=committed_db.url, rate_limit_per_minute=0)
        app = create_app(settings, clock=FixedClock(NOW))
        headers = {"Authorization": f"Bearer {key}"}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                # The first request connects, checks the key and records its use.
                first = await client.get("/v1/conversations", headers=headers)
                assert first.status_code == 200, first.text
                monkeypatch.setattr(
                    AsyncAdapt_asyncpg_connection, "_start_transaction", counting_begin
                )
                engine = app.state.sessionmaker.kw["bind"]
                event.listen(engine.sync_engine, "before_cursor_execute", count_statement)
                response = await client.get("/v1/conversations", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == first.json()
        assert [(c["subject"], c["tags"]) for c in response.json()["items"]] == [
            ("Untagged", []),
            ("Invoice twice", ["angry", "Billing"]),
        ]
        assert begins == []  # no BEGIN, hence no COMMIT either
        assert len(statements) == 1, statements  # the page with its tags (the key: cached)
        async with committed_db.sessionmaker() as session:
            used = await session.scalar(
                select(ApiKey.last_used_at).where(ApiKey.user_id == agent.id)
            )
        assert used == NOW  # written on its own by the first request, committed
