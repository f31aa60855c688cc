"""Load test: agents reading, replying, assigning and writing notes at a steady rate while
mail is ingested and replies go out.

    uv run python bench/load.py [--seconds 300] [--rate 40] [--agents 8] [--inboxes 2]
                                [--mail-rate 2] [--seed-mails 150] [--api-workers 1] [--keep]

Everything runs on 127.0.0.1 in a temp dir, and is stopped and removed at the end (also on
Ctrl-C or an error; `--keep` keeps the logs and data):

1. a throwaway PostgreSQL (EmbeddedPostgres, fast=True) migrated to head; a Dovecot (the
   test helper) with one user per inbox; an aiosmtpd sink counting what it receives;
2. through the service's own functions: `--inboxes` inboxes, each syncing its Dovecot user
   over IMAP and sending through the sink (undo window 0), `--agents` agents in every inbox,
   each with an API key; `--seed-mails` customer mails in the mailboxes before the start;
3. the service as deployed: `python -m inbox_service serve --workers N` and one
   `python -m inbox_service worker` (inherited settings dropped; DB_POOL_SIZE=10,
   RATE_LIMIT_PER_MINUTE=0, LOG_LEVEL=WARNING); wait until the seed mail is ingested;
4. the run, for `--seconds`: a mail generator appends `--mail-rate` customer mails/s (new
   threads and follow-ups) over IMAP, while this process (httpx, open loop: request i is
   due at t0 + i/rate, and its latency counts from then, so a server falling behind shows)
   sends `--rate` requests/s as random agents, mixed as MIX below; once a second
   pg_stat_activity is sampled (connections to the service's database);
5. the summary: throughput, p50/p99 and errors per endpoint (target: 0 errors), the
   connections used (peak, mean, by state at the peak), and what flowed beside: mails
   appended and ingested, replies created, sent and waiting, mails the sink received.

Rates are wall-clock; the machine is shared, so read the figures with the load average
printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import Stopped, free_port, load_average, on_sigterm, percentile, say, stop_process, tail

from inbox_service.core.db import plain_dsn

ROOT = Path(__file__).resolve().parents[1]
DB = "inbox"
# endpoint label: weight (per cent of requests)
MIX = {
    "GET /v1/conversations": 30,
    "GET /v1/conversations/{id}": 20,
    "GET /v1/conversations/{id}/timeline": 15,
    "POST /v1/conversations/{id}/replies": 10,
    "POST /v1/conversations/{id}/assign": 15,
    "POST /v1/conversations/{id}/notes": 10,
}


# -- the SMTP sink ------------------------------------------------------------------------------


class Sink:
    """aiosmtpd on its own thread: counts the messages handed over."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.received = 0
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.received += 1
        return "250 2.0.0 Ok: queued"


# -- the mail generator -------------------------------------------------------------------------


def customer_mail(n: int, rng: random.Random, follow_up_of: int | None) -> bytes:
    sender = f"customer{rng.randrange(500)}@example.org"
    headers = [
        f"From: Customer <{sender}>",
        "To: support@example.com",
        f"Subject: {'Re: ' if follow_up_of is not None else ''}Order {follow_up_of or n}",
        f"Date: {datetime.now(UTC):%a, %d %b %Y %H:%M:%S +0000}",
        f"Message-ID: <load{n}@example.org>",
    ]
    if follow_up_of is not None:
        headers.append(f"In-Reply-To: <load{follow_up_of}@example.org>")
    body = " ".join(
        rng.choice(("parcel", "late", "refund", "please", "order", "help")) for _ in range(60)
    )
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


class MailGenerator:
    """Appends customer mail over IMAP at a steady rate, on its own thread."""

    def __init__(self, dovecot: Any, users: Sequence[str], rate: float, seed: int) -> None:
        self.dovecot = dovecot
        self.users = list(users)
        self.rate = rate
        self.rng = random.Random(seed)  # noqa: S311 (a workload, not a secret)
        self.appended = 0
        self.next_n = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def append_one(self) -> None:
        n = self.next_n
        self.next_n += 1
        follow_up = self.rng.randrange(n) if n > 10 and self.rng.random() < 0.3 else None
        user = self.users[n % len(self.users)]
        self.dovecot.append(user, "INBOX", customer_mail(n, self.rng, follow_up))
        self.appended += 1

    def _run(self) -> None:
        start, already = time.monotonic(), self.appended
        while not self.stop.is_set():
            self.append_one()
            due = start + (self.appended - already) / self.rate
            self.stop.wait(max(0.0, due - time.monotonic()))


