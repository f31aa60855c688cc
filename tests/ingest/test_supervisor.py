"""The mail supervisor in-process, against a real Dovecot and a committed database.

Each test runs `MailSupervisor.run` as a task with short timings, waits on what the database
shows (bounded polls, never a blind sleep where a poll can tell), and always stops the task.
A `FaultProxy` between the supervisor and Dovecot makes the server fall silent or drop the
connection on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
from sqlalchemy import func, select, text

from inbox_service.alerts.models import Alert
from inbox_service.conversations.models import Message, MessageRaw
from inbox_service.core.clock import FixedClock
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest import service as ingest_service
from inbox_service.ingest import status as ingest_status
from inbox_service.ingest.models import FolderSyncState, InboxSyncState
from inbox_service.ingest.runner import LOCK_NAMESPACE, MailSupervisor, RunnerConfig, lock_key
from inbox_service.ingest.schemas import SyncStatusOut
from tests.conftest import CommittedDb
from tests.ingest.conftest import Mailbox
from tests.ingest.support import imap_inbox, message_count
from tests.support.faultproxy import FaultProxy

CONFIG = RunnerConfig(
    rescan_seconds=0.2,
    backoff_base_seconds=0.05,
    imap_timeout_seconds=1.0,
    idle_renew_seconds=5.0,
)
PROMPTLY = 3.0  # seconds within which pushed or requested mail must be stored


def mail(n: int, *, body: str | None = None) -> bytes:
    return (
        f"From: Ana <ana@customer.test>\r\nTo: support@example.com\r\nSubject: Question {n}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <sup{n}@customer.test>\r\n"
        f"\r\n{body or f'Message {n}.'}\r\n"
    ).encode()


async def deliver(mailbox: Mailbox, raw: bytes, folder: str = "INBOX") -> None:
    """APPEND from a thread: the supervisor shares this event loop and must keep running."""
    await asyncio.to_thread(mailbox.deliver, raw, folder)


@dataclass
class Running:
    supervisor: MailSupervisor
    stopping: asyncio.Event
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.stopping.set()
        async with asyncio.timeout(15):
            await self.task


@contextlib.asynccontextmanager
async def running(
    db: CommittedDb, cipher: CredentialCipher | None, *, worker_id: str = "w1", **config: float
) -> AsyncIterator[Running]:
    supervisor = MailSupervisor(
        db.sessionmaker,
        db.url,
        FixedClock(),
        cipher,
        worker_id=worker_id,
        config=replace(CONFIG, **config),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stopping), name=f"supervisor:{worker_id}")
    run = Running(supervisor, stopping, task)
    try:
        yield run
    finally:
        await run.stop()


async def until(what: str, predicate: Callable[[], Awaitable[bool]], limit: float = 5.0) -> float:
    """Poll `predicate` until it holds; returns how long that took. Fails after `limit` s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(limit):
            while not await predicate():  # noqa: ASYNC110 (polls the database: no event to await)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit:g} s waiting for {what}") from None
    return loop.time() - started


def stored(db: CommittedDb, inbox_id: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await message_count(db.sessionmaker, inbox_id) >= n

    return check


async def sync_status(db: CommittedDb, inbox_id: str) -> SyncStatusOut:
    """What `GET /v1/inboxes/{id}/sync-status` answers."""
    async with transaction(db.sessionmaker) as session:
        inbox = await session.get_one(Inbox, inbox_id)
        return await ingest_service.sync_status(session, inbox)


async def lock_holders(db: CommittedDb, inbox_id: str) -> list[int]:
    """Backend pids holding the inbox's advisory lock in this database."""
    async with transaction(db.sessionmaker) as session:
        rows = await session.scalars(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :ns AND objid = :key AND objsubid = 2"
            ),
            {"ns": LOCK_NAMESPACE, "key": lock_key(inbox_id)},
        )
        return list(rows)


