"""Inbox scoping, proved over every route the app has (today's and those added later).

An agent of inbox A calls each route with the ids of inbox B's objects in its path, and
again with ids that exist nowhere (the same ids with their random part zeroed). Both must
get the same answer (a 4xx, never a 500): a foreign id must be indistinguishable from an
unknown one. No answer may carry B's content, and nothing in the database may change.
Routes without path parameters are called with B's ids in every query parameter they
take: B's conversation must not show up in any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from inbox_service.conversations.models import Attachment, Conversation, Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team

SECRET_SUBJECT = "Quarterly numbers of inbox B"

FOREIGN_MAIL = (
    "From: Bea <bea@customer-b.test>\r\nTo: support-b@example.com\r\n"
    f"Subject: {SECRET_SUBJECT}\r\nMessage-ID: <secret-b@customer-b.test>\r\n"
    "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe numbers are in.\r\n"
    '--b\r\nContent-Type: text/plain; name="numbers.txt"\r\n'
    'Content-Disposition: attachment; filename="numbers.txt"\r\n\r\n42\r\n'
    "--b--\r\n"
).encode()

# Streams never end on their own; they are scoped by their own tests (tests/events).
SKIPPED_PATHS = {"/v1/events/stream"}


@dataclass
class Foreign:
    """Inbox B's objects, by the path parameter names that carry them."""

    ids: dict[str, str]
    conversation_id: str


@pytest.fixture
async def foreign(db: SessionMaker, team: Team, client: httpx.AsyncClient) -> Foreign:
    async with transaction(db) as session:
        context = InboxContext(inbox_id=team.inbox_b, team_addresses=frozenset())
        await store_batch(
            session,
            context,
            [Incoming(raw=FOREIGN_MAIL, parsed=parse_message(FOREIGN_MAIL))],
            now=datetime(2026, 3, 2, 12, tzinfo=UTC),
        )
        message = (
            await session.scalars(select(Message).where(Message.inbox_id == team.inbox_b))
        ).one()
        conversation = await session.get(Conversation, message.conversation_id)
        assert conversation is not None
        assert conversation.contact_id is not None
        attachment = (
            await session.scalars(select(Attachment).where(Attachment.message_id == message.id))
        ).one()
    note = await client.post(
        f"/v1/conversations/{conversation.id}/notes",
        json={"body": "internal to B"},
        headers=team.outsider_headers,
    )
    assert note.status_code == 201, note.text
    return Foreign(
        ids={
            "inbox_id": team.inbox_b,
            "conversation_id": conversation.id,
            "message_id": message.id,
            "attachment_id": attachment.id,
            "contact_id": conversation.contact_id,
            "note_id": note.json()["id"],
        },
        conversation_id=conversation.id,
    )


def unknown_like(value: str) -> str:
    """The same shape of id (prefix, length, alphabet) that points at nothing."""
    prefix, _, rest = value.rpartition("_")
    return f"{prefix}_{'0' * len(rest)}" if prefix else "0" * len(value)


def scoped_routes(app: FastAPI) -> list[tuple[str, str, list[str]]]:
    """(method, path, path parameter names) of every versioned operation the app documents."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/v1/") or path in SKIPPED_PATHS:
            continue
        names = re.findall(r"{(\w+)}", path)
        for method in sorted(operations):
            if method in {"get", "put", "post", "patch", "delete"}:
                routes.append((method.upper(), path, names))
    return routes


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), "x_none"), path)


async def snapshot(db: SessionMaker) -> tuple[int, ...]:
    """Counts and versions that any change to B's objects would move."""
    async with transaction(db) as session:
        row = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM activities),"
                    " (SELECT coalesce(sum(version), 0) FROM conversations),"
                    " (SELECT coalesce(sum(version), 0) FROM contacts),"
                    " (SELECT coalesce(sum(version), 0) FROM inboxes),"
                    " (SELECT count(*) FROM inbox_members)"
                )
            )
        ).one()
        messages = await session.scalar(select(func.count()).select_from(Message))
    return (*row, messages or 0)


async def call(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> httpx.Response:
    body = None if method in {"GET", "DELETE"} else {}
    return await client.request(method, url, json=body, headers=headers)


class TestForeignIdsAreUnknownIds:
    async def test_every_route_answers_foreign_ids_as_unknown_and_changes_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        db: SessionMaker,
        team: Team,
        foreign: Foreign,
    ) -> None:
        before = await snapshot(db)
        checked = 0
        for method, path, names in scoped_routes(app):
            scoped = [name for name in names if name in foreign.ids]
            if not scoped:
                continue
            foreign_values = {name: foreign.ids[name] for name in scoped}
            unknown_values = {name: unknown_like(value) for name, value in foreign_values.items()}
            to_foreign = await call(client, method, fill(path, foreign_values), team.agent_headers)
            to_unknown = await call(client, method, fill(path, unknown_values), team.agent_headers)
            where = f"{method} {path}"
            assert 400 <= to_foreign.status_code < 500, (where, to_foreign.text)
            assert to_foreign.status_code == to_unknown.status_code, (
                where,
                to_foreign.text,
                to_unknown.text,
            )
            assert SECRET_SUBJECT not in to_foreign.text, where
            assert "numbers are in" not in to_foreign.text, where
            checked += 1
        # Guards the guard: the routes that take B's ids were really exercised.
        assert checked >= 20
        assert await snapshot(db) == before

    async def test_lists_never_show_foreign_conversations_whatever_the_query(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        team: Team,
        foreign: Foreign,
    ) -> None:
        checked = 0
        for method, path, names in scoped_routes(app):
            if method != "GET" or names:
                continue
            params = dict(foreign.ids)
            params["q"] = "numbers"
            response = await client.get(path, params=params, headers=team.agent_headers)
            where = f"GET {path}"
            assert response.status_code < 500, (where, response.text)
            assert foreign.conversation_id not in response.text, where
            assert SECRET_SUBJECT not in response.text, where
            checked += 1
        assert checked >= 5

    async def test_the_owner_does_see_them(
        self, client: httpx.AsyncClient, team: Team, foreign: Foreign
    ) -> None:
        """The same ids work for a member of B: the refusals above are about scope."""
        for path in (
            f"/v1/conversations/{foreign.ids['conversation_id']}",
            f"/v1/messages/{foreign.ids['message_id']}",
            f"/v1/attachments/{foreign.ids['attachment_id']}",
            f"/v1/contacts/{foreign.ids['contact_id']}",
        ):
            response = await client.get(path, headers=team.outsider_headers)
            assert response.status_code == 200, (path, response.text)
