"""Exactly once across workers: two `inbox-service worker` processes tick over the same
conversations, many of which crossed the warning and the breach thresholds at once. Each
warning and breach is in the event log once per conversation, metric and cycle, and
reaches a webhook receiver once.

The workers run on the real clock, so the conversations are made with received times in
the past (the due times are computed, never waited for); the test polls with timeouts.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from inbox_service.alerts.models import Alert
from inbox_service.conversations.models import Activity, Conversation
from inbox_service.core.clock import FixedClock
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import transaction
from inbox_service.core.events import Event
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.sla import hooks, jobs, policies
from inbox_service.sla.models import ConversationSla
from inbox_service.sla.schemas import PolicyIn
from inbox_service.webhooks import service as webhooks
from inbox_service.webhooks.schemas import WebhookIn
from inbox_service.webhooks.service import UrlPolicy
from tests.conftest import CommittedDb
from tests.sla.support import mail
from tests.support.factories import make_inbox
from tests.support.worker import STOP_TIMEOUT, wait_for, worker_process
from tests.webhooks.receiver import Receiver

WARNED_ONLY = 700  # 100 min old: past the warning (90 min), not yet due (120 min)
BREACHED = 700  # 3 h old: past both, announced together
BATCH = 100


async def test_two_workers_announce_each_alarm_once(
    committed_db: CommittedDb, receiver: Receiver
) -> None:
    key = generate_key()
    sm = committed_db.sessionmaker
    now = datetime.now(UTC)
    async with transaction(sm) as session:
        inbox = await make_inbox(session, now=now)
        await policies.create_policy(
            session,
            PolicyIn.model_validate(
                {
                    "name": "2 h",
                    "inbox_ids": [inbox.id],
                    "targets": {"normal": {"first_response": 7200, "resolution": 86_400}},
                    "warn_before": 1800,
                }
            ),
            now=now,
        )
        await webhooks.create_webhook(
            session,
            WebhookIn(url=receiver.url(), events=["sla.warning", "sla.breached"]),
            now=now,
            cipher=CredentialCipher(key),
            policy=UrlPolicy(allow_private=True),
        )
    context = InboxContext(inbox_id=inbox.id, team_addresses=frozenset())
    ages = [timedelta(minutes=100)] * WARNED_ONLY + [timedelta(hours=3)] * BREACHED
    for start in range(0, len(ages), BATCH):
        items = []
        for n, age in enumerate(ages[start : start + BATCH], start):
            _, raw = mail(
                now - age, sender=f"Customer {n} <c{n}@customer.test>", subject=f"Case {n}"
            )
            items.append(Incoming(raw=raw, parsed=parse_message(raw)))
        async with transaction(sm) as session:
            await store_batch(session, context, items, now=now)
    expected = len(ages) + BREACHED  # a warning each, a breach for the older ones

    async def events_by_key() -> Counter[tuple[str | None, str, str, int]]:
        async with transaction(sm) as session:
            rows = await session.execute(
                select(Event.conversation_id, Event.type, Event.data).where(
                    Event.type.in_(["sla.warning", "sla.breached"])
                )
            )
            return Counter((cid, kind, d["metric"], d["cycle"]) for cid, kind, d in rows)

    async def all_delivered() -> bool:
        return (
            len(receiver.requests) >= expected and sum((await events_by_key()).values()) >= expected
        )

    env = {"INBOX_SECRET_KEY": key, "WEBHOOK_ALLOW_PRIVATE": "1", "IMAP_RESCAN_SECONDS": "60"}
    async with (
        worker_process(committed_db.url, env) as first,
        worker_process(committed_db.url, env) as second,
    ):
        await wait_for(first, all_delivered, "every alarm delivered", within=90)
        # Both keep ticking a little longer: nothing more may come.
        for _ in range(3):
            await wait_for(second, all_delivered, "still delivered", within=5)
        for child in (first, second):
            child.process.send_signal(signal.SIGTERM)
        for child in (first, second):
            assert await child.exit_code(within=STOP_TIMEOUT) == 0, await child.output()

    counted = await events_by_key()
    assert sum(counted.values()) == expected
    assert set(counted.values()) == {1}  # once per conversation, metric, cycle and kind
    kinds = Counter(kind for _, kind, _, _ in counted)
    assert kinds == {"sla.warning": len(ages), "sla.breached": BREACHED}

    received = [json.loads(r.body) for r in receiver.requests]
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == len(receiver.requests)
    at_receiver = Counter(
        (body["data"]["conversation"]["id"], body["type"], body["data"]["metric"])
        for body in received
    )
    assert len(at_receiver) == expected
    assert set(at_receiver.values()) == {1}

    async with transaction(sm) as session:
        alerts = await session.scalar(
            select(func.count()).where(Alert.kind.in_(["sla_warning", "sla_breached"]))
        )
        activities = await session.scalar(
            select(func.count()).where(Activity.kind.in_(["sla_warning", "sla_breached"]))
        )
    assert (alerts, activities) == (expected, expected)


async def test_concurrent_ticks_in_process_announce_each_once(committed_db: CommittedDb) -> None:
    """Four ticks on their own connections, small batches, all racing over 400 due
    conversations on a FixedClock: 800 alarms, each once, no error."""
    sm = committed_db.sessionmaker
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    async with transaction(sm) as session:
        inbox = await make_inbox(session, now=start)
        await policies.create_policy(
            session,
            PolicyIn.model_validate(
                {
                    "name": "1 h",
                    "inbox_ids": [inbox.id],
                    "targets": {"normal": {"first_response": 3600}},
                    "warn_before_percent": 50,
                }
            ),
            now=start,
        )
        context = InboxContext(inbox_id=inbox.id, team_addresses=frozenset())
        items = []
        for n in range(400):
            _, raw = mail(start, sender=f"C {n} <c{n}@customer.test>", subject=f"Case {n}")
            items.append(Incoming(raw=raw, parsed=parse_message(raw)))
        await store_batch(session, context, items, now=start)
    clock = FixedClock(start + timedelta(hours=2))

    async def drain() -> int:
        total = 0
        while (fired := await jobs.tick(sm, clock, limit=25)) > 0:
            total += fired
        return total

    results = await asyncio.gather(*(drain() for _ in range(4)))
    assert sum(results) == 800
    assert sum(1 for r in results if r > 0) >= 2  # they really shared the work
    async with transaction(sm) as session:
        counted = Counter(
            (cid, kind)
            for cid, kind in await session.execute(
                select(Event.conversation_id, Event.type).where(Event.type.like("sla.%"))
            )
        )
    assert len(counted) == 800
    assert set(counted.values()) == {1}


async def test_a_reply_racing_the_breach_never_both_win(committed_db: CommittedDb) -> None:
    """Replies and ticks at the due instant, concurrently on their own connections: a
    conversation gets a breach only if the tick came first; none is breached after its
    reply met the target, and none twice."""
    sm = committed_db.sessionmaker
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    async with transaction(sm) as session:
        inbox = await make_inbox(session, now=start)
        await policies.create_policy(
            session,
            PolicyIn.model_validate(
                {
                    "name": "1 h",
                    "inbox_ids": [inbox.id],
                    "targets": {"normal": {"first_response": 3600}},
                }
            ),
            now=start,
        )
        context = InboxContext(inbox_id=inbox.id, team_addresses=frozenset())
        items = []
        for n in range(60):
            _, raw = mail(start, sender=f"C {n} <r{n}@customer.test>", subject=f"Race {n}")
            items.append(Incoming(raw=raw, parsed=parse_message(raw)))
        await store_batch(session, context, items, now=start)
        ids = list(
            await session.scalars(select(Conversation.id).where(Conversation.inbox_id == inbox.id))
        )
    due = start + timedelta(hours=1)
    clock = FixedClock(due)

    async def reply(cid: str) -> None:
        async with transaction(sm) as session:
            found = await session.get(Conversation, cid, with_for_update=True)
            assert found is not None
            await hooks.on_agent_reply(session, found, at=due, user_id=None)

    async def ticks() -> None:
        for _ in range(20):
            await jobs.tick(sm, clock)
            await asyncio.sleep(0)

    await asyncio.gather(ticks(), ticks(), *(reply(cid) for cid in ids))
    await jobs.tick(sm, clock)
    async with transaction(sm) as session:
        breached_at = dict(
            (
                await session.execute(
                    select(Event.conversation_id, Event.id).where(Event.type == "sla.breached")
                )
            ).all()
        )
        rows = (
            await session.execute(
                select(
                    ConversationSla.conversation_id,
                    ConversationSla.met_at,
                    ConversationSla.breached_at,
                ).where(ConversationSla.metric == "first_response")
            )
        ).all()
        breaches = Counter(
            cid
            for (cid,) in await session.execute(
                select(Event.conversation_id).where(Event.type == "sla.breached")
            )
        )
    assert all(count == 1 for count in breaches.values())
    assert len(rows) == len(ids)
    for cid, met_at, marked in rows:
        assert met_at == due  # every reply went through
        # Breached only where the tick marked it before the reply (the reply then meets it
        # late); never an event without the mark.
        assert (cid in breached_at) == (marked is not None)