# -- setup ----------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    pg: Any
    dovecot: Any = None
    sink: Sink | None = None
    url: str = ""
    key: str = ""
    users: list[str] = field(default_factory=list)
    agent_keys: list[str] = field(default_factory=list)
    agent_ids: list[str] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


async def prepare(bench: Bench) -> None:
    import asyncpg

    from inbox_service.core.auth import Caller
    from inbox_service.core.crypto import CredentialCipher, generate_key
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.core.migrations import upgrade
    from inbox_service.inboxes import service as inboxes_service
    from inbox_service.inboxes.mail_settings import (
        ImapSettingsIn,
        SmtpSettingsIn,
        apply_imap_settings,
        apply_smtp_settings,
    )
    from inbox_service.inboxes.schemas import InboxIn
    from inbox_service.users import service as users_service
    from inbox_service.users.schemas import ApiKeyIn, UserIn

    bench.url = bench.pg.url(DB)
    admin = await asyncpg.connect(plain_dsn(bench.pg.url("postgres")))
    try:
        await admin.execute(f"CREATE DATABASE {DB}")
    finally:
        await admin.close()
    await asyncio.to_thread(upgrade, bench.url)
    bench.key = generate_key()
    cipher = CredentialCipher(bench.key)
    if bench.sink is None:
        raise RuntimeError("the SMTP sink is not running")
    now = datetime.now(UTC)
    engine = create_engine(bench.url, pool_size=1)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with transaction(sessionmaker) as session:
            agents = []
            for a in range(bench.args.agents):
                user = await users_service.create_user(
                    session, UserIn(email=f"agent{a}@example.com", name=f"Agent {a}"), now=now
                )
                caller = Caller(user_id=user.id, role="admin", inbox_ids=None)
                _, token = await users_service.create_api_key(session, caller, ApiKeyIn(), now=now)
                agents.append(user)
                bench.agent_keys.append(token)
                bench.agent_ids.append(user.id)
            for i in range(bench.args.inboxes):
                name, password = f"support{i}", secrets.token_urlsafe(12)
                bench.dovecot.add_user(name, password)
                bench.users.append(name)
                inbox = await inboxes_service.create_inbox(
                    session, InboxIn(name=f"Support {i}", address=f"{name}@example.com"), now=now
                )
                apply_imap_settings(
                    inbox,
                    ImapSettingsIn(
                        host="127.0.0.1",
                        port=bench.dovecot.port,
                        security="none",
                        username=name,
                        secret=password,  # type: ignore[arg-type]
                    ),
                    cipher,
                )
                apply_smtp_settings(
                    inbox,
                    SmtpSettingsIn(host="127.0.0.1", port=bench.sink.port, security="none"),
                    None,
                )
                for user in agents:
                    await inboxes_service.add_member(session, inbox, user.id, now=now)
    finally:
        await engine.dispose()


def service_env(bench: Bench) -> dict[str, str]:
    """As deployed: inherited settings dropped, only what the bench sets."""
    from inbox_service.core.config import Settings

    known = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in known}
    return env | {
        "DATABASE_URL": bench.url,
        "INBOX_SECRET_KEY": bench.key,
        "RATE_LIMIT_PER_MINUTE": "0",
        "DB_POOL_SIZE": "10",
        "LOG_LEVEL": "WARNING",
    }


def start(bench: Bench, name: str, command: list[str]) -> None:
    with (bench.tmp / f"{name}.log").open("wb") as log:
        bench.processes[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "inbox_service", *command],
            cwd=ROOT,
            env=service_env(bench),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_ready(base: str, bench: Bench) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        while time.monotonic() < deadline:
            api = bench.processes["api"]
            if api.poll() is not None:
                raise RuntimeError(f"the API exited:\n{tail(bench.tmp / 'api.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the API did not answer within 60 s:\n{tail(bench.tmp / 'api.log')}")


async def db_counts(conn: Any) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM messages WHERE direction = 'inbound') AS inbound,"
        " (SELECT count(*) FROM conversations) AS conversations,"
        " (SELECT count(*) FROM replies) AS replies,"
        " (SELECT count(*) FROM replies WHERE status = 'sent') AS sent,"
        " (SELECT count(*) FROM replies WHERE status IN ('scheduled', 'queued', 'sending'))"
        " AS waiting,"
        " (SELECT count(*) FROM replies WHERE status IN ('failed', 'unknown')) AS not_sent"
    )
    return dict(row)


