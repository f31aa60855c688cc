"""Credentials never reach a log line.

A real uvicorn (access log on, every logger at DEBUG) serves a run of requests that carry
API keys and session tokens every way a client sends them: the Authorization header, the
event stream's `?access_token=`, a stray `?api_key=` query, keys that are wrong, revoked or
just created. Every record any logger emitted is then searched for each secret."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from inbox_service.app import create_app
from inbox_service.core.auth import new_api_key
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import transaction
from tests.conftest import CommittedDb
from tests.support.factories import bearer, make_inbox, make_key, make_user
from tests.test_cli_dev import _free_port

WAIT = 10.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def secret_parts(token: str) -> list[str]:
    """The token, and its secret part alone (`isk_<public id>_<secret>`, `ist_…` alike)."""
    secret = token.rsplit("_", 1)[-1]
    assert len(secret) >= 32, token
    return [token, secret]


async def test_no_credential_appears_in_any_log_record(
    committed_db: CommittedDb, caplog: pytest.LogCaptureFixture
) -> None:
    async with transaction(committed_db.sessionmaker) as session:
        admin = await make_user(session, role="admin")
        await make_inbox(session, members=(admin,))
        key = await make_key(session, admin)
        doomed = await make_key(session, admin)
    settings = Settings(
        database_url=committed_db.url, rate_limit_per_minute=0, sse_poll_seconds=0.2
    )
    app = create_app(settings, sessionmaker=committed_db.sessionmaker, clock=FixedClock())
    port = _free_port()
    server = _Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,  # records propagate to the root logger, where caplog listens
            log_level="debug",
            access_log=True,
            ws="none",
            timeout_graceful_shutdown=1,
        )
    )
    secrets: list[str] = [*secret_parts(key), *secret_parts(doomed)]
    wrong = new_api_key().token  # well formed, unknown
    secrets += secret_parts(wrong)
    with caplog.at_level(logging.DEBUG):
        task = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(WAIT):
                while not server.started:
                    assert not task.done(), "the server did not start"
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/v1/me", headers=bearer(key))).status_code == 200
                assert (await http.get("/v1/me", headers=bearer(wrong))).status_code == 401
                assert (await http.get("/v1/me", params={"api_key": key})).status_code == 401
                made = await http.post("/v1/session-tokens", json={}, headers=bearer(key))
                assert made.status_code == 201, made.text
                session_token = made.json()["token"]
                secrets += secret_parts(session_token)
                assert (await http.get("/v1/me", headers=bearer(session_token))).status_code == 200
                async with http.stream(
                    "GET", "/v1/events/stream", params={"access_token": session_token}
                ) as stream:
                    assert stream.status_code == 200
                created = await http.post("/v1/api-keys", json={}, headers=bearer(key))
                assert created.status_code == 201, created.text
                secrets += secret_parts(created.json()["secret"])
                key_id = (await http.get("/v1/api-keys", headers=bearer(doomed))).json()
                for item in key_id["items"]:
                    if doomed.startswith(item["prefix"]):
                        gone = await http.delete(
                            f"/v1/api-keys/{item['id']}", headers=bearer(doomed)
                        )
                        assert gone.status_code == 204
                assert (await http.get("/v1/me", headers=bearer(doomed))).status_code == 401
                revoked = await http.delete("/v1/session-tokens", headers=bearer(session_token))
                assert revoked.status_code == 204
                again = await http.get("/v1/events/stream", params={"access_token": session_token})
                assert again.status_code == 401
                bad_header = {"Authorization": f"Basic {key}"}
                assert (await http.get("/v1/me", headers=bad_header)).status_code == 401
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, WAIT)
    logged = caplog.text + "\n".join(
        f"{record.msg!r} {record.args!r} {record.exc_text or ''}" for record in caplog.records
    )
    # Guards the guard: the access log did record these requests (with the query redacted).
    assert '"GET /v1/me HTTP/1.1" 200' in logged
    assert "/v1/events/stream?access_token=[redacted]" in logged
    for secret in secrets:
        assert secret not in logged, secret[:8]