async def failure_alarms(db: CommittedDb, inbox_id: str) -> tuple[int, int, int]:
    """(consecutive failures, inbox.sync_failed events, sync_failed alerts), read together."""
    async with transaction(db.sessionmaker) as session:
        state = await session.get(InboxSyncState, inbox_id)
        events = await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.inbox_id == inbox_id, Event.type == "inbox.sync_failed")
        )
        alerts = await session.scalar(
            select(func.count())
            .select_from(Alert)
            .where(Alert.inbox_id == inbox_id, Alert.kind == "sync_failed")
        )
        return (state.consecutive_failures if state else 0, int(events or 0), int(alerts or 0))


async def raws(db: CommittedDb, inbox_id: str) -> list[bytes]:
    async with transaction(db.sessionmaker) as session:
        rows = await session.scalars(
            select(MessageRaw.raw)
            .join(Message, Message.id == MessageRaw.message_id)
            .where(Message.inbox_id == inbox_id)
        )
        return list(rows)


async def set_folders(db: CommittedDb, inbox_id: str, folders: list[str]) -> None:
    async with transaction(db.sessionmaker) as session:
        inbox = await session.get_one(Inbox, inbox_id)
        inbox.imap_folders = folders


async def ask_for_sync(db: CommittedDb, inbox_id: str) -> None:
    """What `POST /v1/inboxes/{id}/sync` does, committed."""
    async with transaction(db.sessionmaker) as session:
        inbox = await session.get_one(Inbox, inbox_id)
        await ingest_service.request_sync(session, inbox, now=FixedClock().now())


@pytest.fixture
def cipher() -> CredentialCipher:
    return CredentialCipher(generate_key())


class TestIdle:
    async def test_new_mail_is_pushed_and_stored_at_once(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        await deliver(mailbox, mail(1))
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher, poll_seconds=600)
        # renewal far beyond the wait below: only the server's push can explain a fast store
        async with running(committed_db, cipher, idle_renew_seconds=60):
            await until("the first sync", stored(committed_db, inbox_id, 1))
            for n in (2, 3):
                await deliver(mailbox, mail(n))
                await until(f"message {n}", stored(committed_db, inbox_id, n), PROMPTLY)
        assert await message_count(committed_db.sessionmaker, inbox_id) == 3

    async def test_idle_is_renewed_without_losing_mail(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher)
        async with FaultProxy(mailbox.server.port) as proxy:
            await set_port(committed_db, inbox_id, proxy.port)
            async with running(committed_db, cipher, idle_renew_seconds=0.3):

                async def synced() -> bool:
                    return (await sync_status(committed_db, inbox_id)).last_success_at is not None

                await until("the first sync", synced)
                await asyncio.sleep(1.0)  # a few renewals go by
                await deliver(mailbox, mail(1))
                await until("the message", stored(committed_db, inbox_id, 1), PROMPTLY)
            assert proxy.connections == 1  # renewed on the same connection
        assert (await sync_status(committed_db, inbox_id)).consecutive_failures == 0


async def set_port(db: CommittedDb, inbox_id: str, port: int) -> None:
    async with transaction(db.sessionmaker) as session:
        inbox = await session.get_one(Inbox, inbox_id)
        inbox.imap_port = port


