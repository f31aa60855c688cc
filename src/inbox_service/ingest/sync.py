"""Sync one inbox's IMAP folders into the database, exactly once.

Per folder, the state machine (stored in `folder_sync_states`, so a restart resumes it):

    EXAMINE folder ──> UIDVALIDITY as stored? ──yes──> fetch UIDs > last_uid in batches
          │                    │no (new epoch: folder recreated, server rebuilt)
          │                    └──> read every UID's Message-ID; UIDs whose message we
          │                         already have are only re-located, never re-fetched;
          │                         last_uid restarts at 0 in the new epoch
          └──> each batch: FETCH (BODY.PEEK[], never sets \\Seen) → parse (off the event
               loop) → ONE transaction: messages, conversations, events AND the folder's
               new last_uid. The watermark never moves without the mail it covers, and
               mail is keyed by Message-ID per inbox, so a crash at any line, a second
               worker or a re-read epoch can repeat work but never duplicate or lose it.

No transaction is open while talking to the IMAP server (claim, fetch, record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import MessageLocation
from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.imap import FetchedMessage, FolderState, ImapSession
from inbox_service.ingest.mime import ParsedMessage, normalize_message_id, parse_message
from inbox_service.ingest.models import FolderSyncState
from inbox_service.ingest.store import (
    InboxContext,
    Incoming,
    StoreResult,
    store_batch,
    stored_ids,
)

log = logging.getLogger(__name__)

BATCH_SIZE = 100
PARSE_CHUNK = 25


@dataclass
class FolderResult:
    folder: str
    stored: int = 0
    duplicates: int = 0
    uidvalidity_changed: bool = False


async def parse_all(
    fetched: Sequence[FetchedMessage],
    executor: Executor | None,
    max_attachment_bytes: int,
    *,
    folder: str | None = None,
    uidvalidity: int | None = None,
) -> list[Incoming]:
    """Parse in the executor (a process pool uses every core); inline when there is none."""
    raws = [m.raw for m in fetched]
    if executor is None:
        parsed = _parse_many(raws, max_attachment_bytes)
    else:
        # A few messages per task: one pickle round trip each, and both cores stay busy.
        loop = asyncio.get_running_loop()
        chunks = [raws[i : i + PARSE_CHUNK] for i in range(0, len(raws), PARSE_CHUNK)]
        results = await asyncio.gather(
            *(loop.run_in_executor(executor, _parse_many, c, max_attachment_bytes) for c in chunks)
        )
        parsed = [p for chunk in results for p in chunk]
    return [
        Incoming(raw=m.raw, parsed=p, folder=folder, uidvalidity=uidvalidity, uid=m.uid)
        for m, p in zip(fetched, parsed, strict=True)
    ]


def _parse_many(raws: Sequence[bytes], max_attachment_bytes: int) -> list[ParsedMessage]:
    return [parse_message(raw, max_attachment_bytes=max_attachment_bytes) for raw in raws]


class FolderSync:
    """Brings one folder of one inbox up to date over an open IMAP session."""

    def __init__(
        self,
        sessionmaker: SessionMaker,
        clock: Clock,
        inbox: InboxContext,
        *,
        executor: Executor | None = None,
        batch_size: int = BATCH_SIZE,
        max_attachment_bytes: int = 25 * 1024 * 1024,
        still_ours: Callable[[AsyncSession], Awaitable[bool]] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.inbox = inbox
        self.executor = executor
        self.batch_size = batch_size
        self.max_attachment_bytes = max_attachment_bytes
        self.still_ours = still_ours

    async def run(self, imap: ImapSession, folder: str) -> FolderResult:
        result = FolderResult(folder=folder)
        server = await imap.examine(folder)
        state = await self._load_state(folder)
        last_uid = state.last_uid
        skip: dict[int, str] = {}
        if state.uidvalidity is not None and state.uidvalidity != server.uidvalidity:
            log.warning(
                "inbox %s folder %s: UIDVALIDITY %s -> %s, re-reading the folder",
                self.inbox.inbox_id,
                folder,
                state.uidvalidity,
                server.uidvalidity,
            )
            result.uidvalidity_changed = True
            last_uid = 0
            skip = await self._already_stored(imap)
        uids = await imap.uids_after(last_uid)
        batches = [uids[i : i + self.batch_size] for i in range(0, len(uids), self.batch_size)]

        async def read(batch: list[int]) -> list[Incoming]:
            wanted = [uid for uid in batch if uid not in skip]
            fetched = await imap.fetch(wanted) if wanted else []
            return await parse_all(
                fetched,
                self.executor,
                self.max_attachment_bytes,
                folder=folder,
                uidvalidity=server.uidvalidity,
            )

        # One batch ahead: batch k+1 is fetched and parsed while batch k commits. Commits
        # stay in UID order, so the watermark still covers exactly what is stored.
        ahead = asyncio.create_task(read(batches[0])) if batches else None
        try:
            for index, batch in enumerate(batches):
                incoming = await ahead if ahead is not None else []
                ahead = (
                    asyncio.create_task(read(batches[index + 1]))
                    if index + 1 < len(batches)
                    else None
                )
                relocated = [(uid, skip[uid]) for uid in batch if uid in skip]
                stored = await self._commit_batch(
                    folder, server, incoming, relocated, watermark=batch[-1]
                )
                result.stored += stored.stored
                result.duplicates += stored.duplicates + len(relocated)
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
        await self._finish(folder, server, caught_up_to=uids[-1] if uids else last_uid)
        return result

    async def _load_state(self, folder: str) -> FolderSyncState:
        async with transaction(self.sessionmaker) as session:
            state = await session.get(FolderSyncState, (self.inbox.inbox_id, folder))
            if state is None:
                state = FolderSyncState(
                    inbox_id=self.inbox.inbox_id,
                    folder=folder,
                    last_uid=0,
                    uidvalidity_changes=0,
                    updated_at=self.clock.now(),
                )
            return state

    async def _already_stored(self, imap: ImapSession) -> dict[int, str]:
        """UID → our message id, for the UIDs of a new epoch whose mail we already have."""
        by_uid = await imap.message_ids()
        normalized = {uid: mid for uid, raw in by_uid.items() if (mid := normalize_message_id(raw))}
        if not normalized:
            return {}
        async with transaction(self.sessionmaker) as session:
            known = await stored_ids(session, self.inbox.inbox_id, normalized.values())
        return {uid: known[mid] for uid, mid in normalized.items() if mid in known}

    async def _commit_batch(
        self,
        folder: str,
        server: FolderState,
        incoming: list[Incoming],
        relocated: list[tuple[int, str]],
        *,
        watermark: int,
    ) -> StoreResult:
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            if self.still_ours is not None and not await self.still_ours(session):
                raise LostLease(f"inbox {self.inbox.inbox_id} is no longer ours")
            result = await store_batch(session, self.inbox, incoming, now=now)
            await _relocate(session, self.inbox.inbox_id, folder, server.uidvalidity, relocated)
            await _advance(session, self.inbox.inbox_id, folder, server, watermark, now=now)
        return result

    async def _finish(self, folder: str, server: FolderState, *, caught_up_to: int) -> None:
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            await _advance(
                session, self.inbox.inbox_id, folder, server, caught_up_to, now=now, caught_up=True
            )


class LostLease(Exception):
    """Another worker owns the inbox now; stop without writing."""


async def _relocate(
    session: AsyncSession,
    inbox_id: str,
    folder: str,
    uidvalidity: int,
    relocated: list[tuple[int, str]],
) -> None:
    for uid, message_id in relocated:
        await session.execute(
            insert(MessageLocation)
            .values(
                inbox_id=inbox_id,
                folder=folder,
                uidvalidity=uidvalidity,
                uid=uid,
                message_id=message_id,
            )
            .on_conflict_do_nothing()
        )


async def _advance(
    session: AsyncSession,
    inbox_id: str,
    folder: str,
    server: FolderState,
    last_uid: int,
    *,
    now: datetime,
    caught_up: bool = False,
) -> None:
    """Move the watermark forward: never back, except into a new UIDVALIDITY epoch."""
    values: dict[str, object] = {
        "inbox_id": inbox_id,
        "folder": folder,
        "uidvalidity": server.uidvalidity,
        "last_uid": last_uid,
        "uidnext": server.uidnext,
        "uidvalidity_changes": 0,
        "updated_at": now,
    }
    stmt = insert(FolderSyncState).values(**values)
    table = FolderSyncState.__table__.c
    new_epoch = table.uidvalidity.is_distinct_from(stmt.excluded.uidvalidity)
    update: dict[str, object] = {
        "uidvalidity": stmt.excluded.uidvalidity,
        "last_uid": case(
            (new_epoch, stmt.excluded.last_uid),
            else_=func.greatest(table.last_uid, stmt.excluded.last_uid),
        ),
        "uidnext": stmt.excluded.uidnext,
        "updated_at": stmt.excluded.updated_at,
        "uidvalidity_changes": table.uidvalidity_changes
        + case((and_(table.uidvalidity.is_not(None), new_epoch), 1), else_=0),
    }
    if caught_up:
        # HIGHESTMODSEQ only once everything up to it is stored (RFC 7162).
        update |= {
            "highestmodseq": server.highestmodseq,
            "last_success_at": now,
            "last_error": None,
        }
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[table.inbox_id, table.folder], set_=update)
    )
