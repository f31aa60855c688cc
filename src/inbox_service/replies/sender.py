"""The outbox worker: claim, send, record (RELIABILITY §5). Never a transaction across SMTP.

    scheduled ──(send_at)──┐
    queued ◄───────────────┴──(4xx / network before DATA: backoff)──┐
       │ claim: status=sending, attempts+1, lease (commit)          │
       ▼                                                            │
    sending ── data_started_at committed just before DATA ──► SMTP ─┤
       │                                                            │
       ├── 250 ──► sent: message + counts + reply.sent, one commit ─┴─► Sent copy (APPEND)
       ├── 5xx (or retries exhausted) ──► failed + reply.failed
       └── connection lost after DATA began ──► unknown ──► reconcile (Sent folder search)
    scheduled/queued ──(POST …/cancel)──► cancelled

Where state lives for restarts: the row. Every record step is guarded by the attempt number
it claimed and `status = 'sending'`, so a worker that outlived its lease writes nothing.
A worker killed mid-send leaves `sending` with a lease; when the lease runs out the next
pass decides from `data_started_at`: not set, nothing was handed over, so the reply goes
back to `queued`; set, the server may have it, so it becomes `unknown` and is reconciled,
never resent blindly. The guarantee: at most once per reply (an `unknown` reply is resent
only by an agent's `POST /v1/replies/{id}/retry`), and no reply is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.alerts import service as alerts_service
from inbox_service.core.clock import Clock
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.mail_settings import smtp_settings_out
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.imap import ImapError, ImapSession
from inbox_service.ingest.status import imap_settings_of
from inbox_service.replies import outbox, smtp
from inbox_service.replies.models import Reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SenderConfig:
    smtp_timeout: float = 30.0
    imap_timeout: float = 30.0
    max_attempts: int = 12
    batch: int = 10
    reconcile_attempts: int = 6
    reconcile_every: timedelta = timedelta(minutes=5)

    @property
    def lease(self) -> timedelta:
        # longer than one whole SMTP conversation (bounded at 3 timeouts in smtp.py)
        return timedelta(seconds=self.smtp_timeout * 3 + 5)


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min … capped at 1 h: 12 attempts span about 6 hours."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


@dataclass(frozen=True)
class Claimed:
    id: str
    attempt: int
    mime: bytes
    sender: str
    recipients: list[str]
    target: smtp.SmtpTarget | None
    error: str | None  # why it cannot be sent at all (settings gone, secret unreadable)


class ReplySender:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        clock: Clock,
        cipher: CredentialCipher | None,
        *,
        worker_id: str,
        config: SenderConfig | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.cipher = cipher
        self.worker_id = worker_id
        self.config = config or SenderConfig()

    async def run_once(self) -> int:
        """One pass: expired leases, due sends, due reconciliations, pending Sent copies."""
        done = await self.recover_expired()
        for claimed in await self.claim():
            await self.deliver(claimed)
            done += 1
        done += await self.reconcile_due()
        done += await self.copy_pending()
        return done

    async def run(self, stopping: asyncio.Event, poll_seconds: float) -> None:
        while not stopping.is_set():
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("reply sender pass failed; retrying")
                worked = 0
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), poll_seconds)

    # -- claim ----------------------------------------------------------------------------

    async def claim(self) -> list[Claimed]:
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            due = (
                select(Reply.id)
                .where(Reply.status.in_(outbox.CANCELLABLE), Reply.next_attempt_at <= now)
                .order_by(Reply.next_attempt_at, Reply.id)
                .limit(self.config.batch)
                # a cancel holds the row lock: skip it rather than wait, it will not be sent
                .with_for_update(skip_locked=True)
            )
            rows = list(
                await session.scalars(
                    update(Reply)
                    .where(Reply.id.in_(due.scalar_subquery()))
                    .values(
                        status="sending",
                        attempts=Reply.attempts + 1,
                        locked_by=self.worker_id,
                        locked_until=now + self.config.lease,
                        data_started_at=None,
                        updated_at=now,
                    )
                    .returning(Reply)
                    .execution_options(synchronize_session=False)
                )
            )
            inboxes = {
                i.id: i
                for i in await session.scalars(
                    select(Inbox).where(Inbox.id.in_({r.inbox_id for r in rows}))
                )
            }
            return [self._prepare(r, inboxes.get(r.inbox_id)) for r in rows]

    def _prepare(self, reply: Reply, inbox: Inbox | None) -> Claimed:
        recipients = [r["address"] for r in (*reply.to, *reply.cc)]
        target, error = None, None
        settings = smtp_settings_out(inbox) if inbox is not None else None
        if inbox is None or settings is None:
            error = "the inbox has no SMTP settings any more"
        else:
            password = None
            try:
                if inbox.smtp_secret_encrypted:
                    if self.cipher is None:
                        raise ValueError(
                            "INBOX_SECRET_KEY is not set: the SMTP secret is unreadable"
                        )
                    password = self.cipher.decrypt(inbox.smtp_secret_encrypted)
            except ValueError as exc:
                error = str(exc)
            target = smtp.SmtpTarget(
                host=settings.host,
                port=settings.port,
                security=settings.security,
                username=settings.username,
                password=password,
                timeout=self.config.smtp_timeout,
            )
        return Claimed(
            reply.id, reply.attempts, reply.mime, reply.from_address, recipients, target, error
        )

    # -- send and record --------------------------------------------------------------------

    async def deliver(self, claimed: Claimed) -> None:
        if claimed.target is None or claimed.error is not None:
            outcome = smtp.Outcome("temporary", claimed.error or "no SMTP settings")
        else:
            outcome = await smtp.send(
                claimed.target,
                claimed.sender,
                claimed.recipients,
                claimed.mime,
                before_data=lambda: self._mark_data_started(claimed),
            )
        log.info(
            "reply %s attempt %d: %s %s", claimed.id, claimed.attempt, outcome.kind, outcome.detail
        )
        copied = await self._record(claimed, outcome)
        if copied:
            await self.copy_pending()

    async def _mark_data_started(self, claimed: Claimed) -> bool:
        """Committed before DATA: from now on a crash means `unknown`, not `queued`."""
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            marked = await session.scalar(
                update(Reply)
                .where(*self._ours(claimed))
                .values(data_started_at=now, updated_at=now)
                .returning(Reply.id)
            )
            return marked is not None

    def _ours(self, claimed: Claimed) -> tuple[ColumnElement[bool], ...]:
        return (
            Reply.id == claimed.id,
            Reply.status == "sending",
            Reply.attempts == claimed.attempt,
        )

    async def _record(self, claimed: Claimed, outcome: smtp.Outcome) -> bool:
        """Write the outcome if the claim is still ours; True when a Sent copy is due."""
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            reply = await session.scalar(
                select(Reply).where(*self._ours(claimed)).with_for_update()
            )
            if reply is None:
                log.warning(
                    "reply %s: lease lost, outcome %s not recorded", claimed.id, outcome.kind
                )
                return False
            if outcome.kind == "sent":
                copy = await _copy_plan(session, reply)
                await outbox.record_sent(session, reply, at=now, response=outcome.detail, copy=copy)
                return copy == "pending"
            if outcome.kind == "permanent" or (
                outcome.kind == "temporary" and reply.attempts >= self.config.max_attempts
            ):
                await outbox.record_failed(session, reply, at=now, error=outcome.detail)
            elif outcome.kind == "unknown":
                await self._mark_unknown(session, reply, outcome.detail, now)
            else:  # temporary, aborted: nothing was handed over
                reply.status = "queued"
                reply.last_error = outcome.detail
                reply.next_attempt_at = now + backoff(reply.attempts)
                reply.locked_by = reply.locked_until = None
                reply.updated_at = now
            return False

    async def _mark_unknown(
        self, session: AsyncSession, reply: Reply, detail: str, now: datetime
    ) -> None:
        reply.status = "unknown"
        reply.last_error = detail
        reply.next_attempt_at = None
        reply.locked_by = None
        # for `unknown`, locked_until is when to look for it in the Sent folder next
        reply.locked_until = now
        reply.updated_at = now
        await session.flush()
        await alerts_service.raise_alert(
            session,
            "reply_unknown",
            f"reply {reply.id}: the connection broke after the message was handed over; "
            "it may or may not have been delivered",
            now=now,
            inbox_id=reply.inbox_id,
            conversation_id=reply.conversation_id,
            data={"reply_id": reply.id, "error": detail},
        )

    async def recover_expired(self) -> int:
        """Rows left `sending` by a worker that died: back to `queued` if DATA never began,
        else `unknown` (it may have been delivered)."""
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            rows = list(
                await session.scalars(
                    select(Reply)
                    .where(Reply.status == "sending", Reply.locked_until < now)
                    .limit(100)
                    .with_for_update(skip_locked=True)
                )
            )
            for reply in rows:
                if reply.data_started_at is None:
                    reply.status = "queued"
                    reply.next_attempt_at = now
                    reply.locked_by = reply.locked_until = None
                    reply.last_error = "the worker stopped before handing the message over"
                    reply.updated_at = now
                else:
                    await self._mark_unknown(
                        session, reply, "the worker stopped while handing the message over", now
                    )
            return len(rows)

    # -- reconciliation of `unknown` ----------------------------------------------------------

    async def reconcile_due(self) -> int:
        """Look for `unknown` replies in the Sent folder of providers that file sent mail:
        found, it was sent. Not found after a few looks, it stays `unknown` for an agent."""
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            rows = list(
                await session.execute(
                    select(Reply, Inbox)
                    .join(Inbox, Inbox.id == Reply.inbox_id)
                    .where(Reply.status == "unknown", Reply.locked_until <= now)
                    .limit(self.config.batch)
                    .with_for_update(of=Reply, skip_locked=True)
                )
            )
            work = []
            for reply, inbox in rows:
                if not (
                    inbox.smtp_provider_files_sent and inbox.smtp_sent_folder and inbox.imap_host
                ):
                    reply.locked_until = None  # nothing to look in: an agent decides
                    continue
                reply.locked_until = now + self.config.reconcile_every
                reply.reconcile_attempts += 1
                if reply.reconcile_attempts >= self.config.reconcile_attempts:
                    reply.locked_until = None
                work.append((reply.id, reply.message_id, inbox))
        for reply_id, message_id, inbox in work:
            found = await self._find_in_sent(inbox, message_id)
            if found:
                async with transaction(self.sessionmaker) as session:
                    found = await session.scalar(
                        select(Reply)
                        .where(Reply.id == reply_id, Reply.status == "unknown")
                        .with_for_update()
                    )
                    if found is not None:
                        await outbox.record_sent(
                            session,
                            found,
                            at=self.clock.now(),
                            response="found in the Sent folder",
                            copy="skipped",
                        )
        return len(rows)

    async def _find_in_sent(self, inbox: Inbox, message_id: str) -> bool:
        try:
            settings = imap_settings_of(inbox, self.cipher, timeout=self.config.imap_timeout)
            async with await ImapSession.open(settings) as imap:
                await imap.examine(inbox.smtp_sent_folder or "")
                return bool(await imap.search_message_id(message_id))
        except ImapError as exc:
            log.warning("inbox %s: Sent folder lookup failed: %s", inbox.id, exc.message)
            return False

    # -- the Sent copy ----------------------------------------------------------------------

    async def copy_pending(self) -> int:
        """APPEND sent replies to the Sent folder (searched first, so a copy appended by a
        worker that died before recording it is not appended twice). A failed APPEND never
        resends anything: the reply stays `sent`."""
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            rows = list(
                await session.execute(
                    select(Reply, Inbox)
                    .join(Inbox, Inbox.id == Reply.inbox_id)
                    .where(
                        Reply.status == "sent",
                        or_(
                            Reply.sent_copy == "pending",
                            (Reply.sent_copy == "appending") & (Reply.locked_until < now),
                        ),
                    )
                    .limit(self.config.batch)
                    .with_for_update(of=Reply, skip_locked=True)
                )
            )
            for reply, _ in rows:
                reply.sent_copy = "appending"
                reply.locked_until = now + timedelta(seconds=self.config.imap_timeout * 4)
            work = [(reply.id, reply.message_id, reply.mime, inbox) for reply, inbox in rows]
        for reply_id, message_id, raw, inbox in work:
            result = await self._append(inbox, message_id, raw)
            async with transaction(self.sessionmaker) as session:
                await session.execute(
                    update(Reply)
                    .where(Reply.id == reply_id, Reply.sent_copy == "appending")
                    .values(sent_copy=result, locked_until=None)
                )
        return len(work)

    async def _append(self, inbox: Inbox, message_id: str, raw: bytes) -> str:
        folder = inbox.smtp_sent_folder or ""
        try:
            settings = imap_settings_of(inbox, self.cipher, timeout=self.config.imap_timeout)
            async with await ImapSession.open(settings) as imap:
                await imap.examine(folder)
                if not await imap.search_message_id(message_id):
                    await imap.append(folder, raw, flags=("\\Seen",))
            return "appended"
        except ImapError as exc:
            log.warning("inbox %s: APPEND to %s failed: %s", inbox.id, folder, exc.message)
            return "failed"


async def _copy_plan(session: AsyncSession, reply: Reply) -> str:
    inbox = await session.get(Inbox, reply.inbox_id)
    if (
        inbox is None
        or not inbox.smtp_sent_folder
        or inbox.smtp_provider_files_sent
        or not inbox.imap_host
    ):
        return "skipped"
    return "pending"
