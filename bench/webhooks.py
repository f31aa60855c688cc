"""Webhook benchmark: signed deliveries/s and enqueue-to-delivery latency, against bare httpx.

    uv run python bench/webhooks.py [-n 10000] [--workers 1] [--conversations 1000]
                                    [--endpoints 1] [--keep]

Everything runs on 127.0.0.1 in a temp dir, and is stopped and removed at the end (also on
Ctrl-C or an error; `--keep` keeps the files: the worker and receiver logs, `records.json`
with every arrival and commit time, the PostgreSQL data):

1. a throwaway PostgreSQL (EmbeddedPostgres, fast=True, pg_stat_statements loaded) migrated
   to head; an inbox and `--endpoints` webhook endpoints (every event type) made with the
   service's own `create_webhook`, each at `http://127.0.0.1:<port>/hook/<k>`;
2. the receiver: a separate process (this file with `--receiver`): a minimal asyncio
   HTTP/1.1 server on uvloop (keep-alive, answers 200 "ok") that records the path, the
   `webhook-id` and the arrival time (CLOCK_MONOTONIC, system-wide on Linux, so comparable
   with this process's clock) of every request;
3. burst: `--workers` x `python -m inbox_service worker` as deployed (inherited settings
   dropped; DATABASE_URL, INBOX_SECRET_KEY, WEBHOOK_ALLOW_PRIVATE=1, IMAP_RESCAN_SECONDS
   large, LOG_LEVEL=WARNING); once they run, N events (`conversation.assigned`, round robin
   over `--conversations` conversation ids) are committed in transactions of `--batch`
   (`new_event` + one flush), each batch timestamped when its commit returns; then wait
   until every delivery succeeded. Deliveries/s from the first to the last arrival, and
   p50/p99 of arrival - commit (here mostly queueing: the events arrive faster than they go);
4. paced: `--paced-n` more events at `--rate` events/s (half the target by default), in
   batches of 1/20 s, to the same workers: the latency at a load they should keep up with
   (compare the achieved rate with `--rate`);
5. anchor: the same number of signed POSTs as in step 3 (the same envelopes,
   `signing.headers` per request) from this process with one `httpx.AsyncClient`, no
   database, once the workers have stopped: with `Connection: close` and 64 in flight (how
   the workers send: one connection per attempt, `WEBHOOK_CONCURRENCY` 64), and with
   keep-alive on 8 connections (httpcore's pool costs O(connections) per request, so 64
   kept-alive connections would make the anchor slower, not faster);
6. summary: deliveries/s against the target (>= 500) and the ratios service/anchor, the
   CPU split, the SQL the workers ran (pg_stat_statements: calls per delivery, mean and
   total time), every event delivered (distinct webhook-ids), duplicates, per-conversation
   order.

`--profile DIR` runs each worker under cProfile (`python -m cProfile -o DIR/worker-<i>.prof`)
and prints their top functions after the run.

Rates are wall-clock; the machine is shared, so read the ratios (same run) and the CPU split.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

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
TARGET = 500.0  # deliveries/s, DESIGN.md
ANCHOR_CONCURRENCY = 64  # the worker's default WEBHOOK_CONCURRENCY
# httpcore's pool does O(connections) work per request: with 64 kept-alive connections it
# spends about 5 ms of CPU per request (180 req/s here, against 680 with 8), so the
# keep-alive anchor keeps 8 connections busy.
KEEPALIVE_CONCURRENCY = 8
RECORDS = "/_records"  # receiver: every record so far as JSON, then forget them
COUNT = "/_count"  # receiver: how many requests it has recorded

# -- small helpers ----------------------------------------------------------------------------


class CpuWatch:
    """CPU seconds used by named groups of processes (each with its descendants)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start = self._sample()
        self._began = time.monotonic()

    def _sample(self) -> dict[str, int]:
        me = os.getpid()  # this process alone: its children are the other groups
        return {
            name: cpu_ticks([p for pid in pids for p in (pid, *descendants(pid) * (pid != me))])
            for name, pids in self.groups.items()
        }

    def cores(self) -> str:
        """How many cores each group used on average since the watch started."""
        hz = os.sysconf("SC_CLK_TCK")
        wall = max(time.monotonic() - self._began, 1e-9)
        end = self._sample()
        return ", ".join(
            f"{name} {(end[name] - self._start[name]) / hz / wall:.2f}" for name in self.groups
        )


