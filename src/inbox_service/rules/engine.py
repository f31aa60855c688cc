"""What rules do to a conversation: the cached matcher, the decision, and applying it.

Ingest (`apply_to_ingested`), the dry run and reapply all go through `evaluate` and `plan`,
so a dry run says exactly what ingest does with the same mail.

Priority decisions (`plan`):
* a person's choice (`priority_source.type == "user"`) is never changed by a rule;
* the first message of a new conversation sets the priority of the highest matching rule
  (also `low`: a rule may file newsletters down);
* any later customer message may raise it, never lower it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import activity, queries, tags
from inbox_service.conversations import service as conversations
from inbox_service.conversations.models import Conversation, Tag
from inbox_service.core.ids import new_id
from inbox_service.ingest.htmlsafe import html_to_text
from inbox_service.rules.matcher import RANK, Evaluation, Mail, Matcher, RuleSpec
from inbox_service.rules.models import PriorityRule, PriorityRulesRevision

_cached: tuple[str, Matcher] | None = None


def spec_of(rule: PriorityRule) -> RuleSpec:
    return RuleSpec(
        id=rule.id,
        name=rule.name,
        position=rule.position,
        inbox_id=rule.inbox_id,
        keywords=tuple(rule.keywords),
        exclusions=tuple(rule.exclusions),
        fields=tuple(f for f in ("subject", "body") if f in rule.match_in),
        sender_domains=tuple(rule.sender_domains),
        priority=rule.priority,  # type: ignore[arg-type]
        tags=tuple(rule.tags),
    )


async def current_matcher(session: AsyncSession) -> Matcher:
    """The matcher of the enabled rules as this transaction sees them, compiled once per
    process per revision (one primary-key read when nothing changed)."""
    global _cached
    revision = await session.scalar(
        select(PriorityRulesRevision.revision).where(PriorityRulesRevision.id == 1)
    )
    revision = revision or "missing"
    if _cached is not None and _cached[0] == revision:
        return _cached[1]
    rules = await session.scalars(
        select(PriorityRule)
        .where(PriorityRule.enabled.is_(True))
        .order_by(PriorityRule.position, PriorityRule.id)
    )
    matcher = Matcher([spec_of(rule) for rule in rules])
    _cached = (revision, matcher)
    return matcher


def body_text(text: str | None, html: str | None) -> str:
    """The text rules look at: the text body, or for HTML-only mail the text of its HTML
    (what ingest stores as the text body; derived here again for the dry run)."""
    if text is not None:
        return text
    if not html:
        return ""
    try:
        return html_to_text(html)
    except Exception:  # noqa: BLE001 - like ingest: no derived text rather than no mail
        return ""


def evaluate(
    matcher: Matcher,
    *,
    subject: str,
    text: str | None,
    html: str | None,
    sender: str | None,
    inbox_id: str | None,
) -> Evaluation:
    return matcher.evaluate(
        Mail(subject=subject or "", body=body_text(text, html), sender=sender, inbox_id=inbox_id)
    )


@dataclass(frozen=True)
class State:
    priority: str
    source: Mapping[str, Any] | None


NEW_CONVERSATION = State("normal", None)


def plan(state: State, evaluation: Evaluation, *, first: bool) -> State:
    """The priority (and its source) after one message's evaluation."""
    wanted = evaluation.priority
    if wanted is None or evaluation.source is None:
        return state
    if state.source is not None and state.source.get("type") == "user":
        return state
    if (first and state.source is None) or RANK[wanted] < RANK.get(state.priority, 3):
        source = {
            "type": "rule",
            "rule_id": evaluation.source.rule.id,
            "keyword": evaluation.keyword,
            "user_id": None,
        }
        return State(wanted, source)
    return state


