"""API benchmark: `GET /v1/conversations` under load, against the same SQL run bare.

    uv run python bench/api.py [--conversations 100000] [--messages 1000000] [--rate 200]
                               [--seconds 30] [--api-workers 1]

Everything runs on 127.0.0.1 in a temp dir, and is stopped and removed at the end (also on
Ctrl-C or an error):

1. seed: a throwaway PostgreSQL (EmbeddedPostgres, fast=True) migrated to head, then
   ~20 inboxes, ~50 agents with their memberships, ~30k contacts, the conversations (status
   mostly resolved, priorities, assignees incl. none, tags on ~20 %, waiting_since on the
   open ones, last activity over a year) and their messages, all with asyncpg COPY (the
   secondary indexes are dropped for the load and rebuilt from their own definitions);
   then VACUUM ANALYZE. An admin key (`bootstrap_admin`) and an agent key (an agent who
   is a member of three inboxes) are made through the service's own functions;
2. the mix: realistic list requests (filters, sorts, agent and admin), and the SQL each
   runs, captured by calling the service's own code (authenticate, list_conversations) on
   a SQLAlchemy engine with a `before_cursor_execute` hook;
3. the API as deployed: `python -m inbox_service serve --workers N` (DB_POOL_SIZE=20,
   RATE_LIMIT_PER_MINUTE=0, LOG_LEVEL=WARNING), driven by a second process (this file with
   `--load-worker`: keep-alive HTTP/1.1 on raw asyncio streams, open loop, latency
   counted from the scheduled send time): a
   warm-up, the main run at `--rate` for `--seconds`, a step test that raises the rate
   until p99 > 50 ms, errors or a rate it cannot keep, and a closed-loop saturation run
   with each of `--concurrency` connections (8 and 16: two API processes get an even
   share of 16 more often than of 8; the best counts);
4. bare: the statements a request sends (its page with the tags; a `q=` search sends the
   planner's estimate and a bounded count first; the key check is cached by the API)
   replayed through an asyncpg pool of each of `--concurrency` connections, as fast as they
   go; the ratio of the best of each, API/bare;
5. EXPLAIN (ANALYZE, BUFFERS) of every list query of the mix (first page and a cursor
   page): the access path per table, Seq Scans on the big tables flagged.

Rates are wall-clock; the machine is shared, so read the ratios (same run) and the load
average printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    Stopped,
    cpu_ticks,
    descendants,
    free_port,
    load_average,
    on_sigterm,
    percentile,
    say,
    stop_process,
    tail,
    timed,
)

from inbox_service.core.db import plain_dsn

ROOT = Path(__file__).resolve().parents[1]
P99_TARGET_MS = 50.0
RATIO_TARGET = 0.5
PAGE = 50
CHUNK = 2000  # conversations per COPY batch
STEP_RATES = (50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1300, 1600, 2000)
REQUEST_TIMEOUT_S = 10.0
ERRORS = {"-1": "timeout", "-2": "connection", "-3": "dropped (64 in flight)"}
BIG_TABLES = {"conversations", "messages", "conversation_tags", "contacts"}

# -- small helpers ----------------------------------------------------------------------------


# -- 1. seed ----------------------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    return text.split()


FIRST = words_of(
    "Anna Ben Carla David Emma Felix Grace Hugo Ines Jonas Kira Liam Mia Noah Olga Paul "
    "Quinn Rosa Sam Tara Umar Vera Will Xenia Yann Zoe Ali Bea Chen Dara Eli Fay Gus Hana "
    "Ivan Jill Kai Lena Marc Nina"
)
LAST = words_of(
    "Smith Jones Brown Garcia Miller Davis Lopez Wilson Moore Taylor Anderson Thomas Martin "
    "Lee White Harris Clark Lewis Walker Young King Wright Scott Green Baker Adams Nelson Hill "
    "Campbell Mitchell Roberts Carter Phillips Evans Turner Torres Parker Collins Edwards Stewart"
)
DOMAINS = words_of(
    "gmail.com outlook.com yahoo.com icloud.com proton.me acme-corp.com globex.io "
    "initech.net umbrella.org hooli.com"
)
# Support mail vocabulary: function words, then topical words spread among ~3000 made-up
# words (names, products, jargon), with Zipf weights by rank; RARE words are sprinkled thinly.
FUNCTION = words_of(
    "the to and a i my you is for it of on in please thanks hello hi we can not have your "
    "with this that be help but was me are would just get still again since"
)
TOPICAL = words_of(
    "order account issue invoice payment shipping delivery password login error app update "
    "cancel subscription charge card billing address package tracking number week today "
    "refund yesterday problem working broken cannot access email reset link received sent "
    "support team customer service reply ticket request question product price plan upgrade "
    "downgrade trial export import data report dashboard settings profile notification phone "
    "mobile browser chrome firefox safari windows mac android iphone screen page button crash "
    "slow timeout sync missing duplicate wrong damaged return exchange warranty replacement "
    "discount coupon code tax vat receipt statement month year renewal contract"
)
RARE = words_of(
    "quokka zephyr marzipan obsidian tamarind saffron juniper vellum cobalt lanolin "
    "pemmican quinoa rhubarb sorrel turmeric umber verdigris wolfram xenon yarrow"
)


def vocabulary(seed: int) -> tuple[list[str], list[float]]:
    """(words, cumulative weights): "refund" lands near rank 90, in ~5 % of messages."""
    rng = new_rng(seed)
    taken = set(FUNCTION) | set(TOPICAL) | set(RARE) | {"refnud"}
    made_up: list[str] = []
    while len(made_up) < 3000:
        word = "".join(
            rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))
        )
        if word not in taken:
            taken.add(word)
            made_up.append(word)
    ranked = list(FUNCTION)
    for i, word in enumerate(made_up):
        if i % 2 == 0 and i // 2 < len(TOPICAL):
            ranked.append(TOPICAL[i // 2])
        ranked.append(word)
    weights = [1 / (rank + 3) for rank in range(len(ranked))]
    ranked += RARE
    weights += [0.00005] * len(RARE)
    return ranked, cumulative(weights)


SUBJECTS = (
    "Problem with order {order}",
    "Refund request for {order}",
    "Where is my package? {order}",
    "Cannot log in to my account",
    "Password reset link not working",
    "Question about my invoice",
    "Charged twice this month",
    "Cancel my subscription",
    "App crashes on startup",
    "Upgrade to the business plan",
    "Wrong item delivered ({order})",
    "Damaged package {order}",
    "VAT number on receipts",
    "Export of my data",
    "Feature request: dark mode",
    "Sync is very slow",
    "Coupon code does not work",
    "Change of billing address",
    "Warranty claim for {order}",
    "Notifications stopped on mobile",
)
TAGS = {  # name: weight among tagged conversations
    "billing": 20,
    "bug": 14,
    "refund": 12,
    "shipping": 12,
    "vip": 8,
    "feature-request": 8,
    "account": 8,
    "onboarding": 5,
    "follow-up": 5,
    "partner": 3,
    "legal": 2,
    "spam": 3,
}
STATUSES = {"resolved": 74, "open": 12, "pending": 9, "snoozed": 5}
PRIORITIES = {"normal": 66, "low": 10, "high": 17, "urgent": 7}
ASSIGNED_SHARE = {"resolved": 0.92, "open": 0.6, "pending": 0.85, "snoozed": 0.85}
N_INBOXES = 20
N_AGENTS = 50
TEAM_DOMAIN = "support.example.com"

CONVERSATION_COLUMNS = (
    "id",
    "inbox_id",
    "contact_id",
    "subject",
    "base_subject",
    "thread_token",
    "status",
    "priority",
    "assignee_id",
    "snoozed_until",
    "message_count",
    "snippet",
    "last_message_at",
    "waiting_since",
    "version",
    "created_at",
    "updated_at",
)
MESSAGE_COLUMNS = (
    "id",
    "inbox_id",
    "conversation_id",
    "direction",
    "dedupe_key",
    "message_id",
    "in_reply_to",
    "references",
    "parent_ids",
    "thread_index_guid",
    "subject",
    "from_name",
    "from_address",
    "to",
    "cc",
    "reply_to",
    "sent_at",
    "received_at",
    "created_at",
    "text_body",
    "html_body",
    "snippet",
    "threaded_by",
    "auto_kind",
    "parse_status",
    "parse_error",
    "size",
    "raw_sha256",
)
TAG_COLUMNS = ("conversation_id", "tag_id", "created_at")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_rng(seed: int) -> random.Random:
    """Seeded, reproducible randomness for data and choices, not for secrets."""
    return random.Random(seed)  # noqa: S311


def fake_id(prefix: str, when: datetime, rng: random.Random) -> str:
    """A ULID-shaped id (time first, like the service's), cheaper than `new_id`."""
    ms = int(when.timestamp() * 1000)
    head = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
    return f"{prefix}_{head}{rng.getrandbits(80):020X}"[: len(prefix) + 27]


def order_number(n: int) -> str:
    return f"ORD-{(n * 7919 + 104729) % 900000 + 100000}"


def cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


@dataclass
class Plan:
    """What every generator thread needs: ids made up front, weights, counts."""

    seed: int
    now: datetime
    inbox_ids: list[str]
    inbox_names: list[str]
    inbox_cum: list[float]
    members: dict[str, list[str]]
    agent_emails: dict[str, tuple[str, str]]  # user id: (name, email)
    contacts: list[tuple[str, str, str]]  # (id, email, name)
    tag_ids: list[str]
    tag_cum: list[float]
    counts: list[int]  # messages per conversation
    words: list[str] = field(default_factory=list)
    word_cum: list[float] = field(default_factory=list)


def make_plan(args: argparse.Namespace, now: datetime) -> Plan:
    rng = new_rng(args.seed)
    inbox_ids = [fake_id("inb", now - timedelta(days=400), rng) for _ in range(N_INBOXES)]
    inbox_names = [f"Support {i + 1}" for i in range(N_INBOXES)]
    inbox_weights = [1 / (i + 1) ** 0.8 for i in range(N_INBOXES)]
    agents = [fake_id("usr", now - timedelta(days=400), rng) for _ in range(N_AGENTS)]
    agent_emails = {
        a: (f"{FIRST[i % len(FIRST)]} {LAST[i % len(LAST)]}", f"agent{i + 1}@{TEAM_DOMAIN}")
        for i, a in enumerate(agents)
    }
    members: dict[str, list[str]] = {i: [] for i in inbox_ids}
    for a in agents:
        for inbox in set(rng.choices(inbox_ids, inbox_weights, k=rng.randint(2, 4))):
            members[inbox].append(a)
    for inbox, team in members.items():  # every inbox has a team of two at least
        while len(team) < 2:
            team.append(rng.choice([a for a in agents if a not in team]))
        members[inbox] = sorted(team)
    n_contacts = max(100, args.conversations * 3 // 10)
    contacts = []
    for i in range(n_contacts):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first.lower()}.{last.lower()}{i}@{rng.choice(DOMAINS)}"
        contacts.append((fake_id("ctc", now - timedelta(days=400), rng), email, f"{first} {last}"))
    tag_ids = [fake_id("tag", now - timedelta(days=400), rng) for _ in TAGS]
    # Messages per conversation: at least one, a long tail (a few threads of 50+).
    n, m = args.conversations, args.messages
    if m < n:
        raise SystemExit("--messages must be at least --conversations")
    weights = [rng.paretovariate(1.6) for _ in range(n)]
    counts = [1] * n
    for index in rng.choices(range(n), weights, k=m - n):
        counts[index] += 1
    words, word_cum = vocabulary(args.seed)
    return Plan(
        seed=args.seed,
        now=now,
        inbox_ids=inbox_ids,
        inbox_names=inbox_names,
        inbox_cum=cumulative(inbox_weights),
        members=members,
        agent_emails=agent_emails,
        contacts=contacts,
        tag_ids=tag_ids,
        tag_cum=cumulative(list(TAGS.values())),
        counts=counts,
        words=words,
        word_cum=word_cum,
    )


def _pick(rng: random.Random, options: dict[str, int]) -> str:
    return rng.choices(list(options), list(options.values()))[0]


def generate_chunk(
    plan: Plan, lo: int, hi: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Conversations lo..hi-1 with their messages and tags (deterministic per chunk)."""
    rng = new_rng(plan.seed * 1_000_003 + lo)
    conversations: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    tags: list[tuple[Any, ...]] = []
    now = plan.now
    n_contacts = len(plan.contacts)
    for n in range(lo, hi):
        slot = bisect.bisect(plan.inbox_cum, rng.random() * plan.inbox_cum[-1])
        inbox_id = plan.inbox_ids[min(slot, N_INBOXES - 1)]
        inbox_name = plan.inbox_names[min(slot, N_INBOXES - 1)]
        inbox_address = f"support{min(slot, N_INBOXES - 1) + 1}@{TEAM_DOMAIN}"
        status = _pick(rng, STATUSES)
        if status == "resolved":
            age = timedelta(days=rng.random() * 365)
        else:  # what is still being worked on is recent
            age = timedelta(days=min(rng.expovariate(1 / 6), 120))
        last = now - age - timedelta(minutes=rng.random() * 60)
        k = plan.counts[n]
        span = timedelta(hours=min(rng.expovariate(1 / 40), 24 * 30)) if k > 1 else timedelta()
        first = last - span
        times = sorted([first, *(first + span * rng.random() for _ in range(k - 2)), last][:k])
        times[-1] = last
        waiting = status in ("open", "snoozed") and rng.random() < 0.9
        directions = ["inbound"]
        for _ in range(1, k):
            directions.append("inbound" if rng.random() < 0.5 else "outbound")
        if k > 1:
            directions[-1] = "inbound" if waiting or status == "open" else "outbound"
        waiting_since = None
        if directions[-1] == "inbound" and status in ("open", "snoozed"):
            i = k - 1
            while i > 0 and directions[i - 1] == "inbound":
                i -= 1
            waiting_since = times[i]
        assignee = None
        if rng.random() < ASSIGNED_SHARE[status]:
            assignee = rng.choice(plan.members[inbox_id])
        contact_id, contact_email, contact_name = plan.contacts[int(n_contacts * rng.random() ** 2)]
        order = order_number(n)
        subject = rng.choice(SUBJECTS).format(order=order)
        conversation_id = fake_id("cnv", first, rng)
        to_inbound = json.dumps([{"name": inbox_name, "address": inbox_address}])
        to_outbound = json.dumps([{"name": contact_name, "address": contact_email}])
        message_ids: list[str] = []
        snippet = ""
        for i, (at, direction) in enumerate(zip(times, directions, strict=True)):
            message_pk = fake_id("msg", at, rng)
            inbound = direction == "inbound"
            domain = contact_email.split("@")[1] if inbound else TEAM_DOMAIN
            header_id = f"{message_pk[4:].lower()}@{domain}"
            words = rng.choices(plan.words, cum_weights=plan.word_cum, k=rng.randint(12, 70))
            if inbound:
                who_name, who_email = contact_name, contact_email
                text = f"Hello, {' '.join(words)}."
                if i == 0 and "{order}" not in subject and rng.random() < 0.3:
                    text += f" My order is {order}."
                text += f"\n\n{contact_name}"
            else:
                who_name, who_email = plan.agent_emails[assignee or plan.members[inbox_id][0]]
                text = f"Hi {contact_name.split()[0]}, {' '.join(words)}.\n\n{who_name}"
            reply_to = message_ids[-1:] if message_ids else []
            references = message_ids[-3:]
            snippet = text[:140].replace("\n", " ")
            messages.append(
                (
                    message_pk,
                    inbox_id,
                    conversation_id,
                    direction,
                    header_id,
                    header_id,
                    reply_to,
                    references,
                    list(dict.fromkeys([*reply_to, *references])),
                    None,
                    subject if i == 0 else f"Re: {subject}",
                    who_name,
                    who_email,
                    to_inbound if inbound else to_outbound,
                    "[]",
                    "[]",
                    at,
                    at,
                    at + timedelta(seconds=5),
                    text,
                    None,
                    snippet,
                    "new" if i == 0 else "in_reply_to",
                    None,
                    "ok",
                    None,
                    len(text) + 1200,
                    hashlib.sha256(header_id.encode()).hexdigest(),
                )
            )
            message_ids.append(header_id)
        conversations.append(
            (
                conversation_id,
                inbox_id,
                contact_id,
                subject,
                subject.lower(),
                f"{n:032x}",
                status,
                _pick(rng, PRIORITIES),
                assignee,
                now + timedelta(hours=1 + rng.random() * 120) if status == "snoozed" else None,
                k,
                snippet,
                last,
                waiting_since,
                1,
                first,
                last,
            )
        )
        if rng.random() < 0.2:
            picked = set()
            for _ in range(1 if rng.random() < 0.75 else 2):
                slot = bisect.bisect(plan.tag_cum, rng.random() * plan.tag_cum[-1])
                picked.add(plan.tag_ids[min(slot, len(plan.tag_ids) - 1)])
            tags.extend((conversation_id, tag_id, first) for tag_id in sorted(picked))
    return conversations, messages, tags


async def check_columns(conn: Any, table: str, columns: Sequence[str]) -> None:
    """Fail early, and clearly, when a migration added a NOT NULL column we do not fill."""
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_generated = 'NEVER' "
        "AND identity_generation IS NULL",
        table,
    )
    missing = sorted({r["column_name"] for r in rows} - set(columns))
    if missing:
        raise RuntimeError(f"{table}: NOT NULL columns the seed does not fill: {missing}")


async def secondary_indexes(conn: Any, tables: Sequence[str]) -> list[tuple[str, str]]:
    """(name, definition) of every index of `tables` that backs no constraint."""
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname "
        "WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[]) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)",
        list(tables),
    )
    return [(r["indexname"], r["indexdef"]) for r in rows]


async def seed(args: argparse.Namespace, pg: Any) -> dict[str, Any]:
    import asyncpg

    from inbox_service.core.migrations import upgrade

    url = pg.url("inbox")
    admin = await asyncpg.connect(plain_dsn(pg.url("postgres")))
    try:
        await admin.execute("CREATE DATABASE inbox")
    finally:
        await admin.close()
    with timed("migrated to head"):
        await asyncio.to_thread(upgrade, url)
    now = datetime.now(UTC).replace(microsecond=0)
    plan = make_plan(args, now)
    dsn = plain_dsn(url)
    setup = "SET session_replication_role = replica; SET maintenance_work_mem = '512MB'"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(setup)
        await check_columns(conn, "conversations", CONVERSATION_COLUMNS)
        await check_columns(conn, "messages", MESSAGE_COLUMNS)
        await check_columns(conn, "conversation_tags", TAG_COLUMNS)
        created = now - timedelta(days=400)
        await conn.executemany(
            "INSERT INTO inboxes (id, name, address, version, created_at, updated_at) "
            "VALUES ($1, $2, $3, 1, $4, $4)",
            [
                (inbox_id, plan.inbox_names[i], f"support{i + 1}@{TEAM_DOMAIN}", created)
                for i, inbox_id in enumerate(plan.inbox_ids)
            ],
        )
        await conn.copy_records_to_table(
            "users",
            records=[
                (uid, email, name, "agent", "available", 20, 1, created, created)
                for uid, (name, email) in plan.agent_emails.items()
            ],
            columns=(
                "id",
                "email",
                "name",
                "role",
                "availability",
                "capacity",
                "version",
                "created_at",
                "updated_at",
            ),
        )
        await conn.copy_records_to_table(
            "inbox_members",
            records=[(i, u, created) for i, team in plan.members.items() for u in team],
            columns=("inbox_id", "user_id", "created_at"),
        )
        await conn.copy_records_to_table(
            "contacts",
            records=[(c, e, n, created, created, created, 1) for c, e, n in plan.contacts],
            columns=("id", "email", "name", "first_seen_at", "created_at", "updated_at", "version"),
        )
        await conn.copy_records_to_table(
            "tags",
            records=[(t, name, created) for t, name in zip(plan.tag_ids, TAGS, strict=True)],
            columns=("id", "name", "created_at"),
        )
        indexes = await secondary_indexes(conn, ["conversations", "messages", "conversation_tags"])
        for name, _ in indexes:
            await conn.execute(f'DROP INDEX "{name}"')
    finally:
        await conn.close()

    chunks = [
        (lo, min(lo + CHUNK, args.conversations)) for lo in range(0, args.conversations, CHUNK)
    ]
    todo: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for chunk in chunks:
        todo.put_nowait(chunk)
    done = Counter[str]()

    async def pipeline() -> None:
        c = await asyncpg.connect(dsn)
        try:
            await c.execute(setup)
            while not todo.empty():
                lo, hi = todo.get_nowait()
                convs, msgs, tags = await asyncio.to_thread(generate_chunk, plan, lo, hi)
                await c.copy_records_to_table(
                    "conversations", records=convs, columns=CONVERSATION_COLUMNS
                )
                await c.copy_records_to_table("messages", records=msgs, columns=MESSAGE_COLUMNS)
                await c.copy_records_to_table(
                    "conversation_tags", records=tags, columns=TAG_COLUMNS
                )
                done["conversations"] += len(convs)
                done["messages"] += len(msgs)
                done["tags"] += len(tags)
        finally:
            await c.close()

    start = time.perf_counter()
    await asyncio.gather(pipeline(), pipeline())
    copy_seconds = time.perf_counter() - start
    say(
        f"  COPY: {done['conversations']} conversations, {done['messages']} messages, "
        f"{done['tags']} conversation tags in {copy_seconds:.1f} s (2 connections)"
    )

    async def rebuild(names: list[tuple[str, str]]) -> None:
        c = await asyncpg.connect(dsn)
        try:
            await c.execute(setup)
            for _, definition in names:
                await c.execute(definition)
        finally:
            await c.close()

    # The GIN index over the bodies is the longest build: it gets a connection of its own.
    heavy = [ix for ix in indexes if "gin" in ix[1].lower()]
    light = [ix for ix in indexes if ix not in heavy]
    with timed(f"{len(indexes)} secondary indexes rebuilt from their definitions"):
        await asyncio.gather(rebuild(heavy), rebuild(light))
    conn = await asyncpg.connect(dsn)
    try:
        with timed("VACUUM ANALYZE"):
            await conn.execute("VACUUM ANALYZE")
        sizes = await conn.fetch(
            "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) AS size "
            "FROM pg_class WHERE relname IN ('conversations', 'messages') ORDER BY relname"
        )
        say("  sizes (with indexes): " + ", ".join(f"{r['relname']} {r['size']}" for r in sizes))
        stats = await conn.fetch(
            "SELECT status, count(*) AS n, count(waiting_since) AS waiting, "
            "count(assignee_id) AS assigned FROM conversations GROUP BY 1 ORDER BY 2 DESC"
        )
        say(
            "  status: "
            + ", ".join(
                f"{r['status']} {r['n']} ({r['assigned']} assigned, {r['waiting']} waiting)"
                for r in stats
            )
        )
    finally:
        await conn.close()
    return {"url": url, "plan": plan}


async def make_keys(url: str, plan: Plan) -> dict[str, Any]:
    """An admin key (bootstrap_admin) and a key for the agent who is a member of three
    inboxes, one of them the biggest (made a member of those if nobody is)."""
    import asyncpg

    from inbox_service.core.auth import Caller
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.users import service as users_service
    from inbox_service.users.schemas import ApiKeyIn

    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT user_id, array_agg(inbox_id ORDER BY inbox_id) AS inboxes "
            "FROM inbox_members GROUP BY 1 ORDER BY user_id"
        )
        agent_id, inboxes = next(
            ((r["user_id"], r["inboxes"]) for r in rows if len(r["inboxes"]) == 3), (None, None)
        )
        if agent_id is None:
            agent_id = rows[0]["user_id"]
            await conn.execute("DELETE FROM inbox_members WHERE user_id = $1", agent_id)
            inboxes = sorted(plan.inbox_ids[:3])
            await conn.executemany(
                "INSERT INTO inbox_members (inbox_id, user_id, created_at) VALUES ($1, $2, $3)",
                [(i, agent_id, plan.now) for i in inboxes],
            )
        big = await conn.fetchval(
            "SELECT inbox_id FROM conversations WHERE inbox_id = ANY($1::text[]) "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            list(inboxes),
        )
    finally:
        await conn.close()
    engine = create_engine(url, pool_size=1)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            admin, admin_key = await users_service.bootstrap_admin(
                session, email="admin@example.com", name="Bench Admin", now=plan.now
            )
            caller = Caller(user_id=admin.id, role="admin", inbox_ids=None)
            _, agent_key = await users_service.create_api_key(
                session, caller, ApiKeyIn(name="bench agent", user_id=agent_id), now=plan.now
            )
    finally:
        await engine.dispose()
    return {
        "admin_key": admin_key,
        "admin_id": admin.id,
        "agent_key": agent_key,
        "agent_id": agent_id,
        "agent_inboxes": list(inboxes),
        "agent_big_inbox": big,
    }


# -- 2. the mix and its SQL -------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    who: str  # "admin" | "agent"
    params: list[tuple[str, str]]
    weight: int
    statements: dict[str, list[tuple[str, tuple[Any, ...]]]] = field(default_factory=dict)
    #  page: [(sql, params)] for "auth", "page1", "page2"
    too_slow: bool = False  # the first page took longer than --query-timeout


async def build_mix(url: str, plan: Plan, keys: dict[str, Any]) -> list[Scenario]:
    import asyncpg

    agent_inboxes = keys["agent_inboxes"]
    big = keys["agent_big_inbox"]
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        contact = await conn.fetchval(
            "SELECT contact_id FROM conversations WHERE inbox_id = ANY($1::text[]) "
            "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
            agent_inboxes,
        )
        order_subject = await conn.fetchval(
            "SELECT subject FROM conversations WHERE inbox_id = $1 AND subject LIKE '%ORD-%' "
            "ORDER BY last_message_at DESC LIMIT 1",
            big,
        )
        other_agent = await conn.fetchval(
            "SELECT assignee_id FROM conversations WHERE assignee_id <> $1 "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            keys["agent_id"],
        )
        small_inbox = await conn.fetchval(
            "SELECT inbox_id FROM conversations GROUP BY 1 ORDER BY count(*) LIMIT 1"
        )
    finally:
        await conn.close()
    order = next((w.strip("()?") for w in (order_subject or "").split() if "ORD-" in w), "ORD-1")
    open_ = ("status", "open")
    return [
        # An agent working their queue.
        Scenario("agent: mine, open, newest", "agent", [("assignee_id", "me"), open_], 14),
        Scenario(
            "agent: inbox, open, waiting_longest",
            "agent",
            [("inbox_id", big), open_, ("sort", "waiting_longest")],
            12,
        ),
        Scenario(
            "agent: inbox, open, unassigned, waiting",
            "agent",
            [("inbox_id", big), open_, ("assignee_id", "none"), ("sort", "waiting_longest")],
            10,
        ),
        Scenario("agent: all, newest", "agent", [], 8),
        Scenario("agent: open, priority", "agent", [open_, ("sort", "priority")], 8),
        Scenario(
            "agent: mine, pending, newest",
            "agent",
            [("assignee_id", "me"), ("status", "pending")],
            4,
        ),
        Scenario("agent: tag billing, open", "agent", [("tag", "billing"), open_], 4),
        Scenario("agent: contact, newest", "agent", [("contact_id", contact)], 4),
        Scenario("agent: q common word", "agent", [("q", "refund")], 3),
        Scenario("agent: q order number", "agent", [("q", order)], 2),
        Scenario(
            "agent: inbox, snoozed, oldest",
            "agent",
            [("inbox_id", big), ("status", "snoozed"), ("sort", "oldest")],
            2,
        ),
        # Team leads, dashboards, scripts.
        Scenario("admin: all, newest", "admin", [], 6),
        Scenario("admin: open, waiting_longest", "admin", [open_, ("sort", "waiting_longest")], 5),
        Scenario(
            "admin: open, unassigned, waiting",
            "admin",
            [open_, ("assignee_id", "none"), ("sort", "waiting_longest")],
            4,
        ),
        Scenario(
            "admin: urgent+high, open, priority",
            "admin",
            [("priority", "urgent"), ("priority", "high"), open_, ("sort", "priority")],
            4,
        ),
        Scenario("admin: assignee X, newest", "admin", [("assignee_id", other_agent)], 3),
        Scenario(
            "admin: inbox, resolved, oldest",
            "admin",
            [("inbox_id", big), ("status", "resolved"), ("sort", "oldest")],
            2,
        ),
        Scenario("admin: tag vip, newest", "admin", [("tag", "vip")], 2),
        Scenario("admin: small inbox, newest", "admin", [("inbox_id", small_inbox)], 2),
        Scenario("admin: q no match (typo)", "admin", [("q", "refnud")], 1),
    ]


def _filters_of(params: Sequence[tuple[str, str]]) -> tuple[Any, str]:
    from inbox_service.conversations.queries import Filters

    multi: dict[str, list[str]] = {}
    for k, v in params:
        multi.setdefault(k, []).append(v)
    one = {k: v[-1] for k, v in multi.items()}
    filters = Filters(
        inbox_id=one.get("inbox_id"),
        status=tuple(multi.get("status", ())),
        assignee=one.get("assignee_id"),
        priority=tuple(multi.get("priority", ())),
        tag=one.get("tag"),
        contact_id=one.get("contact_id"),
        q=one.get("q"),
    )
    return filters, one.get("sort", "newest")


async def capture_sql(url: str, keys: dict[str, Any], mix: list[Scenario], limit_s: float) -> None:
    """Run the service's own query code once per scenario (first page, then the page after
    its cursor) and keep every statement it sends, with its parameters, as asyncpg gets
    them ($n placeholders: SQLAlchemy's asyncpg dialect is numeric_dollar)."""
    from types import SimpleNamespace

    from sqlalchemy import event, text
    from sqlalchemy.exc import DBAPIError
    from starlette.requests import Request

    from inbox_service.conversations import queries
    from inbox_service.core.clock import SystemClock
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.core.pagination import PageParams
    from inbox_service.users.auth import authenticate

    engine = create_engine(url, pool_size=2)
    captured: list[tuple[str, tuple[Any, ...]]] = []

    def hook(_c: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        captured.append((statement, tuple(parameters or ())))

    event.listen(engine.sync_engine, "before_cursor_execute", hook)
    sessionmaker = create_sessionmaker(engine)
    state = SimpleNamespace(clock=SystemClock(), sessionmaker=sessionmaker)

    def request_for(key: str) -> Request:
        headers = [(b"authorization", f"Bearer {key}".encode())]
        return Request({"type": "http", "headers": headers, "app": SimpleNamespace(state=state)})

    try:
        for scenario in mix:
            key = keys["admin_key"] if scenario.who == "admin" else keys["agent_key"]
            filters, sort = _filters_of(scenario.params)
            cursor: str | None = None
            for page in (1, 2):
                try:
                    async with transaction(sessionmaker) as session:
                        await authenticate(session, request_for(key))  # sets last_used_at once
                        captured.clear()
                        caller = await authenticate(session, request_for(key))
                        scenario.statements.setdefault("auth", list(captured))
                        await session.execute(text(f"SET LOCAL statement_timeout = '{limit_s}s'"))
                        captured.clear()
                        _, next_cursor = await queries.list_conversations(
                            session, caller, filters, sort, PageParams(limit=PAGE, cursor=cursor)
                        )
                        scenario.statements[f"page{page}"] = list(captured)
                except DBAPIError as exc:
                    if "statement timeout" not in str(exc):
                        raise
                    scenario.statements[f"page{page}"] = list(captured[-1:])  # the slow one
                    scenario.too_slow = True
                    break
                if next_cursor is None:
                    break
                cursor = next_cursor
    finally:
        await engine.dispose()


# -- 3. the API and the load process ----------------------------------------------------------


def server_env(url: str) -> dict[str, str]:
    """As deployed: inherited settings dropped, only what the bench sets."""
    from inbox_service.core.config import Settings

    known = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in known}
    return env | {
        "DATABASE_URL": url,
        "RATE_LIMIT_PER_MINUTE": "0",
        "DB_POOL_SIZE": "20",
        "LOG_LEVEL": "WARNING",
    }


def start_server(url: str, port: int, log: Path, workers: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "inbox_service", "serve", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*command, "--workers", str(workers)],
            cwd=ROOT,
            env=server_env(url),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited ({process.returncode}):\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the API did not answer /healthz within 60 s:\n{tail(log)}")


def load_phases(args: argparse.Namespace) -> list[dict[str, Any]]:
    phases: list[dict[str, Any]] = [
        {"name": "warm-up", "mode": "open", "rate": args.rate, "seconds": 5, "quiet": True},
        {"name": "main", "mode": "open", "rate": args.rate, "seconds": args.seconds},
    ]
    for rate in STEP_RATES:
        if rate <= args.max_rate:
            phases.append(
                {"name": "step", "mode": "open", "rate": rate, "seconds": args.step_seconds}
            )
    for concurrency in args.concurrency:
        phases.append(
            {
                "name": "saturation",
                "mode": "closed",
                "concurrency": concurrency,
                "seconds": args.bare_seconds,
            }
        )
    return phases


class Connections:
    """Keep-alive HTTP/1.1 GETs on raw asyncio streams: the load generator must not be
    what the machine spends its CPU on (httpx costs ~1 ms of CPU per request, about a third
    of what the API spends; this, a tenth of a millisecond)."""

    IDLE_S = 2.0  # uvicorn closes a connection idle for 5 s; never reuse one near that

    def __init__(self, base: str) -> None:
        host, _, port = base.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def get(self, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n{lines}\r\n".encode()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.IDLE_S and not reader.at_eof():
                break
            writer.close()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(request)
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"\r\ncontent-length:")
                length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
                body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self.idle.append((reader, writer, time.monotonic()))
        return int(head[9:12]), body

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class LoadWorker:
    """The load process: open-loop (or closed-loop) GETs, one JSON line per phase."""

    config: dict[str, Any]
    rng: random.Random = field(default_factory=lambda: new_rng(7))
    cursors: dict[str, str] = field(default_factory=dict)
    records: list[tuple[str, float, int]] = field(default_factory=list)  # name, s, status

    async def one(self, client: Connections, scheduled: float) -> None:
        from urllib.parse import urlencode

        scenarios = self.config["scenarios"]
        s = self.rng.choices(scenarios, self.config["weights"])[0]
        params = [*s["params"], ("limit", str(PAGE))]
        cursor = self.cursors.get(s["name"])
        if cursor is not None and self.rng.random() < self.config["follow"]:
            params.append(("cursor", cursor))
        try:
            status, body = await client.get(
                f"/v1/conversations?{urlencode(params)}", self.config["headers"][s["who"]]
            )
            if status == 200:
                at = body.rfind(b'"next_cursor":')
                value = body[at + 14 :].rstrip(b"}").strip() if at >= 0 else b"null"
                if value == b"null":
                    self.cursors.pop(s["name"], None)
                else:
                    self.cursors[s["name"]] = value.strip(b'"').decode()
        except TimeoutError:
            status = -1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = -2
        self.records.append((s["name"], time.perf_counter() - scheduled, status))

    async def phase(
        self, client: Connections, phase: dict[str, Any], watch: list[int]
    ) -> dict[str, Any]:
        self.records = []
        lags: list[float] = []
        tasks: set[asyncio.Task[None]] = set()
        cpu0, ticks0 = time.process_time(), self._ticks(watch)
        start = time.perf_counter() + 0.05
        if phase["mode"] == "open":
            rate = phase["rate"]
            for i in range(int(rate * phase["seconds"])):
                at = start + i / rate
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lags.append(time.perf_counter() - at)
                if len(tasks) >= self.config["connections"]:
                    # Overloaded: count it as dropped rather than queue without bound (the
                    # client would burn the CPU the server needs).
                    self.records.append(("(dropped)", 0.0, -3))
                    continue
                task = asyncio.create_task(self.one(client, at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=15)
                for task in pending:
                    task.cancel()
                    self.records.append(("(cancelled)", 15.0, -1))
        else:
            end = start + phase["seconds"]

            async def closed() -> None:
                while time.perf_counter() < end:
                    await self.one(client, time.perf_counter())

            await asyncio.gather(*(closed() for _ in range(phase["concurrency"])))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        ticks = self._ticks(watch)
        hz = os.sysconf("SC_CLK_TCK")
        return self.summary(phase, elapsed, cpu, lags, ticks0, ticks, hz)

    def _ticks(self, watch: list[int]) -> dict[int, int]:
        """CPU ticks of the API processes (key 0: uvicorn and its workers, if any) and of
        each postgres process (their pids): `watch` is [API pid, postmaster pid]."""
        ticks = {0: cpu_ticks([*watch[:1], *descendants(watch[0])])}
        for pid in [watch[1], *descendants(watch[1])] if len(watch) > 1 else []:
            ticks[pid] = cpu_ticks([pid])
        return ticks

    def summary(
        self,
        phase: dict[str, Any],
        elapsed: float,
        cpu: float,
        lags: list[float],
        ticks0: dict[int, int],
        ticks: dict[int, int],
        hz: int,
    ) -> dict[str, Any]:
        ok = sorted(ms * 1000 for _, ms, status in self.records if status == 200)
        errors = Counter(str(status) for _, _, status in self.records if status != 200)
        by: dict[str, list[float]] = {}
        for name, seconds, status in self.records:
            if status == 200:
                by.setdefault(name, []).append(seconds * 1000)
        lags.sort()
        api_cpu = (ticks[0] - ticks0[0]) / hz
        # Backends that exited meanwhile are lost; new ones count from zero.
        pg_cpu = sum(t - ticks0.get(pid, 0) for pid, t in ticks.items() if pid) / hz
        result = {
            **phase,
            "requests": len(self.records),
            "ok": len(ok),
            "errors": dict(errors),
            "elapsed": elapsed,
            "achieved": len(ok) / elapsed if elapsed else 0.0,
            "p50": percentile(ok, 0.50),
            "p95": percentile(ok, 0.95),
            "p99": percentile(ok, 0.99),
            "max": ok[-1] if ok else math.nan,
            "lag_p99_ms": percentile(lags, 0.99) * 1000 if lags else 0.0,
            "load_cpu": cpu / elapsed if elapsed else 0.0,
            "api_cpu": api_cpu / elapsed if elapsed else 0.0,
            "pg_cpu": pg_cpu / elapsed if elapsed else 0.0,
            "by_scenario": {
                name: [len(v), percentile(sorted(v), 0.5), percentile(sorted(v), 0.99)]
                for name, v in by.items()
            },
        }
        if phase["mode"] == "open":
            result["pass"] = (
                not errors
                and result["p99"] <= P99_TARGET_MS
                and result["achieved"] >= 0.95 * phase["rate"]
            )
        return result

    async def run(self) -> None:
        watch = self.config["watch"]
        stepping = True
        for phase in self.config["phases"]:
            if phase["name"] == "step" and not stepping:
                continue
            # Fresh connections per phase: none left busy by an overloaded one.
            client = Connections(self.config["base"])
            try:
                result = await self.phase(client, phase, watch)
            finally:
                client.close()
            if phase["name"] == "step" and not result["pass"]:
                stepping = False
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


def load_worker_main(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    config["scenarios"] = [
        {**s, "params": [tuple(p) for p in s["params"]]} for s in config["scenarios"]
    ]
    config["weights"] = [s["weight"] for s in config["scenarios"]]
    try:
        import uvloop

        uvloop.run(LoadWorker(config).run())
    except ImportError:
        asyncio.run(LoadWorker(config).run())


def start_load(
    args: argparse.Namespace,
    tmp: Path,
    base: str,
    keys: dict[str, Any],
    mix: list[Scenario],
    watch: list[int],
) -> tuple[subprocess.Popen[bytes], Path]:
    config = {
        "base": base,
        "headers": {
            "admin": {"Authorization": f"Bearer {keys['admin_key']}"},
            "agent": {"Authorization": f"Bearer {keys['agent_key']}"},
        },
        "scenarios": [
            {"name": s.name, "who": s.who, "params": s.params, "weight": s.weight} for s in mix
        ],
        "follow": args.follow,
        "connections": 64,
        "phases": load_phases(args),
        "watch": watch,
    }
    path = tmp / "load.json"
    path.write_text(json.dumps(config))
    out = tmp / "load.out"
    with out.open("wb") as stdout, (tmp / "load.err").open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 - this file, our interpreter
            [sys.executable, str(Path(__file__).resolve()), "--load-worker", str(path)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return process, out


def show_phase(r: dict[str, Any]) -> None:
    target = f"{r['rate']:>5} req/s" if r["mode"] == "open" else f"closed x{r['concurrency']}"
    errors = ", ".join(f"{ERRORS.get(k, k)}: {v}" for k, v in sorted(r["errors"].items())) or "none"
    verdict = ""
    if "pass" in r:
        verdict = "  ok" if r["pass"] else "  FAIL"
    say(
        f"  {r['name']:10} {target}: achieved {r['achieved']:6.1f} req/s  p50 {r['p50']:6.1f}  "
        f"p95 {r['p95']:6.1f}  p99 {r['p99']:6.1f}  max {r['max']:7.1f} ms  errors {errors}"
        f"{verdict}"
    )
    say(
        f"  {'':10} CPU (cores): API {r['api_cpu']:.2f}, postgres {r['pg_cpu']:.2f}, load "
        f"process {r['load_cpu']:.2f}; send lag p99 {r['lag_p99_ms']:.1f} ms; {load_average()}"
    )


async def drive(
    args: argparse.Namespace,
    tmp: Path,
    base: str,
    keys: dict[str, Any],
    mix: list[Scenario],
    watch: list[int],
    holder: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    process, out = start_load(args, tmp, base, keys, mix, watch)
    holder["load"] = process
    results: dict[str, Any] = {"step": [], "saturation": []}
    phases = 5 + args.seconds + len(STEP_RATES) * args.step_seconds
    budget = 60 + 2 * (phases + args.bare_seconds * len(args.concurrency))
    deadline = time.monotonic() + budget
    seen = 0
    while True:
        await asyncio.sleep(0.2)
        lines = out.read_text().splitlines()
        for line in lines[seen:]:
            r = json.loads(line)
            if not r.get("quiet"):
                show_phase(r)
            if r["name"] in ("step", "saturation"):
                results.setdefault(r["name"], []).append(r)
            else:
                results[r["name"]] = r
        seen = len(lines)
        if process.poll() is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the load process did not finish within {budget:.0f} s")
    if process.returncode != 0:
        raise RuntimeError(
            f"load process exited {process.returncode}:\n{(tmp / 'load.err').read_text()[-3000:]}"
        )
    return results


# -- 4. bare ----------------------------------------------------------------------------------


async def bare(
    url: str, mix: list[Scenario], concurrency: int, seconds: float, follow: float, parts: str
) -> dict[str, float]:
    """The captured statements through an asyncpg pool, as fast as they go. `parts`: "all"
    (what one request sends: the page with its tags, after the planner's estimate and a
    bounded count for a `q=` search) or "list" (the page query only)."""
    import asyncpg

    units: list[list[tuple[str, tuple[Any, ...]]]] = []
    weights: list[float] = []
    for s in mix:
        for page, share in (("1", 1 - follow), ("2", follow)):
            if f"page{page}" not in s.statements:
                continue
            statements = list(s.statements[f"page{page}"])
            if parts == "list":
                statements = statements[-1:]
            units.append(statements)
            weights.append(s.weight * share)
    pool = await asyncpg.create_pool(
        plain_dsn(url),
        min_size=concurrency,
        max_size=concurrency,
        server_settings={
            "timezone": "UTC",
            "application_name": "bench-bare",
            "statement_timeout": "60s",
        },
    )
    latencies: list[float] = []
    try:
        rng = new_rng(11)

        async def worker(until: float, record: bool) -> None:
            while time.perf_counter() < until:
                unit = rng.choices(units, weights)[0]
                t0 = time.perf_counter()
                async with pool.acquire() as conn:
                    for sql, params in unit:
                        await conn.fetch(sql, *params)
                if record:
                    latencies.append(time.perf_counter() - t0)

        warm = time.perf_counter() + 2
        await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        await pool.close()
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
    }


# -- 5. EXPLAIN -------------------------------------------------------------------------------


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def access_paths(plan: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(access path per scanned relation, Seq Scans on big tables, notable sorts)."""
    paths: list[str] = []
    seq: list[str] = []
    sorts: list[str] = []
    for node in plan_nodes(plan):
        kind = node["Node Type"]
        relation = node.get("Relation Name")
        if kind == "Seq Scan":
            loops = node.get("Actual Loops", 1)
            rows = node.get("Actual Rows", 0) * loops + node.get("Rows Removed by Filter", 0)
            paths.append(f"Seq Scan on {relation} ({rows} rows read)")
            if relation in BIG_TABLES:
                seq.append(relation)
        elif "Index Name" in node:
            direction = " Backward" if node.get("Scan Direction") == "Backward" else ""
            loops = node.get("Actual Loops", 1)
            loops_note = f" x{loops} loops" if loops > 1 else ""
            where = f" on {relation}" if relation else ""
            paths.append(f"{kind}{direction} {node['Index Name']}{where}{loops_note}")
        elif kind == "Sort" or kind == "Incremental Sort":
            child_rows = sum(c.get("Actual Rows", 0) for c in node.get("Plans", []))
            if child_rows > 1000:
                sorts.append(f"{kind} of {child_rows} rows ({node.get('Sort Method', '?')})")
    return list(dict.fromkeys(paths)), seq, sorts


async def explain_too_slow(
    conn: Any, label: str, sql: str, params: tuple[Any, ...], limit_s: float
) -> None:
    say(f"  {label}: > {limit_s:g} s (statement timeout); EXPLAIN without ANALYZE:")
    for row in await conn.fetch(f"EXPLAIN {sql}", *params):
        say(f"        | {row[0]}")


async def end_leftovers(url: str) -> None:
    """Terminate what the API or the bare pool left running in the bench's own database (a
    slow query goes on after its client is gone), so the next phase starts clean."""
    import asyncpg

    conn = await asyncpg.connect(plain_dsn(url))
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name IN ('inbox-service', 'bench-bare')"
        )
    finally:
        await conn.close()
    if ended:
        say(f"  (ended {ended} leftover connection(s) of the API or the bare pool)")


async def explain_all(url: str, mix: list[Scenario], show_plans: bool, limit_s: float) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(
        plain_dsn(url), server_settings={"timezone": "UTC", "statement_timeout": f"{limit_s}s"}
    )
    flagged: list[str] = []
    try:
        for s in mix:
            if s.too_slow:
                sql, params = s.statements["page1"][0]
                await explain_too_slow(conn, f"{s.name} [first page]", sql, params, limit_s)
                flagged.append(f"{s.name} [first page]: > {limit_s:g} s (statement timeout)")
                continue
            for page in ("page1", "page2"):
                if page not in s.statements:
                    continue
                for sql, params in s.statements[page]:
                    if sql.startswith("EXPLAIN"):  # the search's estimate: planning only
                        continue
                    label = f"{s.name} [{'first page' if page == 'page1' else 'cursor page'}]"
                    try:
                        raw = await conn.fetchval(
                            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params
                        )
                    except asyncpg.QueryCanceledError:
                        await explain_too_slow(conn, label, sql, params, limit_s)
                        flagged.append(f"{label}: > {limit_s:g} s (statement timeout)")
                        continue
                    doc = json.loads(raw)[0]
                    top = doc["Plan"]
                    paths, seq, sorts = access_paths(top)
                    hit = top.get("Shared Hit Blocks", 0)
                    read = top.get("Shared Read Blocks", 0)
                    mark = "  SEQ SCAN on " + ", ".join(seq) if seq else ""
                    say(
                        f"  {label}: {doc['Execution Time']:.1f} ms, buffers hit {hit} read "
                        f"{read}{mark}"
                    )
                    for p in paths:
                        say(f"      {p}")
                    for sort in sorts:
                        say(f"      !! {sort}: the order is not served by an index")
                    if seq or sorts or doc["Execution Time"] > 20:
                        flagged.append(
                            f"{label}: {doc['Execution Time']:.1f} ms"
                            + (f", Seq Scan on {', '.join(seq)}" if seq else "")
                            + (f", {'; '.join(sorts)}" if sorts else "")
                        )
                    if show_plans or seq or doc["Execution Time"] > 20:
                        # Seconds-long ones again without ANALYZE: the plan is the point.
                        how = "" if doc["Execution Time"] > 1000 else "(ANALYZE, BUFFERS) "
                        with contextlib.suppress(asyncpg.QueryCanceledError):
                            text = await conn.fetch(f"EXPLAIN {how}{sql}", *params)
                            for row in text[:40]:
                                say(f"        | {row[0]}")
        # The key check (cached by the API: one request in AUTH_CACHE_SECONDS runs it).
        for sql, params in mix[0].statements.get("auth", []):
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params)
            doc = json.loads(raw)[0]
            paths, _, _ = access_paths(doc["Plan"])
            say(f"  (auth query): {doc['Execution Time']:.2f} ms; " + "; ".join(paths))
    finally:
        await conn.close()
    return flagged


# -- the run ----------------------------------------------------------------------------------


def check(ok: bool) -> str:
    return "ok" if ok else "MISS"


async def run(args: argparse.Namespace, tmp: Path, pg: Any, holder: dict[str, Any]) -> None:
    say(f"\n[1] seed: {args.conversations} conversations, {args.messages} messages")
    with timed("seeded in total"):
        seeded = await seed(args, pg)
    url, plan = seeded["url"], seeded["plan"]
    keys = await make_keys(url, plan)
    say(
        f"  admin key for {keys['admin_id']}; agent {keys['agent_id']} is a member of "
        f"{len(keys['agent_inboxes'])} inboxes"
    )

    say("\n[2] the mix (weight, who, filters) and its SQL, captured from the service's code")
    mix = await build_mix(url, plan, keys)
    await capture_sql(url, keys, mix, args.query_timeout)
    total = sum(s.weight for s in mix)
    for s in mix:
        pages = "2 pages" if "page2" in s.statements else "1 page"
        if s.too_slow:
            pages = f"TOO SLOW: > {args.query_timeout:g} s, left out of the load"
        query = "&".join(f"{k}={v}" for k, v in s.params) or "(no filter)"
        say(f"  {100 * s.weight / total:4.1f} %  {s.name:40} {query[:60]}  [{pages}]")
    say(
        f"  requests follow the previous response's next_cursor with probability {args.follow}; "
        "each request sends its page query, tags included (a q= search two more first); "
        "the key check is cached"
    )

    usable = [s for s in mix if not s.too_slow]
    slow = len(mix) - len(usable)
    variants = [("full mix" + (f" less {slow} too-slow scenario(s)" if slow else ""), usable)]
    without_q = [s for s in usable if not any(k == "q" for k, _ in s.params)]
    if args.without_q and len(without_q) < len(usable):
        variants.append(("mix without q (full-text search)", without_q))
    measured = []
    for number, (label, subset) in enumerate(variants, 3):
        say(f"\n[{number}] {label}: API as deployed")
        measured.append((label, await measure(args, tmp, pg, holder, url, keys, subset, number)))

    say(f"\n[{len(variants) + 3}] EXPLAIN (ANALYZE, BUFFERS) of every list query of the mix")
    flagged = await explain_all(url, mix, args.plans, args.query_timeout)

    say(f"\n[{len(variants) + 4}] summary")
    for label, m in measured:
        summarize(args, label, m)
    if flagged:
        say("  queries to look at (Seq Scan, a sort not served by an index, or > 20 ms):")
        for f in flagged:
            say(f"    {f}")
    else:
        say("  every list query is served by an index (no Seq Scan on the big tables)")
    say(f"  ({load_average()})")


async def measure(
    args: argparse.Namespace,
    tmp: Path,
    pg: Any,
    holder: dict[str, Any],
    url: str,
    keys: dict[str, Any],
    mix: list[Scenario],
    number: int,
) -> dict[str, Any]:
    """One mix: the API under load from the load process, then the same SQL bare."""
    say(
        f"  (uvicorn, {args.api_workers} process(es), DB_POOL_SIZE=20 each), load from a "
        "separate process; latencies in ms"
    )
    port = free_port()
    log = tmp / f"api-{number}.log"
    holder["server"] = server = start_server(url, port, log, args.api_workers)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, server, log)
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        say(f"  {base} ready; {load_average()}")
        results = await drive(args, tmp, base, keys, mix, [server.pid, postmaster], holder)
    finally:
        stop_process(server)
        holder["server"] = None
    await end_leftovers(url)
    main = results["main"]
    say("  main run by scenario (n, p50, p99 ms):")
    for name, (n, p50, p99) in sorted(main["by_scenario"].items(), key=lambda kv: -kv[1][2]):
        mark = "  !!" if p99 > P99_TARGET_MS else ""
        say(f"    {name:40} {n:6d}  {p50:7.1f}  {p99:7.1f}{mark}")

    say("  bare: the same statements through an asyncpg pool")
    runs = []
    for concurrency in args.concurrency:
        run = await bare(url, mix, concurrency, args.bare_seconds, args.follow, "all")
        say(
            f"    what a request sends, {concurrency} connections: {run['rate']:.0f} req/s "
            f"(p50 {run['p50']:.1f}, p99 {run['p99']:.1f} ms); {load_average()}"
        )
        await end_leftovers(url)
        runs.append((run["rate"], concurrency, run))
    _, best, bare_all = max(runs, key=lambda r: r[0])
    bare_all["concurrency"] = best
    bare_list = await bare(url, mix, best, args.bare_seconds, args.follow, "list")
    await end_leftovers(url)
    say(
        f"    page query only: {bare_list['rate']:.0f} queries/s "
        f"(p50 {bare_list['p50']:.1f}, p99 {bare_list['p99']:.1f} ms)"
    )
    return {**results, "bare_all": bare_all, "bare_list": bare_list}


def summarize(args: argparse.Namespace, label: str, m: dict[str, Any]) -> None:
    main, bare_all, bare_list = m["main"], m["bare_all"], m["bare_list"]
    passed = [r["rate"] for r in m["step"] if r["pass"]]
    sustained = max(passed) if passed else 0.0
    failed = next((r for r in m["step"] if not r["pass"]), None)
    best = max(m["saturation"], key=lambda r: r["achieved"])
    saturation = best["achieved"]
    ratio = saturation / bare_all["rate"] if bare_all["rate"] else 0.0
    say(f"  {label}:")
    say(
        f"    p99 at {args.rate} req/s ({args.seconds:g} s): {main['p99']:.1f} ms "
        f"(p50 {main['p50']:.1f}, p95 {main['p95']:.1f}, max {main['max']:.1f}; achieved "
        f"{main['achieved']:.1f} req/s, errors {sum(main['errors'].values())})"
        f"   {check(main['p99'] <= P99_TARGET_MS and not main['errors'])} (<= {P99_TARGET_MS:g})"
    )
    say(f"    max sustained rate (p99 <= {P99_TARGET_MS:g} ms, no errors): {sustained:.0f} req/s")
    if failed:
        say(
            f"    first failing step {failed['rate']} req/s: p99 {failed['p99']:.1f} ms, "
            f"achieved {failed['achieved']:.0f}, errors {sum(failed['errors'].values())}"
        )
    say(
        f"    API saturation (closed loop, best of {args.concurrency} connections): "
        f"{saturation:.0f} req/s with {best['concurrency']}, p99 {best['p99']:.1f} ms"
    )
    say(
        f"    bare SQL (what a request sends, best of the same): {bare_all['rate']:.0f} req/s "
        f"with {bare_all['concurrency']}; page query only: {bare_list['rate']:.0f} q/s"
    )
    say(
        f"    ratio API/bare: {ratio:.2f}   {check(ratio >= RATIO_TARGET)} (>= {RATIO_TARGET:g}); "
        f"max sustained/bare {sustained / bare_all['rate']:.2f}; "
        f"API/page-only {saturation / bare_list['rate']:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=200, help="req/s of the main run")
    parser.add_argument("--seconds", type=float, default=30, help="length of the main run")
    parser.add_argument("--step-seconds", type=float, default=10, help="length of each step")
    parser.add_argument("--max-rate", type=int, default=2000, help="the step test stops here")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[8, 16],
        help="connections of the saturation and bare runs (each; the best counts)",
    )
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API processes (`serve --workers`)"
    )
    parser.add_argument("--bare-seconds", type=float, default=10)
    parser.add_argument("--follow", type=float, default=0.3, help="share of cursor requests")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--plans", action="store_true", help="print every plan in full")
    parser.add_argument(
        "--query-timeout",
        type=float,
        default=20,
        help="a list query slower than this (s) is reported and left out of the load",
    )
    parser.add_argument(
        "--full-mix-only",
        dest="without_q",
        action="store_false",
        help="skip the second measurement without the full-text search requests",
    )
    parser.add_argument("--load-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_worker:
        load_worker_main(args.load_worker)
        return

    from inbox_service.embedded_pg import EmbeddedPostgres

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    tmp = Path(tempfile.mkdtemp(prefix="inbox-bench-api-"))
    holder: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        pg = EmbeddedPostgres(tmp / "pg", fast=True)
        stack.callback(pg.stop)
        # Runs first: the load process and the API before PostgreSQL.
        stack.callback(lambda: stop_process(holder.get("server")))
        stack.callback(lambda: stop_process(holder.get("load"), timeout=2))
        say(f"[0] PostgreSQL (fast=True) in {tmp}; {load_average()}")
        pg.start()
        try:
            asyncio.run(run(args, tmp, pg, holder))
        except (KeyboardInterrupt, Stopped):
            say("\ninterrupted; cleaning up")
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