def check(ok: bool) -> str:
    return "ok" if ok else "MISS"


# -- the receiver (its own process) ------------------------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
    b"connection: close\r\n\r\nok"
)


class _ReceiverProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for known clients on loopback: Content-Length bodies (no chunked
    encoding), keep-alive unless the request says `Connection: close`."""

    def __init__(self, records: list[tuple[str, str, float]]) -> None:
        self.records = records
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = end + 4 + int(headers.get("content-length", "0"))
            if len(self.buffer) < size:
                return
            del self.buffer[:size]
            arrived = time.monotonic()
            method, target = lines[0].split(" ")[:2]
            if method == "GET":
                self._control(target)
                continue
            self.records.append((target, headers.get("webhook-id", ""), arrived))
            if headers.get("connection", "").lower() == "close":
                self.transport.write(_OK_CLOSE)
                self.transport.close()
                self.transport = None
            else:
                self.transport.write(_OK)

    def _control(self, target: str) -> None:
        if self.transport is None:
            return
        if target == RECORDS:
            body = json.dumps(self.records).encode()
            self.records.clear()
        else:
            body = json.dumps({"n": len(self.records)}).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        self.transport.write(head.encode() + b"\r\n\r\n" + body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def receiver_main(port: int) -> None:
    async def serve() -> None:
        records: list[tuple[str, str, float]] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _ReceiverProtocol(records), "127.0.0.1", port, backlog=1024
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


def start_receiver(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - this file, our interpreter
            [sys.executable, str(Path(__file__).resolve()), "--receiver", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def receiver_get(base: str, path: str) -> Any:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        return (await client.get(path)).json()


async def wait_receiver(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited ({process.returncode}):\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            await receiver_get(base, COUNT)
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the receiver did not answer within 20 s:\n{tail(log)}")


# -- the database, the endpoints and the workers ----------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    pg: Any  # inbox_service.embedded_pg.EmbeddedPostgres
    url: str = ""
    key: str = ""
    inbox_id: str = ""
    secrets: list[str] = field(default_factory=list)
    receiver_base: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # event id → (conversation id, commit time), over both service phases
    events: dict[int, tuple[str, float]] = field(default_factory=dict)

    @property
    def postmaster(self) -> int:
        return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])


def enable_pg_stat_statements(bench: Bench) -> None:
    """Load pg_stat_statements (one restart); the SQL summary reads it after the run."""
    import asyncpg

    async def set_it() -> None:
        conn = await asyncpg.connect(plain_dsn(bench.pg.url("postgres")))
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()

    asyncio.run(set_it())
    bench.pg.stop()
    bench.pg.start()


async def prepare(bench: Bench, port: int) -> None:
    import asyncpg

    from inbox_service.core.crypto import CredentialCipher, generate_key
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.core.migrations import upgrade
    from inbox_service.inboxes import service as inboxes_service
    from inbox_service.inboxes.schemas import InboxIn
    from inbox_service.webhooks import service as webhooks_service
    from inbox_service.webhooks.schemas import WebhookIn

    bench.url = bench.pg.url("inbox")
    admin = await asyncpg.connect(plain_dsn(bench.pg.url("postgres")))
    try:
        await admin.execute("CREATE DATABASE inbox")
    finally:
        await admin.close()
    with timed("migrated to head"):
        await asyncio.to_thread(upgrade, bench.url)
    if bench.args.sql_stats:
        conn = await asyncpg.connect(plain_dsn(bench.url))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()
    bench.key = generate_key()
    cipher = CredentialCipher(bench.key)
    engine = create_engine(bench.url, pool_size=1)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with transaction(sessionmaker) as session:
            inbox = await inboxes_service.create_inbox(
                session,
                InboxIn(name="Bench", address="support@example.com"),
                now=datetime.now(UTC),
            )
            bench.inbox_id = inbox.id
        async with transaction(sessionmaker) as session:
            for k in range(bench.args.endpoints):
                _, secret = await webhooks_service.create_webhook(
                    session,
                    WebhookIn(url=f"http://127.0.0.1:{port}/hook/{k}", events=["*"]),
                    now=datetime.now(UTC),
                    cipher=cipher,
                    policy=webhooks_service.UrlPolicy(allow_private=True),
                )
                bench.secrets.append(secret)
    finally:
        await engine.dispose()
    if bench.args.sql_stats:  # count only what runs from here on
        conn = await asyncpg.connect(plain_dsn(bench.url))
        try:
            await conn.execute("SELECT pg_stat_statements_reset()")
        finally:
            await conn.close()


def worker_env(bench: Bench) -> dict[str, str]:
    """As deployed: inherited settings dropped, only what the bench sets."""
    from inbox_service.core.config import Settings

    known = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in known}
    env |= {
        "DATABASE_URL": bench.url,
        "INBOX_SECRET_KEY": bench.key,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "IMAP_RESCAN_SECONDS": "3600",  # no inbox has IMAP settings; keep the mail part quiet
        "LOG_LEVEL": "WARNING",
    }
    for item in bench.args.worker_env:
        name, _, value = item.partition("=")
        env[name.upper()] = value
    return env


def start_workers(bench: Bench) -> None:
    env = worker_env(bench)
    for i in range(bench.args.workers):
        command = [sys.executable, "-m", "inbox_service", "worker"]
        if bench.args.profile:
            bench.args.profile.mkdir(parents=True, exist_ok=True)
            prof = bench.args.profile.resolve() / f"worker-{i}.prof"
            command[1:1] = ["-m", "cProfile", "-o", str(prof)]
        with (bench.tmp / f"worker-{i}.log").open("wb") as log:
            bench.workers.append(
                subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    command,
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )


def stop_workers(bench: Bench, timeout: float = 30.0) -> list[int | None]:
    """SIGTERM to all (once: a second one could land after the worker dropped its handler),
    wait, SIGKILL what is left; then kill whatever remains of each process group."""
    for w in bench.workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for w in bench.workers:
        try:
            codes.append(w.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            w.kill()
            codes.append(w.wait())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(w.pid, signal.SIGKILL)
    return codes


async def wait_workers_started(bench: Bench) -> None:
    """Until every worker holds its LISTEN connection (it is then in its sender loop)."""
    import asyncpg

    deadline = time.monotonic() + 30
    conn = await asyncpg.connect(plain_dsn(bench.url))
    try:
        while time.monotonic() < deadline:
            for i, w in enumerate(bench.workers):
                if w.poll() is not None:
                    log = tail(bench.tmp / f"worker-{i}.log")
                    raise RuntimeError(f"worker {i} exited ({w.returncode}):\n{log}")
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'inbox' "
                "AND query ILIKE 'LISTEN%inbox_events%'"
            )
            if listening >= len(bench.workers):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise RuntimeError("the workers did not start listening within 30 s")


# -- emitting events and waiting for their deliveries -----------------------------------------


def event_data(n: int, conversation_id: str, inbox_id: str) -> dict[str, Any]:
    """What a `conversation.assigned` event carries (about 600 bytes as a webhook body)."""
    at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).isoformat()
    return {
        "conversation": {
            "id": conversation_id,
            "inbox_id": inbox_id,
            "contact_id": f"ctc_bench{n % 997:05d}",
            "subject": f"Order #{100000 + n}: where is my parcel?",
            "status": "open",
            "priority": "normal",
            "assignee_id": "usr_bench00001",
            "message_count": 1 + n % 5,
            "snoozed_until": None,
            "last_message_at": at,
            "waiting_since": at,
            "version": 2,
        },
        "actor": {"id": "usr_bench00000"},
        "assignee_id": "usr_bench00001",
        "previous_assignee_id": None,
        "n": n,
    }


async def emit_events(
    bench: Bench, sessionmaker: Any, n: int, batch: int, rate: float, first: int
) -> float:
    """Commit n events, `batch` per transaction (paced to `rate` events/s when > 0); record
    each one's conversation and commit time. The commit rate in events/s."""
    from inbox_service.core.db import transaction
    from inbox_service.core.events import EventType, new_event

    started = time.monotonic()
    for start in range(0, n, batch):
        if rate > 0:
            due = started + start / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        numbers = range(first + start, first + min(start + batch, n))
        conversations = [f"cnv_bench{i % bench.args.conversations:06d}" for i in numbers]
        async with transaction(sessionmaker) as session:
            now = datetime.now(UTC)
            events = [
                new_event(
                    EventType.CONVERSATION_ASSIGNED,
                    event_data(i, c, bench.inbox_id),
                    now=now,
                    inbox_id=bench.inbox_id,
                    conversation_id=c,
                )
                for i, c in zip(numbers, conversations, strict=True)
            ]
            session.add_all(events)
            await session.flush()
        committed = time.monotonic()
        for event, conversation in zip(events, conversations, strict=True):
            bench.events[event.id] = (conversation, committed)
    return n / max(time.monotonic() - started, 1e-9)


