"""Ingest benchmark: the service's ingest rate against its anchors, measured in one run.

    uv run python bench/ingest.py [-n 10000] [--workers 1] [--keep] [--profile FILE]

Everything runs on 127.0.0.1 in a temp dir, and is stopped and removed at the end (also on
Ctrl-C or an error; `--keep` keeps the files):

1. corpus: `../shared/bench/mailgen.py -n N --seed 42` (run in place), its Maildir files
   copied straight into a fresh Dovecot user's `Maildir/new` before the first login (mtime
   kept: it is the INTERNALDATE); Dovecot numbers them in file-name order = corpus order,
   which step 2 checks;
2. raw fetch: aioimaplib itself, `UID FETCH <200 uids> (BODY.PEEK[])`, no parsing, no
   database (median of 3); for comparison also the service's own client
   (`ImapSession.fetch`, 100 UIDs per command);
3. bare pipeline: stdlib `email` `policy.default` parse (Message-ID, Subject, From, Date,
   best text body via `get_body`) + asyncpg COPY of the rows incl. the raw bytes into a
   scratch table, 200 at a time, on one connection, in one process;
4. service ingest: an empty migrated database, an inbox with IMAP settings pointing at the
   Dovecot user (address support@example.test, the corpus's agents as inbox members unless
   `--no-team`), then `--workers` x `python -m inbox_service worker` as deployed (defaults,
   but IMAP_RESCAN_SECONDS=0.5), timed from their start until `SELECT count(*) FROM
   messages` reaches N (polled every 0.2 s); peak RSS (VmHWM) of each worker and of its
   parse processes (forkserver + pool) read just before SIGTERM;
5. threading: `{Message-ID as in the mail: conversation id}` → `../shared/bench/score.py`;
6. the table: msg/s and the ratios against the targets of DESIGN.md.

`--profile FILE` adds step 7: a second empty database, and one `FolderSync.run()` of the
same mailbox in this process under cProfile (executor=None: parsing inline), the stats
written to FILE; prints the ingest hotspots and the SQL statements issued per message.

Rates are wall-clock msg/s; the machine is shared, so read the ratios (same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aioimaplib
import asyncpg
from common import Stopped, descendants, on_sigterm, say, timed

from inbox_service.core.db import plain_dsn

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "bench"
HELPDESK_ANCHOR = 22.0  # django-helpdesk 2.6.1 get_email, msg/s (../shared/bench/README.md)
TARGETS = {"bare": 2.0, "raw": 0.12, "helpdesk": 40.0, "accuracy": 0.995}
SUPPORT_ADDRESS = "support@example.test"  # mailgen's SUPPORT
FETCH_BATCH = 200
COPY_BATCH = 200
POLL_SECONDS = 0.2

# -- small helpers ----------------------------------------------------------------------------


# -- processes and memory ---------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    """A `VmXXX:` line of /proc/<pid>/status in kB; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _role(pid: int, worker: int) -> str:
    """What a worker's descendant is: multiprocessing's forkserver or resource tracker (the
    worker's own children), or a parse pool process (forked by the forkserver)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    if int(stat.rsplit(")", 1)[1].split()[1]) != worker:
        return "pool"
    for role in ("forkserver", "resource_tracker"):
        if role.encode() in cmdline:
            return role.replace("_", " ")
    return "child"


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    peak_main_kb: int = 0
    peak_children_kb: list[tuple[str, int]] = field(default_factory=list)

    def sample_peaks(self) -> None:
        self.peak_main_kb = _status_kb(self.process.pid, "VmHWM")
        self.peak_children_kb = [
            (_role(pid, self.process.pid), kb)
            for pid in descendants(self.process.pid)
            if (kb := _status_kb(pid, "VmHWM"))
        ]

    def rss_kb(self) -> int:
        pids = [self.process.pid, *descendants(self.process.pid)]
        return sum(_status_kb(pid, "VmRSS") for pid in pids)


def stop_workers(workers: Sequence[WorkerProcess], timeout: float = 30.0) -> list[int | None]:
    """SIGTERM, wait, SIGKILL; then kill what is left of each worker's process group (its
    parse processes). Each worker was started in a session of its own, so the group id is
    its pid and holds nothing else."""
    for w in workers:
        if w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for w in workers:
        try:
            codes.append(w.process.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            w.process.kill()
            codes.append(w.process.wait())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(w.process.pid, signal.SIGKILL)
    return codes


# -- environment: temp dir, corpus, Dovecot, PostgreSQL ---------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    corpus: Path
    messages: list[dict[str, Any]]
    dovecot: Any  # tests.support.dovecot.Dovecot
    user: str
    password: str
    pg: Any  # inbox_service.embedded_pg.EmbeddedPostgres
    workers: list[WorkerProcess] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.messages)


def generate_corpus(n: int, out: Path) -> list[dict[str, Any]]:
    command = [sys.executable, str(SHARED / "mailgen.py"), "-n", str(n), "--seed", "42"]
    subprocess.run([*command, "-o", str(out)], check=True, stdout=subprocess.DEVNULL)  # noqa: S603
    with (out / "messages.jsonl").open() as fh:
        return [json.loads(line) for line in fh]


def load_maildir(dovecot: Any, user: str, corpus: Path, messages: list[dict[str, Any]]) -> None:
    """Copy the corpus's Maildir files into the user's Maildir/new before its first login.

    File names (`<epoch>.M<seq>P42.mailgen,S=<size>`) sort in corpus order, and Dovecot
    gives new files their UIDs in that order; copy2 keeps the mtime, Dovecot's INTERNALDATE.
    """
    maildir = dovecot.root / "home" / user / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    source = corpus / "Maildir" / "new"
    for m in messages:
        shutil.copy2(source / m["file"], maildir / "new" / m["file"])
    dovecot._hand_over(dovecot.root / "home")  # as root: everything to the mail user
    count = dovecot.status(user)["messages"]  # the first sync: Dovecot assigns the UIDs
    if count != len(messages):
        raise RuntimeError(f"Dovecot sees {count} messages in INBOX, expected {len(messages)}")


# -- 2. raw fetch -----------------------------------------------------------------------------


async def raw_fetch_aioimaplib(bench: Bench) -> tuple[float, list[bytes]]:
    """Seconds for `UID FETCH` of every message, 200 UIDs at a time, and the bodies."""
    client = aioimaplib.IMAP4(bench.dovecot.host, bench.dovecot.port, timeout=120)
    await client.wait_hello_from_server()
    try:
        if (await client.login(bench.user, bench.password)).result != "OK":
            raise RuntimeError("aioimaplib: LOGIN failed")
        if (await client.examine("INBOX")).result != "OK":
            raise RuntimeError("aioimaplib: EXAMINE failed")
        client.protocol.state = aioimaplib.SELECTED  # aioimaplib only tracks SELECT
        search = await client.uid_search("ALL", charset=None)
        uids = sorted(int(t) for line in search.lines[:-1] for t in line.split() if t.isdigit())
        raws: list[bytes] = []
        start = time.perf_counter()
        for i in range(0, len(uids), FETCH_BATCH):
            batch = uids[i : i + FETCH_BATCH]
            response = await client.uid("fetch", f"{batch[0]}:{batch[-1]}", "(BODY.PEEK[])")
            if response.result != "OK":
                raise RuntimeError(f"aioimaplib: UID FETCH failed: {response.lines[-1]!r}")
            raws.extend(bytes(line) for line in response.lines if isinstance(line, bytearray))
        elapsed = time.perf_counter() - start
    finally:
        with contextlib.suppress(Exception):
            await client.logout()
    if len(raws) != bench.n:
        raise RuntimeError(f"raw fetch returned {len(raws)} bodies for {bench.n} messages")
    return elapsed, raws


async def raw_fetch_service_client(bench: Bench) -> float:
    """Seconds for the same through the service's `ImapSession.fetch` (100 per command)."""
    from inbox_service.ingest.imap import ImapSession, ImapSettings

    settings = ImapSettings(
        bench.dovecot.host, bench.dovecot.port, "none", bench.user, bench.password, timeout=120
    )
    async with await ImapSession.open(settings) as imap:
        await imap.examine("INBOX")
        uids = await imap.uids_after(0)
        start = time.perf_counter()
        got = 0
        for i in range(0, len(uids), 1000):
            got += len(await imap.fetch(uids[i : i + 1000]))
        elapsed = time.perf_counter() - start
    if got != bench.n:
        raise RuntimeError(f"ImapSession.fetch returned {got} messages for {bench.n}")
    return elapsed


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.I | re.M)