class TestRecovery:
    async def test_a_silent_server_is_reported_alerted_once_and_recovered_from(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        threshold = 2
        for n in (1, 2):
            await deliver(mailbox, mail(n))
        async with FaultProxy(mailbox.server.port) as proxy:
            proxy.blackhole()
            inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher, port=proxy.port)
            async with running(committed_db, cipher, failure_alert_threshold=threshold):
                seen: list[tuple[int, int, int]] = []

                def failed(times: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        alarms = await failure_alarms(committed_db, inbox_id)
                        seen.append(alarms)
                        return alarms[0] >= times

                    return check

                await until("a first failure", failed(1))
                status = await sync_status(committed_db, inbox_id)
                assert status.last_error is not None
                assert status.last_error.reason == "timeout"
                assert status.last_success_at is None
                await until("the failure streak to pass the threshold", failed(3))
                for failures, events, alerts in seen:
                    expected = 1 if failures >= threshold else 0
                    assert (events, alerts) == (expected, expected), seen
                assert await message_count(committed_db.sessionmaker, inbox_id) == 0

                proxy.pass_through()

                await until("the mail after recovery", stored(committed_db, inbox_id, 2))

                async def recovered() -> bool:
                    return (await sync_status(committed_db, inbox_id)).consecutive_failures == 0

                await until("the status to recover", recovered)
            status = await sync_status(committed_db, inbox_id)
            assert status.last_error is None
            assert status.last_success_at is not None
            assert status.folders[0].last_uid == 2
            _, events, alerts = await failure_alarms(committed_db, inbox_id)
            assert (events, alerts) == (1, 1)
        async with transaction(committed_db.sessionmaker) as session:
            event = await session.scalar(
                select(Event).where(Event.inbox_id == inbox_id, Event.type == "inbox.sync_failed")
            )
            assert event is not None
            assert event.data["reason"] == "timeout"
            assert event.data["consecutive_failures"] == threshold

    @pytest.mark.parametrize(
        "worker_cipher",
        [
            pytest.param(None, id="no-key"),
            pytest.param(CredentialCipher(generate_key()), id="another-key"),
        ],
    )
    async def test_credentials_the_worker_cannot_read_are_an_auth_failure(
        self,
        committed_db: CommittedDb,
        mailbox: Mailbox,
        cipher: CredentialCipher,
        worker_cipher: CredentialCipher | None,
    ) -> None:
        await deliver(mailbox, mail(1))
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher)
        async with running(committed_db, worker_cipher) as run:

            async def reported_twice() -> bool:
                return (await sync_status(committed_db, inbox_id)).consecutive_failures >= 2

            await until("the failure to be reported", reported_twice)
            status = await sync_status(committed_db, inbox_id)
            assert status.last_error is not None
            assert status.last_error.reason == "auth"
            assert "INBOX_SECRET_KEY" in status.last_error.message
            assert inbox_id in run.supervisor.claims  # kept and retried, not dropped
        assert await message_count(committed_db.sessionmaker, inbox_id) == 0

    async def test_a_connection_cut_mid_fetch_stores_nothing_partial(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        big = mail(2, body="x" * 76 + "\r\n" + ("0123456789" * 7 + "abcdef\r\n") * 4000)
        await deliver(mailbox, mail(1))
        async with FaultProxy(mailbox.server.port) as proxy:
            inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher, port=proxy.port)
            async with running(committed_db, cipher):
                await until("the first sync", stored(committed_db, inbox_id, 1))
                proxy.cut_after(8192)  # well inside the big message's literal

                await deliver(mailbox, big)

                await until("the big message", stored(committed_db, inbox_id, 2))

                async def recovered() -> bool:
                    return (await sync_status(committed_db, inbox_id)).consecutive_failures == 0

                await until("the sync to finish", recovered)
            assert proxy.connections >= 2
        assert sorted(await raws(committed_db, inbox_id), key=len) == [mail(1), big]
        async with transaction(committed_db.sessionmaker) as session:
            state = await session.get_one(InboxSyncState, inbox_id)
            assert state.last_error_reason == "protocol"  # the cut was noticed, then recovered
            assert state.consecutive_failures == 0
            folder = await session.get_one(FolderSyncState, (inbox_id, "INBOX"))
            assert folder.last_uid == 2


