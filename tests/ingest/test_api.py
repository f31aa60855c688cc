"""The ingest side of the inbox API: IMAP settings, connection tests, sync, status, quarantine.

Connection tests talk to the session's real Dovecot on 127.0.0.1; the one DNS failure uses a
stubbed resolver so no query leaves the machine. The `db` fixture never commits, so these
tests read the tables directly where the API does not show something.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.imap import ImapSession
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.ingest.sync import FolderSync
from tests.conftest import Team
from tests.ingest.conftest import Mailbox
from tests.support.dovecot import free_port
from tests.support.faultproxy import FaultProxy

PROBLEM_JSON = "application/problem+json"
SECRET_KEY = generate_key()
TIMEOUT = 1.0  # the server's IMAP timeout in this module (test-connection caps it at 15 s)
UNRESOLVABLE = "imap.no-such-host.invalid"


@pytest.fixture
def settings() -> Settings:
    """The app's settings, with an INBOX_SECRET_KEY so IMAP secrets can be stored."""
    return Settings(
        database_url="postgresql+asyncpg://unused/unused",
        rate_limit_per_minute=0,
        max_body_bytes=64 * 1024,
        inbox_secret_key=SecretStr(SECRET_KEY),
        imap_timeout_seconds=TIMEOUT,
    )


def mail(n: int, *, subject: str = "Where is my parcel?") -> bytes:
    return (
        f"From: Ana <ana@customer.test>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <api{n}@customer.test>\r\n"
        f"\r\nMessage {n}.\r\n"
    ).encode()


def imap_of(mailbox: Mailbox, **overrides: Any) -> dict[str, Any]:
    """An `imap` body for `mailbox` on the test Dovecot (plain text on 127.0.0.1)."""
    body: dict[str, Any] = {
        "host": mailbox.server.host,
        "port": mailbox.server.port,
        "security": "none",
        "username": mailbox.user,
        "secret": mailbox.password,
        "folders": ["INBOX"],
        "poll_interval_seconds": 60,
    }
    return body | overrides


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def error_locs(problem: dict[str, Any]) -> list[list[str | int]]:
    return [error["loc"] for error in problem.get("errors") or []]


