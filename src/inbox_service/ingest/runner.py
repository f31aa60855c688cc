"""Keep every inbox's mail flowing, with exactly one worker per inbox.

Each worker keeps one dedicated PostgreSQL connection, the *lock connection*. For each
enabled inbox it tries `pg_try_advisory_lock(NAMESPACE, key(inbox))` there; the winner
runs that inbox's loop. A session-level advisory lock lives exactly as long as its
connection: when a worker dies, even by `kill -9`, PostgreSQL drops the connection and
the locks with it, and another worker's next scan takes the inbox over. Before each batch
commits, the loop checks in SQL that the lock is still held by the lock connection, so a
worker that lost its connection stops writing. The same connection LISTENs for
`inbox_sync` notifications (sync requested, settings changed) to wake the loops at once.

An inbox loop: connect → sync every folder → wait (IDLE when the server has it and only
one folder is watched, re-issued well before the 29-minute limit; else the poll interval)
→ sync again. Errors reconnect with exponential backoff; after a few consecutive failures
the inbox raises an `inbox.sync_failed` event and an alert, once per failure streak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.clock import Clock
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.db import SessionMaker, plain_dsn, transaction
from inbox_service.ingest import status
from inbox_service.ingest.imap import ImapError, ImapSession
from inbox_service.ingest.store import ConcurrentIngest
from inbox_service.ingest.sync import FolderSync, LostLease

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x1B0C


def lock_key(inbox_id: str) -> int:
    return zlib.crc32(inbox_id.encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class RunnerConfig:
    idle_renew_seconds: float = 9 * 60  # servers cut IDLE long before RFC 2177's 29 min
    rescan_seconds: float = 5.0
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 300.0
    failure_alert_threshold: int = 3
    batch_size: int = 100
    max_attachment_bytes: int = 25 * 1024 * 1024
    max_inboxes: int = 200
    imap_timeout_seconds: float = 30.0


@dataclass
class _Claim:
    task: asyncio.Task[None]
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class MailSupervisor:
    """Claims inboxes for this worker and runs one `InboxLoop` per claimed inbox."""

    def __init__(
        self,
        sessionmaker: SessionMaker,
        dsn: str,
        clock: Clock,
        cipher: CredentialCipher | None,
        *,
        worker_id: str,
        config: RunnerConfig | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.dsn = plain_dsn(dsn)
        self.clock = clock
        self.cipher = cipher
        self.worker_id = worker_id
        self.config = config or RunnerConfig()
        self.executor = executor
        self.claims: dict[str, _Claim] = {}
        self._rescan = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping` is set: keep the lock connection, claim inboxes, supervise."""
        while not stopping.is_set():
            try:
                self._conn = await asyncpg.connect(self.dsn)
                await self._conn.add_listener(status.NOTIFY_CHANNEL, self._on_notify)
                while not stopping.is_set() and not self._conn.is_closed():
                    await self._scan()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            _first(stopping, self._rescan), self.config.rescan_seconds
                        )
                    self._rescan.clear()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError) as exc:
                # DBAPIError: the pool's connection (SQLAlchemy-wrapped) failed in a scan
                log.warning("mail supervisor lost its database connection: %s", exc)
                await _interruptible_sleep(stopping, 1.0)
            except Exception:
                # anything else must not end the service either: the worker would live on
                # without ingest, and nothing would restart it
                log.exception("mail supervisor scan failed; retrying")
                await _interruptible_sleep(stopping, 1.0)
            finally:
                await self._release_all()
        log.info("mail supervisor of %s stopped", self.worker_id)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        claim = self.claims.get(str(payload))
        if claim is not None:
            claim.wake.set()
        else:
            self._rescan.set()

    async def _scan(self) -> None:
        """Drop finished loops, then try to claim every enabled inbox not yet ours."""
        if self._conn is None:
            return
        for inbox_id, claim in list(self.claims.items()):
            if claim.task.done():
                await self._unlock(inbox_id)
        async with transaction(self.sessionmaker) as session:
            inbox_ids = await status.syncable_inbox_ids(session)
        for inbox_id in inbox_ids:
            if inbox_id in self.claims or len(self.claims) >= self.config.max_inboxes:
                continue
            won = await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1, $2)", LOCK_NAMESPACE, lock_key(inbox_id)
            )
            if not won:
                continue
            loop = InboxLoop(self, inbox_id)
            claim = _Claim(task=asyncio.create_task(loop.run(), name=f"inbox:{inbox_id}"))
            loop.wake = claim.wake
            # a loop that ends (inbox disabled or deleted) gives its lock back at once
            claim.task.add_done_callback(lambda _: self._rescan.set())
            self.claims[inbox_id] = claim

    async def _unlock(self, inbox_id: str) -> None:
        claim = self.claims.pop(inbox_id)
        claim.task.cancel()
        try:
            await claim.task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the sync loop of inbox %s failed", inbox_id)
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await self._conn.execute(
                    "SELECT pg_advisory_unlock($1, $2)", LOCK_NAMESPACE, lock_key(inbox_id)
                )

    async def _release_all(self) -> None:
        for inbox_id in list(self.claims):
            await self._unlock(inbox_id)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 5)
            self._conn = None

    async def holds(self, session: AsyncSession, inbox_id: str) -> bool:
        """True while the lock connection still holds the inbox's lock (checked in SQL)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        held = await session.scalar(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = :ns AND objid = :key AND objsubid = 2 AND pid = :pid AND granted)"
            ),
            {"ns": LOCK_NAMESPACE, "key": lock_key(inbox_id), "pid": conn.get_server_pid()},
        )
        return bool(held)


class InboxLoop:
    def __init__(self, supervisor: MailSupervisor, inbox_id: str) -> None:
        self.supervisor = supervisor
        self.inbox_id = inbox_id
        self.wake = asyncio.Event()
        self.failures = 0

    @property
    def config(self) -> RunnerConfig:
        return self.supervisor.config

    async def run(self) -> None:
        sup = self.supervisor
        while True:
            try:
                # inside the try: unreadable credentials are a failure to report and retry
                async with transaction(sup.sessionmaker) as session:
                    target = await status.load_target(
                        session,
                        self.inbox_id,
                        sup.cipher,
                        imap_timeout=self.config.imap_timeout_seconds,
                    )
                if target is None:
                    return  # disabled, deleted or not configured: give the claim back
                await self._connected(target)
            except (LostLease, ConcurrentIngest):
                log.warning(
                    "inbox %s is being written by another worker; stopping here", self.inbox_id
                )
                return
            except Exception as exc:
                if not isinstance(exc, ImapError | OSError | TimeoutError):
                    log.exception("inbox %s: unexpected error while syncing", self.inbox_id)
                self.failures += 1
                async with transaction(sup.sessionmaker) as session:
                    await status.record_failure(
                        session,
                        self.inbox_id,
                        exc,
                        now=sup.clock.now(),
                        alert_at=self.config.failure_alert_threshold,
                    )
                await self._pause(self._backoff())

    def _backoff(self) -> float:
        growth: float = 2.0 ** max(self.failures - 1, 0)
        delay = min(self.config.backoff_max_seconds, self.config.backoff_base_seconds * growth)
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not crypto)

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken early (sync requested, settings changed).

        A wake that came while the last sync ran counts: `_connected` clears the event only
        before it starts syncing, so a request made during a sync is never dropped here."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            return False
        self.wake.clear()
        return True

    async def _connected(self, target: status.SyncTarget) -> None:
        sup = self.supervisor
        async with await ImapSession.open(target.imap) as imap:
            while True:
                self.wake.clear()
                async with transaction(sup.sessionmaker) as session:
                    await status.record_attempt(
                        session, self.inbox_id, sup.worker_id, now=sup.clock.now()
                    )
                folders = FolderSync(
                    sup.sessionmaker,
                    sup.clock,
                    target.context,
                    executor=sup.executor,
                    batch_size=self.config.batch_size,
                    max_attachment_bytes=self.config.max_attachment_bytes,
                    still_ours=self._still_ours,
                )
                results = [await folders.run(imap, folder) for folder in target.folders]
                self.failures = 0
                async with transaction(sup.sessionmaker) as session:
                    await status.record_success(
                        session, self.inbox_id, results, now=sup.clock.now()
                    )
                if await self._wait_for_mail(imap, target):
                    return  # woken for a sync request or new settings: reconnect fresh

    async def _wait_for_mail(self, imap: ImapSession, target: status.SyncTarget) -> bool:
        """Wait until the next sync is due. True means: reconnect before syncing."""
        poll = float(target.poll_seconds)
        if "IDLE" not in imap.capabilities or len(target.folders) != 1:
            return await self._pause(poll)
        await imap.examine(target.folders[0])
        idle = asyncio.create_task(imap.wait_for_change(self.config.idle_renew_seconds))
        woken = asyncio.create_task(self.wake.wait())
        try:
            done, _ = await asyncio.wait({idle, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # also when cancelled (the claim is released): no task may outlive this wait
            woken.cancel()
            if not idle.done():
                idle.cancel()  # the connection is mid-IDLE: it is dropped and reopened
            await asyncio.wait({idle, woken})  # raises only if this task is cancelled again
        if idle in done:
            idle.result()  # re-raise an IMAP error
            return False
        with contextlib.suppress(asyncio.CancelledError, Exception):
            idle.result()  # retrieved, so asyncio does not log it as never retrieved
        return True

    async def _still_ours(self, session: AsyncSession) -> bool:
        return await self.supervisor.holds(session, self.inbox_id)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _interruptible_sleep(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