async def wait_ingested(conn: Any, expected: int, bench: Bench, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (await db_counts(conn))["inbound"] >= expected:
            return
        worker = bench.processes["worker"]
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{tail(bench.tmp / 'worker.log')}")
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the seed mail was not ingested within {limit:g} s")


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Results:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    late_starts: int = 0


class Driver:
    def __init__(self, bench: Bench, base: str, results: Results) -> None:
        self.bench = bench
        self.base = base
        self.results = results
        self.rng = random.Random(bench.args.seed)  # noqa: S311 (a workload)
        self.conversations: list[tuple[str, str]] = []  # (id, inbox id)
        self.labels = list(MIX)
        self.weights = [MIX[label] for label in self.labels]
        self.n = 0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.rng.choice(self.bench.agent_keys)}"}

    async def refresh(self, client: httpx.AsyncClient) -> None:
        """The conversations agents pick from: the most recent ones, from the API itself."""
        response = await client.get(
            "/v1/conversations", params={"limit": 100}, headers=self.headers()
        )
        response.raise_for_status()
        self.conversations = [(c["id"], c["inbox_id"]) for c in response.json()["items"]]

    async def one(self, client: httpx.AsyncClient, label: str, due: float) -> None:
        conversation, _ = self.rng.choice(self.conversations)
        path = label.split(" ", 1)[1].replace("{id}", conversation)
        method = label.split(" ", 1)[0]
        self.n += 1
        body: dict[str, Any] | None = None
        params: dict[str, Any] | None = None
        if label.endswith("/replies"):
            body = {"body_text": f"Thanks, we are on it ({self.n})."}
        elif label.endswith("/assign"):
            body = {"assignee_id": self.rng.choice([*self.bench.agent_ids, None])}
        elif label.endswith("/notes"):
            body = {"body": f"Internal note {self.n}: checked the order."}
        elif label == "GET /v1/conversations":
            params = {"status": self.rng.choice(["open", "pending"]), "limit": 25}
        try:
            response = await client.request(
                method, path, json=body, params=params, headers=self.headers()
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            self.results.errors[label][type(exc).__name__] += 1
            return
        elapsed = time.monotonic() - due
        if status >= 400:
            self.results.errors[label][str(status)] += 1
        else:
            self.results.latencies[label].append(elapsed)

    async def run(self, seconds: float, rate: float) -> float:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=self.base, timeout=30, limits=limits, trust_env=False
        ) as client:
            await self.refresh(client)
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            total = int(seconds * rate)
            next_refresh = start + 5
            for i in range(total):
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.05:
                    self.results.late_starts += 1
                if time.monotonic() > next_refresh:  # new mail makes new conversations
                    next_refresh += 5
                    task = asyncio.create_task(self.refresh(client))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                label = self.rng.choices(self.labels, self.weights)[0]
                task = asyncio.create_task(self.one(client, label, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks, return_exceptions=True)
            return time.monotonic() - start


async def sample_connections(url: str, stop: asyncio.Event, samples: list[Counter[str]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain_dsn(url))
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT coalesce(state, 'none') AS state, count(*) AS n FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid() GROUP BY 1",
                DB,
            )
            samples.append(Counter({r["state"]: r["n"] for r in rows}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await conn.close()


# -- run and report -----------------------------------------------------------------------------


async def run(bench: Bench) -> None:
    import asyncpg

    args = bench.args
    await prepare(bench)
    generator = MailGenerator(bench.dovecot, bench.users, args.mail_rate, args.seed)
    for _ in range(args.seed_mails):
        generator.append_one()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start(bench, "api", ["serve", "--port", str(port), "--workers", str(args.api_workers)])
    start(bench, "worker", ["worker"])
    await wait_ready(base, bench)
    conn = await asyncpg.connect(plain_dsn(bench.url))
    try:
        started = time.monotonic()
        await wait_ingested(conn, args.seed_mails, bench)
        say(f"[1] {args.seed_mails} seed mails ingested in {time.monotonic() - started:.1f} s")
        before = await db_counts(conn)
        sunk_before = bench.sink.received if bench.sink else 0
        say(
            f"[2] {args.seconds:g} s at {args.rate:g} req/s, mail at {args.mail_rate:g}/s; "
            f"{load_average()}"
        )
        results = Results()
        stop = asyncio.Event()
        samples: list[Counter[str]] = []
        sampler = asyncio.create_task(sample_connections(bench.url, stop, samples))
        generator.thread.start()
        try:
            elapsed = await Driver(bench, base, results).run(args.seconds, args.rate)
        finally:
            generator.stop.set()
            stop.set()
            await sampler
        load_end = load_average()
        appended = generator.appended - args.seed_mails
        # give ingest and the outbox a moment to catch up with the last second
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = await db_counts(conn)
            if after["inbound"] >= args.seed_mails + appended and after["waiting"] == 0:
                break
            await asyncio.sleep(0.5)
        after = await db_counts(conn)
    finally:
        await conn.close()
    for name, process in bench.processes.items():
        if process.poll() is not None:
            say(f"!! {name} exited ({process.returncode}):\n{tail(bench.tmp / f'{name}.log')}")
    report(results, elapsed, samples, before, after, appended, bench, sunk_before, load_end)


def report(
    results: Results,
    elapsed: float,
    samples: list[Counter[str]],
    before: dict[str, int],
    after: dict[str, int],
    appended: int,
    bench: Bench,
    sunk_before: int,
    load_end: str,
) -> None:
    total_ok = sum(len(v) for v in results.latencies.values())
    total_err = sum(sum(c.values()) for c in results.errors.values())
    say(
        f"\n[3] {total_ok + total_err} requests in {elapsed:.1f} s: "
        f"{(total_ok + total_err) / elapsed:.1f} req/s, errors {total_err} (target 0), "
        f"started late (> 50 ms) {results.late_starts}"
    )
    say(
        f"  {'endpoint':42} {'req':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}  errors"
    )
    for label in MIX:
        lat = sorted(results.latencies.get(label, []))
        errors = results.errors.get(label, Counter())
        n = len(lat) + sum(errors.values())
        say(
            f"  {label:42} {n:6d} {n / elapsed:7.1f} {percentile(lat, 0.5) * 1000:8.1f} "
            f"{percentile(lat, 0.99) * 1000:8.1f} {(lat[-1] if lat else 0) * 1000:8.1f}  "
            f"{dict(errors) if errors else 0}"
        )
    everything = sorted(x for v in results.latencies.values() for x in v)
    say(
        f"  {'all':42} {total_ok + total_err:6d} {(total_ok + total_err) / elapsed:7.1f} "
        f"{percentile(everything, 0.5) * 1000:8.1f} {percentile(everything, 0.99) * 1000:8.1f}"
    )
    totals = [sum(s.values()) for s in samples]
    if totals:
        peak = samples[totals.index(max(totals))]
        say(
            f"\n[4] database connections (pg_stat_activity, {DB}, 1/s): peak {max(totals)}, "
            f"mean {sum(totals) / len(totals):.1f}; at the peak {dict(peak)} "
            f"(API pool DB_POOL_SIZE=10 + overflow 10 per process, the worker's pool and "
            f"its lock/LISTEN connections)"
        )
    ingested = after["inbound"] - before["inbound"]
    sunk = (bench.sink.received if bench.sink else 0) - sunk_before
    say(
        f"\n[5] beside the load: mails appended {appended}, ingested {ingested}; replies "
        f"created {after['replies'] - before['replies']}, sent {after['sent'] - before['sent']}"
        f" (sink received {sunk}), still waiting {after['waiting']}, failed/unknown "
        f"{after['not_sent']}"
    )
    say(f"  at the end: {load_end}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=300, help="length of the run")
    parser.add_argument("--rate", type=float, default=40, help="API requests/s")
    parser.add_argument("--agents", type=int, default=8, help="agents (each in every inbox)")
    parser.add_argument("--inboxes", type=int, default=2, help="IMAP inboxes")
    parser.add_argument("--mail-rate", type=float, default=2, help="customer mails/s")
    parser.add_argument("--seed-mails", type=int, default=150, help="mails before the start")
    parser.add_argument("--api-workers", type=int, default=1, help="serve --workers")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    if args.seed_mails < 1 or args.agents < 1 or args.inboxes < 1 or args.rate <= 0:
        parser.error("--seed-mails, --agents, --inboxes >= 1 and --rate > 0")

    sys.path.insert(0, str(ROOT))  # for the test helper that runs Dovecot
    from inbox_service.embedded_pg import EmbeddedPostgres
    from tests.support.dovecot import Dovecot, dovecot_available

    if not dovecot_available():
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="inbox-bench-load-"))
    with contextlib.ExitStack() as stack:
        if args.keep:
            stack.callback(say, f"\nkept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        pg = EmbeddedPostgres(tmp / "pg", fast=True)
        stack.callback(pg.stop)
        bench = Bench(args, tmp, pg)
        say(f"[0] PostgreSQL, Dovecot and an SMTP sink in {tmp}; {load_average()}")
        try:
            pg.start()
            (tmp / "dovecot").mkdir()
            bench.dovecot = stack.enter_context(Dovecot(tmp / "dovecot", tls=False))
            bench.sink = Sink()
            bench.sink.controller.start()
            stack.callback(bench.sink.controller.stop)
            # Run first (LIFO): the service processes, before Dovecot and PostgreSQL.
            stack.callback(lambda: [stop_process(p) for p in bench.processes.values()])
            asyncio.run(run(bench))
        except (KeyboardInterrupt, Stopped):
            say("\ninterrupted; cleaning up")
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
