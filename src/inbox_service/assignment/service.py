"""Auto-assignment: conversations waiting for an owner, handed out per inbox policy.

    ingest (new conversation) ──┐
    snooze/customer reopens it ─┴─► assignment_requests row ──► worker: assign_next_inbox
       while its assignee is away                                 │
                                   nobody qualifies: postponed ◄──┤ (RETRY, or at once when
                                                                  │  a member becomes available)
                                   assigned: row deleted, ◄───────┘
                                   `conversation.assigned` event

Fairness under concurrency. One transaction assigns one inbox's due requests and holds, in
this order (so two assigners never wait on each other in a cycle):
1. the inbox's `assignment_cursors` row, FOR UPDATE SKIP LOCKED: one assigner per inbox
   at a time, whatever the number of worker processes; round robin reads and moves the
   cursor under it;
2. the requests and their conversations, FOR UPDATE SKIP LOCKED (a conversation someone
   is changing right now waits for the next pass);
3. a transaction-scoped advisory lock per candidate user, in key order: an agent who is a
   member of several inboxes is counted by one assigner at a time, so two inboxes never
   both fill that agent's last free slot.
Loads are counted after the locks are held, in READ COMMITTED, so they include whatever
the previous holder committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, bindparam, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.assignment.models import AssignmentCursor, AssignmentRequest
from inbox_service.assignment.policies import Candidate, Policy, pick
from inbox_service.conversations import assign
from inbox_service.conversations.models import Conversation
from inbox_service.core.events import EventType
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.users.models import User

# How long requests wait before another try when nobody qualified. Becoming available (or
# getting more capacity, or joining the inbox) wakes them at once; this catches the rest,
# e.g. capacity freed by resolving a conversation.
RETRY = timedelta(seconds=15)
BATCH = 100  # requests per inbox per transaction
_LOCK_NAMESPACE = 0x41534E47  # "ASNG": the first key of our advisory locks

_REQUEST = text(
    """
    INSERT INTO assignment_requests
           (conversation_id, inbox_id, reason, requested_at, next_attempt_at, attempts)
    SELECT c.id, c.inbox_id, CAST(:reason AS varchar), CAST(:now AS timestamptz),
           CAST(:now AS timestamptz), 0
      FROM conversations c
      JOIN inboxes i ON i.id = c.inbox_id AND i.auto_assignment <> 'off'
     WHERE c.id = ANY(:ids) AND c.status = 'open' AND c.merged_into_id IS NULL
       AND CASE WHEN :reason = 'new' THEN c.assignee_id IS NULL
           -- reopened: only when nobody present owns it (unassigned, away, gone, or no
           -- longer a member of the inbox)
           ELSE NOT EXISTS (
               SELECT 1 FROM users u
                 JOIN inbox_members m ON m.user_id = u.id AND m.inbox_id = c.inbox_id
                WHERE u.id = c.assignee_id AND u.deleted_at IS NULL
                  AND u.availability = 'available')
           END
    ON CONFLICT (conversation_id) DO NOTHING
    RETURNING inbox_id
    """
)


_LOCK_USERS = text(
    "SELECT pg_advisory_xact_lock(:namespace, k) FROM unnest(:keys) WITH ORDINALITY AS t(k, n) "
    "ORDER BY n"
).bindparams(bindparam("keys", type_=ARRAY(Integer)))


async def request_assignment(
    session: AsyncSession,
    conversation_ids: Iterable[str],
    *,
    reason: str,
    now: datetime,
) -> int:
    """Queue conversations for auto-assignment (`reason`: new or reopened), where their
    inbox has a policy and they need an owner; how many were queued."""
    ids = sorted(set(conversation_ids))
    if not ids:
        return 0
    await session.flush()
    rows = (await session.execute(_REQUEST, {"ids": ids, "reason": reason, "now": now})).all()
    inbox_ids = sorted({row.inbox_id for row in rows})
    if inbox_ids:
        # The row every assigner of the inbox locks; DO NOTHING never waits on a holder.
        await session.execute(
            insert(AssignmentCursor)
            .values([{"inbox_id": inbox_id} for inbox_id in inbox_ids])
            .on_conflict_do_nothing()
        )
    return len(rows)


async def on_ingested(
    session: AsyncSession, events: Sequence[Mapping[str, Any]], *, now: datetime
) -> None:
    """Ingest's hook: queue the conversations its batch created, and those a customer
    reopened while their assignee is away (read from the batch's events)."""
    created = [e["conversation_id"] for e in events if e["type"] == EventType.CONVERSATION_CREATED]
    reopened = [
        e["conversation_id"]
        for e in events
        if e["type"] == EventType.CONVERSATION_STATUS_CHANGED
        and e["conversation_id"] not in created
    ]
    await request_assignment(session, created, reason="new", now=now)
    await request_assignment(session, reopened, reason="reopened", now=now)


async def wake(session: AsyncSession, *, user_id: str, now: datetime) -> None:
    """Someone may take work now (available again, more capacity, a new membership): the
    waiting requests of their inboxes are due at once instead of at their next retry."""
    await session.execute(
        update(AssignmentRequest)
        .where(
            AssignmentRequest.next_attempt_at > now,
            AssignmentRequest.inbox_id.in_(
                select(InboxMember.inbox_id).where(InboxMember.user_id == user_id)
            ),
        )
        .values(next_attempt_at=now)
    )


async def assign_next_inbox(session: AsyncSession, *, now: datetime) -> int | None:
    """Assign the due requests of one inbox no other assigner holds; how many were
    assigned, or None when no inbox had due requests."""
    due = exists().where(
        AssignmentRequest.inbox_id == AssignmentCursor.inbox_id,
        AssignmentRequest.next_attempt_at <= now,
    )
    cursor = await session.scalar(
        select(AssignmentCursor).where(due).limit(1).with_for_update(skip_locked=True)
    )
    if cursor is None:
        return None
    policy = cast(
        "Policy",
        await session.scalar(select(Inbox.auto_assignment).where(Inbox.id == cursor.inbox_id)),
    )
    claimed = (
        await session.execute(
            select(AssignmentRequest, Conversation)
            .join(Conversation, Conversation.id == AssignmentRequest.conversation_id)
            .where(
                AssignmentRequest.inbox_id == cursor.inbox_id,
                AssignmentRequest.next_attempt_at <= now,
            )
            .order_by(AssignmentRequest.requested_at, AssignmentRequest.conversation_id)
            .limit(BATCH)
            .with_for_update(skip_locked=True, of=[AssignmentRequest, Conversation])
        )
    ).all()
    if policy in (None, "off"):  # turned off since: nothing to wait for
        for request, _ in claimed:
            await session.delete(request)
        await session.flush()
        return 0
    candidates = await _lock_candidates(session, cursor.inbox_id)
    present = {c.user_id for c in candidates}
    assigned = 0
    for position, (request, conversation) in enumerate(claimed):
        if not _needs_owner(request, conversation, present):
            await session.delete(request)
            continue
        chosen = pick(policy, candidates, cursor.last_user_id)
        if chosen is None:  # nobody has room: neither for this one nor for the rest
            for waiting, _ in claimed[position:]:
                waiting.next_attempt_at = now + RETRY
                waiting.attempts += 1
            break
        await assign.assign(
            session, conversation, chosen.user_id, actor_id=None, now=now, via=policy
        )
        chosen.load += 1
        cursor.last_user_id = chosen.user_id
        cursor.updated_at = now
        await session.delete(request)
        assigned += 1
    await session.flush()
    return assigned


def _needs_owner(request: AssignmentRequest, conversation: Conversation, present: set[str]) -> bool:
    if conversation.status != "open" or conversation.merged_into_id is not None:
        return False
    if conversation.assignee_id is None:
        return True
    # Someone assigned a new conversation meanwhile: theirs. A reopened one moves only
    # while its assignee is still away (or gone).
    return request.reason == "reopened" and conversation.assignee_id not in present


def _lock_key(user_id: str) -> int:
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:4], "big", signed=True)


