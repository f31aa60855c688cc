"""`/v1/priority-rules`: CRUD, validation, who may do what, and the dry run's answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Team
from tests.rules.support import make_rule

URL = "/v1/priority-rules"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


class TestCrud:
    async def test_create_read_list_update_delete(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            URL,
            json={
                "name": "Outages",
                "keywords": ["  outage ", "Server\n down", "OUTAGE"],
                "exclusions": ["not urgent"],
                "match_in": ["subject"],
                "sender_domains": ["@BigCorp.com"],
                "priority": "urgent",
                "tags": ["incident"],
                "inbox_id": team.inbox_a,
            },
            headers=team.admin_headers,
        )
        assert response.status_code == 201, response.text
        rule = response.json()
        assert response.headers["location"] == f"{URL}/{rule['id']}"
        assert response.headers["etag"] == '"1"'
        assert rule["keywords"] == ["outage", "Server down"]  # trimmed, one per case-fold
        assert rule["sender_domains"] == ["bigcorp.com"]
        assert (rule["position"], rule["enabled"], rule["version"]) == (0, True, 1)
        second = await make_rule(client, team.admin_headers, keywords=["refund"], tags=["money"])
        first = await make_rule(
            client, team.admin_headers, keywords=["refund"], priority="low", position=0
        )
        assert second["position"] == 1
        assert second["priority"] is None
        listed = await client.get(URL, headers=team.admin_headers, params={"limit": 2})
        page = listed.json()
        ids = [r["id"] for r in page["items"]]
        rest = await client.get(
            URL, headers=team.admin_headers, params={"cursor": page["next_cursor"]}
        )
        ids += [r["id"] for r in rest.json()["items"]]
        assert ids == [*sorted([rule["id"], first["id"]]), second["id"]]
        got = await client.get(f"{URL}/{rule['id']}", headers=team.admin_headers)
        assert got.json() == rule
        patched = await client.patch(
            f"{URL}/{rule['id']}",
            json={"enabled": False, "inbox_id": None, "priority": "high"},
            headers={**team.admin_headers, "If-Match": '"1"'},
        )
        assert patched.status_code == 200, patched.text
        assert (patched.json()["enabled"], patched.json()["inbox_id"]) == (False, None)
        assert patched.headers["etag"] == '"2"'
        stale = await client.patch(
            f"{URL}/{rule['id']}",
            json={"enabled": True},
            headers={**team.admin_headers, "If-Match": '"1"'},
        )
        problem(stale, 412)
        deleted = await client.delete(f"{URL}/{rule['id']}", headers=team.admin_headers)
        assert deleted.status_code == 204
        problem(await client.get(f"{URL}/{rule['id']}", headers=team.admin_headers), 404)
        problem(await client.get(f"{URL}/%00", headers=team.admin_headers), 404)
        problem(await client.get(f"{URL}/prl_unknown", headers=team.admin_headers), 404)


class TestBadRules:
    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({"keywords": []}, ["body", "keywords"]),
            ({"keywords": ["   "]}, ["body", "keywords", 0]),
            ({"keywords": ["!!!"]}, ["body", "keywords", 0]),
            ({"keywords": ["a\x00b"]}, ["body", "keywords", 0]),
            ({"keywords": ["x" * 201]}, ["body", "keywords", 0]),
            ({"keywords": ["x"], "priority": "critical"}, ["body", "priority"]),
            ({"keywords": ["x"], "priority": None}, ["body", "priority"]),
            ({"keywords": ["x"], "match_in": []}, ["body", "match_in"]),
            ({"keywords": ["x"], "match_in": ["headers"]}, ["body", "match_in", 0]),
            (
                {"keywords": ["x"], "sender_domains": ["not a domain"]},
                ["body", "sender_domains", 0],
            ),
            ({"keywords": ["x"], "inbox_id": "inb_nope"}, ["body", "inbox_id"]),
            ({"keywords": "urgent"}, ["body", "keywords"]),
            ({"keywords": ["x"], "colour": "red"}, ["body", "colour"]),
            ({"keywords": ["x"], "position": -1}, ["body", "position"]),
            ({"keywords": ["x"], "tags": ["a\x00"]}, ["body", "tags", 0]),
            ({"keywords": ["x"], "name": "a\x00"}, ["body", "name"]),
            ({"keywords": ["x"], "inbox_id": "\x00"}, ["body", "inbox_id"]),
        ],
    )
    async def test_is_422_naming_the_field(
        self, client: httpx.AsyncClient, team: Team, body: dict[str, Any], loc: list[Any]
    ) -> None:
        body = {"name": "r", "priority": "high", **body}
        response = await client.post(URL, json=body, headers=team.admin_headers)
        errors = problem(response, 422)["errors"]
        assert loc in [e["loc"] for e in errors], errors

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            URL,
            content=b'{"name": "r", "keywords": [',
            headers={**team.admin_headers, "content-type": "application/json"},
        )
        problem(response, 422)

    async def test_patch_cannot_null_required_fields_or_drop_every_action(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        rule = await make_rule(client, team.admin_headers, keywords=["x"], priority="high")
        for body in ({"keywords": None}, {"name": None}, {"priority": None}, {"keywords": []}):
            response = await client.patch(
                f"{URL}/{rule['id']}", json=body, headers=team.admin_headers
            )
            problem(response, 422)
        got = await client.get(f"{URL}/{rule['id']}", headers=team.admin_headers)
        assert got.json() == rule

    async def test_regex_looking_keywords_are_stored_and_matched_literally(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        await make_rule(
            client, team.admin_headers, keywords=["urgent.*", "(a|b)", "[vip"], priority="high"
        )
        for subject, expected in [
            ("urgent now", None),
            ("urgent.* now", "high"),
            ("a", None),
            ("(a|b)", "high"),
            ("[vip customer", "high"),
        ]:
            response = await client.post(
                f"{URL}/test", json={"subject": subject}, headers=team.admin_headers
            )
            assert response.status_code == 200, response.text
            assert response.json()["priority"] == expected, subject


class TestWhoMay:
    async def test_agents_read_global_and_their_inboxes_rules_and_write_nothing(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        everywhere = await make_rule(client, team.admin_headers, keywords=["a"], priority="high")
        mine = await make_rule(
            client, team.admin_headers, keywords=["b"], priority="high", inbox_id=team.inbox_a
        )
        theirs = await make_rule(
            client, team.admin_headers, keywords=["c"], priority="high", inbox_id=team.inbox_b
        )
        listed = await client.get(URL, headers=team.agent_headers)
        assert [r["id"] for r in listed.json()["items"]] == [everywhere["id"], mine["id"]]
        problem(await client.get(f"{URL}/{theirs['id']}", headers=team.agent_headers), 404)
        assert (await client.get(f"{URL}/{mine['id']}", headers=team.agent_headers)).is_success
        created = await client.post(
            URL,
            json={"name": "r", "keywords": ["x"], "priority": "low"},
            headers=team.agent_headers,
        )
        problem(created, 403)
        patched = await client.patch(
            f"{URL}/{mine['id']}", json={"enabled": False}, headers=team.agent_headers
        )
        problem(patched, 403)
        problem(await client.delete(f"{URL}/{mine['id']}", headers=team.agent_headers), 403)
        problem(await client.get(URL), 401)

    async def test_dry_run_in_an_inbox_the_caller_cannot_see_is_404(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            f"{URL}/test",
            json={"subject": "x", "inbox_id": team.inbox_b},
            headers=team.agent_headers,
        )
        problem(response, 404)
        unknown = await client.post(
            f"{URL}/test", json={"subject": "x", "inbox_id": "inb_nope"}, headers=team.admin_headers
        )
        problem(unknown, 404)


class TestDryRun:
    async def test_matched_rules_keywords_positions_priority_and_tags(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        outage = await make_rule(
            client, team.admin_headers, name="Outages", keywords=["outage"], priority="urgent",
            tags=["incident"],
        )  # fmt: skip
        damaged = await make_rule(
            client, team.admin_headers, name="Damaged", keywords=["damaged product", "Überweisung"],
            priority="high", tags=["claims"],
        )  # fmt: skip
        await make_rule(client, team.admin_headers, keywords=["unrelated"], priority="low")
        response = await client.post(
            f"{URL}/test",
            json={
                "subject": "OUTAGE",
                "body": "Your DAMAGED\nproduct, and the ÜBERWEISUNG; outage again",
            },
            headers=team.agent_headers,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "matched_rules": [
                {
                    "rule_id": outage["id"],
                    "name": "Outages",
                    "priority": "urgent",
                    "tags": ["incident"],
                    "matches": [
                        {"keyword": "outage", "field": "subject", "start": 0, "end": 6,
                         "text": "OUTAGE"},
                        {"keyword": "outage", "field": "body", "start": 43, "end": 49,
                         "text": "outage"},
                    ],
                },
                {
                    "rule_id": damaged["id"],
                    "name": "Damaged",
                    "priority": "high",
                    "tags": ["claims"],
                    "matches": [
                        {"keyword": "damaged product", "field": "body", "start": 5, "end": 20,
                         "text": "DAMAGED\nproduct"},
                        {"keyword": "Überweisung", "field": "body", "start": 30, "end": 41,
                         "text": "ÜBERWEISUNG"},
                    ],
                },
            ],
            "priority": "urgent",
            "priority_source": {"type": "rule", "rule_id": outage["id"], "keyword": "outage",
                                "user_id": None},
            "tags": ["incident", "claims"],
        }  # fmt: skip

    async def test_html_is_used_only_without_a_text_body(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        await make_rule(client, team.admin_headers, keywords=["refund"], priority="high")

        async def priority(body: dict[str, Any]) -> str | None:
            response = await client.post(f"{URL}/test", json=body, headers=team.admin_headers)
            assert response.status_code == 200, response.text
            found: str | None = response.json()["priority"]
            return found

        assert await priority({"html": "<p>A <i>refund</i>, please</p>"}) == "high"
        assert await priority({"body": "thanks", "html": "<p>refund</p>"}) is None
        assert await priority({"html": "<p>re<b>fund</b></p>"}) == "high"  # as it reads
        assert await priority({"subject": "", "body": ""}) is None

    async def test_no_rules_no_match(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            f"{URL}/test", json={"subject": "urgent"}, headers=team.admin_headers
        )
        assert response.json() == {
            "matched_rules": [],
            "priority": None,
            "priority_source": None,
            "tags": [],
        }