def uid_order_matches(raws: Sequence[bytes], messages: Sequence[dict[str, Any]]) -> bool:
    seen = []
    for raw in raws:
        head = raw.split(b"\r\n\r\n", 1)[0]
        match = _MESSAGE_ID.search(head)
        seen.append(match.group(1).decode() if match else None)
    return seen == [m["message_id"] for m in messages]


# -- 3. bare pipeline -------------------------------------------------------------------------

SCRATCH = """
CREATE TABLE scratch (
    message_id text, subject text, from_header text, sent_at timestamptz, body text,
    raw bytea NOT NULL
)"""
SCRATCH_COLUMNS = ["message_id", "subject", "from_header", "sent_at", "body", "raw"]


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "")
    try:
        text.encode()
    except UnicodeEncodeError:  # surrogate escapes from 8-bit headers
        text = text.encode("utf-8", "replace").decode()
    return text


def bare_parse(raw: bytes) -> tuple[Any, ...]:
    """The anchor's parse: Message-ID, Subject, From, Date, best text body."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        date_header = msg["date"]
        sent_at = getattr(date_header, "datetime", None)
        if sent_at is not None and sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=UTC)
        body = None
        part = msg.get_body(("plain", "html"))
        if part is not None:
            with contextlib.suppress(LookupError, ValueError, AssertionError):
                body = part.get_content()
        return (
            _text(msg["message-id"]),
            _text(msg["subject"]),
            _text(msg["from"]),
            sent_at,
            _text(body),
            raw,
        )
    except Exception:  # noqa: BLE001 - the anchor stores what it could not parse, raw
        return (None, None, None, None, None, raw)


async def bare_pipeline(bench: Bench, raws: Sequence[bytes]) -> dict[str, float]:
    url = plain_dsn(bench.pg.url("bare"))
    admin = await asyncpg.connect(plain_dsn(bench.pg.url("postgres")))
    try:
        await admin.execute("CREATE DATABASE bare")
    finally:
        await admin.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCRATCH)
        parse_s = copy_s = 0.0
        start = time.perf_counter()
        for i in range(0, len(raws), COPY_BATCH):
            t0 = time.perf_counter()
            rows = [bare_parse(raw) for raw in raws[i : i + COPY_BATCH]]
            t1 = time.perf_counter()
            await conn.copy_records_to_table("scratch", records=rows, columns=SCRATCH_COLUMNS)
            parse_s += t1 - t0
            copy_s += time.perf_counter() - t1
        elapsed = time.perf_counter() - start
        stored = await conn.fetchval("SELECT count(*) FROM scratch")
    finally:
        await conn.close()
    if stored != len(raws):
        raise RuntimeError(f"bare pipeline stored {stored} of {len(raws)} rows")
    return {"seconds": elapsed, "parse_seconds": parse_s, "copy_seconds": copy_s}


# -- 4. service ingest ------------------------------------------------------------------------


async def prepare_database(bench: Bench, name: str, key: str) -> tuple[str, str]:
    """An empty migrated database with one IMAP inbox on the Dovecot user: (url, inbox id)."""
    from inbox_service.core.migrations import upgrade

    url = bench.pg.url(name)
    admin = await asyncpg.connect(plain_dsn(bench.pg.url("postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await asyncio.to_thread(upgrade, url)
    return url, await configure_inbox(bench, url, key)


async def configure_inbox(bench: Bench, url: str, key: str) -> str:
    """The inbox as an admin would set it up. The corpus's domain is example.test, which
    the API's email validation refuses (a special-use name), hence model_construct."""
    from pydantic import SecretStr

    from inbox_service.core.crypto import CredentialCipher
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.inboxes import service as inboxes_service
    from inbox_service.inboxes.mail_settings import ImapSettingsIn
    from inbox_service.inboxes.schemas import InboxIn
    from inbox_service.users import service as users_service
    from inbox_service.users.schemas import UserIn

    now = datetime.now(UTC)
    agents = sorted({m["from"] for m in bench.messages if m["role"] == "agent"})
    engine = create_engine(url, pool_size=1)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            imap = ImapSettingsIn(
                host=bench.dovecot.host,
                port=bench.dovecot.port,
                security="none",
                username=bench.user,
                secret=SecretStr(bench.password),
                poll_interval_seconds=60,
            )
            data = InboxIn.model_construct(name="Bench support", address=SUPPORT_ADDRESS, imap=imap)
            inbox = await inboxes_service.create_inbox(
                session, data, now=now, cipher=CredentialCipher(key)
            )
            if not bench.args.no_team:
                for address in agents:
                    name = address.split("@")[0].title()
                    user = await users_service.create_user(
                        session, UserIn.model_construct(email=address, name=name), now=now
                    )
                    await inboxes_service.add_member(session, inbox, user.id, now=now)
            return inbox.id
    finally:
        await engine.dispose()