async def _lock_candidates(session: AsyncSession, inbox_id: str) -> list[Candidate]:
    """The inbox's available live members, each locked (advisory, until commit) and then
    counted: their open conversations in every inbox."""
    members = (
        await session.execute(
            select(User.id, User.capacity)
            .join(InboxMember, InboxMember.user_id == User.id)
            .where(
                InboxMember.inbox_id == inbox_id,
                User.deleted_at.is_(None),
                User.availability == "available",
            )
            .order_by(User.id)
        )
    ).all()
    if not members:
        return []
    # In key order: every assigner takes them in the same order, so none waits in a cycle.
    keys = sorted({_lock_key(user_id) for user_id, _ in members})
    await session.execute(_LOCK_USERS, {"namespace": _LOCK_NAMESPACE, "keys": keys})
    ids = [user_id for user_id, _ in members]
    loads = dict(
        (
            await session.execute(
                select(Conversation.assignee_id, func.count())
                .where(
                    Conversation.assignee_id.in_(ids),
                    Conversation.status == "open",
                    Conversation.merged_into_id.is_(None),
                )
                .group_by(Conversation.assignee_id)
            )
        ).all()
    )
    return [
        Candidate(user_id=user_id, capacity=capacity, load=int(loads.get(user_id, 0)))
        for user_id, capacity in members
    ]