async def wait_delivered(bench: Bench, expected: int) -> dict[str, int]:
    """Until `expected` deliveries succeeded (all of them), or nothing moved for
    --stall-seconds, or --timeout passed; the deliveries by state."""
    import asyncpg

    conn = await asyncpg.connect(plain_dsn(bench.url))
    try:
        deadline = time.monotonic() + bench.args.timeout
        last, moved = -1, time.monotonic()
        while True:
            rows = await conn.fetch("SELECT state, count(*) FROM webhook_deliveries GROUP BY 1")
            states = {r["state"]: r["count"] for r in rows}
            done = states.get("succeeded", 0)
            if done >= expected and not states.get("pending"):
                return states
            if done != last:
                last, moved = done, time.monotonic()
            for i, w in enumerate(bench.workers):
                if w.poll() is not None:
                    log = tail(bench.tmp / f"worker-{i}.log")
                    raise RuntimeError(f"worker {i} exited ({w.returncode}):\n{log}")
            now = time.monotonic()
            if now - moved > bench.args.stall_seconds or now > deadline:
                say(f"  GAVE UP waiting: {states} of {expected} expected")
                return states
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Measured:
    received: int  # requests, duplicates included
    distinct: int  # distinct (endpoint, webhook-id)
    expected: int
    duplicates: int
    missing: int
    rate: float  # distinct deliveries/s from the first to the last first arrival
    span: float  # seconds from the first to the last first arrival
    latencies_ms: list[float]  # first arrival - commit, sorted
    order_violations: int  # a conversation's event arriving after a later one of it


