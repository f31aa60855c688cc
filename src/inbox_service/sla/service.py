"""SLA clocks on conversations: starting, pausing, meeting and retargeting them, the alarms
the tick fires, and what a conversation shows.

Metrics (pinned in the README):
* first_response: from the customer's first message to our first reply that reached them;
* next_response: from a customer message that arrives after we replied (the oldest one
  still unanswered) to our next reply; one cycle per such message;
* resolution: from the first customer message to `resolved`; a reopened conversation
  starts a new cycle. Resolving meets every running target (as Zendesk does).
The clocks pause while the conversation is `pending` or `snoozed`.

Lock order: the conversation row first, then its `conversation_slas` rows. The API
(PATCH, bulk) and ingest already hold the conversation's lock when they call in here; the
tick claims conversations FOR NO KEY UPDATE SKIP LOCKED before touching their timers. So
a reply and a breach never both win, and two ticks never announce the same alarm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import String, any_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.sla import policies, timers
from inbox_service.sla.business_hours import BusinessCalendar
from inbox_service.sla.models import ConversationSla, SlaPolicy
from inbox_service.sla.schemas import ConversationSlaOut, SlaMetricOut
from inbox_service.sla.timers import METRICS, Metric, Timer, WarnRule

PAUSED_STATUSES = frozenset({"pending", "snoozed"})


@dataclass
class Clocks:
    """A conversation's timers under its policy, loaded for one change."""

    conversation: Conversation
    policy: SlaPolicy
    rows: dict[str, ConversationSla] = field(default_factory=dict)
    timers: dict[Metric, Timer] = field(default_factory=dict)

    @property
    def calendar(self) -> BusinessCalendar:
        return policies.calendar_of(self.policy)

    @property
    def warning(self) -> WarnRule:
        return policies.warn_rule_of(self.policy)

    def target(self, metric: Metric) -> int | None:
        return policies.target_of(self.policy, self.conversation.priority, metric)

    def start(self, metric: Metric, at: datetime) -> None:
        running = self.conversation.status not in PAUSED_STATUSES
        timers.start(
            self.timers[metric],
            at,
            self.target(metric),
            self.calendar,
            self.warning,
            running=running,
        )

    def active(self) -> list[Timer]:
        return [t for t in self.timers.values() if t.active]


def _timer_of(metric: Metric, row: ConversationSla | None) -> Timer:
    timer = Timer(metric=metric)
    if row is not None:
        for name in timers.STORED_FIELDS:
            setattr(timer, name, getattr(row, name))
    return timer


async def _load(
    session: AsyncSession, conversations: Sequence[Conversation], policy_ids: dict[str, str]
) -> dict[str, Clocks]:
    """Clocks for those of `conversations` that have a policy (`policy_ids`: id -> policy)."""
    if not policy_ids:
        return {}
    found = await policies.policies_by_id(session, set(policy_ids.values()))
    rows = await session.scalars(
        select(ConversationSla)
        .where(ConversationSla.conversation_id.in_(list(policy_ids)))
        .execution_options(populate_existing=True)
    )
    by_conversation: dict[str, dict[str, ConversationSla]] = {}
    for row in rows:
        by_conversation.setdefault(row.conversation_id, {})[row.metric] = row
    loaded = {}
    for conversation in conversations:
        policy = found.get(policy_ids.get(conversation.id, ""))
        if policy is None:
            continue
        mine = by_conversation.get(conversation.id, {})
        loaded[conversation.id] = Clocks(
            conversation,
            policy,
            rows=mine,
            timers={m: _timer_of(m, mine.get(m)) for m in METRICS},
        )
    return loaded


def _save(session: AsyncSession, clocks: Clocks) -> None:
    """Write the timers back and the conversation's aggregate columns (for the indexes)."""
    conversation = clocks.conversation
    for metric, timer in clocks.timers.items():
        if timer.cycle == 0:
            continue
        row = clocks.rows.get(metric)
        if row is None:
            row = clocks.rows[metric] = ConversationSla(
                conversation_id=conversation.id, metric=metric
            )
            session.add(row)
        for name in timers.STORED_FIELDS:
            if getattr(row, name) != getattr(timer, name):
                setattr(row, name, getattr(timer, name))
        if row.next_alarm_at != timer.next_alarm:
            row.next_alarm_at = timer.next_alarm
    running = [t for t in clocks.active() if t.running_since is not None]
    due = [t.due_at for t in running if t.due_at is not None]
    # Without a warning rule the warning time is the due time: the `sla_warn_at` index
    # then finds every overdue conversation among those whose warning time passed.
    warn = [w for t in running if (w := t.warn_at or t.due_at) is not None]
    conversation.sla_due_at = min(due, default=None)
    conversation.sla_warn_at = min(warn, default=None)


