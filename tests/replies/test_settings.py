"""Inbox SMTP, undo and auto-ack settings through the inboxes API."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.models import Inbox
from tests.conftest import Team

KEY = generate_key()
SMTP = {
    "host": "smtp.example.com",
    "port": 587,
    "security": "starttls",
    "username": "support@example.com",
    "secret": "app-password",
    "sent_folder": "Sent",
}


@pytest.fixture
def app(settings: Settings, db: SessionMaker, clock: FixedClock) -> FastAPI:
    keyed = settings.model_copy(update={"inbox_secret_key": SecretStr(KEY)})
    return create_app(keyed, sessionmaker=db, clock=clock)


async def test_smtp_secret_is_encrypted_and_write_only(
    client: httpx.AsyncClient, team: Team, db: SessionMaker
) -> None:
    url = f"/v1/inboxes/{team.inbox_a}"
    response = await client.patch(
        url, json={"smtp": SMTP, "undo_send_seconds": 10}, headers=team.admin_headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["smtp"] == {
        "host": "smtp.example.com",
        "port": 587,
        "security": "starttls",
        "username": "support@example.com",
        "has_secret": True,
        "sent_folder": "Sent",
        "provider_files_sent": False,
    }
    assert body["undo_send_seconds"] == 10
    assert "app-password" not in response.text
    async with transaction(db) as session:
        stored = await session.scalar(
            select(Inbox.smtp_secret_encrypted).where(Inbox.id == team.inbox_a)
        )
    assert stored is not None
    assert "app-password" not in stored
    assert CredentialCipher(KEY).decrypt(stored) == "app-password"


async def test_stored_secret_is_never_reused_for_another_server(
    client: httpx.AsyncClient, team: Team
) -> None:
    url = f"/v1/inboxes/{team.inbox_a}"
    await client.patch(url, json={"smtp": SMTP}, headers=team.admin_headers)
    same = {k: v for k, v in SMTP.items() if k != "secret"} | {"sent_folder": None}
    kept = await client.patch(url, json={"smtp": same}, headers=team.admin_headers)
    assert kept.status_code == 200
    assert kept.json()["smtp"]["has_secret"] is True
    moved = await client.patch(
        url, json={"smtp": same | {"host": "attacker.example"}}, headers=team.admin_headers
    )
    assert moved.status_code == 422
    assert moved.json()["errors"][0]["loc"] == ["body", "smtp", "secret"]
    removed = await client.patch(url, json={"smtp": None}, headers=team.admin_headers)
    assert removed.json()["smtp"] is None


@pytest.mark.parametrize(
    "patch",
    [
        {"smtp": {"host": "smtp.example.com\r\nX: y"}},
        {"smtp": {"host": "smtp.example.com", "security": "tls"}},
        {"smtp": {"host": "smtp.example.com", "port": 70000}},
        {"undo_send_seconds": -1},
        {"undo_send_seconds": None},
        {"auto_ack": {"enabled": True}},
        {"auto_ack": {"enabled": True, "template_id": "tpl_x", "window_seconds": 1}},
    ],
)
async def test_bad_settings_are_422(
    client: httpx.AsyncClient, team: Team, patch: dict[str, object]
) -> None:
    response = await client.patch(
        f"/v1/inboxes/{team.inbox_a}", json=patch, headers=team.admin_headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_agents_cannot_change_smtp_settings(client: httpx.AsyncClient, team: Team) -> None:
    response = await client.patch(
        f"/v1/inboxes/{team.inbox_a}", json={"smtp": SMTP}, headers=team.agent_headers
    )
    assert response.status_code == 403
