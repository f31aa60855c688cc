"""Auto-assignment through the real ingest path and the worker job (one process)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import httpx
from sqlalchemy import delete, select

from inbox_service.assignment import service
from inbox_service.assignment.jobs import assign_waiting
from inbox_service.assignment.models import AssignmentRequest
from inbox_service.conversations.jobs import wake_snoozed
from inbox_service.conversations.models import Conversation
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.models import Inbox
from inbox_service.users.models import User
from tests.assignment.support import (
    assignees,
    ingest,
    mail,
    open_loads,
    set_user,
    team_inbox,
    waiting,
)
from tests.support.factories import bearer, make_key, make_user


class TestRoundRobin:
    async def test_30_new_conversations_over_3_agents_give_10_each_and_none_to_the_away(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, agents, away = await team_inbox(session, policy="round_robin", away=1)
        created = await ingest(db, inbox.id, [mail(f"rr{n}") for n in range(30)], now=clock.now())
        assert len(created) == 30
        assert await waiting(db) == 30

        assert await assign_waiting(db, clock) == 30

        got = await assignees(db, created)
        assert Counter(got) == {agent.id: 10 for agent in agents}
        assert away[0].id not in got
        # In turn: the same three, in the same order, ten times over.
        assert got[:3] == sorted(a.id for a in agents)
        assert got == got[:3] * 10
        assert await waiting(db) == 0

    async def test_each_assignment_is_an_event_by_the_system_naming_the_policy(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, _, _ = await team_inbox(session, policy="round_robin")
        [cid] = await ingest(db, inbox.id, [mail("ev1")], now=clock.now())
        await assign_waiting(db, clock)
        async with transaction(db) as session:
            event = await session.scalar(
                select(Event).where(
                    Event.type == "conversation.assigned", Event.conversation_id == cid
                )
            )
        assert event is not None
        assert event.data["actor"] is None
        assert event.data["previous_assignee_id"] is None
        assert event.data["auto_assignment"] == "round_robin"
        assert event.data["conversation"]["assignee_id"] == event.data["assignee_id"]

    async def test_the_turn_continues_across_batches(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, agents, _ = await team_inbox(session, policy="round_robin")
        order = sorted(a.id for a in agents)
        first = await ingest(db, inbox.id, [mail("b1")], now=clock.now())
        await assign_waiting(db, clock)
        second = await ingest(db, inbox.id, [mail("b2"), mail("b3")], now=clock.now())
        await assign_waiting(db, clock)
        assert await assignees(db, [*first, *second]) == order


class TestLeastLoaded:
    async def test_fills_the_least_loaded_first_and_never_beyond_capacity(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, agents, _ = await team_inbox(
                session, policy="least_loaded", capacities=(2, 4, 6)
            )
        # The third agent already holds 5 open conversations.
        busy = await ingest(db, inbox.id, [mail(f"old{n}") for n in range(5)], now=clock.now())
        async with transaction(db) as session:
            for cid in busy:
                conversation = await session.get_one(Conversation, cid)
                conversation.assignee_id = agents[2].id
            await session.execute(delete(AssignmentRequest))  # as if assigned long ago
        created = await ingest(db, inbox.id, [mail(f"ll{n}") for n in range(10)], now=clock.now())

        assert await assign_waiting(db, clock) == 2 + 4 + 1

        loads = await open_loads(db, [a.id for a in agents])
        assert loads == {agents[0].id: 2, agents[1].id: 4, agents[2].id: 6}
        assert (await assignees(db, created)).count(None) == 3
        assert await waiting(db) == 3  # they wait for room

    async def test_ties_alternate(self, db: SessionMaker, clock: FixedClock) -> None:
        async with transaction(db) as session:
            inbox, agents, _ = await team_inbox(session, policy="least_loaded", capacities=(9, 9))
        created = await ingest(db, inbox.id, [mail(f"t{n}") for n in range(4)], now=clock.now())
        await assign_waiting(db, clock)
        order = sorted(a.id for a in agents)
        assert await assignees(db, created) == order * 2


class TestNobodyQualifies:
    async def test_waits_unassigned_and_goes_to_whoever_becomes_available(
        self, db: SessionMaker, clock: FixedClock, client: httpx.AsyncClient
    ) -> None:
        async with transaction(db) as session:
            inbox, _, away = await team_inbox(session, policy="round_robin", capacities=(), away=2)
            key = await make_key(session, await session.get_one(User, away[1].id))
        [cid] = await ingest(db, inbox.id, [mail("w1")], now=clock.now())

        assert await assign_waiting(db, clock) == 0
        assert await assignees(db, [cid]) == [None]
        assert await waiting(db) == 1
        clock.advance(seconds=1)
        assert await assign_waiting(db, clock) == 0  # postponed: not even looked at

        # The agent comes back through the API: the waiting conversation is due at once.
        response = await client.patch(
            f"/v1/users/{away[1].id}", json={"availability": "available"}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        assert await assign_waiting(db, clock) == 1
        assert await assignees(db, [cid]) == [away[1].id]
        assert await waiting(db) == 0

    async def test_capacity_freed_later_is_used_at_the_next_retry(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, [agent], _ = await team_inbox(session, policy="round_robin", capacities=(1,))
        first, second = await ingest(db, inbox.id, [mail("c1"), mail("c2")], now=clock.now())
        assert await assign_waiting(db, clock) == 1
        async with transaction(db) as session:
            (await session.get_one(Conversation, first)).status = "resolved"
        assert await assign_waiting(db, clock) == 0  # not due yet
        clock.advance(service.RETRY)
        assert await assign_waiting(db, clock) == 1
        assert await assignees(db, [second]) == [agent.id]

    async def test_a_new_member_picks_up_waiting_work(
        self, db: SessionMaker, clock: FixedClock, client: httpx.AsyncClient
    ) -> None:
        async with transaction(db) as session:
            inbox, _, _ = await team_inbox(session, policy="least_loaded", capacities=())
        [cid] = await ingest(db, inbox.id, [mail("nm1")], now=clock.now())
        await assign_waiting(db, clock)
        async with transaction(db) as session:
            admin = await make_user(session, role="admin")
            newcomer = await make_user(session)
            key = await make_key(session, admin)
        response = await client.put(
            f"/v1/inboxes/{inbox.id}/members/{newcomer.id}", headers=bearer(key)
        )
        assert response.status_code == 201
        assert await assign_waiting(db, clock) == 1
        assert await assignees(db, [cid]) == [newcomer.id]


class TestWhatIsAutoAssigned:
    async def test_nothing_when_the_inbox_policy_is_off(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, _, _ = await team_inbox(session, policy="off")
        [cid] = await ingest(db, inbox.id, [mail("off1")], now=clock.now())
        assert await waiting(db) == 0
        assert await assign_waiting(db, clock) == 0
        assert await assignees(db, [cid]) == [None]

    async def test_turning_it_off_drops_what_waits(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, _, _ = await team_inbox(session, policy="round_robin")
        [cid] = await ingest(db, inbox.id, [mail("drop1")], now=clock.now())
        async with transaction(db) as session:
            (await session.get_one(Inbox, inbox.id)).auto_assignment = "off"
        await assign_waiting(db, clock)
        assert await assignees(db, [cid]) == [None]
        assert await waiting(db) == 0

    async def test_a_conversation_someone_assigned_meanwhile_is_left_alone(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, agents, _ = await team_inbox(session, policy="round_robin")
        [cid] = await ingest(db, inbox.id, [mail("m1")], now=clock.now())
        chosen = sorted(a.id for a in agents)[-1]
        async with transaction(db) as session:
            (await session.get_one(Conversation, cid)).assignee_id = chosen
        assert await assign_waiting(db, clock) == 0
        assert await assignees(db, [cid]) == [chosen]
        assert await waiting(db) == 0

    async def test_a_reply_to_an_existing_conversation_is_not_a_new_one(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        async with transaction(db) as session:
            inbox, _, _ = await team_inbox(session, policy="round_robin")
        await ingest(db, inbox.id, [mail("r1")], now=clock.now())
        await assign_waiting(db, clock)
        assert (
            await ingest(
                db, inbox.id, [mail("r2", in_reply_to="r1@customer.test")], now=clock.now()
            )
            == []
        )
        assert await waiting(db) == 0


class TestReopened:
    async def _resolved_with(self, db: SessionMaker, clock: FixedClock, policy: str) -> str:
        async with transaction(db) as session:
            inbox, _, _ = await team_inbox(session, policy=policy)
        [cid] = await ingest(db, inbox.id, [mail("ro1")], now=clock.now())
        await assign_waiting(db, clock)
        async with transaction(db) as session:
            (await session.get_one(Conversation, cid)).status = "resolved"
        return cid

    async def test_a_customer_reply_while_the_assignee_is_away_moves_it_to_someone_present(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        cid = await self._resolved_with(db, clock, "round_robin")
        [owner] = await assignees(db, [cid])
        assert owner is not None
        await set_user(db, owner, availability="away")
        clock.advance(minutes=5)
        await ingest(
            db,
            await _inbox_of(db, cid),
            [mail("ro2", in_reply_to="ro1@customer.test")],
            now=clock.now(),
        )
        assert await assign_waiting(db, clock) == 1
        [new_owner] = await assignees(db, [cid])
        assert new_owner not in (None, owner)
        async with transaction(db) as session:
            event = await session.scalar(
                select(Event)
                .where(Event.type == "conversation.assigned", Event.conversation_id == cid)
                .order_by(Event.id.desc())
            )
        assert event is not None
        assert event.data["previous_assignee_id"] == owner

    async def test_a_customer_reply_while_the_assignee_is_present_keeps_them(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        cid = await self._resolved_with(db, clock, "least_loaded")
        [owner] = await assignees(db, [cid])
        clock.advance(minutes=5)
        await ingest(
            db,
            await _inbox_of(db, cid),
            [mail("ro3", in_reply_to="ro1@customer.test")],
            now=clock.now(),
        )
        assert await waiting(db) == 0
        assert await assignees(db, [cid]) == [owner]

    async def test_a_snooze_ending_while_the_assignee_is_away_moves_it(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        cid = await self._resolved_with(db, clock, "round_robin")
        [owner] = await assignees(db, [cid])
        assert owner is not None
        async with transaction(db) as session:
            conversation = await session.get_one(Conversation, cid)
            conversation.status = "snoozed"
            conversation.snoozed_until = clock.now() + timedelta(hours=1)
        await set_user(db, owner, availability="away")
        clock.advance(hours=2)
        assert await wake_snoozed(db, clock) == 1
        assert await assign_waiting(db, clock) == 1
        assert (await assignees(db, [cid]))[0] not in (None, owner)


async def _inbox_of(db: SessionMaker, conversation_id: str) -> str:
    async with transaction(db) as session:
        return (await session.get_one(Conversation, conversation_id)).inbox_id