def measure(bench: Bench, records: Sequence[Sequence[Any]], event_ids: Sequence[int]) -> Measured:
    first: dict[tuple[str, str], float] = {}
    counts: Counter[tuple[str, str]] = Counter()
    for path, webhook_id, arrived in records:
        if not path.startswith("/hook/"):
            continue
        key = (path, webhook_id)
        counts[key] += 1
        first.setdefault(key, arrived)
    wanted = {f"evt_{i}" for i in event_ids}
    ours = {k: t for k, t in first.items() if k[1] in wanted}
    expected = len(event_ids) * bench.args.endpoints
    times = sorted(ours.values())
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    latencies = sorted(
        (t - bench.events[int(webhook_id[4:])][1]) * 1000 for (_, webhook_id), t in ours.items()
    )
    # Per endpoint and conversation, first arrivals must come in event-id order.
    sequences: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for (path, webhook_id), t in ours.items():
        number = int(webhook_id[4:])
        sequences[(path, bench.events[number][0])].append((t, number))
    violations = 0
    for items in sequences.values():
        ids = [number for _, number in sorted(items)]
        violations += sum(1 for a, b in itertools.pairwise(ids) if b < a)
    return Measured(
        received=sum(counts[k] for k in ours),
        distinct=len(ours),
        expected=expected,
        duplicates=sum(counts[k] - 1 for k in ours),
        missing=expected - len(ours),
        rate=(len(times) - 1) / span if span > 0 else 0.0,
        span=span,
        latencies_ms=latencies,
        order_violations=violations,
    )


def show(m: Measured, label: str) -> None:
    lat = m.latencies_ms
    say(
        f"  {label}: {m.distinct}/{m.expected} delivered in {m.span:.1f} s = {m.rate:.0f} "
        f"deliveries/s (first to last arrival)"
    )
    say(
        f"    latency commit -> arrival: p50 {percentile(lat, 0.5):.0f} ms, p95 "
        f"{percentile(lat, 0.95):.0f} ms, p99 {percentile(lat, 0.99):.0f} ms, max "
        f"{(lat[-1] if lat else math.nan):.0f} ms"
    )
    say(
        f"    every event arrived: {'yes' if not m.missing else f'NO, {m.missing} missing'}; "
        f"duplicates {m.duplicates} ({m.received} requests); per-conversation order "
        f"{'kept' if not m.order_violations else f'BROKEN {m.order_violations} times'}"
    )


