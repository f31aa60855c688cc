"""The webhooks API: admin-only CRUD, validation, rotation, test sends, deliveries, retry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker
from inbox_service.webhooks.delivery import SenderConfig, WebhookSender
from tests.conftest import Team
from tests.webhooks.receiver import Receiver, Reply

KEY = generate_key()


def make_settings(**overrides: object) -> Settings:
    return Settings.model_validate(
        {
            "database_url": "postgresql+asyncpg://unused/unused",
            "rate_limit_per_minute": 0,
            "inbox_secret_key": SecretStr(KEY),
            "webhook_allow_private": True,
            **overrides,
        }
    )


@pytest.fixture
def settings() -> Settings:
    return make_settings()


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(app):
        yield http


async def create(
    api: httpx.AsyncClient, team: Team, receiver: Receiver, **body: object
) -> dict[str, object]:
    answer = await api.post(
        "/v1/webhooks",
        json={"url": receiver.url(), "events": ["*"], **body},
        headers=team.admin_headers,
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, object] = answer.json()
    return created


async def test_create_shows_the_secret_once_and_reads_never_do(
    api: httpx.AsyncClient, team: Team, receiver: Receiver
) -> None:
    answer = await api.post(
        "/v1/webhooks",
        json={
            "url": receiver.url(),
            "events": ["sla.breached", "conversation.assigned"],
            "inbox_id": team.inbox_a,
            "description": "PagerDuty bridge",
        },
        headers=team.admin_headers,
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert str(created["secret"]).startswith("whsec_")
    assert created["events"] == ["conversation.assigned", "sla.breached"]
    assert created["inbox_id"] == team.inbox_a
    assert created["enabled"] is True
    assert answer.headers["location"] == f"/v1/webhooks/{created['id']}"
    assert answer.headers["etag"] == '"1"'

    one = await api.get(f"/v1/webhooks/{created['id']}", headers=team.admin_headers)
    listed = await api.get("/v1/webhooks", headers=team.admin_headers)
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert [w["id"] for w in listed.json()["items"]] == [created["id"]]
    assert created["secret"] not in one.text + listed.text


async def test_a_supplied_secret_is_used_and_a_malformed_one_refused(
    api: httpx.AsyncClient, team: Team, receiver: Receiver
) -> None:
    good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    created = await create(api, team, receiver, secret=good)
    assert created["secret"] == good
    for bad in ("abc", "whsec_!!!", "whsec_c2hvcnQ="):
        answer = await api.post(
            "/v1/webhooks",
            json={"url": receiver.url(), "events": ["*"], "secret": bad},
            headers=team.admin_headers,
        )
        assert answer.status_code == 422, bad
        assert answer.json()["errors"][0]["loc"] == ["body", "secret"]


async def test_only_admins_manage_webhooks(
    api: httpx.AsyncClient, team: Team, receiver: Receiver
) -> None:
    created = await create(api, team, receiver)
    for method, path in [
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{created['id']}"),
        ("PATCH", f"/v1/webhooks/{created['id']}"),
        ("DELETE", f"/v1/webhooks/{created['id']}"),
        ("POST", f"/v1/webhooks/{created['id']}/rotate-secret"),
        ("POST", f"/v1/webhooks/{created['id']}/test"),
        ("GET", f"/v1/webhooks/{created['id']}/deliveries"),
    ]:
        body = {"url": receiver.url(), "events": ["*"]} if method in ("POST", "PATCH") else None
        agent = await api.request(method, path, json=body, headers=team.agent_headers)
        anonymous = await api.request(method, path, json=body)
        assert agent.status_code == 403, (method, path, agent.text)
        assert anonymous.status_code == 401, (method, path)
        assert agent.headers["content-type"] == "application/problem+json"
    still = await api.get(f"/v1/webhooks/{created['id']}", headers=team.admin_headers)
    assert still.json()["version"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["conversation.exploded"]}, "events"),
        ({"events": ["*", "note.created"]}, "events"),
        ({"events": []}, "events"),
        ({"events": ["presence.changed"]}, "events"),
        ({"events": "sla.breached"}, "events"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://user:pw@example.com/"}, "url"),
        ({"url": ""}, "url"),
        ({"inbox_id": "inb_nope"}, "inbox_id"),
        ({"colour": "blue"}, "colour"),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    api: httpx.AsyncClient, team: Team, receiver: Receiver, body: dict[str, object], field: str
) -> None:
    answer = await api.post(
        "/v1/webhooks",
        json={"url": receiver.url(), "events": ["*"], **body},
        headers=team.admin_headers,
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in [loc for error in answer.json()["errors"] for loc in error["loc"]]
    listed = await api.get("/v1/webhooks", headers=team.admin_headers)
    assert listed.json()["items"] == []


async def test_malformed_json_is_422(api: httpx.AsyncClient, team: Team) -> None:
    answer = await api.post(
        "/v1/webhooks",
        content=b'{"url": ',
        headers={**team.admin_headers, "content-type": "application/json"},
    )
    assert answer.status_code == 422


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://localhost/",
    ],
)
async def test_private_targets_are_refused_unless_allowed(
    db: SessionMaker, team: Team, url: str
) -> None:
    app = create_app(
        make_settings(webhook_allow_private=False), sessionmaker=db, clock=FixedClock()
    )
    async for api in _client(app):
        answer = await api.post(
            "/v1/webhooks", json={"url": url, "events": ["*"]}, headers=team.admin_headers
        )
        assert answer.status_code == 422, url
        assert answer.json()["errors"][0]["loc"] == ["body", "url"]
        assert "refused" in answer.json()["detail"]


async def test_without_a_secret_key_no_webhook_can_be_stored(
    db: SessionMaker, team: Team, receiver: Receiver
) -> None:
    app = create_app(make_settings(inbox_secret_key=None), sessionmaker=db, clock=FixedClock())
    async for api in _client(app):
        answer = await api.post(
            "/v1/webhooks",
            json={"url": receiver.url(), "events": ["*"]},
            headers=team.admin_headers,
        )
        assert answer.status_code == 422
        assert "INBOX_SECRET_KEY" in answer.json()["detail"]


async def test_unknown_ids_are_404(api: httpx.AsyncClient, team: Team, receiver: Receiver) -> None:
    created = await create(api, team, receiver)
    h = team.admin_headers
    for method, path in [
        ("GET", "/v1/webhooks/whk_nope"),
        ("PATCH", "/v1/webhooks/whk_nope"),
        ("DELETE", "/v1/webhooks/whk_nope"),
        ("POST", "/v1/webhooks/whk_nope/rotate-secret"),
        ("POST", "/v1/webhooks/whk_nope/test"),
        ("GET", "/v1/webhooks/whk_nope/deliveries"),
        ("GET", f"/v1/webhooks/{created['id']}/deliveries/dlv_999999"),
        ("GET", f"/v1/webhooks/{created['id']}/deliveries/garbage"),
        ("GET", f"/v1/webhooks/{created['id']}/deliveries/dlv_99999999999999999999999"),
        ("POST", f"/v1/webhooks/{created['id']}/deliveries/dlv_1/retry"),
    ]:
        answer = await api.request(method, path, json={} if method == "PATCH" else None, headers=h)
        assert answer.status_code == 404, (method, path, answer.text)


async def test_a_delivery_of_another_webhook_is_404(
    api: httpx.AsyncClient, team: Team, receiver: Receiver
) -> None:
    a = await create(api, team, receiver)
    b = await create(api, team, receiver)
    sent = await api.post(f"/v1/webhooks/{a['id']}/test", headers=team.admin_headers)
    delivery_id = sent.json()["id"]
    answer = await api.get(
        f"/v1/webhooks/{b['id']}/deliveries/{delivery_id}", headers=team.admin_headers
    )
    assert answer.status_code == 404


async def test_patch_checks_if_match_and_toggles_enabled(
    api: httpx.AsyncClient, team: Team, receiver: Receiver
) -> None:
    created = await create(api, team, receiver)
    path, h = f"/v1/webhooks/{created['id']}", team.admin_headers

    stale = await api.patch(path, json={"enabled": False}, headers={**h, "If-Match": '"7"'})
    assert stale.status_code == 412
    assert (await api.get(path, headers=h)).json()["enabled"] is True

    off = await api.patch(path, json={"enabled": False}, headers={**h, "If-Match": '"1"'})
    assert off.status_code == 200
    assert off.json()["enabled"] is False
    assert off.json()["disabled_reason"]
    assert off.headers["etag"] == '"2"'
    on = await api.patch(path, json={"enabled": True, "events": ["note.created"]}, headers=h)
    assert on.json()["enabled"] is True
    assert on.json()["disabled_reason"] is None
    assert on.json()["events"] == ["note.created"]
    assert (await api.patch(path, json={"url": None}, headers=h)).status_code == 422
    assert (await api.patch(path, json={"events": ["nope"]}, headers=h)).status_code == 422


async def test_rotation_returns_a_new_secret_and_the_overlap(
    api: httpx.AsyncClient, team: Team, receiver: Receiver, clock: FixedClock
) -> None:
    created = await create(api, team, receiver)
    path = f"/v1/webhooks/{created['id']}"
    rotated = await api.post(f"{path}/rotate-secret", headers=team.admin_headers)
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != created["secret"]
    expected = (clock.now() + timedelta(hours=24)).isoformat().replace("+00:00", "Z")
    assert body["previous_secret_expires_at"] == expected
    shown = (await api.get(path, headers=team.admin_headers)).json()
    assert shown["previous_secret_expires_at"] == expected
    assert shown["version"] == 2


async def test_test_send_deliveries_log_and_retry(
    api: httpx.AsyncClient,
    team: Team,
    receiver: Receiver,
    db: SessionMaker,
    clock: FixedClock,
) -> None:
    created = await create(api, team, receiver)
    path, h = f"/v1/webhooks/{created['id']}", team.admin_headers
    queued = await api.post(f"{path}/test", headers=h)
    assert queued.status_code == 202
    assert queued.json()["event_type"] == "webhook.test"
    assert queued.json()["state"] == "pending"

    receiver.respond(Reply(500, b"not now"))
    sender = WebhookSender(
        db,
        clock,
        CredentialCipher(KEY),
        config=SenderConfig(allow_private=True, timeout_seconds=2),
    )
    assert await sender.run_once() == 1
    assert receiver.requests[0].headers["webhook-id"] == queued.json()["event_id"]

    listed = await api.get(f"{path}/deliveries", headers=h)
    [delivery] = listed.json()["items"]
    assert delivery["state"] == "pending"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 500
    [attempt] = delivery["attempt_log"]
    assert attempt["status_code"] == 500
    assert attempt["response_excerpt"] == "not now"
    assert (await api.get(f"{path}/deliveries?state=succeeded", headers=h)).json()["items"] == []
    bad_state = await api.get(f"{path}/deliveries?state=lost", headers=h)
    assert bad_state.status_code == 422

    retried = await api.post(f"{path}/deliveries/{delivery['id']}/retry", headers=h)
    assert retried.status_code == 202
    assert retried.json()["next_attempt_at"] == clock.now().isoformat().replace("+00:00", "Z")
    assert await sender.run_once() == 1
    detail = (await api.get(f"{path}/deliveries/{delivery['id']}", headers=h)).json()
    assert detail["state"] == "succeeded"
    assert detail["next_attempt_at"] is None
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 200]

    await api.patch(path, json={"enabled": False}, headers=h)
    assert (await api.post(f"{path}/test", headers=h)).status_code == 409


async def test_delete_removes_the_endpoint_and_its_log(
    api: httpx.AsyncClient, team: Team, receiver: Receiver
) -> None:
    created = await create(api, team, receiver)
    path = f"/v1/webhooks/{created['id']}"
    await api.post(f"{path}/test", headers=team.admin_headers)
    assert (await api.delete(path, headers=team.admin_headers)).status_code == 204
    assert (await api.get(path, headers=team.admin_headers)).status_code == 404
    assert (await api.get(f"{path}/deliveries", headers=team.admin_headers)).status_code == 404
