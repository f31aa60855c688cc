"""Contacts: visible through their conversations, searchable, renameable."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team


def raw(sender: str, n: int) -> bytes:
    return (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: Question {n}\r\n"
        f"Message-ID: <c{n}@customer.test>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nHi\r\n"
    ).encode()


@pytest.fixture
async def contacts(db: SessionMaker, team: Team) -> None:
    async with transaction(db) as session:
        for inbox_id, mails in (
            (team.inbox_a, [raw("Ana Lopez <ana@customer.test>", 1), raw("bob@customer.test", 2)]),
            (team.inbox_b, [raw("Carla <carla@other.test>", 3)]),
        ):
            items = [Incoming(raw=r, parsed=parse_message(r)) for r in mails]
            context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
            await store_batch(session, context, items, now=datetime(2026, 3, 2, 12, tzinfo=UTC))


async def ids_by_email(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    response = await client.get("/v1/contacts", headers=headers)
    assert response.status_code == 200
    return {c["email"]: c["id"] for c in response.json()["items"]}


class TestListContacts:
    async def test_agents_see_the_contacts_of_their_inboxes_only(
        self, client: httpx.AsyncClient, team: Team, contacts: None
    ) -> None:
        assert set(await ids_by_email(client, team.agent_headers)) == {
            "ana@customer.test",
            "bob@customer.test",
        }
        assert set(await ids_by_email(client, team.outsider_headers)) == {"carla@other.test"}
        assert len(await ids_by_email(client, team.admin_headers)) == 3

    async def test_q_searches_address_and_name_prefixes(
        self, client: httpx.AsyncClient, team: Team, contacts: None
    ) -> None:
        by_name = await client.get("/v1/contacts?q=ANA", headers=team.agent_headers)
        assert [c["email"] for c in by_name.json()["items"]] == ["ana@customer.test"]
        by_address = await client.get("/v1/contacts?q=bob@", headers=team.agent_headers)
        assert [c["email"] for c in by_address.json()["items"]] == ["bob@customer.test"]
        wildcard = await client.get("/v1/contacts?q=%25", headers=team.agent_headers)
        assert wildcard.json()["items"] == []


class TestContact:
    async def test_foreign_contacts_are_404_everywhere(
        self, client: httpx.AsyncClient, team: Team, contacts: None
    ) -> None:
        carla = (await ids_by_email(client, team.admin_headers))["carla@other.test"]
        for method, path in (
            ("GET", f"/v1/contacts/{carla}"),
            ("PATCH", f"/v1/contacts/{carla}"),
            ("GET", f"/v1/contacts/{carla}/conversations"),
        ):
            response = await client.request(
                method,
                path,
                json={"name": "x"} if method == "PATCH" else None,
                headers=team.agent_headers,
            )
            assert response.status_code == 404, path
            assert "carla" not in response.text

    async def test_rename_with_if_match_and_list_their_conversations(
        self, client: httpx.AsyncClient, team: Team, contacts: None
    ) -> None:
        ana = (await ids_by_email(client, team.agent_headers))["ana@customer.test"]
        current = await client.get(f"/v1/contacts/{ana}", headers=team.agent_headers)
        etag = current.headers["ETag"]
        renamed = await client.patch(
            f"/v1/contacts/{ana}",
            json={"name": "Ana María López"},
            headers={**team.agent_headers, "If-Match": etag},
        )
        assert renamed.status_code == 200
        assert renamed.json()["name"] == "Ana María López"
        stale = await client.patch(
            f"/v1/contacts/{ana}",
            json={"name": "Other"},
            headers={**team.agent_headers, "If-Match": etag},
        )
        assert stale.status_code == 412
        bad = await client.patch(
            f"/v1/contacts/{ana}", json={"name": "a\r\nb"}, headers=team.agent_headers
        )
        assert bad.status_code == 422
        conversations = await client.get(
            f"/v1/contacts/{ana}/conversations", headers=team.agent_headers
        )
        assert [c["subject"] for c in conversations.json()["items"]] == ["Question 1"]
        assert conversations.json()["items"][0]["contact"]["name"] == "Ana María López"