async def create_inbox(
    client: httpx.AsyncClient, team: Team, imap: dict[str, Any] | None
) -> dict[str, Any]:
    body = {"name": "Support", "address": "support@example.com", "imap": imap}
    response = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def get_inbox(client: httpx.AsyncClient, team: Team, inbox_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/inboxes/{inbox_id}", headers=team.admin_headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored_secret(db: SessionMaker, inbox_id: str) -> str | None:
    async with transaction(db) as session:
        inbox = await session.get_one(Inbox, inbox_id)
        return inbox.imap_secret_encrypted


async def events_of(db: SessionMaker, inbox_id: str) -> list[Event]:
    async with transaction(db) as session:
        rows = await session.scalars(
            select(Event).where(Event.inbox_id == inbox_id).order_by(Event.id)
        )
        return list(rows)


async def try_connection(
    client: httpx.AsyncClient,
    inbox_id: str,
    headers: dict[str, str],
    imap: dict[str, Any] | None = None,
) -> httpx.Response:
    async with asyncio.timeout(10):
        if imap is None:
            return await client.post(f"/v1/inboxes/{inbox_id}/test-connection", headers=headers)
        return await client.post(
            f"/v1/inboxes/{inbox_id}/test-connection", json={"imap": imap}, headers=headers
        )


class TestCreateInboxWithImap:
    async def test_settings_are_shown_without_the_secret(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox, poll_interval_seconds=30))

        fetched = await client.get(f"/v1/inboxes/{created['id']}", headers=team.admin_headers)
        listed = await client.get("/v1/inboxes", headers=team.admin_headers)
        assert fetched.json()["imap"] == {
            "host": mailbox.server.host,
            "port": mailbox.server.port,
            "security": "none",
            "username": mailbox.user,
            "auth": "password",
            "has_secret": True,
            "folders": ["INBOX"],
            "poll_interval_seconds": 30,
            "enabled": True,
        }
        ciphertext = await stored_secret(db, created["id"])
        assert ciphertext is not None
        for text in (fetched.text, listed.text, str(created)):
            assert mailbox.password not in text
            assert ciphertext not in text
        for event in await events_of(db, created["id"]):
            assert mailbox.password not in str(event.data)

    async def test_the_secret_is_stored_encrypted(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))

        ciphertext = await stored_secret(db, created["id"])
        assert ciphertext is not None
        assert mailbox.password not in ciphertext
        assert CredentialCipher(SECRET_KEY).decrypt(ciphertext) == mailbox.password

    @pytest.mark.parametrize(
        ("overrides", "loc"),
        [
            pytest.param({"security": "tls"}, ["body", "imap", "security"], id="security-tls"),
            pytest.param({"port": 0}, ["body", "imap", "port"], id="port-0"),
            pytest.param(
                {"poll_interval_seconds": 5}, ["body", "imap", "poll_interval_seconds"], id="poll-5"
            ),
            pytest.param(
                {"folders": ["INBOX", "INBOX"]}, ["body", "imap", "folders"], id="repeated-folder"
            ),
            pytest.param(
                {"folders": ["INBOX", "Sup\r\nport"]},
                ["body", "imap", "folders", 1],
                id="crlf-folder",
            ),
            pytest.param({"hots": "x"}, ["body", "imap", "hots"], id="unknown-field"),
        ],
    )
    async def test_bad_values_are_422_naming_the_field(
        self,
        client: httpx.AsyncClient,
        team: Team,
        mailbox: Mailbox,
        overrides: dict[str, Any],
        loc: list[str | int],
    ) -> None:
        body = {
            "name": "Support",
            "address": "s@example.com",
            "imap": imap_of(mailbox, **overrides),
        }

        response = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)

        problem = assert_problem(response, 422)
        assert loc in error_locs(problem)
        listed = await client.get("/v1/inboxes", headers=team.admin_headers)
        assert len(listed.json()["items"]) == 2  # the team's two: nothing was created

    async def test_an_agent_cannot_create_one(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        body = {"name": "Support", "address": "s@example.com", "imap": imap_of(mailbox)}

        response = await client.post("/v1/inboxes", json=body, headers=team.agent_headers)

        assert_problem(response, 403)


class TestImapWithoutSecretKey:
    @pytest.fixture
    def settings(self) -> Settings:
        """A server without INBOX_SECRET_KEY."""
        return Settings(
            database_url="postgresql+asyncpg://unused/unused",
            rate_limit_per_minute=0,
            max_body_bytes=64 * 1024,
        )

    async def test_a_secret_is_422_saying_why(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        body = {"name": "Support", "address": "s@example.com", "imap": imap_of(mailbox)}

        created = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)
        patched = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"imap": imap_of(mailbox)},
            headers=team.admin_headers,
        )

        for response in (created, patched):
            problem = assert_problem(response, 422)
            assert "INBOX_SECRET_KEY" in problem["detail"]
            assert ["body", "imap", "secret"] in error_locs(problem)
        inbox = await get_inbox(client, team, team.inbox_a)
        assert (inbox["imap"], inbox["version"]) == (None, 1)


