"""SLA clocks on conversations through the API, ingest and the tick, on the FixedClock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from inbox_service.alerts.models import Alert
from inbox_service.conversations.jobs import wake_snoozed
from inbox_service.conversations.models import Conversation
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.sla import hooks
from inbox_service.sla.jobs import tick
from inbox_service.sla.models import ConversationSla
from tests.conftest import Team
from tests.rules.support import make_rule
from tests.sla.support import create_policy, metric, receive

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the FixedClock's start, a Monday
BERLIN = ZoneInfo("Europe/Berlin")


def t(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


async def conversation(client: httpx.AsyncClient, cid: str, team: Team) -> dict[str, Any]:
    response = await client.get(f"/v1/conversations/{cid}", headers=team.agent_headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch(client: httpx.AsyncClient, cid: str, body: dict[str, Any], team: Team) -> None:
    response = await client.patch(f"/v1/conversations/{cid}", json=body, headers=team.agent_headers)
    assert response.status_code == 200, response.text


async def arrive(db: SessionMaker, inbox_id: str, at: datetime, **kw: Any) -> tuple[str, str]:
    async with transaction(db) as session:
        return await receive(session, inbox_id, at, **kw)


async def agent_reply(db: SessionMaker, cid: str, at: datetime, user_id: str) -> None:
    """What the outbox does once a reply is sent."""
    async with transaction(db) as session:
        found = await session.get(Conversation, cid, with_for_update=True)
        assert found is not None
        await hooks.on_agent_reply(session, found, at=at, user_id=user_id)


async def sla_events(db: SessionMaker, cid: str) -> Counter[tuple[str, str, int]]:
    async with transaction(db) as session:
        rows = await session.execute(
            select(Event.type, Event.data).where(
                Event.conversation_id == cid, Event.type.like("sla.%")
            )
        )
        return Counter((kind, data["metric"], data["cycle"]) for kind, data in rows)


class TestDueTimes:
    async def test_a_customer_mail_starts_first_response_and_resolution(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        policy = await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(20))
        body = await conversation(client, cid, team)
        assert body["sla"]["policy_id"] == policy["id"]
        assert [m["metric"] for m in body["sla"]["metrics"]] == ["first_response", "resolution"]
        first = metric(body, "first_response")
        assert datetime.fromisoformat(first["due_at"]) == t(60)
        assert datetime.fromisoformat(first["warn_at"]) == t(50)
        assert (first["status"], first["remaining_seconds"], first["paused"]) == ("ok", 2400, False)
        assert datetime.fromisoformat(metric(body, "resolution")["due_at"]) == t(480)

    async def test_inbox_without_policy_has_no_clocks(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_b])
        _, cid = await arrive(db, team.inbox_a, NOW)
        assert (await conversation(client, cid, team))["sla"] is None

    async def test_friday_1755_in_office_hours_is_due_monday_0955(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        hours = {
            "timezone": "Europe/Berlin",
            "intervals": [
                {"day": d, "start": "09:00", "end": "18:00"}
                for d in ("mon", "tue", "wed", "thu", "fri")
            ],
        }
        await create_policy(
            client, team.admin_headers, inbox_ids=[team.inbox_a], business_hours=hours
        )
        friday = datetime(2026, 1, 9, 17, 55, tzinfo=BERLIN)
        clock.set(friday)
        _, cid = await arrive(db, team.inbox_a, friday)
        clock.set(datetime(2026, 1, 10, 12, 0, tzinfo=BERLIN))  # Saturday: no time passes
        first = metric(await conversation(client, cid, team), "first_response")
        assert datetime.fromisoformat(first["due_at"]) == datetime(
            2026, 1, 12, 9, 55, tzinfo=BERLIN
        )
        assert first["remaining_seconds"] == 3600 - 300

    async def test_priority_change_recomputes_with_the_time_used(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(5))
        await patch(client, cid, {"priority": "urgent"}, team)
        body = await conversation(client, cid, team)
        first = metric(body, "first_response")
        assert (first["target_seconds"], datetime.fromisoformat(first["due_at"])) == (900, t(15))
        await patch(client, cid, {"priority": "low"}, team)  # no targets for low
        first = metric(await conversation(client, cid, team), "first_response")
        assert (first["target_seconds"], first["due_at"], first["status"]) == (None, None, "ok")

    async def test_a_rule_raising_the_priority_retargets_the_running_clock(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        await make_rule(client, team.admin_headers, keywords=["outage"], priority="urgent")
        first_id, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(5))
        _, same = await arrive(
            db, team.inbox_a, t(5), in_reply_to=first_id, subject="Re: now a total outage"
        )
        assert same == cid
        body = await conversation(client, cid, team)
        assert body["priority"] == "urgent"
        first = metric(body, "first_response")
        # The urgent target (15 min) from the start of the cycle, not a fresh clock.
        assert (first["target_seconds"], datetime.fromisoformat(first["due_at"])) == (900, t(15))

    async def test_policy_change_recomputes_running_clocks(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        policy = await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        targets = {"normal": {"first_response": 7200, "resolution": 86_400}}
        response = await client.patch(
            f"/v1/sla-policies/{policy['id']}",
            json={"targets": targets},
            headers={**team.admin_headers, "If-Match": '"1"'},
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 2
        first = metric(await conversation(client, cid, team), "first_response")
        assert datetime.fromisoformat(first["due_at"]) == t(120)
        stale = await client.patch(
            f"/v1/sla-policies/{policy['id']}",
            json={"name": "x"},
            headers={**team.admin_headers, "If-Match": '"1"'},
        )
        assert stale.status_code == 412

    async def test_taking_the_inbox_out_of_the_policy_stops_its_clocks(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        policy = await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        response = await client.patch(
            f"/v1/sla-policies/{policy['id']}", json={"inbox_ids": []}, headers=team.admin_headers
        )
        assert response.status_code == 200
        assert (await conversation(client, cid, team))["sla"] is None
        async with transaction(db) as session:
            row = await session.get(Conversation, cid)
            assert row is not None
            assert (row.sla_due_at, row.sla_warn_at) == (None, None)
            assert (
                await session.scalar(
                    select(ConversationSla).where(ConversationSla.conversation_id == cid)
                )
                is None
            )


class TestPauseAndResume:
    async def test_three_hours_pending_consume_no_budget(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(20))
        await patch(client, cid, {"status": "pending"}, team)
        clock.set(t(20 + 180))
        first = metric(await conversation(client, cid, team), "first_response")
        assert (first["paused"], first["due_at"], first["remaining_seconds"]) == (True, None, 2400)
        assert await tick(db, clock) == 0  # paused: nothing is due, though 1 h passed
        await patch(client, cid, {"status": "open"}, team)
        first = metric(await conversation(client, cid, team), "first_response")
        assert first["paused"] is False
        assert datetime.fromisoformat(first["due_at"]) == t(200 + 40)  # the remainder
        assert datetime.fromisoformat(
            metric(await conversation(client, cid, team), "resolution")["due_at"]
        ) == t(480 + 180)

    async def test_a_snooze_wake_up_resumes_the_clock(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(10))
        await patch(client, cid, {"snoozed_until": t(130).isoformat()}, team)
        clock.set(t(130))
        assert await wake_snoozed(db, clock) == 1
        first = metric(await conversation(client, cid, team), "first_response")
        assert datetime.fromisoformat(first["due_at"]) == t(130 + 50)


class TestResponses:
    async def test_reply_meets_first_response_and_each_customer_message_starts_a_cycle(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        mid, cid = await arrive(db, team.inbox_a, NOW)
        await agent_reply(db, cid, t(20), team.agent_id)
        clock.set(t(30))
        body = await conversation(client, cid, team)
        first = metric(body, "first_response")
        assert (first["status"], first["met_by"]) == ("met", team.agent_id)
        assert datetime.fromisoformat(first["met_at"]) == t(20)
        assert "next_response" not in [m["metric"] for m in body["sla"]["metrics"]]

        second, _ = await arrive(db, team.inbox_a, t(60), in_reply_to=mid)
        clock.set(t(70))
        nxt = metric(await conversation(client, cid, team), "next_response")
        assert (nxt["cycle"], nxt["status"]) == (1, "ok")
        assert datetime.fromisoformat(nxt["due_at"]) == t(90)
        # A further customer message before we answer does not restart the cycle.
        third, _ = await arrive(db, team.inbox_a, t(75), in_reply_to=second)
        nxt = metric(await conversation(client, cid, team), "next_response")
        assert (nxt["cycle"], datetime.fromisoformat(nxt["due_at"])) == (1, t(90))
        # Our answer from a mail client (synced from the mailbox) meets it too.
        await arrive(db, team.inbox_a, t(80), in_reply_to=third, from_team=True)
        nxt = metric(await conversation(client, cid, team), "next_response")
        assert (nxt["status"], nxt["met_by"]) == ("met", None)
        await arrive(db, team.inbox_a, t(100), in_reply_to=third)
        clock.set(t(101))
        nxt = metric(await conversation(client, cid, team), "next_response")
        assert (nxt["cycle"], nxt["status"], nxt["remaining_seconds"]) == (2, "ok", 1740)

    async def test_resolving_meets_everything_and_a_reopening_mail_starts_new_cycles(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        mid, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(30))
        await patch(client, cid, {"status": "resolved"}, team)
        body = await conversation(client, cid, team)
        assert {m["metric"]: m["status"] for m in body["sla"]["metrics"]} == {
            "first_response": "met",
            "resolution": "met",
        }
        await arrive(db, team.inbox_a, t(60), in_reply_to=mid)
        body = await conversation(client, cid, team)
        assert body["status"] == "open"
        resolution = metric(body, "resolution")
        assert (resolution["cycle"], datetime.fromisoformat(resolution["due_at"])) == (2, t(540))
        assert metric(body, "next_response")["cycle"] == 1


class TestTick:
    async def test_warning_and_breach_once_each_with_timeline_and_alerts(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        clock.set(t(49))
        assert await tick(db, clock) == 0
        clock.set(t(50))
        assert await tick(db, clock) == 1
        assert await tick(db, clock) == 0
        assert (
            metric(await conversation(client, cid, team), "first_response")["status"] == "at_risk"
        )
        clock.set(t(61))
        assert await tick(db, clock) == 1
        assert await tick(db, clock) == 0
        assert await sla_events(db, cid) == Counter(
            {("sla.warning", "first_response", 1): 1, ("sla.breached", "first_response", 1): 1}
        )
        first = metric(await conversation(client, cid, team), "first_response")
        assert (first["status"], first["remaining_seconds"]) == ("breached", -60)
        timeline = await client.get(f"/v1/conversations/{cid}/timeline", headers=team.agent_headers)
        kinds = [e["kind"] for e in timeline.json()["items"] if e["type"] == "activity"]
        assert kinds == ["sla_warning", "sla_breached"]
        async with transaction(db) as session:
            alerts = list(await session.scalars(select(Alert).where(Alert.conversation_id == cid)))
        assert sorted(a.kind for a in alerts) == ["sla_breached", "sla_warning"]
        assert {a.data["metric"] for a in alerts} == {"first_response"}

    async def test_a_late_tick_announces_every_due_metric_of_a_conversation_in_order(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        """A worker down for nine hours: both metrics of one conversation are past due,
        each warned then breached, in one tick, with the conversation in every event."""
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW, subject="Printer on fire")
        _, other = await arrive(db, team.inbox_a, t(10))
        clock.set(t(9 * 60))
        assert await tick(db, clock) == 8
        assert await tick(db, clock) == 0
        async with transaction(db) as session:
            events = list(
                await session.scalars(
                    select(Event).where(Event.conversation_id == cid).order_by(Event.id)
                )
            )
            alerts = list(await session.scalars(select(Alert).where(Alert.conversation_id == cid)))
        announced = [(e.type, e.data["metric"]) for e in events if e.type.startswith("sla.")]
        # Each metric's warning comes before its breach.
        for name in ("first_response", "resolution"):
            mine = [kind for kind, metric_name in announced if metric_name == name]
            assert mine == ["sla.warning", "sla.breached"]
        for event in events:
            assert event.data["conversation"]["id"] == cid
            assert event.data["conversation"]["subject"] == "Printer on fire"
            assert event.inbox_id == team.inbox_a
        assert Counter((a.kind, a.data["metric"], a.inbox_id) for a in alerts) == Counter(
            {
                ("sla_warning", "first_response", team.inbox_a): 1,
                ("sla_breached", "first_response", team.inbox_a): 1,
                ("sla_warning", "resolution", team.inbox_a): 1,
                ("sla_breached", "resolution", team.inbox_a): 1,
            }
        )
        assert all(a.message.startswith("SLA ") and "Printer on fire" in a.message for a in alerts)
        detail = await conversation(client, cid, team)
        assert {m["metric"]: m["status"] for m in detail["sla"]["metrics"]} == {
            "first_response": "breached",
            "resolution": "breached",
        }
        assert await sla_events(db, other) == Counter(
            {
                ("sla.warning", "first_response", 1): 1,
                ("sla.breached", "first_response", 1): 1,
                ("sla.warning", "resolution", 1): 1,
                ("sla.breached", "resolution", 1): 1,
            }
        )

    async def test_a_reply_before_due_means_no_breach(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, cid = await arrive(db, team.inbox_a, NOW)
        await agent_reply(db, cid, t(59), team.agent_id)
        clock.set(t(300))
        assert await tick(db, clock) == 0
        assert await sla_events(db, cid) == Counter()

    async def test_list_filters_and_sort_by_due_time(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, late = await arrive(db, team.inbox_a, t(-70), subject="late")  # due t(-10)
        _, risky = await arrive(db, team.inbox_a, t(-55), subject="risky")  # warns t(-5)
        _, fine = await arrive(db, team.inbox_a, t(0), subject="fine")
        _, none = await arrive(db, team.inbox_b, t(0), subject="no policy")

        async def ids(query: str) -> list[str]:
            response = await client.get(f"/v1/conversations?{query}", headers=team.admin_headers)
            assert response.status_code == 200, response.text
            return [c["id"] for c in response.json()["items"]]

        assert await ids("sla=breached") == [late]
        assert await ids("sla=at_risk") == [risky]
        assert await ids("sort=sla_due") == [late, risky, fine, none]
        # Keyset pages walk the same order, the conversation without clocks last.
        first = await client.get(
            "/v1/conversations?sort=sla_due&limit=3", headers=team.admin_headers
        )
        cursor = first.json()["next_cursor"]
        rest = await client.get(
            f"/v1/conversations?sort=sla_due&limit=3&cursor={cursor}", headers=team.admin_headers
        )
        assert [c["id"] for c in rest.json()["items"]] == [none]
        assert await ids(f"sort=sla_due&inbox_id={team.inbox_a}&sla=breached") == [late]
        bad = await client.get("/v1/conversations?sla=late", headers=team.admin_headers)
        assert bad.status_code == 422


class TestMerged:
    async def test_a_merged_away_conversation_announces_nothing(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        _, target = await arrive(db, team.inbox_a, NOW, subject="first")
        _, source = await arrive(db, team.inbox_a, NOW, subject="second")
        response = await client.post(
            f"/v1/conversations/{target}/merge",
            json={"source_id": source},
            headers=team.agent_headers,
        )
        assert response.status_code == 200, response.text
        clock.set(t(120))
        assert await tick(db, clock) == 2  # the target's warning and breach
        assert await sla_events(db, source) == Counter()
        assert await tick(db, clock) == 0
