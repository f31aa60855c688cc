"""Reports benchmark: the summary over 90 days of 100k conversations and 1M messages.

    uv run python bench/reports.py [-n 100000] [--messages 10] [--repeat 5] [--keep]

1. a throwaway PostgreSQL (EmbeddedPostgres, fast=True) migrated to head; 10 inboxes, 20
   agents, an SLA policy (Europe/Berlin, first response 1 h, resolution 8 h) on all of
   them, 5 tags, made with the service's code;
2. seed with COPY (asyncpg `copy_records_to_table`), secondary indexes dropped and rebuilt
   after: N conversations spread over 90 days (70 % resolved, 10 % of those reopened and
   resolved again, 90 % answered, 1-4 replies), `--messages` messages each (1M) with a
   `message.received` event each, the status events of every resolution and reopening,
   first-response and resolution clocks (`conversation_slas`), ratings for 20 % of the
   resolved, a tag on half (the conversations' `resolved_at` / `reopen_count` as the
   status trigger would have kept them); then VACUUM ANALYZE;
3. `reports.service.summary` as `GET /v1/reports/summary` runs it, over the 90 days: the
   totals alone, and with `group_by` agent, inbox, day and tag (median and min of
   `--repeat`), as an admin and as an agent of 3 inboxes; the load average beside them;
4. EXPLAIN (ANALYZE, BUFFERS) of the totals query: how each table is read, and the
   slowest nodes.

Target (issue 10): the summary answers in <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import load_average, say, throwaway_postgres

TARGET_S = 1.0
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
START = NOW - timedelta(days=90)
INBOXES = 10
AGENTS = 20


async def setup(url: str) -> tuple[list[str], list[str]]:
    """Inboxes and agents (members of every inbox), through the service code."""
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.sla import policies
    from inbox_service.sla.schemas import PolicyIn
    from tests.support.factories import make_inbox, make_user

    engine = create_engine(url, pool_size=2)
    async with transaction(create_sessionmaker(engine)) as session:
        agents = [await make_user(session, now=START) for _ in range(AGENTS)]
        inboxes = [
            await make_inbox(session, members=tuple(agents), now=START) for _ in range(INBOXES)
        ]
        await policies.create_policy(
            session,
            PolicyIn.model_validate(
                {
                    "name": "Berlin",
                    "inbox_ids": [i.id for i in inboxes],
                    "targets": {"normal": {"first_response": 3600, "resolution": 8 * 3600}},
                    "business_hours": {"timezone": "Europe/Berlin", "intervals": None},
                }
            ),
            now=START,
        )
        ids = ([i.id for i in inboxes], [a.id for a in agents])
    await engine.dispose()
    return ids


def _clock(
    cid: str, metric: str, start: datetime, took: float | None, target: int
) -> tuple[Any, ...]:
    due = start + timedelta(seconds=target)
    if took is None:
        return (cid, metric, 1, target, start, 0, start, due, None, None, None)
    met = start + timedelta(seconds=took)
    return (
        cid,
        metric,
        1,
        target,
        start,
        int(took),
        None,
        due,
        met,
        due if met > due else None,
        None,
    )


async def seed(url: str, n: int, per: int) -> tuple[list[str], list[str]]:
    import asyncpg

    from inbox_service.core.db import plain_dsn

    inbox_ids, agent_ids = await setup(url)
    rnd = random.Random(10)  # noqa: S311 - benchmark data, not secrets
    started = time.perf_counter()
    conversations: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    clocks: list[tuple[Any, ...]] = []
    ratings: list[tuple[Any, ...]] = []
    tagged: list[tuple[Any, ...]] = []
    tag_ids = [f"tag_bench{k}" for k in range(5)]
    span = (NOW - START).total_seconds() - 86_400
    for i in range(n):
        cid = f"cnv_bench{i:08d}"
        inbox = inbox_ids[i % INBOXES]
        created = START + timedelta(seconds=rnd.uniform(0, span))
        answered = rnd.random() < 0.9
        frt = rnd.lognormvariate(7.5, 1.2) if answered else None  # median ~30 min
        replies = rnd.randint(1, 4) if answered else 0
        roll = rnd.random()
        status = "resolved" if roll < 0.7 else ("open" if roll < 0.9 else "pending")
        assignee = agent_ids[rnd.randrange(AGENTS)] if rnd.random() < 0.85 else None
        last = created
        for k in range(per):
            at = created + timedelta(seconds=(frt or 600) * (k + 1) * 0.5)
            last = max(last, at)
            mid = f"msg_bench{i:08d}{k:02d}"
            direction = "outbound" if k % 2 and answered else "inbound"
            messages.append(
                (
                    mid,
                    inbox,
                    cid,
                    direction,
                    f"<{mid}@bench>",
                    f"{mid}@bench",
                    "Bench",
                    "c@customer.test",
                    at,
                    at,
                    "hello",
                    "hello",
                    "new",
                    "ok",
                    120,
                    "0" * 64,
                    [],
                    [],
                    [],
                    "Bench",
                    "[]",
                    "[]",
                    "[]",
                )
            )
            summary = json.dumps({"conversation": {"id": cid}, "message": {"id": mid}})
            events.append(("message.received", inbox, cid, summary, at))

        def status_event(
            at: datetime, previous: str, new: str, cid: str = cid, inbox: str = inbox
        ) -> None:
            data = {"conversation": {"id": cid, "status": new}, "previous_status": previous}
            events.append(("conversation.status_changed", inbox, cid, json.dumps(data), at))

        resolution, reopens = None, 0
        if status == "resolved":
            resolution = (frt or 600) + rnd.lognormvariate(9, 1)
            status_event(created + timedelta(seconds=resolution), "open", "resolved")
            if rnd.random() < 0.1:
                reopened = created + timedelta(seconds=resolution + 3600)
                status_event(reopened, "resolved", "open")
                resolution += 7200
                reopens = 1
                status_event(created + timedelta(seconds=resolution), "open", "resolved")
            if rnd.random() < 0.2:
                ratings.append((cid, inbox, 0, rnd.randint(1, 5), None, last))
        first_at = created + timedelta(seconds=frt) if frt is not None else None
        conversations.append(
            (
                cid,
                inbox,
                f"Bench {i}",
                f"bench {i}",
                secrets.token_hex(16),
                status,
                "normal",
                assignee,
                per,
                "hello",
                last,
                None,
                created,
                last,
                1,
                first_at,
                replies,
                created + timedelta(seconds=resolution) if resolution is not None else None,
                reopens,
            )
        )
        clocks.append(_clock(cid, "first_response", created, frt, 3600))
        clocks.append(_clock(cid, "resolution", created, resolution, 8 * 3600))
        if i % 2:
            tagged.append((cid, tag_ids[i % 5], created))
    say(f"    generated in {time.perf_counter() - started:.1f} s")

    connection = await asyncpg.connect(plain_dsn(url))
    try:
        started = time.perf_counter()
        await connection.executemany(
            "INSERT INTO tags (id, name, created_at) VALUES ($1, $2, $3)",
            [(t, f"topic-{k}", START) for k, t in enumerate(tag_ids)],
        )
        tables = (
            "conversations",
            "messages",
            "events",
            "conversation_slas",
            "csat_ratings",
            "conversation_tags",
        )
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1::text[]) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            list(tables),
        )
        for index in indexes:
            await connection.execute(f'DROP INDEX "{index["indexname"]}"')
        # the history is seeded as it is; the trigger would stamp `updated_at` over it
        await connection.execute(
            "ALTER TABLE conversations DISABLE TRIGGER conversations_status_facts"
        )
        await connection.copy_records_to_table(
            "conversations",
            records=conversations,
            columns=[
                "id",
                "inbox_id",
                "subject",
                "base_subject",
                "thread_token",
                "status",
                "priority",
                "assignee_id",
                "message_count",
                "snippet",
                "last_message_at",
                "waiting_since",
                "created_at",
                "updated_at",
                "version",
                "first_response_at",
                "reply_count",
                "resolved_at",
                "reopen_count",
            ],
        )
        await connection.copy_records_to_table(
            "messages",
            records=messages,
            columns=[
                "id",
                "inbox_id",
                "conversation_id",
                "direction",
                "dedupe_key",
                "message_id",
                "from_name",
                "from_address",
                "received_at",
                "created_at",
                "text_body",
                "snippet",
                "threaded_by",
                "parse_status",
                "size",
                "raw_sha256",
                "in_reply_to",
                "references",
                "parent_ids",
                "subject",
                "to",
                "cc",
                "reply_to",
            ],
        )
        await connection.copy_records_to_table(
            "events",
            records=events,
            columns=["type", "inbox_id", "conversation_id", "data", "created_at"],
        )
        await connection.copy_records_to_table(
            "conversation_slas",
            records=clocks,
            columns=[
                "conversation_id",
                "metric",
                "cycle",
                "target_seconds",
                "started_at",
                "consumed_seconds",
                "running_since",
                "due_at",
                "met_at",
                "breached_at",
                "next_alarm_at",
            ],
        )
        await connection.copy_records_to_table(
            "csat_ratings",
            records=ratings,
            columns=["conversation_id", "inbox_id", "cycle", "score", "comment", "created_at"],
        )
        await connection.copy_records_to_table(
            "conversation_tags", records=tagged, columns=["conversation_id", "tag_id", "created_at"]
        )
        await connection.execute(
            "ALTER TABLE conversations ENABLE TRIGGER conversations_status_facts"
        )
        copied = time.perf_counter() - started
        started = time.perf_counter()
        for index in indexes:
            await connection.execute(index["indexdef"])
        say(
            f"    COPY {n:,} conversations, {len(messages):,} messages, {len(events):,} events: "
            f"{copied:.1f} s; {len(indexes)} indexes rebuilt: {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        for table in tables:
            await connection.execute(f"VACUUM ANALYZE {table}")
        say(f"    VACUUM ANALYZE: {time.perf_counter() - started:.1f} s")
    finally:
        await connection.close()
    return inbox_ids, agent_ids


async def measure(url: str, inbox_ids: list[str], agent_id: str, repeat: int) -> dict[str, float]:
    from inbox_service.core.auth import Caller
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.reports import queries, service
    from inbox_service.reports.queries import GroupBy

    engine = create_engine(url, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    admin = Caller(user_id="admin", role="admin", inbox_ids=None)
    agent = Caller(user_id=agent_id, role="agent", inbox_ids=frozenset(inbox_ids[:3]))
    figures: dict[str, float] = {}
    say(f"\n[3] summary over 90 days ({load_average()})")
    for who, caller in (("admin", admin), ("agent of 3 inboxes", agent)):
        scope = service.window(caller, date_from=START, date_to=NOW, inbox_id=None, now=NOW)
        groupings: tuple[GroupBy | None, ...] = (None, "agent", "inbox", "day", "tag")
        for group_by in groupings:
            times = []
            for _ in range(repeat):
                async with transaction(sessionmaker) as session:
                    started = time.perf_counter()
                    out = await service.summary(session, scope, group_by, inbox_id=None)
                    times.append(time.perf_counter() - started)
            median = statistics.median(times)
            figures[f"{who}/{group_by}"] = median
            say(
                f"    {who:<19} group_by={group_by or '-':<6} median {median * 1000:6.0f} ms, "
                f"min {min(times) * 1000:6.0f} ms  (new {out.totals.volume.new:,}, "
                f"{len(out.groups or [])} groups, FRT median "
                f"{(out.totals.first_response.median_seconds or 0) / 60:.0f} min, "
                f"CSAT {out.totals.csat.average or 0:.2f} of {out.totals.csat.responses:,})"
            )
    say(f"    ({load_average()})")

    say("\n[4] EXPLAIN (ANALYZE, BUFFERS) of the totals query (admin)")
    scope = service.window(admin, date_from=START, date_to=NOW, inbox_id=None, now=NOW)
    async with transaction(sessionmaker) as session:
        await session.execute(queries.REPORT_WORK_MEM)  # as the service runs it
        explain = queries.summary_sql(None, prefix="EXPLAIN (ANALYZE, BUFFERS) ")
        lines = [row[0] for row in await session.execute(explain, scope.params())]
    scans = [line.strip() for line in lines if re.search(r"Scan|Join|Aggregate|Sort", line)]
    for line in scans[:24]:
        say(f"    {line[:150]}")
    for line in lines[-3:]:
        say(f"    {line.strip()}")
    await engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="conversations")
    parser.add_argument("--messages", type=int, default=10, help="messages per conversation")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.factories

    from inbox_service.core.migrations import upgrade

    with throwaway_postgres("reports", keep=args.keep) as (tmp, pg):
        say(f"[1] PostgreSQL (fast=True) in {tmp}")
        pg.start()
        url = pg.url()
        upgrade(url)
        say(f"[2] seeding {args.n:,} conversations x {args.messages} messages over 90 days")
        inbox_ids, agent_ids = asyncio.run(seed(url, args.n, args.messages))
        figures = asyncio.run(measure(url, inbox_ids, agent_ids[0], args.repeat))
        worst = max(figures.values())
        say("\nsummary")
        say(
            f"  slowest summary: {worst * 1000:.0f} ms "
            f"(target <= {TARGET_S * 1000:.0f} ms: {'ok' if worst <= TARGET_S else 'MISS'}); "
            f"{load_average()}"
        )


if __name__ == "__main__":
    main()
