"""Whole worker processes syncing a real mailbox: two at once, and one killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from inbox_service.core.crypto import CredentialCipher, generate_key
from tests.conftest import CommittedDb
from tests.ingest.conftest import Mailbox
from tests.ingest.support import distinct_keys, imap_inbox, message_count
from tests.support.faultproxy import FaultProxy

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 240


def fill(mailbox: Mailbox, n: int = MESSAGES) -> None:
    for i in range(n):
        mailbox.deliver(
            f"From: c{i % 17}@customer.test\r\nTo: support@example.com\r\n"
            f"Subject: Question {i}\r\nMessage-ID: <q{i}@customer.test>\r\n"
            f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nBody {i}\r\n".encode()
        )


@contextmanager
def worker(
    db: CommittedDb, key: str, name: str, *, parse_processes: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "INBOX_SECRET_KEY": key,
        "WORKER_ID": name,
        "WORKER_POLL_SECONDS": "0.2",
        "IMAP_RESCAN_SECONDS": "0.3",
        "IMAP_TIMEOUT_SECONDS": "5",
        "INGEST_BATCH_SIZE": "10",
        "INGEST_PARSE_PROCESSES": str(parse_processes),
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "inbox_service", "worker"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def wait_for(predicate: Callable[[], Awaitable[bool]], limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


class TestWorkerProcesses:
    async def test_two_workers_store_each_message_once(
        self, committed_db: CommittedDb, mailbox: Mailbox
    ) -> None:
        fill(mailbox)
        key = generate_key()
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, CredentialCipher(key))
        # One of them parses in a process pool, as deployed by default.
        with (
            worker(committed_db, key, "w1", parse_processes=1) as w1,
            worker(committed_db, key, "w2") as w2,
        ):

            async def done() -> bool:
                return await message_count(committed_db.sessionmaker, inbox_id) >= MESSAGES

            await wait_for(done)
            await asyncio.sleep(1.0)  # a second worker would have written by now
            for process in (w1, w2):
                process.send_signal(signal.SIGTERM)
            assert w1.wait(timeout=30) == 0
            assert w2.wait(timeout=30) == 0
        assert await message_count(committed_db.sessionmaker, inbox_id) == MESSAGES
        assert await distinct_keys(committed_db.sessionmaker, inbox_id) == MESSAGES

    async def test_a_worker_killed_mid_batch_loses_and_repeats_nothing(
        self, committed_db: CommittedDb, mailbox: Mailbox
    ) -> None:
        fill(mailbox)
        key = generate_key()
        async with FaultProxy(mailbox.server.port) as proxy:
            proxy.latency = 0.02  # slow enough that the kill lands mid-way
            inbox_id = await imap_inbox(
                committed_db.sessionmaker, mailbox, CredentialCipher(key), port=proxy.port
            )
            with worker(committed_db, key, "doomed") as doomed:

                async def started() -> bool:
                    return await message_count(committed_db.sessionmaker, inbox_id) >= 30

                await wait_for(started)
                doomed.send_signal(signal.SIGKILL)
                doomed.wait(timeout=30)
            at_kill = await message_count(committed_db.sessionmaker, inbox_id)
            assert at_kill < MESSAGES, "the kill came too late to prove anything"
            proxy.pass_through()
            with worker(committed_db, key, "successor", parse_processes=1) as successor:

                async def done() -> bool:
                    return await message_count(committed_db.sessionmaker, inbox_id) >= MESSAGES

                await wait_for(done)
                successor.send_signal(signal.SIGTERM)
                assert successor.wait(timeout=30) == 0
        assert await message_count(committed_db.sessionmaker, inbox_id) == MESSAGES
        assert await distinct_keys(committed_db.sessionmaker, inbox_id) == MESSAGES