async def _clocks_of(session: AsyncSession, conversation: Conversation) -> Clocks | None:
    if conversation.sla_policy_id is None:
        return None
    loaded = await _load(session, [conversation], {conversation.id: conversation.sla_policy_id})
    return loaded.get(conversation.id)


# --- what other domains tell the clock -------------------------------------------------


async def customer_and_team_messages(
    session: AsyncSession,
    signals: Sequence[tuple[Conversation, str, datetime]],
    *,
    now: datetime,
) -> None:
    """Ingest stored messages: ("customer" | "team", conversation, when) in arrival order.

    A customer's message starts first_response and resolution on a conversation new to
    the SLA, a new resolution cycle once resolution was met (reopened), and a
    next_response cycle once we have replied and none is running; ours meets the
    response targets."""
    if not signals:
        return
    conversations = list({id(c): c for c, _, _ in signals}.values())
    policy_ids = {c.id: c.sla_policy_id for c in conversations if c.sla_policy_id}
    unattached = {c.inbox_id for c in conversations if c.sla_policy_id is None}
    for inbox_id in unattached:
        policy = await policies.policy_of_inbox(session, inbox_id)
        if policy is None:
            continue
        for c in conversations:
            if c.sla_policy_id is None and c.inbox_id == inbox_id:
                policy_ids[c.id] = policy.id
    loaded = await _load(session, conversations, policy_ids)
    if not loaded:
        return
    for conversation, kind, at in signals:
        clocks = loaded.get(conversation.id)
        if clocks is None:
            continue
        conversation.sla_policy_id = clocks.policy.id
        t = clocks.timers
        if kind == "team":
            for metric in ("first_response", "next_response"):
                timers.meet(t[metric], at, None, clocks.calendar, clocks.warning)
            continue
        if t["first_response"].cycle == 0 and t["resolution"].cycle == 0:
            clocks.start("first_response", at)
            clocks.start("resolution", at)
            continue
        if t["resolution"].met_at is not None:
            clocks.start("resolution", at)
        replied = t["first_response"].cycle > 0 and t["first_response"].met_at is not None
        if replied and not t["next_response"].active:
            clocks.start("next_response", at)
    for clocks in loaded.values():
        _save(session, clocks)
    await session.flush()


async def agent_replied(
    session: AsyncSession, conversation: Conversation, *, at: datetime, user_id: str | None
) -> None:
    """Our reply reached the customer: it meets first_response and next_response."""
    await _lock(session, conversation)
    clocks = await _clocks_of(session, conversation)
    if clocks is None:
        return
    for metric in ("first_response", "next_response"):
        timers.meet(clocks.timers[metric], at, user_id, clocks.calendar, clocks.warning)
    _save(session, clocks)
    await session.flush()


async def status_changed(
    session: AsyncSession,
    conversation: Conversation,
    previous: str,
    *,
    now: datetime,
    actor_id: str | None,
) -> None:
    """Pause on pending/snoozed, resume on open, meet everything on resolved; leaving
    resolved starts a new resolution cycle."""
    status = conversation.status
    if status == previous:
        return
    clocks = await _clocks_of(session, conversation)
    if clocks is None:
        return
    cal, warn = clocks.calendar, clocks.warning
    if status == "resolved":
        for timer in clocks.active():
            timers.meet(timer, now, actor_id, cal, warn)
    elif previous == "resolved":
        clocks.start("resolution", now)
    elif status in PAUSED_STATUSES:
        for timer in clocks.active():
            timers.pause(timer, now, cal, warn)
    else:
        for timer in clocks.active():
            timers.resume(timer, now, cal, warn)
    _save(session, clocks)
    await session.flush()


async def priority_changed(session: AsyncSession, conversation: Conversation) -> None:
    """The targets of the new priority apply to the cycles in progress."""
    clocks = await _clocks_of(session, conversation)
    if clocks is None:
        return
    for metric, timer in clocks.timers.items():
        timers.retarget(timer, clocks.target(metric), clocks.calendar, clocks.warning)
    _save(session, clocks)
    await session.flush()


async def _lock(session: AsyncSession, conversation: Conversation) -> None:
    # The callers mostly hold it already; taking it again in the same transaction is free.
    await session.execute(
        select(Conversation.id)
        .where(Conversation.id == conversation.id)
        .with_for_update(key_share=True)
    )


# --- policy changes ----------------------------------------------------------------------


