"""SLA policies: create, change, delete, and what the timers need from one (calendar,
warning rule, targets). Changing a policy's targets, warning or hours, or moving an inbox
to it, recomputes the running clocks of the conversations concerned in the same
transaction."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.errors import Conflict, Invalid, NotFound
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.models import Inbox
from inbox_service.sla.business_hours import BusinessCalendar
from inbox_service.sla.models import SlaPolicy, SlaPolicyInbox
from inbox_service.sla.schemas import (
    DAYS,
    BusinessHoursIn,
    PolicyIn,
    PolicyOut,
    PolicyPatch,
    PriorityName,
    Targets,
    seconds_of,
)
from inbox_service.sla.timers import Metric, WarnRule

_CALENDARS: dict[tuple[str, int], BusinessCalendar] = {}


def calendar_of(policy: SlaPolicy) -> BusinessCalendar:
    """The policy's business calendar (built once per policy version)."""
    key = (policy.id, policy.version)
    found = _CALENDARS.get(key)
    if found is None:
        if len(_CALENDARS) > 1000:
            _CALENDARS.clear()
        found = _CALENDARS[key] = build_calendar(policy.business_hours)
    return found


def build_calendar(hours: dict[str, Any] | None) -> BusinessCalendar:
    if hours is None:
        return BusinessCalendar()
    weekly = None
    if hours.get("intervals") is not None:
        days: list[list[tuple[int, int]]] = [[] for _ in DAYS]
        for interval in hours["intervals"]:
            span = (seconds_of(interval["start"]), seconds_of(interval["end"]))
            days[DAYS.index(interval["day"])].append(span)
        weekly = tuple(tuple(sorted(spans)) for spans in days)
    holidays = frozenset(date.fromisoformat(d) for d in hours.get("holidays") or ())
    return BusinessCalendar(zone=hours["timezone"], weekly=weekly, holidays=holidays)


def warn_rule_of(policy: SlaPolicy) -> WarnRule:
    return WarnRule(seconds=policy.warn_before_seconds, percent=policy.warn_before_percent)


def target_of(policy: SlaPolicy, priority: str, metric: Metric) -> int | None:
    value = (policy.targets.get(priority) or {}).get(metric)
    return int(value) if value is not None else None


def _check(
    targets: Mapping[PriorityName, Targets],
    warn_before: int | None,
    warn_before_percent: int | None,
    hours: BusinessHoursIn | None,
) -> None:
    """The rules that span fields; each failure names the field it is about."""
    if warn_before is not None and warn_before_percent is not None:
        raise Invalid(
            "give warn_before or warn_before_percent, not both", loc=["body", "warn_before"]
        )
    if warn_before is not None:
        for priority, metrics in targets.items():
            for metric, target in metrics.model_dump().items():
                if target is not None and warn_before >= target:
                    raise Invalid(
                        f"warn_before ({warn_before} s) must be shorter than every target: "
                        f"{priority} {metric} is {target} s (the warning would come before "
                        "the clock starts)",
                        loc=["body", "warn_before"],
                    )
    if hours is not None and hours.intervals is not None:
        spans: dict[str, list[tuple[int, int, int]]] = {}
        for n, interval in enumerate(hours.intervals):
            spans.setdefault(interval.day, []).append(
                (seconds_of(interval.start), seconds_of(interval.end), n)
            )
        for day_spans in spans.values():
            day_spans.sort()
            for (_, end, _), (start, _, n) in itertools.pairwise(day_spans):
                if start < end:
                    raise Invalid(
                        f"interval {n} overlaps another interval of the same day",
                        loc=["body", "business_hours", "intervals", n],
                    )


async def _check_inboxes(
    session: AsyncSession, inbox_ids: Sequence[str], *, policy_id: str | None
) -> None:
    known = set(await session.scalars(select(Inbox.id).where(Inbox.id.in_(inbox_ids))))
    for n, inbox_id in enumerate(inbox_ids):
        if inbox_id not in known:
            raise Invalid(f"no inbox {inbox_id}", loc=["body", "inbox_ids", n])
    stmt = select(SlaPolicyInbox.inbox_id, SlaPolicyInbox.policy_id).where(
        SlaPolicyInbox.inbox_id.in_(inbox_ids)
    )
    if policy_id is not None:
        stmt = stmt.where(SlaPolicyInbox.policy_id != policy_id)
    taken: dict[str, str] = dict((await session.execute(stmt)).all())
    for inbox_id in inbox_ids:
        if inbox_id in taken:
            raise Conflict(
                f"inbox {inbox_id} already follows SLA policy {taken[inbox_id]}; "
                "take it out of that one first"
            )


def _hours_json(hours: BusinessHoursIn | None) -> dict[str, Any] | None:
    return None if hours is None else hours.model_dump(mode="json")


def _targets_json(targets: Mapping[PriorityName, Targets]) -> dict[str, Any]:
    return {priority: t.model_dump() for priority, t in targets.items()}


