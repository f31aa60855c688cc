"""Auto-assignment under concurrency, on real commits: concurrent assigners in one
process, and two `inbox-service worker` processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from inbox_service.assignment import service
from inbox_service.assignment.jobs import assign_waiting
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import create_engine, create_sessionmaker, transaction
from inbox_service.inboxes.models import Inbox
from tests.assignment.support import assignees, ingest, mail, open_loads, team_inbox, waiting
from tests.conftest import CommittedDb
from tests.support.factories import make_inbox
from tests.support.worker import wait_for, worker_process


async def until_settled(sm_run: Callable[[], Awaitable[int]], *, tasks: int) -> None:
    """Run `tasks` assigners at once, again and again, until a round assigns nothing."""
    while sum(await asyncio.gather(*(sm_run() for _ in range(tasks)))) > 0:
        pass


class TestConcurrentAssigners:
    async def test_50_concurrent_conversations_put_nobody_over_capacity(
        self, committed_db: CommittedDb, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Three agents (and one away) shared by five inboxes: 50 conversations, room for
        # 5 + 10 + 15.
        clock = FixedClock(datetime(2026, 3, 2, 9, tzinfo=UTC))
        engine = create_engine(committed_db.url, pool_size=12)
        sm = create_sessionmaker(engine)
        try:
            async with transaction(sm) as session:
                first, agents, away = await team_inbox(
                    session, policy="least_loaded", capacities=(5, 10, 15), away=1
                )
                inboxes = [first]
                for n in range(4):
                    inbox = await make_inbox(session, members=(*agents, *away))
                    inbox.auto_assignment = "round_robin" if n % 2 else "least_loaded"
                    inboxes.append(inbox)
            monkeypatch.setattr(service, "BATCH", 3)  # many short transactions interleave

            async def arrive(n: int) -> list[str]:
                inbox = inboxes[n % len(inboxes)]
                return await ingest(sm, inbox.id, [mail(f"c{n}")], now=clock.now())

            async def assign() -> int:
                return await assign_waiting(sm, clock)

            arrivals = asyncio.gather(*(arrive(n) for n in range(50)))
            assigners = asyncio.gather(*(assign() for _ in range(4)))
            created = [cid for batch in await arrivals for cid in batch]
            await assigners
            await until_settled(assign, tasks=4)

            assert len(created) == 50
            loads = await open_loads(sm, [a.id for a in (*agents, *away)])
            assert loads == {agents[0].id: 5, agents[1].id: 10, agents[2].id: 15, away[0].id: 0}
            assert (await assignees(sm, created)).count(None) == 20
            assert await waiting(sm) == 20
        finally:
            await engine.dispose()

    async def test_round_robin_stays_exact_with_concurrent_assigners(
        self, committed_db: CommittedDb, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clock = FixedClock(datetime(2026, 3, 2, 9, tzinfo=UTC))
        sm = committed_db.sessionmaker
        async with transaction(sm) as session:
            inbox, agents, away = await team_inbox(session, policy="round_robin", away=1)
        monkeypatch.setattr(service, "BATCH", 1)

        async def assign() -> int:
            return await assign_waiting(sm, clock)

        arrivals = asyncio.gather(
            *(ingest(sm, inbox.id, [mail(f"r{n}")], now=clock.now()) for n in range(30))
        )
        created = [cid for batch in await arrivals for cid in batch]
        await until_settled(assign, tasks=4)

        got = Counter(await assignees(sm, created))
        assert got == {agent.id: 10 for agent in agents}
        assert away[0].id not in got


class TestTwoWorkerProcesses:
    async def test_round_robin_gives_10_each_for_30_conversations(
        self, committed_db: CommittedDb
    ) -> None:
        sm = committed_db.sessionmaker
        async with transaction(sm) as session:
            inbox, agents, away = await team_inbox(session, policy="round_robin", away=1)
        async with worker_process(committed_db.url) as one, worker_process(committed_db.url):
            created: list[str] = []
            for n in range(30):  # mail keeps arriving while both workers run
                created += await ingest(sm, inbox.id, [mail(f"w{n}")], now=datetime.now(UTC))
                await asyncio.sleep(0.02)

            async def all_assigned() -> bool:
                return None not in await assignees(sm, created)

            await wait_for(one, all_assigned, "30 assignments", within=30)
        got = Counter(await assignees(sm, created))
        assert got == {agent.id: 10 for agent in agents}
        assert away[0].id not in got
        async with transaction(sm) as session:
            assert (await session.get_one(Inbox, inbox.id)).auto_assignment == "round_robin"

    async def test_a_worker_killed_mid_way_loses_nothing_and_the_turn_stays_exact(
        self, committed_db: CommittedDb
    ) -> None:
        sm = committed_db.sessionmaker
        async with transaction(sm) as session:
            inbox, agents, _ = await team_inbox(session, policy="round_robin")
        created: list[str] = []

        async def arrive(numbers: range) -> None:
            for n in numbers:
                created.extend(await ingest(sm, inbox.id, [mail(f"k{n}")], now=datetime.now(UTC)))
                await asyncio.sleep(0.01)

        async def some_assigned() -> bool:
            return any(await assignees(sm, created))

        async def all_assigned() -> bool:
            return None not in await assignees(sm, created)

        async with worker_process(committed_db.url) as first:
            await arrive(range(15))
            await wait_for(first, some_assigned, "a first assignment", within=30)
            first.process.kill()  # wherever it is: between or inside transactions
            await first.exit_code(within=10)
        await arrive(range(15, 30))
        async with worker_process(committed_db.url) as second:
            await wait_for(second, all_assigned, "30 assignments", within=30)
        assert Counter(await assignees(sm, created)) == {agent.id: 10 for agent in agents}
        assert await waiting(sm) == 0