async def service_phases(bench: Bench) -> dict[str, Any]:
    from inbox_service.core.db import create_engine, create_sessionmaker

    args = bench.args
    engine = create_engine(bench.url, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    results: dict[str, Any] = {}
    try:
        start_workers(bench)
        with timed(f"{args.workers} worker process(es) started and listening"):
            await wait_workers_started(bench)
        pg_pids = [bench.postmaster]
        watch = CpuWatch(
            {
                "workers": [w.pid for w in bench.workers],
                "PostgreSQL": pg_pids,
                "receiver": [bench.processes["receiver"].pid],
                "bench (emitter)": [os.getpid()],
            }
        )
        say(f"\n[3] burst: {args.n} events in transactions of {args.batch}, as fast as they commit")
        burst_started = time.monotonic()
        commit_rate = await emit_events(bench, sessionmaker, args.n, args.batch, 0, 0)
        say(f"  committed at {commit_rate:.0f} events/s; {load_average()}")
        states = await wait_delivered(bench, args.n * args.endpoints)
        elapsed = time.monotonic() - burst_started
        results["burst_cpu"] = watch.cores()
        records = await receiver_get(bench.receiver_base, RECORDS)
        results["records"] = {"burst": records}
        burst_ids = sorted(bench.events)
        results["burst"] = burst = measure(bench, records, burst_ids)
        results["burst_states"] = states
        show(burst, "burst")
        say(
            f"    from the first commit to the last delivery: {elapsed:.1f} s "
            f"({burst.distinct / elapsed:.0f} deliveries/s)"
        )
        say(f"    CPU (cores): {results['burst_cpu']}")
        if args.paced_n:
            batch = max(1, round(args.rate / 20))
            say(
                f"\n[4] paced: {args.paced_n} events at {args.rate:g}/s "
                f"(transactions of {batch}, one every {batch / args.rate * 1000:.0f} ms)"
            )
            watch = CpuWatch(watch.groups)
            await emit_events(bench, sessionmaker, args.paced_n, batch, args.rate, args.n)
            total = (args.n + args.paced_n) * args.endpoints
            results["paced_states"] = await wait_delivered(bench, total)
            results["paced_cpu"] = watch.cores()
            records = await receiver_get(bench.receiver_base, RECORDS)
            results["records"]["paced"] = records
            paced_ids = sorted(set(bench.events) - set(burst_ids))
            results["paced"] = paced = measure(bench, records, paced_ids)
            show(paced, "paced")
            say(f"    CPU (cores): {results['paced_cpu']}")
        if args.sql_stats:
            results["sql"] = await sql_stats(bench)
    finally:
        codes = stop_workers(bench)
        await engine.dispose()
    if any(code != 0 for code in codes):
        say(f"  worker exit codes: {codes} (see the logs)")
    return results


async def sql_stats(bench: Bench) -> list[tuple[int, float, float, str]]:
    """(calls, mean ms, total s, query) of the workers' statements, most total time first."""
    import asyncpg

    conn = await asyncpg.connect(plain_dsn(bench.url))
    try:
        rows = await conn.fetch(
            "SELECT s.calls, s.mean_exec_time, s.total_exec_time, s.query "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = 'inbox' AND s.query NOT ILIKE '%pg_stat_%' "
            # the bench's own: the emitter's inserts and its progress polls
            "AND s.query NOT LIKE 'INSERT INTO events %' "
            "AND s.query NOT LIKE 'SELECT state, count(*) FROM webhook_deliveries%' "
            "ORDER BY s.total_exec_time DESC LIMIT 25"
        )
    finally:
        await conn.close()
    return [
        (r["calls"], r["mean_exec_time"], r["total_exec_time"] / 1000, r["query"]) for r in rows
    ]


# -- the anchor: bare httpx -------------------------------------------------------------------


async def anchor(bench: Bench, bodies: Sequence[tuple[str, bytes]], close: bool) -> dict[str, Any]:
    """The same signed POSTs from one httpx client: ANCHOR_CONCURRENCY in flight, each on a
    connection of its own (`close`), or KEEPALIVE_CONCURRENCY kept-alive connections."""
    import httpx

    from inbox_service.webhooks import signing

    path = f"/hook/anchor-{'close' if close else 'keepalive'}"
    url = bench.receiver_base + path
    concurrency = ANCHOR_CONCURRENCY if close else KEEPALIVE_CONCURRENCY
    keep = 0 if close else concurrency
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=keep)
    todo = iter(bodies)
    errors = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for msg_id, body in todo:  # shared by every task: each item is sent once
            headers = {
                "content-type": "application/json",
                "user-agent": "bench-anchor",
                **signing.headers(bench.secrets[:1], msg_id, int(time.time()), body),
            }
            if close:
                headers["connection"] = "close"
            try:
                response = await client.post(url, content=body, headers=headers)
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1

    watch = CpuWatch(
        {"bench (httpx)": [os.getpid()], "receiver": [bench.processes["receiver"].pid]}
    )
    started = time.monotonic()
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=10) as client:
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
    wall = time.monotonic() - started
    cpu = watch.cores()
    records = await receiver_get(bench.receiver_base, RECORDS)
    times = sorted(t for p, _, t in records if p == path)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    rate = (len(times) - 1) / span if span > 0 else 0.0
    return {"rate": rate, "wall": wall, "n": len(times), "errors": errors, "cpu": cpu}


