"""Threading through ingest's store (`store_batch`), for any graph of reply headers.

Generated: a handful of messages whose In-Reply-To / References point at each other
(cycles and self-references included), at ids that never arrive, or nowhere; some without
a Message-ID; arriving in any order, some twice, cut into batches at random.

What the design promises (ingest/store.py, README "Threading") and is checked here:

* never an exception; every distinct message stored exactly once, duplicates counted;
* a reply lands with its parent when the parent is known (stored before it, in an earlier
  batch or earlier in the same one);
* a message without reply headers joins a reply to it that arrived first;
* when every parent arrives before its replies, the threads are fully determined by the
  headers: the same whatever the order, batching and duplicates (checked against a model
  of the rules). Arrival order beyond that is NOT promised to give the same threads:
  conversations are never merged automatically, so a grandchild stored before the
  message that links it to its grandparent keeps its own conversation.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from inbox_service.conversations.models import Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, dedupe_key_of, store_batch
from tests.properties.conftest import PROPERTIES
from tests.support.factories import make_inbox

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
GHOSTS = ["ghost0@elsewhere.test", "ghost1@elsewhere.test"]


@dataclass(frozen=True)
class Mail:
    index: int
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    sender: str

    def raw(self) -> bytes:
        lines = [
            f"From: Customer <{self.sender}>",
            "To: support@example.com",
            f"Subject: {self.subject}",
            "Date: Mon, 02 Mar 2026 10:00:00 +0000",
        ]
        if self.message_id:
            lines.append(f"Message-ID: <{self.message_id}>")
        if self.in_reply_to:
            lines.append(f"In-Reply-To: <{self.in_reply_to}>")
        if self.references:
            lines.append("References: " + " ".join(f"<{r}>" for r in self.references))
        return ("\r\n".join(lines) + f"\r\n\r\nbody {self.index}\r\n").encode()


def mid(i: int) -> str:
    return f"m{i}@customer.test"


@st.composite
def mail_graphs(draw: st.DrawFn, *, parents_first: bool) -> list[Mail]:
    """Messages 0..n-1. With `parents_first`, a message only points at earlier ones (and
    ghosts): a DAG whose index order is a topological order."""
    n = draw(st.integers(1, 7))
    mails = []
    for i in range(n):
        targets = [mid(j) for j in (range(i) if parents_first else range(n))] + GHOSTS
        has_id = parents_first or draw(st.integers(0, 5)) > 0
        subject_prefix = "" if parents_first else draw(st.sampled_from(["", "", "Re: "]))
        mails.append(
            Mail(
                index=i,
                message_id=mid(i) if has_id else None,
                in_reply_to=draw(st.none() | st.sampled_from(targets)),
                references=tuple(draw(st.lists(st.sampled_from(targets), max_size=4))),
                subject=f"{subject_prefix}Topic {draw(st.integers(0, 2))}",
                sender=draw(st.sampled_from(["ana@customer.test", "bo@customer.test"])),
            )
        )
    return mails


@st.composite
def arrivals(draw: st.DrawFn, mails: list[Mail], *, parents_first: bool) -> list[list[Mail]]:
    """An arrival: an order (any, or one that keeps parents before replies), some mail
    fetched twice (a later copy of the same bytes), cut into batches."""
    if parents_first:
        order: list[Mail] = []
        waiting = list(mails)
        while waiting:  # Kahn's algorithm, choosing among the ready ones
            known = {m.message_id for m in order}
            ready = [
                m
                for m in waiting
                if all(
                    p in known or p in GHOSTS
                    for p in (*m.references, *([m.in_reply_to] if m.in_reply_to else []))
                )
            ]
            pick = draw(st.sampled_from(ready))
            order.append(pick)
            waiting.remove(pick)
    else:
        order = list(draw(st.permutations(mails)))
    for mail in draw(st.lists(st.sampled_from(mails), max_size=3)):
        at = draw(st.integers(order.index(mail) + 1, len(order)))
        order.insert(at, mail)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=3)))
    bounds = [0, *[c for c in cuts if c < len(order)], len(order)]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if a < b]


@dataclass
class Outcome:
    """Per generated message index: its conversation; and the counts store_batch reported."""

    conversation: dict[int, str] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    rows_per_key: dict[str, int] = field(default_factory=dict)


async def ingest(db: SessionMaker, batches: list[list[Mail]]) -> Outcome:
    async with transaction(db) as session:
        inbox = await make_inbox(session)
    context = InboxContext(inbox_id=inbox.id, team_addresses=frozenset({inbox.address}))
    outcome = Outcome()
    keys: dict[str, int] = {}
    for batch in batches:
        items = [Incoming(raw=m.raw(), parsed=parse_message(m.raw())) for m in batch]
        for mail, item in zip(batch, items, strict=True):
            keys[dedupe_key_of(item)] = mail.index
        async with transaction(db) as session:
            result = await store_batch(session, context, items, now=NOW)
        outcome.stored += result.stored
        outcome.duplicates += result.duplicates
    async with transaction(db) as session:
        rows = (
            await session.execute(
                select(Message.dedupe_key, Message.conversation_id).where(
                    Message.inbox_id == inbox.id
                )
            )
        ).all()
    for key, conversation_id in rows:
        outcome.rows_per_key[key] = outcome.rows_per_key.get(key, 0) + 1
        assert conversation_id is not None, key
        outcome.conversation[keys[key]] = conversation_id
    return outcome


def partition(conversation: dict[int, str]) -> set[frozenset[int]]:
    groups: dict[str, set[int]] = defaultdict(set)
    for index, conversation_id in conversation.items():
        groups[conversation_id].add(index)
    return {frozenset(g) for g in groups.values()}


def model_threads(mails: list[Mail]) -> set[frozenset[int]]:
    """The rules of ingest/store.py for parent-first arrival: In-Reply-To if that message
    is known, else the latest known of References, else a new conversation. On the headers
    as parsed (the parser drops repeated ids, keeping the first: a repeat is a loop)."""
    by_id = {m.message_id: m.index for m in mails}
    root: dict[int, int] = {}
    for m in mails:  # index order is a topological order
        parsed = parse_message(m.raw())
        parents = [p for p in reversed(parsed.in_reply_to) if p in by_id][:1]
        parents += [r for r in reversed(parsed.references) if r in by_id]
        root[m.index] = root[by_id[parents[0]]] if parents else m.index
    return partition({i: str(r) for i, r in root.items()})


@settings(PROPERTIES, max_examples=200)
@given(data=st.data())
async def test_any_arrival_stores_each_message_once_and_replies_find_known_parents(
    db: SessionMaker, data: st.DataObject
) -> None:
    mails = data.draw(mail_graphs(parents_first=False))
    batches = data.draw(arrivals(mails, parents_first=False))
    outcome = await ingest(db, batches)

    arrived = [m for batch in batches for m in batch]
    first_at = {m.index: arrived.index(m) for m in mails}
    assert set(outcome.conversation) == {m.index for m in mails}
    assert set(outcome.rows_per_key.values()) == {1}
    assert outcome.stored == len(mails)
    assert outcome.duplicates == len(arrived) - len(mails)

    by_id = {m.message_id: m for m in mails if m.message_id}
    for m in mails:
        parent = by_id.get(m.in_reply_to) if m.in_reply_to else None
        if parent is not None and parent is not m and first_at[parent.index] < first_at[m.index]:
            assert outcome.conversation[m.index] == outcome.conversation[parent.index], (
                "a reply must land with its known parent",
                m,
                parent,
            )
        if m.message_id and not m.in_reply_to and not m.references:
            children = [
                c
                for c in mails
                if first_at[c.index] < first_at[m.index]
                and m.message_id in (c.in_reply_to, *c.references)
            ]
            if children:
                assert outcome.conversation[m.index] in {
                    outcome.conversation[c.index] for c in children
                }, ("a parent must join a reply that arrived before it", m, children)


@settings(PROPERTIES, max_examples=100)
@given(data=st.data())
async def test_parent_first_arrival_gives_the_same_threads_whatever_the_order(
    db: SessionMaker, data: st.DataObject
) -> None:
    mails = data.draw(mail_graphs(parents_first=True))
    expected = model_threads(mails)
    for _ in range(2):
        batches = data.draw(arrivals(mails, parents_first=True))
        outcome = await ingest(db, batches)
        assert partition(outcome.conversation) == expected, batches