async def policy_changed(
    session: AsyncSession, policy: SlaPolicy, *, gained: Sequence[str], lost: Sequence[str]
) -> int:
    """Recompute the running clocks after a policy change; the conversations touched.

    Conversations of inboxes taken out of the policy lose their clocks; those of inboxes
    put in it that run another policy's clocks switch to this one."""
    if lost:
        await _drop_clocks(session, policy.id, lost)
    stmt = select(Conversation).where(Conversation.status != "resolved")
    if gained:
        stmt = stmt.where(
            (Conversation.sla_policy_id == policy.id)
            | (Conversation.inbox_id.in_(gained) & Conversation.sla_policy_id.is_not(None))
        )
    else:
        stmt = stmt.where(Conversation.sla_policy_id == policy.id)
    conversations = list(
        await session.scalars(stmt.order_by(Conversation.id).with_for_update(key_share=True))
    )
    for conversation in conversations:
        conversation.sla_policy_id = policy.id
    loaded = await _load(session, conversations, {c.id: policy.id for c in conversations})
    for clocks in loaded.values():
        for metric, timer in clocks.timers.items():
            timers.retarget(timer, clocks.target(metric), clocks.calendar, clocks.warning)
        _save(session, clocks)
    await session.flush()
    return len(conversations)


async def drop_all_clocks(session: AsyncSession, policy_id: str) -> None:
    """The policy goes away: its conversations lose their clocks."""
    await _drop_clocks(session, policy_id, None)


async def _drop_clocks(
    session: AsyncSession, policy_id: str, inbox_ids: Iterable[str] | None
) -> None:
    stmt = update(Conversation).where(Conversation.sla_policy_id == policy_id)
    if inbox_ids is not None:
        stmt = stmt.where(Conversation.inbox_id.in_(list(inbox_ids)))
    ids = list(
        await session.scalars(
            stmt.values(sla_policy_id=None, sla_due_at=None, sla_warn_at=None)
            .returning(Conversation.id)
            .execution_options(synchronize_session="fetch")
        )
    )
    if ids:
        await session.execute(
            delete(ConversationSla).where(ConversationSla.conversation_id.in_(ids))
        )


# --- what a conversation shows -------------------------------------------------------------


def _metric_out(timer: Timer, now: datetime, cal: BusinessCalendar, warn: WarnRule) -> SlaMetricOut:
    return SlaMetricOut(
        metric=timer.metric,
        cycle=timer.cycle,
        status=timers.status(timer, now, cal, warn),
        target_seconds=timer.target_seconds,
        started_at=timer.started_at,
        due_at=timer.due_at,
        warn_at=timer.warn_at,
        remaining_seconds=timers.remaining(timer, now, cal),
        paused=timer.active and timer.running_since is None,
        met_at=timer.met_at,
        met_by=timer.met_by,
    )


async def views(
    session: AsyncSession, conversation_ids: Sequence[str], *, now: datetime
) -> dict[str, ConversationSlaOut]:
    """The `sla` of each conversation that has clocks (two queries for a page)."""
    if not conversation_ids:
        return {}
    rows = (
        await session.execute(
            select(ConversationSla, Conversation.sla_policy_id)
            .join(Conversation, Conversation.id == ConversationSla.conversation_id)
            .where(
                ConversationSla.conversation_id == any_(bindparam("ids", type_=ARRAY(String()))),
                Conversation.sla_policy_id.is_not(None),
            ),
            {"ids": list(conversation_ids)},
        )
    ).all()
    if not rows:
        return {}
    found = await policies.policies_by_id(session, {pid for _, pid in rows if pid})
    out: dict[str, ConversationSlaOut] = {}
    for row, policy_id in rows:
        policy = found.get(policy_id or "")
        if policy is None:
            continue
        cal, warn = policies.calendar_of(policy), policies.warn_rule_of(policy)
        metric = cast("Metric", row.metric)
        view = out.setdefault(
            row.conversation_id, ConversationSlaOut(policy_id=policy.id, metrics=[])
        )
        view.metrics.append(_metric_out(_timer_of(metric, row), now, cal, warn))
    for view in out.values():
        view.metrics.sort(key=lambda m: METRICS.index(m.metric))
    return out


def simulate(
    policy: SlaPolicy,
    start_at: datetime,
    priority: str,
    pauses: Sequence[tuple[datetime, datetime]],
) -> list[Timer]:
    """Each metric's timer for a conversation starting at `start_at` and paused during
    `pauses`: the same transitions the hooks apply, without touching any conversation."""
    cal, warn = policies.calendar_of(policy), policies.warn_rule_of(policy)
    result = []
    for metric in METRICS:
        timer = Timer(metric=metric)
        timers.start(timer, start_at, policies.target_of(policy, priority, metric), cal, warn)
        for begin, end in pauses:
            # A deadline that passed before a pause stands: the breach already happened.
            if timer.due_at is not None and timer.due_at <= begin:
                break
            timers.pause(timer, begin, cal, warn)
            timers.resume(timer, end, cal, warn)
        result.append(timer)
    return result