class TestSyncRequest:
    async def test_wakes_an_inbox_that_polls_slowly(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        mailbox.server.create_folder(mailbox.user, "Support")
        await deliver(mailbox, mail(1))
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher, poll_seconds=600)
        await set_folders(committed_db, inbox_id, ["INBOX", "Support"])  # two folders: no IDLE
        async with running(committed_db, cipher):

            async def synced() -> bool:
                return (await sync_status(committed_db, inbox_id)).last_success_at is not None

            await until("the first sync", synced)
            await deliver(mailbox, mail(2), folder="Support")
            await asyncio.sleep(0.5)  # the poller is not pushed: without a request, nothing
            assert await message_count(committed_db.sessionmaker, inbox_id) == 1

            await ask_for_sync(committed_db, inbox_id)

            await until("the requested sync", stored(committed_db, inbox_id, 2), PROMPTLY)

            async def served() -> bool:
                return (await sync_status(committed_db, inbox_id)).requested_at is None

            await until("the request to be marked served", served)

    async def test_a_request_during_a_sync_is_not_lost(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        mailbox.server.create_folder(mailbox.user, "Support")
        await deliver(mailbox, mail(1))
        async with FaultProxy(mailbox.server.port) as proxy:
            proxy.latency = 0.3  # slow enough to act between two folders of one sync
            inbox_id = await imap_inbox(
                committed_db.sessionmaker, mailbox, cipher, port=proxy.port, poll_seconds=600
            )
            await set_folders(committed_db, inbox_id, ["INBOX", "Support"])
            async with running(committed_db, cipher, imap_timeout_seconds=5.0):

                async def inbox_folder_done() -> bool:
                    async with transaction(committed_db.sessionmaker) as session:
                        folder = await session.get(FolderSyncState, (inbox_id, "INBOX"))
                        return folder is not None and folder.last_success_at is not None

                await until("INBOX to be synced", inbox_folder_done, 10)
                assert (await sync_status(committed_db, inbox_id)).last_success_at is None
                await deliver(mailbox, mail(2))  # after INBOX was read, while Support is

                await ask_for_sync(committed_db, inbox_id)
                proxy.pass_through()

                await until("the requested sync", stored(committed_db, inbox_id, 2), PROMPTLY)


class TestDisable:
    async def test_a_disabled_inbox_is_released_and_left_alone(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        await deliver(mailbox, mail(1))
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher)
        async with running(committed_db, cipher) as run:
            await until("the first sync", stored(committed_db, inbox_id, 1))

            async def locked() -> bool:
                return len(await lock_holders(committed_db, inbox_id)) == 1

            assert await locked()
            async with transaction(committed_db.sessionmaker) as session:
                inbox = await session.get_one(Inbox, inbox_id)
                inbox.imap_enabled = False
                await ingest_service.settings_changed(session, inbox_id)

            async def released() -> bool:
                return await lock_holders(committed_db, inbox_id) == []

            await until("the lock to be released", released, PROMPTLY)
            assert inbox_id not in run.supervisor.claims
            await deliver(mailbox, mail(2))
            async with transaction(committed_db.sessionmaker) as session:
                await ingest_status.request_sync(session, inbox_id, now=FixedClock().now())
            await asyncio.sleep(1.0)  # five rescans: none may claim or sync it
            assert await message_count(committed_db.sessionmaker, inbox_id) == 1
            assert await lock_holders(committed_db, inbox_id) == []

            async with transaction(committed_db.sessionmaker) as session:
                inbox = await session.get_one(Inbox, inbox_id)
                inbox.imap_enabled = True
                await ingest_service.settings_changed(session, inbox_id)

            await until("syncing to resume", stored(committed_db, inbox_id, 2), PROMPTLY)
            assert await locked()


class TestTwoSupervisors:
    async def test_one_holds_the_inbox_and_the_other_takes_over(
        self, committed_db: CommittedDb, mailbox: Mailbox, cipher: CredentialCipher
    ) -> None:
        await deliver(mailbox, mail(1))
        inbox_id = await imap_inbox(committed_db.sessionmaker, mailbox, cipher)
        async with (
            running(committed_db, cipher, worker_id="w1") as first,
            running(committed_db, cipher, worker_id="w2") as second,
        ):
            await until("the first sync", stored(committed_db, inbox_id, 1))
            await asyncio.sleep(0.6)  # both have scanned a few times by now
            holders = [r for r in (first, second) if inbox_id in r.supervisor.claims]
            assert len(holders) == 1
            assert len(await lock_holders(committed_db, inbox_id)) == 1
            (holder,) = holders
            other = second if holder is first else first
            assert (await sync_status(committed_db, inbox_id)).worker_id == (
                holder.supervisor.worker_id
            )

            await holder.stop()

            async def taken_over() -> bool:
                return inbox_id in other.supervisor.claims

            await until("the other supervisor to take over", taken_over, PROMPTLY)
            assert len(await lock_holders(committed_db, inbox_id)) == 1
            await deliver(mailbox, mail(2))
            await until("new mail via the other", stored(committed_db, inbox_id, 2), PROMPTLY)
            assert (await sync_status(committed_db, inbox_id)).worker_id == (
                other.supervisor.worker_id
            )
        assert await message_count(committed_db.sessionmaker, inbox_id) == 2