async def anchors(bench: Bench) -> dict[str, Any]:
    """Bodies as the workers send them: the EventOut envelope of each event."""
    from inbox_service.events.schemas import EventOut

    now = datetime.now(UTC)
    bodies = []
    for i in range(bench.args.n):
        conversation = f"cnv_bench{i % bench.args.conversations:06d}"
        envelope = EventOut(
            id=f"evt_anchor{i}",
            type="conversation.assigned",
            created_at=now,
            inbox_id=bench.inbox_id,
            conversation_id=conversation,
            data=event_data(i, conversation, bench.inbox_id),
        )
        bodies.append((envelope.id, envelope.model_dump_json().encode()))
    results = {}
    for close in (True, False):
        label = (
            f"Connection: close, {ANCHOR_CONCURRENCY} in flight"
            if close
            else f"keep-alive, {KEEPALIVE_CONCURRENCY} connections"
        )
        r = results[label] = await anchor(bench, bodies, close)
        say(
            f"  {label}: {r['n']} received, {r['rate']:.0f} req/s (first to last arrival; "
            f"wall {r['wall']:.1f} s), errors {r['errors']}; CPU (cores): {r['cpu']}"
        )
    return results


# -- profile and summary ----------------------------------------------------------------------


def show_profiles(directory: Path) -> None:
    files = sorted(directory.glob("worker-*.prof"))
    if not files:
        say("  (no profile written: did the workers stop cleanly?)")
        return
    stats = pstats.Stats(*(str(f) for f in files))
    say(f"  {', '.join(f.name for f in files)}; read them with `python -m pstats FILE`")
    rows = [(tottime, calls, func) for func, (_, calls, tottime, _, _) in stats.stats.items()]
    total = sum(t for t, _, _ in rows) or 1.0
    say(f"  top own time (of {total:.1f} s in the profiled threads):")
    for tottime, calls, (filename, line, name) in sorted(rows, reverse=True)[:25]:
        where = filename.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
        say(
            f"    {tottime:6.2f} s {100 * tottime / total:5.1f} % {calls:8d}  "
            f"{name}  {where}:{line}"
        )


def summarize(bench: Bench, service: dict[str, Any], bare: dict[str, Any]) -> None:
    args = bench.args
    burst: Measured = service["burst"]
    say(
        f"  {args.workers} worker(s), {args.endpoints} endpoint(s), {args.conversations} "
        f"conversations, {args.n} events"
    )
    say(
        f"  deliveries/s (burst, first to last arrival): {burst.rate:.0f}   "
        f"{check(burst.rate >= TARGET)} (>= {TARGET:g})"
    )
    for label, r in bare.items():
        ratio = burst.rate / r["rate"] if r["rate"] else math.nan
        say(f"  bare httpx, {label}: {r['rate']:.0f} req/s; service/bare {ratio:.2f}")
    lat = burst.latencies_ms
    say(
        f"  latency, burst (queueing included): p50 {percentile(lat, 0.5):.0f} ms, "
        f"p99 {percentile(lat, 0.99):.0f} ms"
    )
    if "paced" in service:
        paced: Measured = service["paced"]
        lat = paced.latencies_ms
        say(
            f"  latency, paced at {args.rate:g} events/s ({args.rate * args.endpoints:g} "
            f"deliveries/s offered): p50 {percentile(lat, 0.5):.0f} ms, p99 "
            f"{percentile(lat, 0.99):.0f} ms (achieved {paced.rate:.0f} deliveries/s)"
        )
    phases = [burst, *([service["paced"]] if "paced" in service else [])]
    missing = sum(m.missing for m in phases)
    duplicates = sum(m.duplicates for m in phases)
    violations = sum(m.order_violations for m in phases)
    say(
        f"  every event delivered: {check(not missing)} ({missing} missing); duplicates: "
        f"{duplicates}; per-conversation order: {check(not violations)}"
    )
    if service.get("sql"):
        delivered = sum(m.distinct for m in phases) or 1
        say("  SQL by total time (pg_stat_statements, whole run): calls/delivery, mean, total")
        for calls, mean, total, query in service["sql"][: args.sql_top]:
            text = " ".join(query.split())[:110]
            say(f"    {calls / delivered:6.2f}  {mean:7.2f} ms  {total:6.2f} s  {text}")
    say(f"  ({load_average()})")


