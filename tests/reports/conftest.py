from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker
from inbox_service.replies.sender import ReplySender, SenderConfig
from tests.conftest import Team
from tests.replies.conftest import sink
from tests.replies.smtp_sink import SmtpSink
from tests.reports.support import HOUR, MINUTE, Play, at

__all__ = ["sink"]


@dataclass
class Scenario:
    """Five conversations in inbox A (policy in America/New_York, 24/7: first response
    1 h, resolution 8 h), one in inbox B (no policy). Ids c1…c5, b1."""

    play: Play
    ids: dict[str, str]


@pytest.fixture
async def scenario(
    db: SessionMaker,
    client: httpx.AsyncClient,
    clock: FixedClock,
    team: Team,
    sink: SmtpSink,
) -> Scenario:
    sender = ReplySender(db, clock, None, worker_id="reports", config=SenderConfig(3.0))
    play = Play(db, client, clock, team, sender)
    await play.setup_inbox(team.inbox_a, sink)
    await play.setup_inbox(team.inbox_b, sink)
    response = await client.post(
        "/v1/sla-policies",
        json={
            "name": "New York",
            "inbox_ids": [team.inbox_a],
            "targets": {"normal": {"first_response": 3600, "resolution": 8 * 3600}},
            "business_hours": {"timezone": "America/New_York", "intervals": None},
        },
        headers=team.admin_headers,
    )
    assert response.status_code == 201, response.text
    a, ids = team.inbox_a, {}

    # c1: answered in 10 min, resolved after 1 h: first contact resolution.
    ids["c1"] = c1 = await play.customer_writes(a, at(5, 14))
    await play.agent_replies(c1, at(5, 14) + 10 * MINUTE)
    await play.set_status(c1, "resolved", at(5, 15))
    # c2: answered in 30 min, a second reply, resolved after 3 h.
    ids["c2"] = c2 = await play.customer_writes(a, at(5, 15))
    await play.agent_replies(c2, at(5, 15) + 30 * MINUTE)
    await play.agent_replies(c2, at(5, 17))
    await play.set_status(c2, "resolved", at(5, 18))
    # c3: 03:00 UTC is 22:00 the day before in New York. Answered late (2 h), resolved
    # at +5 h, reopened by the customer at +6 h, answered, resolved again at +7 h.
    ids["c3"] = c3 = await play.customer_writes(a, at(6, 3))
    await play.agent_replies(c3, at(6, 5))
    await play.set_status(c3, "resolved", at(6, 8))
    await play.customer_writes(a, at(6, 9), reply_to=c3)
    await play.agent_replies(c3, at(6, 9) + 30 * MINUTE)
    await play.set_status(c3, "resolved", at(6, 10))
    # c4: answered after 3 h (late), still open. c5: never answered.
    ids["c4"] = c4 = await play.customer_writes(a, at(6, 10))
    ids["c5"] = await play.customer_writes(a, at(6, 11))
    await play.agent_replies(c4, at(6, 13))
    # b1: inbox B, the agent's report must not see it.
    ids["b1"] = b1 = await play.customer_writes(team.inbox_b, at(6, 14))
    await play.agent_replies(b1, at(6, 14) + 5 * MINUTE)
    await play.set_status(b1, "resolved", at(6, 14) + HOUR)

    for key, user in (("c1", team.agent_id), ("c3", team.agent_id), ("c2", team.admin_id)):
        await play.assign(ids[key], user)
    await play.assign(ids["c4"], team.admin_id)
    clock.set(at(8, 12))  # the report is read two days later: c4's and c5's clocks ran out
    return Scenario(play, ids)