def _match_summary(evaluation: Evaluation, message_id: str | None) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "rules": [
            {
                "rule_id": m.rule.id,
                "name": m.rule.name,
                "priority": m.rule.priority,
                "tags": list(m.rule.tags),
                "keywords": list(dict.fromkeys(h.keyword for h in m.hits)),
            }
            for m in evaluation.matches
        ],
    }


async def _ensure_tags(session: AsyncSession, names: Iterable[str], now: datetime) -> None:
    """Create the rule's tags that do not exist yet (names are unique whatever the case)."""
    for name in names:
        await session.execute(
            insert(Tag).values(id=new_id("tag"), name=name, created_at=now).on_conflict_do_nothing()
        )


async def apply(
    session: AsyncSession,
    conversation: Conversation,
    target: State,
    evaluations: Sequence[tuple[str | None, Evaluation]],
    *,
    now: datetime,
    always_record: bool,
) -> bool:
    """Move `conversation` to `target` and add the evaluations' tags, writing the timeline
    (`rule_matched`, then `priority_changed` and `tagged`) and the events. True when
    anything changed. Without `always_record`, a match that changes nothing leaves no
    trace (reapply stays idempotent)."""
    wanted_tags = list(dict.fromkeys(t for _, e in evaluations for t in e.tags))
    have = {t.casefold() for t in (await queries.tags_of(session, [conversation.id])).get(
        conversation.id, [])}  # fmt: skip
    new_tags = [t for t in wanted_tags if t.casefold() not in have]
    priority_changes = target.priority != conversation.priority
    source_changes = target.source != conversation.priority_source
    if not (always_record or priority_changes or source_changes or new_tags):
        return False
    manual = (conversation.priority_source or {}).get("type") == "user"
    for message_id, evaluation in evaluations:
        await activity.record(
            session,
            conversation,
            "rule_matched",
            actor_id=None,
            now=now,
            data={
                **_match_summary(evaluation, message_id),
                "priority": evaluation.priority,
                "tags": list(evaluation.tags),
                "kept_manual_priority": manual and evaluation.priority is not None,
            },
        )
    if source_changes:
        conversation.priority_source = dict(target.source) if target.source else None
    if priority_changes:
        conversation.version += 1
        conversation.updated_at = now
        await conversations.change_priority(
            session, conversation, target.priority, actor_id=None, now=now
        )
    if new_tags:
        await _ensure_tags(session, new_tags, now)
        for name in new_tags:
            await tags.tag_conversation(session, conversation, name, actor_id=None, now=now)
    await session.flush()
    return priority_changes or source_changes or bool(new_tags)


def eligible(row: Mapping[Any, Any]) -> bool:
    """A message rules look at: the first of a conversation, or a customer's message."""
    if row["threaded_by"] in ("new", "split"):
        return True
    return bool(row["direction"] == "inbound" and row["auto_kind"] is None)


async def apply_to_ingested(
    session: AsyncSession,
    rows: Sequence[Mapping[str, Any]],
    conversations: Iterable[Conversation],
    *,
    now: datetime,
) -> None:
    """Ingest's hook, in its transaction, after the batch's rows are written: evaluate every
    new conversation's first message and each later customer message, in order."""
    wanted = [row for row in rows if row["conversation_id"] and eligible(row)]
    if not wanted:
        return
    matcher = await current_matcher(session)
    if matcher.empty:
        return
    by_id = {c.id: c for c in conversations}
    for row in wanted:
        evaluation = evaluate(
            matcher,
            subject=row["subject"],
            text=row["text_body"],
            html=row["html_body"],
            sender=row["from_address"],
            inbox_id=row["inbox_id"],
        )
        if not evaluation.matches:
            continue
        conversation = by_id.get(row["conversation_id"])
        if conversation is None:
            conversation = await session.get_one(Conversation, row["conversation_id"])
        state = State(conversation.priority, conversation.priority_source)
        target = plan(state, evaluation, first=row["threaded_by"] == "new")
        await apply(session, conversation, target, [(row["id"], evaluation)], now=now,
                    always_record=True)  # fmt: skip