async def run(bench: Bench) -> None:
    args = bench.args
    port = free_port()
    say("\n[1] database, inbox and endpoints")
    await prepare(bench, port)
    say(f"  {args.endpoints} endpoint(s) at http://127.0.0.1:{port}/hook/<k>, every event type")

    say("\n[2] receiver (separate process, uvloop)")
    log = bench.tmp / "receiver.log"
    bench.processes["receiver"] = receiver = start_receiver(port, log)
    bench.receiver_base = f"http://127.0.0.1:{port}"
    await wait_receiver(bench.receiver_base, receiver, log)
    say(f"  {bench.receiver_base} ready")

    service = await service_phases(bench)
    if args.keep:
        arrivals = service.pop("records")
        commits = {f"evt_{i}": [c, t] for i, (c, t) in bench.events.items()}
        data = {"arrivals": arrivals, "commits (conversation, monotonic s)": commits}
        (bench.tmp / "records.json").write_text(json.dumps(data))
    if args.profile:
        say("\n[profile] the workers under cProfile")
        show_profiles(args.profile)

    say(f"\n[5] anchor: {args.n} signed POSTs, bare httpx from this process, no database")
    bare = await anchors(bench)

    say("\n[6] summary")
    summarize(bench, service, bare)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=10_000, help="events of the burst")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--conversations", type=int, default=1000, help="events spread over")
    parser.add_argument("--endpoints", type=int, default=1, help="each gets every event")
    parser.add_argument("--batch", type=int, default=100, help="events per transaction")
    parser.add_argument("--paced-n", type=int, default=2000, help="events of the paced phase")
    parser.add_argument("--rate", type=float, default=250, help="events/s of the paced phase")
    parser.add_argument("--timeout", type=float, default=600, help="longest wait per phase (s)")
    parser.add_argument("--stall-seconds", type=float, default=60, help="give up when stuck")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for the workers, e.g. WEBHOOK_CONCURRENCY=128",
    )
    parser.add_argument("--no-sql-stats", dest="sql_stats", action="store_false")
    parser.add_argument("--sql-top", type=int, default=10, help="statements to show")
    parser.add_argument("--profile", type=Path, help="cProfile each worker into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        receiver_main(args.receiver)
        return
    if args.n < 2 or args.conversations < 1 or args.endpoints < 1 or args.workers < 1:
        parser.error("-n >= 2, --conversations, --endpoints and --workers >= 1")

    from inbox_service.embedded_pg import EmbeddedPostgres

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    tmp = Path(tempfile.mkdtemp(prefix="inbox-bench-webhooks-"))
    with contextlib.ExitStack() as stack:
        if args.keep:
            stack.callback(say, f"\nkept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        pg = EmbeddedPostgres(tmp / "pg", fast=True)
        stack.callback(pg.stop)
        bench = Bench(args, tmp, pg)
        # Run first (LIFO): workers, then the receiver, then PostgreSQL.
        stack.callback(lambda: stop_process(bench.processes.get("receiver"), timeout=5))
        stack.callback(stop_workers, bench)
        say(f"[0] PostgreSQL (fast=True) in {tmp}; {load_average()}")
        try:
            pg.start()
            if args.sql_stats:
                enable_pg_stat_statements(bench)
            asyncio.run(run(bench))
        except (KeyboardInterrupt, Stopped):
            say("\ninterrupted; cleaning up")
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
