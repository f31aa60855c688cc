"""`GET/PATCH /v1/conversations/{id}`: status, priority, snooze, versions and the wake-up job."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.alerts.models import Alert
from inbox_service.app import create_app
from inbox_service.conversations.jobs import JOBS, wake_snoozed
from inbox_service.conversations.models import Activity, Conversation, Message
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.core.ids import new_id
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.worker import Worker
from tests.conftest import CommittedDb, Team
from tests.support.factories import make_inbox

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the FixedClock's start
_seq = itertools.count(1)


def _mail(subject: str, message_id: str, sender: str) -> bytes:
    at = NOW - timedelta(hours=1)
    return (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Date: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nHello, something is broken.\r\n"
    ).encode()


async def converse_many(session: AsyncSession, inbox_id: str, count: int) -> list[str]:
    """`count` new conversations in `inbox_id`, made by storing mail; their ids."""
    ids = [f"upd{next(_seq)}.{new_id('x')}@customer.test" for _ in range(count)]
    items = []
    for n, message_id in enumerate(ids):
        raw = _mail(f"Problem number {n}", message_id, f"Person {n} <p{n}.{message_id}>")
        items.append(Incoming(raw=raw, parsed=parse_message(raw)))
    context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
    await store_batch(session, context, items, now=NOW)
    rows = await session.execute(
        select(Message.message_id, Message.conversation_id).where(Message.message_id.in_(ids))
    )
    by_message: dict[str | None, str | None] = {}
    for mid, cid in rows:
        by_message[mid] = cid
    found = [by_message[m] for m in ids]
    assert None not in found
    return [c for c in found if c is not None]


@pytest.fixture
async def conversation_id(db: SessionMaker, team: Team) -> str:
    async with transaction(db) as session:
        (cid,) = await converse_many(session, team.inbox_a, 1)
        return cid


async def counts(db: SessionMaker, conversation_id: str) -> dict[str, int]:
    """Activities, events (by type) and alerts of one conversation."""
    async with transaction(db) as session:
        activities = await session.scalar(
            select(func.count()).where(Activity.conversation_id == conversation_id)
        )
        events = dict(
            (
                await session.execute(
                    select(Event.type, func.count())
                    .where(
                        Event.conversation_id == conversation_id,
                        Event.type.in_(
                            ["conversation.status_changed", "conversation.priority_changed"]
                        ),
                    )
                    .group_by(Event.type)
                )
            ).all()
        )
        alerts = await session.scalar(
            select(func.count()).where(Alert.conversation_id == conversation_id)
        )
    return {
        "activities": activities or 0,
        "status_events": events.get("conversation.status_changed", 0),
        "priority_events": events.get("conversation.priority_changed", 0),
        "alerts": alerts or 0,
    }


async def events_of(db: SessionMaker, conversation_id: str, type_: str) -> list[Event]:
    async with transaction(db) as session:
        return list(
            await session.scalars(
                select(Event)
                .where(Event.conversation_id == conversation_id, Event.type == type_)
                .order_by(Event.id)
            )
        )


async def activities_of(db: SessionMaker, conversation_id: str) -> list[Activity]:
    async with transaction(db) as session:
        return list(
            await session.scalars(
                select(Activity)
                .where(Activity.conversation_id == conversation_id)
                .order_by(Activity.id)
            )
        )


async def patch(
    client: httpx.AsyncClient,
    cid: str,
    body: dict[str, Any],
    headers: dict[str, str],
    **extra: str,
) -> httpx.Response:
    return await client.patch(f"/v1/conversations/{cid}", json=body, headers={**headers, **extra})


class TestGetConversation:
    async def test_returns_version_and_etag(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        response = await client.get(
            f"/v1/conversations/{conversation_id}", headers=team.agent_headers
        )
        assert response.status_code == 200
        body = response.json()
        assert body["version"] == 1
        assert response.headers["etag"] == '"1"'
        assert (body["status"], body["priority"], body["snoozed_until"]) == (
            "open",
            "normal",
            None,
        )


class TestUpdateStatus:
    @pytest.mark.parametrize("status", ["pending", "resolved"])
    async def test_status_change_writes_activity_and_event_with_actor(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        status: str,
    ) -> None:
        response = await patch(client, conversation_id, {"status": status}, team.agent_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["version"]) == (status, 2)
        assert response.headers["etag"] == '"2"'
        (act,) = await activities_of(db, conversation_id)
        assert (act.kind, act.actor_id) == ("status_changed", team.agent_id)
        assert act.data == {"previous_status": "open", "status": status}
        assert act.created_at == NOW
        (event,) = await events_of(db, conversation_id, "conversation.status_changed")
        assert event.data["actor"] == {"id": team.agent_id}
        assert event.data["conversation"]["status"] == status
        assert event.data["conversation"]["version"] == 2
        assert event.data["previous_status"] == "open"
        assert event.inbox_id == team.inbox_a

    async def test_each_transition_of_a_chain_is_recorded_in_order(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        chain = ["pending", "resolved", "open"]
        for status in chain:
            clock.advance(minutes=1)
            response = await patch(client, conversation_id, {"status": status}, team.admin_headers)
            assert response.status_code == 200, response.text
        assert response.json()["version"] == 4
        acts = await activities_of(db, conversation_id)
        assert [(a.data["previous_status"], a.data["status"]) for a in acts] == [
            ("open", "pending"),
            ("pending", "resolved"),
            ("resolved", "open"),
        ]
        assert {a.actor_id for a in acts} == {team.admin_id}
        events = await events_of(db, conversation_id, "conversation.status_changed")
        assert [e.data["status"] for e in events] == chain

    async def test_transition_shows_in_the_timeline_with_its_actor(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        await patch(client, conversation_id, {"status": "resolved"}, team.agent_headers)
        response = await client.get(
            f"/v1/conversations/{conversation_id}/timeline", headers=team.agent_headers
        )
        activities = [e for e in response.json()["items"] if e["type"] == "activity"]
        assert [(a["kind"], a["actor_id"], a["data"]["status"]) for a in activities] == [
            ("status_changed", team.agent_id, "resolved")
        ]

    async def test_same_status_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        response = await patch(client, conversation_id, {"status": "open"}, team.agent_headers)
        assert response.status_code == 200
        assert response.json()["version"] == 1
        assert response.headers["etag"] == '"1"'
        assert await counts(db, conversation_id) == {
            "activities": 0,
            "status_events": 0,
            "priority_events": 0,
            "alerts": 0,
        }

    async def test_empty_patch_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        response = await patch(client, conversation_id, {}, team.agent_headers)
        assert response.status_code == 200
        assert response.json()["version"] == 1
        assert (await counts(db, conversation_id))["activities"] == 0


class TestUpdatePriority:
    async def test_priority_change_writes_activity_and_event(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        response = await patch(client, conversation_id, {"priority": "urgent"}, team.agent_headers)
        assert response.status_code == 200, response.text
        assert (response.json()["priority"], response.json()["version"]) == ("urgent", 2)
        (act,) = await activities_of(db, conversation_id)
        assert (act.kind, act.actor_id) == ("priority_changed", team.agent_id)
        assert (act.data["previous_priority"], act.data["priority"]) == ("normal", "urgent")
        (event,) = await events_of(db, conversation_id, "conversation.priority_changed")
        assert event.data["actor"] == {"id": team.agent_id}
        assert event.data["conversation"]["priority"] == "urgent"
        assert (await counts(db, conversation_id))["status_events"] == 0

    async def test_priority_change_moves_the_row_in_the_priority_sort(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        async with transaction(db) as session:
            first, second = await converse_many(session, team.inbox_a, 2)
        await patch(client, second, {"priority": "high"}, team.agent_headers)
        response = await client.get(
            "/v1/conversations", params={"sort": "priority"}, headers=team.agent_headers
        )
        assert [i["id"] for i in response.json()["items"]] == [second, first]

    async def test_same_priority_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        response = await patch(client, conversation_id, {"priority": "normal"}, team.agent_headers)
        assert response.json()["version"] == 1
        assert (await counts(db, conversation_id))["priority_events"] == 0

    async def test_status_and_priority_together_bump_the_version_once(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        body = {"status": "pending", "priority": "low"}
        response = await patch(client, conversation_id, body, team.agent_headers)
        assert response.json()["version"] == 2
        assert await counts(db, conversation_id) == {
            "activities": 2,
            "status_events": 1,
            "priority_events": 1,
            "alerts": 0,
        }


class TestUpdateIfMatch:
    async def test_matching_if_match_applies(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        response = await patch(
            client,
            conversation_id,
            {"status": "pending"},
            team.agent_headers,
            **{"If-Match": '"1"'},
        )
        assert response.status_code == 200
        assert response.headers["etag"] == '"2"'

    async def test_stale_if_match_is_412_and_nothing_changes(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        first = await patch(
            client, conversation_id, {"priority": "high"}, team.agent_headers, **{"If-Match": '"1"'}
        )
        assert first.status_code == 200
        before = await counts(db, conversation_id)
        stale = await patch(
            client,
            conversation_id,
            {"status": "resolved", "priority": "low"},
            team.admin_headers,
            **{"If-Match": '"1"'},
        )
        assert stale.status_code == 412, stale.text
        assert stale.headers["content-type"].startswith("application/problem+json")
        assert await counts(db, conversation_id) == before
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, conversation_id)
            assert (conversation.status, conversation.priority, conversation.version) == (
                "open",
                "high",
                2,
            )

    async def test_weak_etag_never_matches(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        response = await patch(
            client,
            conversation_id,
            {"status": "pending"},
            team.agent_headers,
            **{"If-Match": 'W/"1"'},
        )
        assert response.status_code == 412


class TestUpdateSnooze:
    async def test_snooze_with_future_time(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        until = NOW + timedelta(hours=2)
        body = {"status": "snoozed", "snoozed_until": until.isoformat()}
        response = await patch(client, conversation_id, body, team.agent_headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "snoozed"
        assert datetime.fromisoformat(response.json()["snoozed_until"]) == until
        (event,) = await events_of(db, conversation_id, "conversation.status_changed")
        assert event.data["status"] == "snoozed"

    async def test_snoozed_until_alone_snoozes(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        until = (NOW + timedelta(days=1)).isoformat()
        response = await patch(
            client, conversation_id, {"snoozed_until": until}, team.agent_headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "snoozed"

    async def test_snooze_with_another_offset_is_the_same_instant(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        response = await patch(
            client,
            conversation_id,
            {"snoozed_until": "2026-01-05T12:00:00+02:00"},  # 10:00 UTC: an hour ahead
            team.agent_headers,
        )
        assert response.status_code == 200, response.text
        until = datetime.fromisoformat(response.json()["snoozed_until"])
        assert until == NOW + timedelta(hours=1)

    async def test_resnooze_to_another_time_is_a_change(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        for hours in (1, 3):
            until = (NOW + timedelta(hours=hours)).isoformat()
            response = await patch(
                client, conversation_id, {"snoozed_until": until}, team.agent_headers
            )
            assert response.status_code == 200
        assert response.json()["version"] == 3
        assert (await counts(db, conversation_id))["status_events"] == 2

    async def test_leaving_snoozed_clears_snoozed_until(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        until = (NOW + timedelta(hours=2)).isoformat()
        await patch(client, conversation_id, {"snoozed_until": until}, team.agent_headers)
        response = await patch(client, conversation_id, {"status": "pending"}, team.agent_headers)
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["snoozed_until"]) == ("pending", None)

    @pytest.mark.parametrize(
        "body",
        [
            {"status": "snoozed", "snoozed_until": (NOW - timedelta(minutes=1)).isoformat()},
            {"snoozed_until": NOW.isoformat()},  # now is not the future
            {"snoozed_until": "2026-01-06T09:00:00"},  # naive
            {"status": "snoozed"},  # snoozed until when?
            {"status": "open", "snoozed_until": (NOW + timedelta(hours=1)).isoformat()},
            {"snoozed_until": "tomorrow"},
        ],
    )
    async def test_bad_snooze_is_422_and_nothing_changes(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        body: dict[str, Any],
    ) -> None:
        response = await patch(client, conversation_id, body, team.agent_headers)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["status"] == 422
        assert any("snoozed_until" in error["loc"] for error in problem["errors"]), problem
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, conversation_id)
            assert (conversation.status, conversation.snoozed_until) == ("open", None)
            assert conversation.version == 1
        assert (await counts(db, conversation_id))["activities"] == 0


class TestUpdateBadInput:
    @pytest.mark.parametrize(
        "body",
        [
            {"status": None},
            {"priority": None},
            {"status": "closed"},
            {"status": "OPEN"},
            {"priority": "critical"},
            {"subject": "rewritten"},
            {"status": "pending", "assignee_id": "usr_x"},
            {"version": 7},
        ],
    )
    async def test_is_422_problem_and_nothing_changes(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        body: dict[str, Any],
    ) -> None:
        response = await patch(client, conversation_id, body, team.agent_headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"]
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, conversation_id)
            assert (conversation.status, conversation.priority, conversation.version) == (
                "open",
                "normal",
                1,
            )
        assert (await counts(db, conversation_id))["activities"] == 0

    async def test_outsider_patch_is_404_and_nothing_changes(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        response = await patch(
            client, conversation_id, {"status": "resolved"}, team.outsider_headers
        )
        assert response.status_code == 404
        assert "Problem number" not in response.text
        assert (await counts(db, conversation_id))["activities"] == 0


class TestUpdateTransaction:
    async def test_change_activity_and_event_commit_in_one_transaction(
        self, committed_db: CommittedDb, settings: Settings, clock: FixedClock
    ) -> None:
        from tests.support.factories import bearer, make_key, make_user

        async with transaction(committed_db.sessionmaker) as session:
            agent = await make_user(session)
            inbox = await make_inbox(session, members=(agent,))
            headers = bearer(await make_key(session, agent))
            (cid,) = await converse_many(session, inbox.id, 1)
        app = create_app(settings, sessionmaker=committed_db.sessionmaker, clock=clock)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.patch(
                f"/v1/conversations/{cid}",
                json={"status": "resolved", "priority": "high"},
                headers=headers,
            )
            assert response.status_code == 200, response.text
        async with transaction(committed_db.sessionmaker) as session:
            conversation_xid = await session.scalar(
                text("SELECT xmin::text FROM conversations WHERE id = :id"), {"id": cid}
            )
            activity_xids = set(
                await session.scalars(
                    text("SELECT xmin::text FROM activities WHERE conversation_id = :id"),
                    {"id": cid},
                )
            )
            event_xids = set(
                await session.scalars(
                    text(
                        "SELECT (xid::text::bigint % 4294967296)::text FROM events "
                        "WHERE conversation_id = :id AND type IN "
                        "('conversation.status_changed', 'conversation.priority_changed')"
                    ),
                    {"id": cid},
                )
            )
        assert len(activity_xids) == 1
        assert len(event_xids) == 1
        assert activity_xids == event_xids == {conversation_xid}


async def _snooze(db: SessionMaker, conversation_id: str, until: datetime) -> None:
    async with transaction(db) as session:
        conversation = await session.get_one(Conversation, conversation_id)
        conversation.status = "snoozed"
        conversation.snoozed_until = until


class TestWakeSnoozed:
    async def test_not_before_its_time(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        until = NOW + timedelta(hours=1)
        await patch(
            client, conversation_id, {"snoozed_until": until.isoformat()}, team.agent_headers
        )
        clock.advance(minutes=59, seconds=59)
        assert await wake_snoozed(db, clock) == 0
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, conversation_id)
            assert conversation.status == "snoozed"
        assert (await counts(db, conversation_id))["alerts"] == 0

    async def test_wakes_once_with_activity_event_and_alert(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        until = NOW + timedelta(hours=1)
        await patch(
            client, conversation_id, {"snoozed_until": until.isoformat()}, team.agent_headers
        )
        before = await counts(db, conversation_id)  # the snooze itself: 1 activity, 1 event
        clock.set(until)
        assert await wake_snoozed(db, clock) == 1
        assert await wake_snoozed(db, clock) == 0
        clock.advance(hours=5)
        assert await wake_snoozed(db, clock) == 0
        assert await counts(db, conversation_id) == {
            "activities": before["activities"] + 1,
            "status_events": before["status_events"] + 1,
            "priority_events": 0,
            "alerts": 1,
        }
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, conversation_id)
            assert (conversation.status, conversation.snoozed_until) == ("open", None)
            assert conversation.version == 3
            alert = await session.scalar(
                select(Alert).where(Alert.conversation_id == conversation_id)
            )
            assert alert is not None
            assert alert.kind == "snooze_ended"
            assert alert.inbox_id == team.inbox_a
        woken = (await activities_of(db, conversation_id))[-1]
        assert (woken.kind, woken.actor_id, woken.created_at) == ("snooze_ended", None, until)
        assert woken.data["status"] == "open"
        event = (await events_of(db, conversation_id, "conversation.status_changed"))[-1]
        assert event.data["status"] == "open"
        assert event.data["actor"] is None
        assert event.data["conversation"]["status"] == "open"

    async def test_wake_up_shows_in_the_api(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        await _snooze(db, conversation_id, NOW + timedelta(minutes=10))
        clock.advance(minutes=11)
        await Worker(db, clock, jobs=JOBS, worker_id="w1").run_pass()
        response = await client.get(
            f"/v1/conversations/{conversation_id}", headers=team.agent_headers
        )
        assert (response.json()["status"], response.json()["snoozed_until"]) == ("open", None)
        timeline = await client.get(
            f"/v1/conversations/{conversation_id}/timeline", headers=team.agent_headers
        )
        kinds = [e["kind"] for e in timeline.json()["items"] if e["type"] == "activity"]
        assert kinds == ["snooze_ended"]

    async def test_only_due_conversations_wake(
        self, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            due, later, resolved = await converse_many(session, team.inbox_a, 3)
        await _snooze(db, due, NOW + timedelta(minutes=5))
        await _snooze(db, later, NOW + timedelta(hours=5))
        async with transaction(db) as session:
            # An old snoozed_until left on a row that is not snoozed must not reopen it.
            row = await session.get_one(Conversation, resolved)
            row.status, row.snoozed_until = "resolved", NOW - timedelta(days=1)
        clock.advance(hours=1)
        assert await wake_snoozed(db, clock) == 1
        async with transaction(db) as session:
            statuses = {
                cid: (await session.get_one(Conversation, cid)).status
                for cid in (due, later, resolved)
            }
        assert statuses == {due: "open", later: "snoozed", resolved: "resolved"}

    async def test_two_workers_wake_each_exactly_once(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        sessionmaker = committed_db.sessionmaker
        async with transaction(sessionmaker) as session:
            inbox = await make_inbox(session)
            ids = await converse_many(session, inbox.id, 50)
        async with transaction(sessionmaker) as session:
            for n, cid in enumerate(ids):
                conversation = await session.get_one(Conversation, cid)
                conversation.status = "snoozed"
                conversation.snoozed_until = NOW + timedelta(minutes=n % 7 + 1)
        clock.advance(minutes=10)

        async def work(worker: Worker) -> int:
            total = 0
            while done := await worker.run_pass():
                total += done
            return total

        workers = [Worker(sessionmaker, clock, jobs=JOBS, worker_id=f"w{n}") for n in (1, 2)]
        # And two bare calls on their own sessions, racing the workers.
        done = await asyncio.gather(
            *(work(w) for w in workers),
            wake_snoozed(sessionmaker, clock),
            wake_snoozed(sessionmaker, clock),
        )
        assert sum(done) == 50
        async with transaction(sessionmaker) as session:
            events = list(
                await session.scalars(
                    select(Event.conversation_id).where(Event.type == "conversation.status_changed")
                )
            )
            alerts = list(
                await session.scalars(
                    select(Alert.conversation_id).where(Alert.kind == "snooze_ended")
                )
            )
            activities = list(
                await session.scalars(
                    select(Activity.conversation_id).where(Activity.kind == "snooze_ended")
                )
            )
            still = await session.scalar(select(func.count()).where(Conversation.status != "open"))
            versions = set(await session.scalars(select(Conversation.version)))
        once_each = Counter(ids)
        assert len(once_each) == 50
        assert Counter(events) == once_each
        assert Counter(alerts) == once_each
        assert Counter(activities) == once_each
        assert still == 0
        assert versions == {2}
