"""Keyset pagination: stable under inserts, no empty trailing page, cursors that round-trip."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.errors import Invalid
from inbox_service.core.pagination import decode_cursor, encode_cursor
from inbox_service.users.models import User
from tests.conftest import Team
from tests.support.factories import NOW, make_user

_seq = itertools.count(1)


async def add_user(db: SessionMaker, user_id: str) -> str:
    """A user with a chosen id, to land before or after a cursor."""
    n = next(_seq)
    async with transaction(db) as s:
        s.add(
            User(
                id=user_id,
                email=f"paged{n}@example.com",
                name=f"Paged {n}",
                role="agent",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    return user_id


async def live_user_ids(db: SessionMaker) -> list[str]:
    async with transaction(db) as s:
        rows = await s.scalars(select(User.id).where(User.deleted_at.is_(None)))
        return sorted(rows)


class TestListPagination:
    async def test_walk_with_inserts_sees_every_row_once(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        async with transaction(db) as s:
            for _ in range(4):
                await make_user(s)
        existing = await live_user_ids(db)  # 7 rows: 3 pages of 2 and one of 1
        behind: set[str] = set()  # inserted at or before the cursor: never seen
        ahead: set[str] = set()  # inserted after the cursor: seen later in the walk

        seen: list[str] = []
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            response = await client.get("/v1/users", params=params, headers=team.admin_headers)
            assert response.status_code == 200, response.text
            page = response.json()
            ids = [item["id"] for item in page["items"]]
            pages.append(ids)
            seen += ids
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 20, "the walk does not end"
            # Rows that land behind the cursor (an offset would shift and repeat a row),
            # between the rows just read, and ahead of it.
            for new_id in (
                f"usr_0{len(pages):03d}",  # sorts before every ULID id
                f"{ids[0]}~",  # between the two rows just read
                f"usr_~{len(pages):03d}",  # sorts after every ULID id
            ):
                await add_user(db, new_id)
                (behind if new_id <= ids[-1] else ahead).add(new_id)

        assert len(seen) == len(set(seen)), f"duplicates in {pages}"
        assert set(existing) <= set(seen)
        assert seen == sorted(seen)
        assert all(0 < len(ids) <= 2 for ids in pages)
        assert behind, "no row landed behind the cursor"
        assert ahead, "no row landed ahead of the cursor"
        assert set(seen) - set(existing) == ahead

    async def test_last_full_page_has_null_cursor(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        async with transaction(db) as s:
            await make_user(s)  # 4 users: exactly two pages of 2
        first = (
            await client.get("/v1/users", params={"limit": "2"}, headers=team.admin_headers)
        ).json()
        assert first["next_cursor"] is not None

        second = (
            await client.get(
                "/v1/users",
                params={"limit": "2", "cursor": first["next_cursor"]},
                headers=team.admin_headers,
            )
        ).json()

        assert len(second["items"]) == 2
        assert second["next_cursor"] is None
        assert {u["id"] for u in first["items"] + second["items"]} == set(await live_user_ids(db))

    async def test_single_page_has_null_cursor(self, client: httpx.AsyncClient, team: Team) -> None:
        page = (await client.get("/v1/users", headers=team.admin_headers)).json()
        assert len(page["items"]) == 3
        assert page["next_cursor"] is None

    async def test_agent_walk_of_inboxes_is_scoped(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        for n in range(3):
            body = {"name": f"Extra {n}", "address": f"extra{n}@example.com"}
            created = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)
            assert created.status_code == 201
        admin_ids: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = (
                await client.get("/v1/inboxes", params=params, headers=team.admin_headers)
            ).json()
            admin_ids += [i["id"] for i in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break

        agent = (
            await client.get("/v1/inboxes", params={"limit": "2"}, headers=team.agent_headers)
        ).json()

        assert len(admin_ids) == len(set(admin_ids)) == 5
        assert [i["id"] for i in agent["items"]] == [team.inbox_a]
        assert agent["next_cursor"] is None


class TestCursor:
    def test_round_trip_with_datetime_and_id(self) -> None:
        at = datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)
        cursor = encode_cursor([at, "cnv_01ABC"])
        assert decode_cursor(cursor, [datetime, str]) == [at, "cnv_01ABC"]

    def test_round_trip_keeps_the_offset(self) -> None:
        at = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2)))
        (decoded,) = decode_cursor(encode_cursor([at]), [datetime])
        assert decoded == at
        assert decoded.utcoffset() == timedelta(hours=2)

    def test_round_trip_with_int(self) -> None:
        assert decode_cursor(encode_cursor([42, "evt"]), [int, str]) == [42, "evt"]

    def test_round_trip_at_the_bigint_bounds(self) -> None:
        bounds = [-(2**63), 2**63 - 1]
        assert decode_cursor(encode_cursor(bounds), [int, int]) == bounds

    @pytest.mark.parametrize("value", ["usr_" + "z" * 36, "ü/+=?&#", ""])
    def test_cursor_is_url_safe(self, value: str) -> None:
        cursor = encode_cursor([value])
        assert set(cursor) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        assert decode_cursor(cursor, [str]) == [value]

    @pytest.mark.parametrize(
        ("cursor", "types"),
        [
            ("@@@", [str]),
            (encode_cursor(["a", "b"]), [str]),  # wrong arity
            (encode_cursor(["yesterday"]), [datetime]),
            (encode_cursor([42]), [datetime]),
            (encode_cursor(["forty-two"]), [int]),
            (encode_cursor(["42"]), [int]),
            (encode_cursor([True]), [int]),
            (encode_cursor([1.5]), [int]),
            (encode_cursor([2**63]), [int]),  # wider than bigint
            (encode_cursor(["2026-01-05T09:00:00"]), [datetime]),  # no offset
            (encode_cursor([7]), [str]),
            (encode_cursor(["usr_\x00"]), [str]),
            (encode_cursor(["usr_\ud800"]), [str]),
        ],
    )
    def test_bad_cursor_is_invalid(self, cursor: str, types: list[type]) -> None:
        with pytest.raises(Invalid) as raised:
            decode_cursor(cursor, types)
        assert raised.value.extra["errors"] == [
            {"loc": ["query", "cursor"], "msg": "cursor is not a cursor this list returned"}
        ]
