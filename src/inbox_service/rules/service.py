"""Priority rules: CRUD (every change replaces the revision token), the dry run, reapply."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Select, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation, Message
from inbox_service.conversations.schemas import PrioritySourceOut
from inbox_service.core.auth import Caller
from inbox_service.core.errors import Invalid, NotFound
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.models import Inbox
from inbox_service.rules import engine
from inbox_service.rules.matcher import Evaluation
from inbox_service.rules.models import PriorityRule, PriorityRulesRevision
from inbox_service.rules.schemas import (
    KeywordHitOut,
    PriorityRuleIn,
    PriorityRulePatch,
    RuleMatchOut,
    RuleTestIn,
    RuleTestOut,
)

# Reapply reads conversations in chunks of this many (their messages with them).
REAPPLY_CHUNK = 200


async def _changed(session: AsyncSession) -> None:
    """Tell every process's matcher cache that the rules changed (when this commits)."""
    token = secrets.token_hex(16)
    stmt = insert(PriorityRulesRevision).values(id=1, revision=token)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={"revision": token})
    )


def _visible(caller: Caller) -> Select[PriorityRule]:
    stmt = select(PriorityRule)
    if caller.inbox_ids is not None:  # agents: global rules and their inboxes' rules
        stmt = stmt.where(or_(PriorityRule.inbox_id.is_(None), caller.scope(PriorityRule.inbox_id)))
    return stmt


async def list_rules(
    session: AsyncSession, caller: Caller, params: PageParams
) -> tuple[list[PriorityRule], str | None]:
    return await keyset_page(
        session,
        _visible(caller),
        keys=[PriorityRule.position, PriorityRule.id],
        params=params,
        key_of=lambda r: [r.position, r.id],
    )


async def get_rule(
    session: AsyncSession, caller: Caller, rule_id: str, *, lock: bool = False
) -> PriorityRule:
    if "\x00" in rule_id:  # PostgreSQL refuses NUL in text: such an id names nothing
        raise NotFound(f"no priority rule {rule_id!r}")
    stmt = _visible(caller).where(PriorityRule.id == rule_id)
    rule = await session.scalar(stmt.with_for_update() if lock else stmt)
    if rule is None:
        raise NotFound(f"no priority rule {rule_id}")
    return rule


async def _check_inbox(session: AsyncSession, inbox_id: str | None) -> str | None:
    if inbox_id is not None and await session.get(Inbox, inbox_id) is None:
        raise Invalid(f"no inbox {inbox_id}", loc=["body", "inbox_id"])
    return inbox_id


def _dedupe(values: list[str]) -> list[str]:
    """Keep the first spelling of values that differ only in case."""
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.casefold(), value)
    return list(seen.values())


def _check_actions(rule: PriorityRule) -> None:
    if rule.priority is None and not rule.tags:
        raise Invalid("a rule needs a priority or tags (or both)", loc=["body", "priority"])


async def create_rule(
    session: AsyncSession, data: PriorityRuleIn, *, now: datetime
) -> PriorityRule:
    """A new rule; without a position it goes after the last one."""
    position = data.position
    if position is None:
        last = await session.scalar(select(func.max(PriorityRule.position)))
        position = 0 if last is None else last + 1
    rule = PriorityRule(
        id=new_id("prl"),
        name=data.name,
        position=position,
        enabled=data.enabled,
        inbox_id=await _check_inbox(session, data.inbox_id),
        keywords=_dedupe(data.keywords),
        exclusions=_dedupe(data.exclusions),
        match_in=list(dict.fromkeys(data.match_in)),
        sender_domains=list(dict.fromkeys(data.sender_domains)),
        priority=data.priority,
        tags=_dedupe(data.tags),
        version=1,
        created_at=now,
        updated_at=now,
    )
    _check_actions(rule)
    session.add(rule)
    await _changed(session)
    await session.flush()
    return rule


_NOT_NULL = ("name", "keywords", "exclusions", "match_in", "sender_domains", "tags", "position",
             "enabled")  # fmt: skip


async def update_rule(
    session: AsyncSession, rule: PriorityRule, patch: PriorityRulePatch, *, now: datetime
) -> PriorityRule:
    """Change the fields given; `priority` and `inbox_id` may be set to null."""
    changes = patch.model_fields_set
    for name in changes & set(_NOT_NULL):
        if getattr(patch, name) is None:
            raise Invalid(f"{name} cannot be null", loc=["body", name])
    if "inbox_id" in changes:
        rule.inbox_id = await _check_inbox(session, patch.inbox_id)
    for name in ("keywords", "exclusions", "tags"):
        if name in changes:
            setattr(rule, name, _dedupe(getattr(patch, name)))
    for name in ("match_in", "sender_domains"):
        if name in changes:
            setattr(rule, name, list(dict.fromkeys(getattr(patch, name))))
    for name in ("name", "position", "enabled", "priority"):
        if name in changes:
            setattr(rule, name, getattr(patch, name))
    _check_actions(rule)
    if session.is_modified(rule):
        rule.version += 1
        rule.updated_at = now
        await _changed(session)
    await session.flush()
    return rule