async def inbox_ids_of(session: AsyncSession, policy_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {p: [] for p in policy_ids}
    rows = await session.execute(
        select(SlaPolicyInbox.policy_id, SlaPolicyInbox.inbox_id)
        .where(SlaPolicyInbox.policy_id.in_(policy_ids))
        .order_by(SlaPolicyInbox.inbox_id)
    )
    for policy_id, inbox_id in rows:
        found[policy_id].append(inbox_id)
    return found


def policy_out(policy: SlaPolicy, inbox_ids: list[str]) -> PolicyOut:
    hours = policy.business_hours
    return PolicyOut(
        id=policy.id,
        name=policy.name,
        inbox_ids=inbox_ids,
        targets={p: Targets.model_validate(t) for p, t in policy.targets.items()},
        warn_before=policy.warn_before_seconds,
        warn_before_percent=policy.warn_before_percent,
        business_hours=BusinessHoursIn.model_validate(hours) if hours is not None else None,
        version=policy.version,
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )


async def get_policy(
    session: AsyncSession, policy_id: str, *, for_update: bool = False
) -> SlaPolicy:
    stmt = select(SlaPolicy).where(SlaPolicy.id == policy_id)
    policy = await session.scalar(stmt.with_for_update() if for_update else stmt)
    if policy is None:
        raise NotFound(f"no SLA policy {policy_id}")
    return policy


async def list_policies(
    session: AsyncSession, params: PageParams
) -> tuple[list[SlaPolicy], str | None]:
    return await keyset_page(
        session, select(SlaPolicy), keys=[SlaPolicy.id], params=params, key_of=lambda p: [p.id]
    )


async def create_policy(session: AsyncSession, body: PolicyIn, *, now: datetime) -> SlaPolicy:
    """A new policy; its inboxes' new conversations follow it from now on."""
    _check(body.targets, body.warn_before, body.warn_before_percent, body.business_hours)
    inbox_ids = list(dict.fromkeys(body.inbox_ids))
    await _check_inboxes(session, inbox_ids, policy_id=None)
    policy = SlaPolicy(
        id=new_id("sla"),
        name=body.name,
        targets=_targets_json(body.targets),
        warn_before_seconds=body.warn_before,
        warn_before_percent=body.warn_before_percent,
        business_hours=_hours_json(body.business_hours),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(policy)
    await session.flush()
    session.add_all(SlaPolicyInbox(inbox_id=i, policy_id=policy.id) for i in inbox_ids)
    await session.flush()
    return policy


async def update_policy(
    session: AsyncSession, policy: SlaPolicy, patch: PolicyPatch, *, now: datetime
) -> tuple[SlaPolicy, list[str], list[str]]:
    """Apply `patch`; the policy and the inboxes it gained and lost (for recomputing)."""
    given = patch.model_fields_set
    for field in ("name", "targets"):
        if field in given and getattr(patch, field) is None:
            raise Invalid(f"{field} cannot be null", loc=["body", field])
    current = policy_out(policy, [])
    targets = patch.targets if patch.targets is not None else current.targets
    warn = patch.warn_before if "warn_before" in given else current.warn_before
    percent = (
        patch.warn_before_percent if "warn_before_percent" in given else current.warn_before_percent
    )
    if (
        "warn_before" in given
        and patch.warn_before is not None
        and "warn_before_percent" not in given
    ):
        percent = None  # switching from a share to a duration
    if (
        "warn_before_percent" in given
        and patch.warn_before_percent is not None
        and "warn_before" not in given
    ):
        warn = None
    hours = patch.business_hours if "business_hours" in given else current.business_hours
    _check(targets, warn, percent, hours)
    old_inboxes = (await inbox_ids_of(session, [policy.id]))[policy.id]
    gained: list[str] = []
    lost: list[str] = []
    if patch.inbox_ids is not None:
        wanted = list(dict.fromkeys(patch.inbox_ids))
        await _check_inboxes(session, wanted, policy_id=policy.id)
        gained = [i for i in wanted if i not in old_inboxes]
        lost = [i for i in old_inboxes if i not in wanted]
        if lost:
            await session.execute(
                delete(SlaPolicyInbox).where(
                    SlaPolicyInbox.policy_id == policy.id, SlaPolicyInbox.inbox_id.in_(lost)
                )
            )
        session.add_all(SlaPolicyInbox(inbox_id=i, policy_id=policy.id) for i in gained)
    if patch.name is not None:
        policy.name = patch.name
    policy.targets = _targets_json(targets)
    policy.warn_before_seconds = warn
    policy.warn_before_percent = percent
    policy.business_hours = _hours_json(hours)
    policy.version += 1
    policy.updated_at = now
    await session.flush()
    return policy, gained, lost


async def delete_policy(session: AsyncSession, policy: SlaPolicy) -> None:
    await session.delete(policy)
    await session.flush()


async def policy_of_inbox(session: AsyncSession, inbox_id: str) -> SlaPolicy | None:
    return await session.scalar(
        select(SlaPolicy)
        .join(SlaPolicyInbox, SlaPolicyInbox.policy_id == SlaPolicy.id)
        .where(SlaPolicyInbox.inbox_id == inbox_id)
    )


async def policies_by_id(session: AsyncSession, ids: set[str]) -> dict[str, SlaPolicy]:
    if not ids:
        return {}
    return {p.id: p for p in await session.scalars(select(SlaPolicy).where(SlaPolicy.id.in_(ids)))}
