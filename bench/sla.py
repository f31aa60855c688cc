"""SLA timer benchmark: one tick over a million open conversations with due times.

    uv run python bench/sla.py [-n 1000000] [--due 1000] [--ticks 5] [--repeat 5] [--keep]

1. a throwaway PostgreSQL (EmbeddedPostgres, fast=True) migrated to head; one inbox and a
   24/7 SLA policy (first response 4 h, warn 30 min before) made with the service's code;
2. seed with COPY (asyncpg `copy_records_to_table`): N open conversations of that policy,
   each with a first-response clock (`conversation_slas`, its `next_alarm_at`) and the
   conversation's `sla_due_at` / `sla_warn_at`; `--due` x `--ticks` x 2 of them have
   their next alarm in the past (a backlog: each tick finds `--due`; the rest spread over
   the next 30 days); then VACUUM ANALYZE;
3. the claim: the tick's own statement (`sla.jobs.due_conversations`, FOR NO KEY UPDATE
   SKIP LOCKED, LIMIT 1000) timed `--repeat` times in a rolled-back transaction (median,
   min), and its EXPLAIN (ANALYZE, BUFFERS), which must show an index scan of
   `ix_conversation_slas_next_alarm_at` (and primary-key lookups of the conversations);
4. whole ticks (`sla.jobs.tick` on a FixedClock), each claiming and announcing `--due`
   alarms: claim, compute, and write an activity, an event and an alert per alarm, commit.
   The server runs with shared_buffers = 1GB (sized for this database, as a deployment
   would be) and is restarted after the seeding. First `--ticks` ticks on a cold cache:
   every page of a due conversation and timer comes from the OS cache (the first tick is
   also a fresh worker's: statements prepared). Then the tick's tables and indexes are
   loaded with pg_prewarm and `--ticks` more ticks run on a warm cache: what a server
   that has been running sees, whose median is held to the target. Then one more tick,
   which must find nothing (every alarm announced once);
5. the list: `GET /v1/conversations?sla=breached&sort=sla_due` and `?sla=at_risk` for one
   inbox, through `conversations.queries.list_conversations` (median of `--repeat`), with
   their plans' index names.

Target (DESIGN.md): the tick <= 100 ms with 1M open conversations, never a scan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import say, throwaway_postgres

TARGET_MS = 100.0
SHARED_BUFFERS = "1GB"
# What a tick reads and writes: loaded into shared_buffers for the warm ticks.
PREWARMED = (
    "conversations",
    "pk_conversations",
    "conversation_slas",
    "pk_conversation_slas",
    "ix_conversation_slas_next_alarm_at",
    "activities",
    "events",
    "alerts",
)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def seed(url: str, n: int, due: int) -> tuple[str, str]:
    """The inbox, the policy and N conversations with clocks; (inbox id, policy id)."""
    import asyncpg

    from inbox_service.core.db import create_engine, create_sessionmaker, plain_dsn, transaction
    from inbox_service.sla import policies
    from inbox_service.sla.schemas import PolicyIn
    from tests.support.factories import make_inbox

    engine = create_engine(url, pool_size=2)
    async with transaction(create_sessionmaker(engine)) as session:
        inbox = await make_inbox(session, now=NOW)
        policy = await policies.create_policy(
            session,
            PolicyIn.model_validate(
                {
                    "name": "24/7",
                    "inbox_ids": [inbox.id],
                    "targets": {"normal": {"first_response": 4 * 3600}},
                    "warn_before": 1800,
                }
            ),
            now=NOW,
        )
        inbox_id, policy_id = inbox.id, policy.id
    await engine.dispose()

    rng = random.Random(42)  # noqa: S311 - reproducible due times, not secrets
    conversations: list[tuple[Any, ...]] = []
    clocks: list[tuple[Any, ...]] = []
    for i in range(n):
        cid = f"cnv_bench{i:010d}"
        if i % (n // due) == 0 and i // (n // due) < due:
            warn_at = NOW - timedelta(seconds=rng.randint(1, 600))  # the warning is due
        else:
            warn_at = NOW + timedelta(seconds=rng.randint(60, 30 * 86_400))
        due_at = warn_at + timedelta(minutes=30)
        started = due_at - timedelta(hours=4)
        conversations.append(
            (
                cid,
                inbox_id,
                f"Case {i}",
                f"case {i}",
                f"{i:016x}",
                "open",
                "normal",
                1,
                "",
                started,
                started,
                started,
                started,
                1,
                policy_id,
                due_at,
                warn_at,
            )
        )
        clocks.append(
            (cid, "first_response", 1, 4 * 3600, started, 0, started, due_at, warn_at, warn_at)
        )
    due_count = sum(1 for c in clocks if c[9] <= NOW)
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        started_at = time.perf_counter()
        # Secondary indexes are built once after the COPY (much faster than row by row).
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
            "('conversations', 'conversation_slas') AND indexname NOT LIKE 'pk_%'"
            " AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        for index in indexes:
            await connection.execute(f'DROP INDEX "{index["indexname"]}"')
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
                "message_count",
                "snippet",
                "last_message_at",
                "waiting_since",
                "created_at",
                "updated_at",
                "version",
                "sla_policy_id",
                "sla_due_at",
                "sla_warn_at",
            ],
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
                "warn_at",
                "next_alarm_at",
            ],
        )
        copied = time.perf_counter() - started_at
        started_at = time.perf_counter()
        for index in indexes:
            await connection.execute(index["indexdef"])
        say(
            f"    COPY {n:,} conversations + clocks: {copied:.1f} s; "
            f"{len(indexes)} indexes rebuilt: {time.perf_counter() - started_at:.1f} s"
        )
        started_at = time.perf_counter()
        await connection.execute("VACUUM ANALYZE conversations")
        await connection.execute("VACUUM ANALYZE conversation_slas")
        await connection.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
        say(f"    VACUUM ANALYZE: {time.perf_counter() - started_at:.1f} s; due now: {due_count}")
    finally:
        await connection.close()
    return inbox_id, policy_id


def _plan_nodes(plan: dict[str, Any]) -> list[str]:
    node = f"{plan['Node Type']}" + (f" using {plan['Index Name']}" if "Index Name" in plan else "")
    return [node, *(n for child in plan.get("Plans", []) for n in _plan_nodes(child))]


async def measure(url: str, inbox_id: str, repeat: int, ticks: int, due: int) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql

    from inbox_service.conversations import queries
    from inbox_service.core.auth import Caller
    from inbox_service.core.clock import FixedClock
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.core.pagination import PageParams
    from inbox_service.sla import jobs

    engine = create_engine(url, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    claim = jobs.due_conversations(NOW, due)
    compiled = claim.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    figures: dict[str, Any] = {}

    # 3. the claim alone, rolled back each time so every run finds the same rows
    times = []
    for _ in range(repeat):
        async with sessionmaker() as session:
            started = time.perf_counter()
            found = list(await session.scalars(claim))
            times.append(time.perf_counter() - started)
            await session.rollback()
    figures["claim_ms"] = statistics.median(times) * 1000
    say(
        f"[3] claim ({len(found)} rows): median {ms(statistics.median(times))}, "
        f"min {ms(min(times))} over {repeat}"
    )
    async with sessionmaker() as session:
        plan = await session.scalar(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}"))
        if isinstance(plan, str):
            plan = json.loads(plan)
        lines = await session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}"))
        say("    EXPLAIN (ANALYZE, BUFFERS) of the claim:")
        for (line,) in lines:
            say(f"      {line}")
        await session.rollback()
    nodes = _plan_nodes(plan[0]["Plan"])
    figures["claim_index_scan"] = any(
        "ix_conversation_slas_next_alarm_at" in n for n in nodes
    ) and not any(n.startswith("Seq Scan") for n in nodes)

    # 4. ticks through the backlog, cold then warm, then one more that must find nothing
    clock = FixedClock(NOW)
    fired: list[int] = []

    async def run_ticks(label: str) -> list[float]:
        tick_ms: list[float] = []
        for _ in range(ticks):
            started = time.perf_counter()
            fired.append(await jobs.tick(sessionmaker, clock, due))
            tick_ms.append((time.perf_counter() - started) * 1000)
        say(
            f"[4] {ticks} whole ticks, {label} (activity + event + alert per alarm, one "
            f"commit each; {fired[-1]} alarms each): "
            + ", ".join(f"{t:.1f}" for t in tick_ms)
            + " ms"
        )
        return tick_ms

    cold = await run_ticks("cold cache")
    async with transaction(sessionmaker) as session:
        await session.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
        await session.execute(
            text(
                "SELECT pg_prewarm(CAST(name AS regclass)) FROM unnest(CAST(:names AS text[])) name"
            ),
            {"names": list(PREWARMED)},
        )
    warm = await run_ticks("warm cache")
    figures["again"] = await jobs.tick(sessionmaker, clock, due)
    figures["fired"] = fired
    figures["first_ms"], figures["cold_ms"] = cold[0], statistics.median(cold[1:])
    figures["tick_ms"] = statistics.median(warm)
    say(f"    next tick: {figures['again']} alarms")

    # 5. the list filters and sort, through the API's own query code
    caller = Caller(user_id="usr_bench", role="admin", inbox_ids=None)
    for name, filters, sort in (
        (
            "sla=breached&sort=sla_due",
            queries.Filters(inbox_id=inbox_id, sla="breached"),
            "sla_due",
        ),
        ("sla=at_risk", queries.Filters(inbox_id=inbox_id, sla="at_risk"), "newest"),
        ("sla=breached", queries.Filters(inbox_id=inbox_id, sla="breached"), "newest"),
        ("sort=sla_due", queries.Filters(inbox_id=inbox_id, status=("open",)), "sla_due"),
    ):
        times = []
        for _ in range(repeat):
            async with transaction(sessionmaker) as session:
                started = time.perf_counter()
                rows, _ = await queries.list_conversations(
                    session,
                    caller,
                    filters,
                    sort,
                    PageParams(limit=50, cursor=None),  # type: ignore[arg-type]
                    now=NOW + timedelta(hours=1),
                )
                times.append(time.perf_counter() - started)
        figures[f"list {name}"] = statistics.median(times) * 1000
        say(f"[5] list ?{name}: {len(rows)} rows, median {ms(statistics.median(times))}")
    async with sessionmaker() as session:
        for label, sql in (
            (
                "sla=breached&sort=sla_due",
                "SELECT id FROM conversations WHERE merged_into_id IS NULL AND inbox_id = :inbox "
                "AND coalesce(sla_due_at, 'infinity') <= :now "
                "ORDER BY coalesce(sla_due_at, 'infinity'), id LIMIT 51",
            ),
            (
                "sla=at_risk",
                "SELECT id FROM conversations WHERE merged_into_id IS NULL AND inbox_id = :inbox "
                "AND id = ANY(ARRAY(SELECT w.id FROM conversations w WHERE w.sla_warn_at <= :now "
                "AND NOT w.sla_due_at <= :now)) ORDER BY last_message_at DESC, id DESC LIMIT 51",
            ),
            (
                "sla=breached",
                "SELECT id FROM conversations WHERE merged_into_id IS NULL AND inbox_id = :inbox "
                "AND id = ANY(ARRAY(SELECT w.id FROM conversations w WHERE w.sla_warn_at <= :now "
                "AND w.sla_due_at <= :now)) ORDER BY last_message_at DESC, id DESC LIMIT 51",
            ),
        ):
            plan = await session.scalar(
                text(f"EXPLAIN (FORMAT JSON) {sql}"),
                {"inbox": inbox_id, "now": NOW + timedelta(hours=1)},
            )
            if isinstance(plan, str):
                plan = json.loads(plan)
            say(f"    plan of ?{label}: {' > '.join(_plan_nodes(plan[0]['Plan']))}")
    await engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="open conversations")
    parser.add_argument("--due", type=int, default=1000, help="alarms each tick finds")
    parser.add_argument("--ticks", type=int, default=5, help="ticks per cache state (>= 2)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    if args.n < args.due * args.ticks * 2 or args.due < 1 or args.ticks < 2:
        parser.error("need -n >= --due x --ticks x 2, --due >= 1 and --ticks >= 2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.factories

    from inbox_service.core.migrations import upgrade

    with throwaway_postgres("sla", keep=args.keep) as (tmp, pg):
        say(f"[1] PostgreSQL (fast=True, shared_buffers {SHARED_BUFFERS}) in {tmp}")
        pg.start()
        url = pg.url()
        upgrade(url)
        backlog = args.due * args.ticks * 2
        say(f"[2] seeding {args.n:,} open conversations, {backlog} due")
        inbox_id, _ = asyncio.run(seed(url, args.n, backlog))
        pg.stop()
        pg.start()  # with the shared_buffers the seeding set, and nothing in them
        figures = asyncio.run(measure(pg.url(), inbox_id, args.repeat, args.ticks, args.due))
        ok = figures["tick_ms"] <= TARGET_MS
        say("\nsummary")
        say(
            f"  claim of the due rows: {figures['claim_ms']:.1f} ms (median); "
            f"index scan: {'yes' if figures['claim_index_scan'] else 'NO'}"
        )
        say(
            f"  whole tick ({args.due} alarms), warm cache: {figures['tick_ms']:.1f} ms, "
            f"median of {args.ticks} (target <= {TARGET_MS:.0f} ms: {'ok' if ok else 'MISS'})"
        )
        say(
            f"  whole tick, cold cache: {figures['cold_ms']:.1f} ms, median of "
            f"{args.ticks - 1}; a fresh worker's first: {figures['first_ms']:.1f} ms"
        )
        every = set(figures["fired"]) == {args.due}
        say(f"  every tick found {args.due}: {'yes' if every else 'NO'}")
        say(f"  announced once: {'yes' if figures['again'] == 0 else 'NO'}")


if __name__ == "__main__":
    main()
