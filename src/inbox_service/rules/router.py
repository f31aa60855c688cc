from __future__ import annotations

from fastapi import APIRouter, Response, status

from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.rules import service
from inbox_service.rules.models import PriorityRule
from inbox_service.rules.schemas import (
    PriorityRuleIn,
    PriorityRuleOut,
    PriorityRulePage,
    PriorityRulePatch,
    ReapplyIn,
    ReapplyOut,
    RuleTestIn,
    RuleTestOut,
)

router = APIRouter(
    prefix="/v1/priority-rules", tags=["priority rules"], responses=problems(401, 422, 429)
)


def _out(rule: PriorityRule) -> PriorityRuleOut:
    return PriorityRuleOut(
        id=rule.id,
        name=rule.name,
        position=rule.position,
        enabled=rule.enabled,
        inbox_id=rule.inbox_id,
        keywords=rule.keywords,
        exclusions=rule.exclusions,
        match_in=rule.match_in,
        sender_domains=rule.sender_domains,
        priority=rule.priority,
        tags=rule.tags,
        version=rule.version,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


@router.get("", response_model=PriorityRulePage)
async def list_priority_rules(
    session: Session, caller: CurrentCaller, page: PageParamsDep
) -> PriorityRulePage:
    """The rules in their order (agents see the global ones and their inboxes' ones)."""
    rules, next_cursor = await service.list_rules(session, caller, page)
    return PriorityRulePage(items=[_out(r) for r in rules], next_cursor=next_cursor)


@router.post(
    "",
    response_model=PriorityRuleOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(403),
)
async def create_priority_rule(
    body: PriorityRuleIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
) -> PriorityRuleOut:
    """A new rule (admin); it applies to mail stored from now on."""
    caller.require_admin()
    rule = await service.create_rule(session, body, now=clock.now())
    response.headers["Location"] = f"/v1/priority-rules/{rule.id}"
    set_etag(response, rule.version)
    return _out(rule)


@router.post("/test", response_model=RuleTestOut, responses=problems(404))
async def test_priority_rules(
    body: RuleTestIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> RuleTestOut:
    """Dry run: which rules match this mail, where, and the priority and tags a new
    conversation of it would get. Changes nothing."""
    return await service.dry_run(session, caller, body, now=clock.now())


@router.post("/reapply", response_model=ReapplyOut, responses=problems(403, 404))
async def reapply_priority_rules(
    body: ReapplyIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> ReapplyOut:
    """Re-evaluate the inbox's unresolved conversations against the current rules, for mail
    received since `since` (admin). Priorities only go up, a priority a person set stays,
    and running it twice changes nothing more."""
    caller.require_admin()
    looked, changed = await service.reapply(session, body.inbox_id, body.since, now=clock.now())
    return ReapplyOut(conversations=looked, changed=changed)


@router.get("/{rule_id}", response_model=PriorityRuleOut, responses=problems(404))
async def get_priority_rule(
    rule_id: str, session: Session, caller: CurrentCaller, response: Response
) -> PriorityRuleOut:
    """One rule."""
    rule = await service.get_rule(session, caller, rule_id)
    set_etag(response, rule.version)
    return _out(rule)


@router.patch("/{rule_id}", response_model=PriorityRuleOut, responses=problems(403, 404, 412))
async def update_priority_rule(
    rule_id: str,
    body: PriorityRulePatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
    if_match: IfMatch = None,
) -> PriorityRuleOut:
    """Change a rule (admin): keywords, where to look, actions, scope, order, enabled."""
    caller.require_admin()
    rule = await service.get_rule(session, caller, rule_id, lock=True)
    check_if_match(if_match, rule.version)
    rule = await service.update_rule(session, rule, body, now=clock.now())
    set_etag(response, rule.version)
    return _out(rule)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(403, 404))
async def delete_priority_rule(rule_id: str, session: Session, caller: CurrentCaller) -> None:
    """Delete a rule (admin). Conversations keep the priority it set."""
    caller.require_admin()
    await service.delete_rule(session, await service.get_rule(session, caller, rule_id, lock=True))
