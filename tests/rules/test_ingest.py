"""Rules applied by ingest (in its transaction), manual overrides, reapply, the dry run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from inbox_service.conversations.models import Activity
from inbox_service.core.db import SessionMaker, create_engine, create_sessionmaker, transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.models import Inbox
from inbox_service.rules import engine, service
from inbox_service.rules.matcher import Mail
from inbox_service.rules.schemas import PriorityRuleIn
from tests.conftest import CommittedDb, Team
from tests.rules.support import NOW, conversation_of, ingest, mail, make_rule


async def conversation(client: httpx.AsyncClient, team: Team, cid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/conversations/{cid}", headers=team.admin_headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def events(db: SessionMaker, cid: str) -> list[tuple[str, dict[str, Any]]]:
    async with transaction(db) as session:
        rows = await session.execute(
            select(Event.type, Event.data).where(Event.conversation_id == cid).order_by(Event.id)
        )
        return [(t, d) for t, d in rows]


async def activities(db: SessionMaker, cid: str) -> list[tuple[str, dict[str, Any]]]:
    async with transaction(db) as session:
        rows = await session.execute(
            select(Activity.kind, Activity.data)
            .where(Activity.conversation_id == cid)
            .order_by(Activity.id)
        )
        return [(k, d) for k, d in rows]


@pytest.fixture
async def rules(client: httpx.AsyncClient, team: Team) -> dict[str, str]:
    """Four rules: urgent (with an exclusion), high, low, and a tag-only one."""
    made = [
        await make_rule(client, team.admin_headers, name="outages", keywords=["outage", "urgent"],
                        exclusions=["not urgent"], priority="urgent", tags=["incident"]),
        await make_rule(client, team.admin_headers, name="refunds",
                        keywords=["refund", "damaged product", "Überweisung"], priority="high",
                        tags=["Billing"]),
        await make_rule(client, team.admin_headers, name="newsletters", keywords=["newsletter"],
                        priority="low"),
        await make_rule(client, team.admin_headers, name="demos", keywords=["demo request"],
                        tags=["sales", "billing"]),
    ]  # fmt: skip
    return {r["name"]: r["id"] for r in made}


class TestIngestApplies:
    async def test_new_conversation_gets_priority_source_tags_timeline_and_events(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, mid = mail(subject="Outage in the EU region", body="Nothing loads.")
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, mid)
        body = await conversation(client, team, cid)
        assert body["priority"] == "urgent"
        assert body["priority_source"] == {
            "type": "rule",
            "rule_id": rules["outages"],
            "keyword": "outage",
            "user_id": None,
        }
        assert body["tags"] == ["incident"]
        kinds = [k for k, _ in await activities(db, cid)]
        assert kinds == ["rule_matched", "priority_changed", "tagged"]
        (matched,) = [d for k, d in await activities(db, cid) if k == "rule_matched"]
        assert matched["rules"][0]["rule_id"] == rules["outages"]
        assert matched["rules"][0]["keywords"] == ["outage"]
        types = [t for t, _ in await events(db, cid)]
        assert types == [
            "conversation.created",
            "message.received",
            "conversation.priority_changed",
            "conversation.tagged",
        ]
        changed = dict(await events(db, cid))["conversation.priority_changed"]
        assert changed["previous_priority"] == "normal"
        assert changed["priority"] == "urgent"
        assert changed["conversation"]["priority"] == "urgent"
        listed = await client.get(
            "/v1/conversations", params={"inbox_id": team.inbox_a}, headers=team.admin_headers
        )
        assert listed.json()["items"][0]["priority_source"] == body["priority_source"]
        timeline = await client.get(f"/v1/conversations/{cid}/timeline", headers=team.admin_headers)
        assert "rule_matched" in [e["kind"] for e in timeline.json()["items"]]

    @pytest.mark.parametrize(
        ("fields", "priority", "tags"),
        [
            ({"subject": "URGENT: help", "body": "Hello."}, "urgent", ["incident"]),
            ({"subject": "Hello", "body": "We need a REFUND."}, "high", ["Billing"]),
            ({"subject": "Hello", "body": None, "html": "<p>Big <b>outage</b>!</p>"}, "urgent",
             ["incident"]),
            ({"subject": "Hi", "body": None, "html": "<p>&Uuml;berweisung fehlt</p>"}, "high",
             ["Billing"]),
            ({"subject": "Hi", "body": "The damaged\r\nproduct arrived"}, "high", ["Billing"]),
            ({"subject": "This is not urgent", "body": "whenever"}, "normal", []),
            ({"subject": "Nonurgent refundable", "body": "no"}, "normal", []),
        ],
    )  # fmt: skip
    async def test_where_the_keyword_is(
        self,
        client: httpx.AsyncClient,
        db: SessionMaker,
        team: Team,
        rules: dict[str, str],
        fields: dict[str, Any],
        priority: str,
        tags: list[str],
    ) -> None:
        raw, mid = mail(**fields)
        await ingest(db, team.inbox_a, raw)
        body = await conversation(client, team, await conversation_of(db, mid))
        assert (body["priority"], body["tags"]) == (priority, tags)
        assert (body["priority_source"] is None) == (priority == "normal")

    async def test_several_rules_highest_wins_all_tags_added(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, mid = mail(subject="Demo request", body="refund? outage! newsletter")
        await ingest(db, team.inbox_a, raw)
        body = await conversation(client, team, await conversation_of(db, mid))
        assert body["priority"] == "urgent"
        assert body["priority_source"]["rule_id"] == rules["outages"]
        # "billing" and "Billing" are one tag (tags are unique whatever their case)
        assert sorted(t.lower() for t in body["tags"]) == ["billing", "incident", "sales"]

    async def test_a_low_rule_sets_a_new_conversation_low(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, mid = mail(subject="Our newsletter", body="news")
        await ingest(db, team.inbox_a, raw)
        body = await conversation(client, team, await conversation_of(db, mid))
        assert body["priority"] == "low"
        assert body["priority_source"]["rule_id"] == rules["newsletters"]

    async def test_later_messages_raise_and_never_lower(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, first = mail(subject="Refund please", body="hi")
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, first)
        raw, second = mail(subject="Re: Refund please", body="our newsletter", in_reply_to=first)
        await ingest(db, team.inbox_a, raw, now=NOW + timedelta(minutes=1))
        assert await conversation_of(db, second) == cid
        body = await conversation(client, team, cid)
        assert (body["priority"], body["priority_source"]["rule_id"]) == ("high", rules["refunds"])
        raw, _ = mail(subject="Re: Refund please", body="now an OUTAGE", in_reply_to=second)
        await ingest(db, team.inbox_a, raw, now=NOW + timedelta(minutes=2))
        body = await conversation(client, team, cid)
        assert (body["priority"], body["priority_source"]["rule_id"]) == (
            "urgent",
            rules["outages"],
        )
        assert sorted(body["tags"]) == ["Billing", "incident"]

    async def test_our_own_later_messages_are_not_evaluated(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, first = mail(subject="Question", body="hi")
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, first)
        async with transaction(db) as session:
            address = (await session.get_one(Inbox, team.inbox_a)).address
        raw, _ = mail(subject="Re: Question", body="This is not an outage.", sender=address,
                      in_reply_to=first)  # fmt: skip
        await ingest(db, team.inbox_a, raw, now=NOW + timedelta(minutes=1))
        assert (await conversation(client, team, cid))["priority"] == "normal"

    async def test_disabled_and_other_inbox_rules_do_not_apply(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        await make_rule(client, team.admin_headers, keywords=["refund"], priority="urgent",
                        enabled=False)  # fmt: skip
        await make_rule(client, team.admin_headers, keywords=["refund"], priority="high",
                        inbox_id=team.inbox_b)  # fmt: skip
        raw, mid = mail(subject="refund", body="x")
        await ingest(db, team.inbox_a, raw)
        assert (await conversation(client, team, await conversation_of(db, mid)))[
            "priority"
        ] == "normal"


class TestManualOverride:
    async def test_survives_a_later_matching_message_and_a_reapply(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, first = mail(subject="Refund", body="hi")
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, first)
        response = await client.patch(
            f"/v1/conversations/{cid}", json={"priority": "low"}, headers=team.agent_headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["priority_source"] == {
            "type": "user",
            "rule_id": None,
            "keyword": None,
            "user_id": team.agent_id,
        }
        raw, _ = mail(subject="Re: Refund", body="URGENT outage", in_reply_to=first)
        await ingest(db, team.inbox_a, raw, now=NOW + timedelta(minutes=1))
        body = await conversation(client, team, cid)
        assert body["priority"] == "low"
        assert body["priority_source"]["type"] == "user"
        assert "incident" in body["tags"]  # tags still come; only the priority is the person's
        matched = [d for k, d in await activities(db, cid) if k == "rule_matched"]
        assert matched[-1]["kept_manual_priority"] is True
        response = await client.post(
            "/v1/priority-rules/reapply",
            json={"inbox_id": team.inbox_a, "since": (NOW - timedelta(days=1)).isoformat()},
            headers=team.admin_headers,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"conversations": 1, "changed": 0}
        body = await conversation(client, team, cid)
        assert (body["priority"], body["priority_source"]["type"]) == ("low", "user")

    async def test_bulk_priority_is_manual_too(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, first = mail(subject="Hello", body="hi")
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, first)
        response = await client.post(
            "/v1/conversations/bulk",
            json={"ids": [cid], "action": "priority", "value": "high"},
            headers=team.admin_headers,
        )
        assert response.status_code == 200, response.text
        raw, _ = mail(subject="Re: Hello", body="outage", in_reply_to=first)
        await ingest(db, team.inbox_a, raw, now=NOW + timedelta(minutes=1))
        body = await conversation(client, team, cid)
        assert (body["priority"], body["priority_source"]["user_id"]) == ("high", team.admin_id)


class TestReapply:
    async def reapply(
        self, client: httpx.AsyncClient, team: Team, since: Any = None, **extra: Any
    ) -> httpx.Response:
        since = since or NOW - timedelta(days=1)
        return await client.post(
            "/v1/priority-rules/reapply",
            json={"inbox_id": team.inbox_a, "since": since.isoformat(), **extra},
            headers=team.admin_headers,
        )

    async def test_applies_new_rules_to_open_conversations_once(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        old, old_mid = mail(subject="refund", body="x", date=NOW - timedelta(days=3))
        new, new_mid = mail(subject="refund", body="x")
        done, done_mid = mail(subject="refund", body="x")
        plain, plain_mid = mail(subject="thanks", body="x")
        await ingest(db, team.inbox_a, old, new, done, plain)
        await client.patch(
            f"/v1/conversations/{await conversation_of(db, done_mid)}",
            json={"status": "resolved"},
            headers=team.admin_headers,
        )
        rule = await make_rule(
            client, team.admin_headers, keywords=["refund"], priority="high", tags=["money"]
        )
        response = await self.reapply(client, team)
        assert response.json() == {"conversations": 2, "changed": 1}
        cid = await conversation_of(db, new_mid)
        body = await conversation(client, team, cid)
        assert (body["priority"], body["priority_source"]["rule_id"]) == ("high", rule["id"])
        assert body["tags"] == ["money"]
        for untouched in (old_mid, done_mid, plain_mid):
            other = await conversation(client, team, await conversation_of(db, untouched))
            assert (other["priority"], other["tags"]) == ("normal", [])
        before = (await events(db, cid), await activities(db, cid))
        again = await self.reapply(client, team)
        assert again.json() == {"conversations": 2, "changed": 0}
        assert (await events(db, cid), await activities(db, cid)) == before

    async def test_raises_but_never_lowers(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, rules: dict[str, str]
    ) -> None:
        raw, mid = mail(subject="refund", body="x")
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, mid)
        await make_rule(client, team.admin_headers, keywords=["refund"], priority="low")
        await make_rule(client, team.admin_headers, keywords=["x"], priority="normal")
        assert (await self.reapply(client, team)).json()["changed"] == 0
        assert (await conversation(client, team, cid))["priority"] == "high"
        await make_rule(client, team.admin_headers, keywords=["refund"], priority="urgent")
        assert (await self.reapply(client, team)).json()["changed"] == 1
        assert (await conversation(client, team, cid))["priority"] == "urgent"

    async def test_bad_requests(self, client: httpx.AsyncClient, team: Team) -> None:
        naive = await client.post(
            "/v1/priority-rules/reapply",
            json={"inbox_id": team.inbox_a, "since": "2026-01-01T00:00:00"},
            headers=team.admin_headers,
        )
        assert naive.status_code == 422
        unknown = await client.post(
            "/v1/priority-rules/reapply",
            json={"inbox_id": "inb_nope", "since": NOW.isoformat()},
            headers=team.admin_headers,
        )
        assert unknown.status_code == 404
        agent = await client.post(
            "/v1/priority-rules/reapply",
            json={"inbox_id": team.inbox_a, "since": NOW.isoformat()},
            headers=team.agent_headers,
        )
        assert agent.status_code == 403
        assert agent.headers["content-type"] == "application/problem+json"


class TestDryRunEqualsIngest:
    @pytest.mark.parametrize(
        "fields",
        [
            {"subject": "Outage and refund", "body": "demo request, newsletter"},
            {"subject": "Hello", "body": None, "html": "<div>DAMAGED<br>product</div>"},
            {"subject": "not urgent", "body": "but a refund", "sender": "x@bigcorp.com"},
            {"subject": "no match at all", "body": "thanks"},
            {"subject": "Newsletter", "body": "vip", "sender": "y@vip.example"},
        ],
    )
    async def test_same_mail_same_result(
        self,
        client: httpx.AsyncClient,
        db: SessionMaker,
        team: Team,
        rules: dict[str, str],
        fields: dict[str, Any],
    ) -> None:
        await make_rule(client, team.admin_headers, keywords=["vip"], priority="urgent",
                        sender_domains=["vip.example"], inbox_id=team.inbox_a)  # fmt: skip
        sender = fields.pop("sender", "ana@customer.test")
        dry = await client.post(
            "/v1/priority-rules/test",
            json={**fields, "sender": sender, "inbox_id": team.inbox_a},
            headers=team.agent_headers,
        )
        assert dry.status_code == 200, dry.text
        result = dry.json()
        raw, mid = mail(**fields, sender=sender)
        await ingest(db, team.inbox_a, raw)
        cid = await conversation_of(db, mid)
        body = await conversation(client, team, cid)
        assert body["priority"] == (result["priority"] or "normal")
        assert body["priority_source"] == result["priority_source"]
        assert sorted(t.lower() for t in body["tags"]) == sorted(t.lower() for t in result["tags"])
        matched = [d for k, d in await activities(db, cid) if k == "rule_matched"]
        ingested_rules = [r["rule_id"] for d in matched for r in d["rules"]]
        assert ingested_rules == [r["rule_id"] for r in result["matched_rules"]]


class TestMatcherCache:
    async def test_a_rule_change_reaches_a_cached_matcher_and_a_rollback_does_not(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        async def dry(subject: str) -> str | None:
            response = await client.post(
                "/v1/priority-rules/test", json={"subject": subject}, headers=team.admin_headers
            )
            priority: str | None = response.json()["priority"]
            return priority

        rule = await make_rule(client, team.admin_headers, keywords=["refund"], priority="high")
        assert await dry("refund") == "high"
        await client.patch(
            f"/v1/priority-rules/{rule['id']}",
            json={"keywords": ["chargeback"]},
            headers=team.admin_headers,
        )
        assert await dry("refund") is None
        assert await dry("chargeback") == "high"
        # a refused change changes nothing
        bad = await client.patch(
            f"/v1/priority-rules/{rule['id']}",
            json={"priority": None},
            headers=team.admin_headers,
        )
        assert bad.status_code == 422
        assert await dry("chargeback") == "high"
        await client.delete(f"/v1/priority-rules/{rule['id']}", headers=team.admin_headers)
        assert await dry("chargeback") is None


async def test_a_change_committed_by_another_process_reaches_the_cache(
    committed_db: CommittedDb,
) -> None:
    """Two engines stand for two processes: the cache follows the revision row."""
    other_engine = create_engine(committed_db.url, pool_size=1)
    try:
        async with transaction(committed_db.sessionmaker) as session:
            assert (await engine.current_matcher(session)).empty
        async with transaction(create_sessionmaker(other_engine)) as session:
            data = PriorityRuleIn(name="r", keywords=["refund"], priority="high")
            await service.create_rule(session, data, now=NOW)
        async with transaction(committed_db.sessionmaker) as session:
            fresh = await engine.current_matcher(session)
        assert fresh.evaluate(Mail(subject="Refund", body="")).priority == "high"
        async with transaction(committed_db.sessionmaker) as session:
            assert await engine.current_matcher(session) is fresh  # unchanged: not rebuilt
    finally:
        await other_engine.dispose()