class TestUpdateInboxImap:
    async def test_without_secret_the_stored_one_is_kept(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        before = await stored_secret(db, created["id"])
        imap = imap_of(mailbox, poll_interval_seconds=120)
        del imap["secret"]

        response = await client.patch(
            f"/v1/inboxes/{created['id']}", json={"imap": imap}, headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        assert response.json()["imap"]["poll_interval_seconds"] == 120
        assert response.json()["imap"]["has_secret"] is True
        assert response.json()["version"] == created["version"] + 1
        assert await stored_secret(db, created["id"]) == before
        check = await try_connection(client, created["id"], team.admin_headers)
        assert check.json()["ok"] is True, check.text

    async def test_a_new_username_needs_a_secret(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        before = await stored_secret(db, created["id"])
        imap = imap_of(mailbox, username="someone-else")
        del imap["secret"]

        response = await client.patch(
            f"/v1/inboxes/{created['id']}", json={"imap": imap}, headers=team.admin_headers
        )

        problem = assert_problem(response, 422)
        assert ["body", "imap", "secret"] in error_locs(problem)
        inbox = await get_inbox(client, team, created["id"])
        assert inbox["imap"]["username"] == mailbox.user
        assert inbox["version"] == created["version"]
        assert await stored_secret(db, created["id"]) == before

    async def test_a_new_username_with_a_secret_replaces_both(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))

        response = await client.patch(
            f"/v1/inboxes/{created['id']}",
            json={"imap": imap_of(mailbox, username="other", secret="n3w-s3cret")},
            headers=team.admin_headers,
        )

        assert response.status_code == 200, response.text
        assert response.json()["imap"]["username"] == "other"
        assert "n3w-s3cret" not in response.text
        ciphertext = await stored_secret(db, created["id"])
        assert ciphertext is not None
        assert CredentialCipher(SECRET_KEY).decrypt(ciphertext) == "n3w-s3cret"

    async def test_null_removes_the_settings(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))

        response = await client.patch(
            f"/v1/inboxes/{created['id']}", json={"imap": None}, headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        assert response.json()["imap"] is None
        assert (await get_inbox(client, team, created["id"]))["imap"] is None
        assert await stored_secret(db, created["id"]) is None
        status = await client.get(
            f"/v1/inboxes/{created['id']}/sync-status", headers=team.admin_headers
        )
        assert status.json()["enabled"] is False

    async def test_an_agent_cannot_set_imap(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"imap": imap_of(mailbox)},
            headers=team.agent_headers,
        )

        assert_problem(response, 403)
        inbox = await get_inbox(client, team, team.inbox_a)
        assert (inbox["imap"], inbox["version"]) == (None, 1)

    async def test_bad_values_are_422_naming_the_field(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))

        response = await client.patch(
            f"/v1/inboxes/{created['id']}",
            json={"imap": imap_of(mailbox, folders=["INBOX", "INBOX"])},
            headers=team.admin_headers,
        )

        problem = assert_problem(response, 422)
        assert ["body", "imap", "folders"] in error_locs(problem)
        assert (await get_inbox(client, team, created["id"]))["version"] == created["version"]

    async def test_an_empty_patch_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        events_before = len(await events_of(db, created["id"]))

        response = await client.patch(
            f"/v1/inboxes/{created['id']}", json={}, headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        assert response.json() == created
        assert response.headers["ETag"] == f'"{created["version"]}"'
        assert len(await events_of(db, created["id"])) == events_before


class TestTestConnection:
    async def test_the_stored_settings_log_in_and_report_each_folder(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        mailbox.server.create_folder(mailbox.user, "Support")
        for n in (1, 2):
            mailbox.deliver(mail(n))
        mailbox.deliver(mail(3), folder="Support")
        created = await create_inbox(client, team, imap_of(mailbox, folders=["INBOX", "Support"]))

        response = await try_connection(client, created["id"], team.admin_headers)

        assert response.status_code == 200, response.text
        inbox_status = mailbox.server.status(mailbox.user, "INBOX")
        support_status = mailbox.server.status(mailbox.user, "Support")
        assert response.json() == {
            "ok": True,
            "reason": None,
            "message": None,
            "folders": [
                {"folder": "INBOX", "uidvalidity": inbox_status["uidvalidity"], "messages": 2},
                {"folder": "Support", "uidvalidity": support_status["uidvalidity"], "messages": 1},
            ],
        }

    async def test_a_wrong_password_is_auth(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox, secret="wrong-password"))

        response = await try_connection(client, created["id"], team.admin_headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["ok"], body["reason"], body["folders"]) == (False, "auth", [])
        assert mailbox.user in body["message"]
        assert "wrong-password" not in response.text

    async def test_a_closed_port_is_refused(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))

        response = await try_connection(
            client, created["id"], team.admin_headers, imap_of(mailbox, port=free_port())
        )

        assert (response.json()["ok"], response.json()["reason"]) == (False, "refused")

    async def test_a_missing_folder_is_folder_missing(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))

        response = await try_connection(
            client,
            created["id"],
            team.admin_headers,
            imap_of(mailbox, folders=["INBOX", "Nowhere"]),
        )

        body = response.json()
        assert (body["ok"], body["reason"]) == (False, "folder_missing")
        assert "Nowhere" in body["message"]

    async def test_a_silent_server_is_timeout_within_the_configured_limit(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        async with FaultProxy(mailbox.server.port) as proxy:
            proxy.blackhole()
            loop = asyncio.get_running_loop()
            started = loop.time()

            response = await try_connection(
                client, created["id"], team.admin_headers, imap_of(mailbox, port=proxy.port)
            )

            elapsed = loop.time() - started
            assert proxy.connections == 1
        assert (response.json()["ok"], response.json()["reason"]) == (False, "timeout")
        assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 3

    async def test_an_unknown_host_is_dns(
        self,
        client: httpx.AsyncClient,
        team: Team,
        mailbox: Mailbox,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        real_getaddrinfo = socket.getaddrinfo
        asked: list[object] = []

        def resolver(host: object, *args: Any, **kwargs: Any) -> Any:
            if host == UNRESOLVABLE:
                asked.append(host)
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            if host not in ("127.0.0.1", "localhost", None):
                raise AssertionError(f"unexpected DNS lookup of {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(socket, "getaddrinfo", resolver)

        response = await try_connection(
            client, created["id"], team.admin_headers, imap_of(mailbox, host=UNRESOLVABLE)
        )

        body = response.json()
        assert (body["ok"], body["reason"]) == (False, "dns")
        assert UNRESOLVABLE in body["message"]
        assert asked == [UNRESOLVABLE]

    async def test_given_settings_without_secret_use_the_stored_one(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        mailbox.server.create_folder(mailbox.user, "Support")
        created = await create_inbox(client, team, imap_of(mailbox))
        candidate = imap_of(mailbox, folders=["Support"])
        del candidate["secret"]

        response = await try_connection(client, created["id"], team.admin_headers, candidate)

        body = response.json()
        assert body["ok"] is True, body
        assert [f["folder"] for f in body["folders"]] == ["Support"]

    async def test_given_settings_for_another_user_without_secret_fail_auth(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        candidate = imap_of(mailbox, username="someone-else")
        del candidate["secret"]

        response = await try_connection(client, created["id"], team.admin_headers, candidate)

        assert (response.json()["ok"], response.json()["reason"]) == (False, "auth")

    async def test_nothing_is_saved(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, mailbox: Mailbox
    ) -> None:
        mailbox.server.create_folder(mailbox.user, "Support")
        mailbox.deliver(mail(1))
        created = await create_inbox(client, team, imap_of(mailbox))
        path = f"/v1/inboxes/{created['id']}"
        inbox_before = await get_inbox(client, team, created["id"])
        status_before = (await client.get(f"{path}/sync-status", headers=team.admin_headers)).json()
        events_before = len(await events_of(db, created["id"]))
        secret_before = await stored_secret(db, created["id"])

        stored = await try_connection(client, created["id"], team.admin_headers)
        candidate = imap_of(mailbox, folders=["Support"], poll_interval_seconds=99)
        given = await try_connection(client, created["id"], team.admin_headers, candidate)

        assert (stored.json()["ok"], given.json()["ok"]) == (True, True)
        assert await get_inbox(client, team, created["id"]) == inbox_before
        status_after = (await client.get(f"{path}/sync-status", headers=team.admin_headers)).json()
        assert status_after == status_before
        assert status_after["folders"] == []
        assert len(await events_of(db, created["id"])) == events_before
        assert await stored_secret(db, created["id"]) == secret_before

    async def test_an_agent_is_403(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        response = await try_connection(client, team.inbox_a, team.agent_headers, imap_of(mailbox))

        assert_problem(response, 403)

    async def test_another_inbox_is_404(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        response = await try_connection(client, team.inbox_b, team.agent_headers, imap_of(mailbox))

        assert_problem(response, 404)

    async def test_an_inbox_without_imap_and_no_body_is_409(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await try_connection(client, team.inbox_a, team.admin_headers)

        assert_problem(response, 409)


class TestRequestSync:
    async def test_is_202_and_recorded_in_the_status(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock, mailbox: Mailbox
    ) -> None:
        created = await create_inbox(client, team, imap_of(mailbox))
        path = f"/v1/inboxes/{created['id']}"
        before = await client.get(f"{path}/sync-status", headers=team.admin_headers)
        assert before.json()["requested_at"] is None

        response = await client.post(f"{path}/sync", headers=team.admin_headers)

        assert response.status_code == 202, response.text
        assert response.json()["inbox_id"] == created["id"]
        assert datetime.fromisoformat(response.json()["requested_at"]) == clock.now()
        status = await client.get(f"{path}/sync-status", headers=team.admin_headers)
        assert status.json()["requested_at"] == response.json()["requested_at"]

    async def test_an_agent_of_the_inbox_may_ask(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        configured = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"imap": imap_of(mailbox)},
            headers=team.admin_headers,
        )
        assert configured.status_code == 200, configured.text

        response = await client.post(f"/v1/inboxes/{team.inbox_a}/sync", headers=team.agent_headers)

        assert response.status_code == 202, response.text

    async def test_an_inbox_without_imap_is_409(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(f"/v1/inboxes/{team.inbox_a}/sync", headers=team.admin_headers)

        assert_problem(response, 409)
        status = await client.get(
            f"/v1/inboxes/{team.inbox_a}/sync-status", headers=team.admin_headers
        )
        assert status.json()["requested_at"] is None

    async def test_a_foreign_inbox_is_404(
        self, client: httpx.AsyncClient, team: Team, mailbox: Mailbox
    ) -> None:
        configured = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"imap": imap_of(mailbox)},
            headers=team.admin_headers,
        )
        assert configured.status_code == 200, configured.text

        response = await client.post(
            f"/v1/inboxes/{team.inbox_a}/sync", headers=team.outsider_headers
        )

        assert_problem(response, 404)
        status = await client.get(
            f"/v1/inboxes/{team.inbox_a}/sync-status", headers=team.admin_headers
        )
        assert status.json()["requested_at"] is None


class TestSyncStatus:
    async def test_shows_each_folder_after_a_sync(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        mailbox: Mailbox,
    ) -> None:
        for n in (1, 2):
            mailbox.deliver(mail(n))
        created = await create_inbox(client, team, imap_of(mailbox))
        context = InboxContext(inbox_id=created["id"], team_addresses=frozenset())
        async with asyncio.timeout(10), await ImapSession.open(mailbox.settings) as imap:
            result = await FolderSync(db, clock, context).run(imap, "INBOX")
        assert result.stored == 2

        response = await client.get(
            f"/v1/inboxes/{created['id']}/sync-status", headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        body = response.json()
        server = mailbox.server.status(mailbox.user, "INBOX")
        assert body["enabled"] is True
        assert body["last_error"] is None
        (folder,) = body["folders"]
        assert folder["folder"] == "INBOX"
        assert folder["uidvalidity"] == server["uidvalidity"]
        assert folder["last_uid"] == 2
        assert folder["uidnext"] == server["uidnext"] == 3
        assert folder["uidvalidity_changes"] == 0
        assert folder["last_success_at"] is not None

    async def test_an_agent_of_another_inbox_gets_404(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.get(
            f"/v1/inboxes/{team.inbox_a}/sync-status", headers=team.outsider_headers
        )

        assert_problem(response, 404)


JUNK = b"\x00\xff garbage \x00\r\n\r\n\x00"


class TestQuarantine:
    async def test_lists_unreadable_mail_with_its_error_and_nothing_else(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        context = InboxContext(inbox_id=team.inbox_a, team_addresses=frozenset())
        items = [
            Incoming(raw=raw, parsed=parse_message(raw, max_attachment_bytes=1024))
            for raw in (mail(1, subject="A normal question"), JUNK)
        ]
        async with transaction(db) as session:
            stored = await store_batch(session, context, items, now=clock.now())
        assert stored.stored == 2

        response = await client.get(
            f"/v1/inboxes/{team.inbox_a}/quarantine", headers=team.agent_headers
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["next_cursor"] is None
        (item,) = body["items"]
        assert item["parse_status"] == "degraded"
        assert item["parse_error"] == "no header fields"
        assert item["size"] == len(JUNK)
        assert item["id"].startswith("msg_")

    async def test_a_foreign_inbox_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get(
            f"/v1/inboxes/{team.inbox_a}/quarantine", headers=team.outsider_headers
        )

        assert_problem(response, 404)
