from __future__ import annotations

from fastapi import APIRouter, Response, status

from inbox_service.core.auth import Caller
from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session
from inbox_service.core.errors import Invalid, problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.sla import policies, service
from inbox_service.sla.schemas import (
    PolicyIn,
    PolicyOut,
    PolicyPage,
    PolicyPatch,
    SimulatedMetric,
    SimulateIn,
    SimulateOut,
)

router = APIRouter(prefix="/v1/sla-policies", tags=["sla"], responses=problems(401, 403, 422, 429))


def _visible(caller: Caller, inbox_ids: list[str]) -> list[str]:
    """Agents see the policy, and only those of its inboxes they are members of."""
    return [i for i in inbox_ids if caller.can_see(i)]


@router.get("", response_model=PolicyPage)
async def list_sla_policies(
    session: Session, caller: CurrentCaller, page: PageParamsDep
) -> PolicyPage:
    """SLA policies, oldest first."""
    found, next_cursor = await policies.list_policies(session, page)
    inboxes = await policies.inbox_ids_of(session, [p.id for p in found])
    return PolicyPage(
        items=[policies.policy_out(p, _visible(caller, inboxes[p.id])) for p in found],
        next_cursor=next_cursor,
    )


@router.post(
    "", response_model=PolicyOut, status_code=status.HTTP_201_CREATED, responses=problems(409)
)
async def create_sla_policy(
    body: PolicyIn, session: Session, caller: CurrentCaller, clock: CurrentClock, response: Response
) -> PolicyOut:
    """Create a policy (admin); conversations of its inboxes get clocks from their next
    customer message on."""
    caller.require_admin()
    policy = await policies.create_policy(session, body, now=clock.now())
    response.headers["Location"] = f"/v1/sla-policies/{policy.id}"
    set_etag(response, policy.version)
    return policies.policy_out(policy, list(dict.fromkeys(body.inbox_ids)))


@router.get("/{policy_id}", response_model=PolicyOut, responses=problems(404))
async def get_sla_policy(
    policy_id: str, session: Session, caller: CurrentCaller, response: Response
) -> PolicyOut:
    """One policy."""
    policy = await policies.get_policy(session, policy_id)
    set_etag(response, policy.version)
    inbox_ids = (await policies.inbox_ids_of(session, [policy.id]))[policy.id]
    return policies.policy_out(policy, _visible(caller, inbox_ids))


@router.patch("/{policy_id}", response_model=PolicyOut, responses=problems(404, 409, 412))
async def update_sla_policy(
    policy_id: str,
    body: PolicyPatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
    if_match: IfMatch = None,
) -> PolicyOut:
    """Change a policy (admin); running clocks of its conversations are recomputed."""
    caller.require_admin()
    policy = await policies.get_policy(session, policy_id, for_update=True)
    check_if_match(if_match, policy.version)
    policy, gained, lost = await policies.update_policy(session, policy, body, now=clock.now())
    await service.policy_changed(session, policy, gained=gained, lost=lost)
    set_etag(response, policy.version)
    return policies.policy_out(
        policy, (await policies.inbox_ids_of(session, [policy.id]))[policy.id]
    )


@router.delete("/{policy_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404, 412))
async def delete_sla_policy(
    policy_id: str, session: Session, caller: CurrentCaller, if_match: IfMatch = None
) -> Response:
    """Delete a policy (admin); its conversations lose their clocks."""
    caller.require_admin()
    policy = await policies.get_policy(session, policy_id, for_update=True)
    check_if_match(if_match, policy.version)
    await service.drop_all_clocks(session, policy.id)
    await policies.delete_policy(session, policy)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{policy_id}/simulate", response_model=SimulateOut, responses=problems(404))
async def simulate_sla_policy(
    policy_id: str, body: SimulateIn, session: Session, caller: CurrentCaller
) -> SimulateOut:
    """Dry run: each metric's due and warning time for a conversation starting at
    `start_at` with this priority and these pauses. Changes nothing."""
    policy = await policies.get_policy(session, policy_id)
    if body.start_at.tzinfo is None:
        raise Invalid("start_at needs a time zone", loc=["body", "start_at"])
    pauses = []
    last = body.start_at
    for n, pause in enumerate(sorted(body.pauses, key=lambda p: p.start_at)):
        if pause.start_at.tzinfo is None or pause.end_at.tzinfo is None:
            raise Invalid("times need a time zone", loc=["body", "pauses", n])
        if pause.start_at < last or pause.end_at < pause.start_at:
            raise Invalid(
                "pauses must follow start_at, not overlap, and end after they start",
                loc=["body", "pauses", n],
            )
        pauses.append((pause.start_at, pause.end_at))
        last = pause.end_at
    result = service.simulate(policy, body.start_at, body.priority, pauses)
    return SimulateOut(
        policy_id=policy.id,
        metrics=[
            SimulatedMetric(
                metric=t.metric, target_seconds=t.target_seconds, due_at=t.due_at, warn_at=t.warn_at
            )
            for t in result
        ],
    )