def worker_env(url: str, key: str) -> dict[str, str]:
    """The deployed defaults: drop inherited settings, set only what the brief sets."""
    from inbox_service.core.config import Settings

    known = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in known}
    return env | {"DATABASE_URL": url, "INBOX_SECRET_KEY": key, "IMAP_RESCAN_SECONDS": "0.5"}


def start_worker(log: Path, env: dict[str, str]) -> WorkerProcess:
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inbox_service", "worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # a group of its own: Ctrl-C is ours to pass on
        )
    return WorkerProcess(process, log)


async def service_ingest(bench: Bench) -> dict[str, Any]:
    from inbox_service.core.crypto import generate_key

    key = generate_key()
    url, inbox_id = await prepare_database(bench, "inbox", key)
    env = worker_env(url, key)
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        start = time.perf_counter()
        for i in range(bench.args.workers):
            bench.workers.append(start_worker(bench.tmp / f"worker-{i + 1}.log", env))
        first_at: float | None = None
        count, last_change, last_count = 0, time.perf_counter(), -1
        rss: list[tuple[int, int]] = []  # (messages stored, kB of every worker process)
        while count < bench.n:
            await asyncio.sleep(POLL_SECONDS)
            count = await conn.fetchval("SELECT count(*) FROM messages")
            now = time.perf_counter()
            rss.append((count, sum(w.rss_kb() for w in bench.workers)))
            if count and first_at is None:
                first_at = now
            if count != last_count:
                last_count, last_change = count, now
            dead = [w for w in bench.workers if w.process.poll() is not None]
            if dead:
                tail = dead[0].log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker exited with {dead[0].process.returncode}:\n{tail}")
            if now - last_change > bench.args.stall_seconds:
                say(f"  !! no progress for {bench.args.stall_seconds:g} s at {count}/{bench.n}")
                break
        done_at = time.perf_counter()
        for w in bench.workers:
            w.sample_peaks()
        codes = await asyncio.to_thread(stop_workers, bench.workers)
        threaded_by = dict(
            await conn.fetch(
                "SELECT threaded_by, count(*) FROM messages GROUP BY 1 ORDER BY 2 DESC"
            )
        )
        rows = await conn.fetch(
            "SELECT message_id, conversation_id, threaded_by FROM messages WHERE inbox_id = $1",
            inbox_id,
        )
        conversations = await conn.fetchval("SELECT count(*) FROM conversations")
        events = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    return {
        "stored": count,
        "seconds": done_at - start,
        "first_stored_after": (first_at or done_at) - start,
        "seconds_after_first": done_at - (first_at or start),
        "exit_codes": codes,
        "rss_curve": rss,
        "threaded_by": threaded_by,
        "rows": rows,
        "conversations": conversations,
        "events": events,
    }