async def delete_rule(session: AsyncSession, rule: PriorityRule) -> None:
    await session.delete(rule)
    await _changed(session)
    await session.flush()


def _test_out(evaluation: Evaluation, state: engine.State) -> RuleTestOut:
    source = state.source
    return RuleTestOut(
        matched_rules=[
            RuleMatchOut(
                rule_id=m.rule.id,
                name=m.rule.name,
                priority=m.rule.priority,
                tags=list(m.rule.tags),
                matches=[
                    KeywordHitOut(
                        keyword=h.keyword, field=h.field, start=h.start, end=h.end, text=h.text
                    )
                    for h in m.hits
                ],
            )
            for m in evaluation.matches
        ],
        priority=state.priority if source is not None else None,
        priority_source=PrioritySourceOut.model_validate(source) if source else None,
        tags=list(evaluation.tags),
    )


async def dry_run(
    session: AsyncSession, caller: Caller, data: RuleTestIn, *, now: datetime
) -> RuleTestOut:
    """What ingest would do with this mail as the first of a new conversation."""
    if data.inbox_id is not None:
        caller.require_visible(data.inbox_id)
        if await session.get(Inbox, data.inbox_id) is None:
            raise NotFound(f"no inbox {data.inbox_id}")
    matcher = await engine.current_matcher(session)
    evaluation = engine.evaluate(
        matcher,
        subject=data.subject,
        text=data.body,
        html=data.html,
        sender=data.sender.strip().lower() if data.sender else None,
        inbox_id=data.inbox_id,
    )
    state = engine.plan(engine.NEW_CONVERSATION, evaluation, first=True)
    return _test_out(evaluation, state)


async def reapply(
    session: AsyncSession, inbox_id: str, since: datetime, *, now: datetime
) -> tuple[int, int]:
    """Re-evaluate the mail received since `since` in the inbox's conversations that are not
    resolved: priorities only go up, a person's choice stays, tags are added once. Running
    it again changes nothing. Returns (conversations looked at, conversations changed)."""
    if since.tzinfo is None:
        raise Invalid("since needs a time zone", loc=["body", "since"])
    if await session.get(Inbox, inbox_id) is None:
        raise NotFound(f"no inbox {inbox_id}")
    matcher = await engine.current_matcher(session)
    looked = changed = 0
    after = ""
    while True:
        # Locked, so ingest (which updates the same rows) waits rather than interleaves.
        conversations = list(
            await session.scalars(
                select(Conversation)
                .where(
                    Conversation.inbox_id == inbox_id,
                    Conversation.status != "resolved",
                    Conversation.merged_into_id.is_(None),
                    Conversation.last_message_at >= since,
                    Conversation.id > after,
                )
                .order_by(Conversation.id)
                .limit(REAPPLY_CHUNK)
                .with_for_update()
            )
        )
        if not conversations:
            return looked, changed
        after = conversations[-1].id
        looked += len(conversations)
        if matcher.empty:
            continue
        messages = await session.execute(
            select(
                Message.id,
                Message.conversation_id,
                Message.subject,
                Message.text_body,
                Message.html_body,
                Message.from_address,
                Message.threaded_by,
                Message.direction,
                Message.auto_kind,
            )
            .where(
                Message.conversation_id.in_([c.id for c in conversations]),
                Message.received_at >= since,
            )
            .order_by(Message.conversation_id, Message.received_at, Message.id)
        )
        per_conversation: dict[str, list[tuple[str | None, Evaluation, bool]]] = {}
        for row in messages.mappings():
            if not engine.eligible(row):
                continue
            evaluation = engine.evaluate(
                matcher,
                subject=row["subject"],
                text=row["text_body"],
                html=row["html_body"],
                sender=row["from_address"],
                inbox_id=inbox_id,
            )
            if evaluation.matches:
                first = row["threaded_by"] in ("new", "split")
                per_conversation.setdefault(row["conversation_id"], []).append(
                    (row["id"], evaluation, first)
                )
        for conversation in conversations:
            found = per_conversation.get(conversation.id)
            if not found:
                continue
            state = engine.State(conversation.priority, conversation.priority_source)
            for _, evaluation, first in found:
                state = engine.plan(state, evaluation, first=first)
            evaluations = [(message_id, evaluation) for message_id, evaluation, _ in found]
            if await engine.apply(
                session, conversation, state, evaluations, now=now, always_record=False
            ):
                changed += 1