# -- 5. threading accuracy --------------------------------------------------------------------


def export_mapping(bench: Bench, rows: Sequence[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """({Message-ID as in the mail: conversation id}, {same: threaded_by}).

    The service stores Message-IDs normalized (no brackets, domain lower-cased); truth.json
    keys are as in the mail, brackets included: map back through the same normalization."""
    from inbox_service.ingest.mime import normalize_message_id

    stored = {r["message_id"]: (r["conversation_id"], r["threaded_by"]) for r in rows}
    mapping: dict[str, str] = {}
    how: dict[str, str] = {}
    for m in bench.messages:
        found = stored.get(normalize_message_id(m["message_id"]))
        if found is not None and found[0] is not None:
            mapping[m["message_id"]] = found[0]
            how[m["message_id"]] = found[1]
    return mapping, how


def run_score(bench: Bench, mapping_path: Path) -> dict[str, Any]:
    command = [sys.executable, str(SHARED / "score.py"), str(bench.corpus), str(mapping_path)]
    text = subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603
    for line in text.splitlines():
        say(f"  {line}")
    out = subprocess.run([*command, "--json"], check=True, capture_output=True, text=True)  # noqa: S603
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def wrong_messages(
    messages: Sequence[dict[str, Any]], mapping: dict[str, str]
) -> list[dict[str, Any]]:
    """The messages score.py counts as wrong (same rule: canonical conversation per thread)."""
    conv = {
        m["message_id"]: mapping.get(m["message_id"], "missing:" + m["message_id"])
        for m in messages
    }
    canonical: dict[str, str] = {}
    owner: dict[str, str] = {}
    for m in messages:
        canonical.setdefault(m["thread"], conv[m["message_id"]])
        owner.setdefault(conv[m["message_id"]], m["thread"])
    wrong = []
    for m in messages:
        c = conv[m["message_id"]]
        if canonical[m["thread"]] != c or owner[c] != m["thread"]:
            wrong.append(m)
    return wrong


# -- 7. profile -------------------------------------------------------------------------------


async def profile_sync(bench: Bench, path: Path) -> None:
    from sqlalchemy import event

    from inbox_service.core.clock import SystemClock
    from inbox_service.core.config import Settings
    from inbox_service.core.crypto import CredentialCipher, generate_key
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.ingest import status
    from inbox_service.ingest.imap import ImapSession
    from inbox_service.ingest.sync import FolderSync

    key = generate_key()
    url, inbox_id = await prepare_database(bench, "profile", key)
    engine = create_engine(url)
    statements: Counter[str] = Counter()

    def count_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements[" ".join(statement.split())[:90]] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", count_statement)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with transaction(sessionmaker) as session:
            target = await status.load_target(
                session, inbox_id, CredentialCipher(key), imap_timeout=120
            )
        if target is None:
            raise RuntimeError("the profile inbox is not syncable")
        batch = Settings.model_fields["ingest_batch_size"].default
        # Parsing in a process pool, as deployed: the profile shows the event loop's own work.
        pool = ProcessPoolExecutor(os.cpu_count() or 1, mp_context=get_context("forkserver"))
        sync = FolderSync(
            sessionmaker, SystemClock(), target.context, executor=pool, batch_size=batch
        )
        stage_seconds: Counter[str] = Counter()

        def timed_stage(name: str, fn: Any) -> Any:
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    stage_seconds[name] += time.perf_counter() - started

            return wrapper

        from inbox_service.ingest import sync as sync_module

        sync._commit_batch = timed_stage("commit (DB)", sync._commit_batch)  # type: ignore[method-assign]
        real_parse_all = sync_module.parse_all
        sync_module.parse_all = timed_stage("parse (pool)", real_parse_all)  # type: ignore[assignment]
        real_fetch = ImapSession.fetch
        async with await ImapSession.open(target.imap) as imap:
            imap.fetch = timed_stage("fetch (IMAP)", imap.fetch)  # type: ignore[method-assign]
            profiler = cProfile.Profile()
            start = time.perf_counter()
            profiler.enable()
            result = await sync.run(imap, "INBOX")
            profiler.disable()
            elapsed = time.perf_counter() - start
        pool.shutdown()
        sync_module.parse_all = real_parse_all  # type: ignore[assignment]
        del real_fetch
        say("  time per stage (fetch and parse of the next batch overlap the commit):")
        for name, seconds in stage_seconds.most_common():
            say(f"    {name:14s} {seconds:6.2f} s  {100 * seconds / elapsed:5.1f} % of the run")
    finally:
        await engine.dispose()
    profiler.dump_stats(str(path))
    say(
        f"  FolderSync.run under cProfile: {result.stored} stored in {elapsed:.1f} s "
        f"({result.stored / elapsed:.0f} msg/s with profiling overhead); stats in {path}"
    )
    stats = pstats.Stats(str(path))
    say("  (cumulative times of coroutines count every resumption and overlap: read them as a")
    say("  ranking; the own times below add up to the profiled total)")
    say("\n  top 15 cumulative, inbox_service/ingest/{store,sync,mime,...}:")
    show_stats(stats, elapsed, lambda f: "inbox_service/ingest/" in f, "cum", 15)
    say("\n  top 15 cumulative, inbox_service/ingest/store.py only:")
    show_stats(stats, elapsed, lambda f: f.endswith("ingest/store.py"), "cum", 15)
    say("\n  top 20 own time (tottime), anywhere:")
    show_stats(stats, elapsed, lambda f: True, "tot", 20)
    say("\n  own time by package:")
    for package, seconds in own_time_by_package(stats).most_common(8):
        say(f"    {seconds:8.2f} s {100 * seconds / elapsed:5.1f} %  {package}")
    say(f"\n  SQL statements issued ({sum(statements.values())} for {result.stored} messages):")
    for statement, count in statements.most_common(20):
        say(f"    {count:7d}  {count / max(result.stored, 1):5.2f}/msg  {statement}")


def show_stats(
    stats: pstats.Stats, total: float, keep: Callable[[str], bool], key: str, limit: int
) -> None:
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if keep(filename):
            rows.append((ct if key == "cum" else tt, tt, ct, nc, filename, line, name))
    rows.sort(reverse=True)
    say(f"    {'cum s':>8} {'% wall':>6} {'own s':>8} {'calls':>8}  function")
    for value, tt, ct, nc, filename, line, name in rows[:limit]:
        where = filename.split("/src/", 1)[-1].split("site-packages/", 1)[-1]
        say(f"    {ct:8.2f} {100 * value / total:6.1f} {tt:8.2f} {nc:8d}  {where}:{line} {name}")


def own_time_by_package(stats: pstats.Stats) -> Counter[str]:
    packages: Counter[str] = Counter()
    for (filename, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename == "~":
            package = "builtins (sockets, epoll, str/bytes methods)"
        elif "site-packages/" in filename:
            package = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/src/inbox_service/" in filename:
            package = "inbox_service"
        else:
            package = "stdlib " + filename.rsplit("/python3.11/", 1)[-1].split("/", 1)[0]
        packages[package] += tt
    return packages


# -- the run ----------------------------------------------------------------------------------


async def run(bench: Bench) -> None:
    n = bench.n
    say("\n[2] raw fetch")
    fetches = []
    raws: list[bytes] = []
    for _ in range(3):
        elapsed, raws = await raw_fetch_aioimaplib(bench)
        fetches.append(elapsed)
    raw_rate = n / statistics.median(fetches)
    say(
        f"  aioimaplib UID FETCH {FETCH_BATCH}/command, BODY.PEEK[]: "
        + ", ".join(f"{n / s:.0f}" for s in fetches)
        + f" msg/s -> median {raw_rate:.0f}"
    )
    size_mb = sum(map(len, raws)) / 1e6
    say(
        f"  {n} messages, {size_mb:.1f} MB as served; UID order = corpus order: "
        f"{'yes' if uid_order_matches(raws, bench.messages) else 'NO'}"
    )
    service_client = n / await raw_fetch_service_client(bench)
    say(f"  (the service's ImapSession.fetch, 100/command: {service_client:.0f} msg/s)")

    say("\n[3] bare pipeline (policy.default parse + asyncpg COPY, one connection)")
    bare = await bare_pipeline(bench, raws)
    bare_rate = n / bare["seconds"]
    say(
        f"  {bare_rate:.0f} msg/s  (parse {n / bare['parse_seconds']:.0f} msg/s, "
        f"COPY {n / bare['copy_seconds']:.0f} msg/s, {bare['seconds']:.1f} s)"
    )
    del raws

    workers = bench.args.workers
    say(f"\n[4] service ingest: {workers} worker process(es) as deployed")
    service = await service_ingest(bench)
    service_rate = service["stored"] / service["seconds"]
    say(
        f"  {service['stored']}/{n} stored in {service['seconds']:.1f} s -> {service_rate:.0f} "
        f"msg/s (first message after {service['first_stored_after']:.1f} s; from then on "
        f"{service['stored'] / service['seconds_after_first']:.0f} msg/s)"
    )
    say(
        f"  {service['conversations']} conversations, {service['events']} events; "
        f"worker exit codes {service['exit_codes']}"
    )
    say("  threaded_by: " + ", ".join(f"{k} {v}" for k, v in service["threaded_by"].items()))
    curve = service["rss_curve"]
    if curve:
        points = [curve[min(len(curve) - 1, int(len(curve) * q))] for q in (0.1, 0.5, 0.9)]
        points.append(curve[-1])
        say(
            "  RSS of all worker processes while ingesting (stored: MB): "
            + ", ".join(f"{c}: {kb / 1024:.0f}" for c, kb in points)
        )
    for i, w in enumerate(bench.workers, 1):
        kids = ", ".join(f"{role} {kb / 1024:.0f}" for role, kb in w.peak_children_kb)
        say(
            f"  worker {i} peak RSS (VmHWM, MB): main {w.peak_main_kb / 1024:.0f}; "
            f"children: {kids or 'none'}"
        )

    say("\n[5] threading accuracy (../shared/bench/score.py)")
    mapping, how = export_mapping(bench, service["rows"])
    mapping_path = bench.tmp / "mapping.json"
    mapping_path.write_text(json.dumps(mapping))
    score = run_score(bench, mapping_path)
    wrong = wrong_messages(bench.messages, mapping)
    if wrong and bench.args.show_wrong:
        say(f"  first {min(len(wrong), bench.args.show_wrong)} of {len(wrong)} mis-threaded:")
        for m in wrong[: bench.args.show_wrong]:
            kind = m["kind"] if m["kind"] != "reply" else f"reply/{m['threading']}"
            say(
                f"    #{m['seq']} {kind} {m['role']} {m['thread']} threaded_by="
                f"{how.get(m['message_id'])} subject={m['subject']!r} {m['message_id']}"
            )

    say("\n[6] summary")
    main_peak = max((w.peak_main_kb for w in bench.workers), default=0) / 1024
    kids_peak = (
        max((sum(kb for _, kb in w.peak_children_kb) for w in bench.workers), default=0) / 1024
    )
    rows = [
        ("service ingest", service_rate, "", ""),
        (
            "raw fetch (aioimaplib)",
            raw_rate,
            f"service/raw {service_rate / raw_rate:.3f}",
            check(service_rate / raw_rate, TARGETS["raw"]),
        ),
        (
            "bare pipeline",
            bare_rate,
            f"service/bare {service_rate / bare_rate:.2f}",
            check(service_rate / bare_rate, TARGETS["bare"]),
        ),
        (
            "django-helpdesk (anchor)",
            HELPDESK_ANCHOR,
            f"service/22 {service_rate / HELPDESK_ANCHOR:.1f}",
            check(service_rate / HELPDESK_ANCHOR, TARGETS["helpdesk"]),
        ),
    ]
    say(f"  {'':26} {'msg/s':>8}   {'ratio':<22} target")
    for label, rate, ratio, verdict in rows:
        say(f"  {label:26} {rate:8.0f}   {ratio:<22} {verdict}")
    accuracy = score["accuracy"]
    say(
        f"  {'threading accuracy':26} {accuracy:8.2%}   {'':<22} "
        f"{check(accuracy, TARGETS['accuracy'], '%')}"
    )
    say(
        f"  {'worker peak RSS':26} {main_peak:6.0f} MB   main process; parse processes "
        f"{kids_peak:.0f} MB summed"
    )
    say(
        f"  (N={n}, {workers} worker(s), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f})"
    )

    if bench.args.profile:
        say("\n[7] profile: FolderSync.run in-process (parse pool as deployed), under cProfile")
        await profile_sync(bench, bench.args.profile.resolve())


def check(value: float, target: float, style: str = "x") -> str:
    shown = f"{target:.1%}" if style == "%" else f"{target:g}"
    return f"{'ok ' if value >= target else 'MISS'} (>= {shown})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=10000, help="corpus size (default 10000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir for inspection")
    parser.add_argument("--no-team", action="store_true", help="no agent users in the inbox")
    parser.add_argument("--profile", type=Path, help="also profile FolderSync; pstats to FILE")
    parser.add_argument("--show-wrong", type=int, default=5, help="mis-threaded to list")
    parser.add_argument("--stall-seconds", type=float, default=120.0, help="give up after")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))  # for the test helper that runs Dovecot
    from inbox_service.embedded_pg import EmbeddedPostgres
    from tests.support.dovecot import Dovecot, dovecot_available

    if not dovecot_available():
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd)")
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with `&`
    tmp = Path(tempfile.mkdtemp(prefix="inbox-bench-"))
    with contextlib.ExitStack() as stack:
        if args.keep:
            stack.callback(say, f"\nkept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        say(f"[1] corpus and servers (temp dir {tmp})")
        with timed(f"mailgen -n {args.n} --seed 42"):
            messages = generate_corpus(args.n, tmp / "corpus")
        dovecot = Dovecot(tmp / "dovecot", tls=False)
        stack.callback(dovecot.stop)
        pg = EmbeddedPostgres(tmp / "pg", fast=True)
        stack.callback(pg.stop)
        with timed("Dovecot and PostgreSQL (fast=True) started"):
            dovecot.start()
            pg.start()
        user, password = "bench", "bench-password"
        dovecot.add_user(user, password)
        with timed(f"{len(messages)} Maildir files loaded into {user}'s INBOX"):
            load_maildir(dovecot, user, tmp / "corpus", messages)
        bench = Bench(args, tmp, tmp / "corpus", messages, dovecot, user, password, pg)
        stack.callback(stop_workers, bench.workers)  # runs first: workers before servers
        try:
            asyncio.run(run(bench))
        except (KeyboardInterrupt, Stopped):
            say("\ninterrupted; cleaning up")
            raise SystemExit(130) from None


if __name__ == "__main__":
    main()
