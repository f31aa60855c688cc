"""`GET /v1/events/stream?access_token=`: session tokens only, closed on revocation, and
no token or key in any log line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from inbox_service.core.db import transaction
from inbox_service.core.events import EventType
from tests.conftest import CommittedDb
from tests.events.test_feed import emit_committed
from tests.frontend.conftest import ROOT, WAIT, Api, StartApi
from tests.support.factories import bearer, make_key, make_user
from tests.test_cli_dev import _free_port


@asynccontextmanager
async def sse_lines(
    api: Api, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[asyncio.Queue[str | None]]:
    """The stream's lines, read in the background into a queue; None when it ends."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    async with (
        api.http() as http,
        http.stream("GET", "/v1/events/stream", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()

        async def read() -> None:
            try:
                async for line in response.aiter_lines():
                    await lines.put(line)
            finally:
                await lines.put(None)

        reader = asyncio.create_task(read())
        try:
            yield lines
        finally:
            reader.cancel()


async def next_event(lines: asyncio.Queue[str | None]) -> str:
    async with asyncio.timeout(WAIT):
        while True:
            line = await lines.get()
            assert line is not None, "the stream ended"
            if line.startswith("event: "):
                return line.removeprefix("event: ")


class TestAccessToken:
    async def test_a_session_token_in_the_url_streams_the_users_events(
        self, start_api: StartApi
    ) -> None:
        api = await start_api()
        token = await api.mint(api.agent_id)
        async with sse_lines(api, access_token=token) as lines:
            assert await lines.get() == "retry: 2000"
            await emit_committed(api.sessionmaker, EventType.NOTE_CREATED, inbox_id=api.inbox_b)
            await emit_committed(
                api.sessionmaker, EventType.CONVERSATION_TAGGED, inbox_id=api.inbox_a
            )
            # Scoped like the user: inbox B's event never arrives, inbox A's does.
            assert await next_event(lines) == "conversation.tagged"

    @pytest.mark.parametrize("with_header", [False, True], ids=["alone", "beside-a-header"])
    async def test_an_api_key_in_the_url_is_401(
        self, start_api: StartApi, with_header: bool
    ) -> None:
        api = await start_api()
        headers = bearer(api.admin_key) if with_header else {}
        async with api.http() as http:
            response = await http.get(
                "/v1/events/stream", params={"access_token": api.agent_key}, headers=headers
            )
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "session token" in response.json()["detail"]

    async def test_a_bad_token_in_the_url_is_401(self, start_api: StartApi) -> None:
        api = await start_api()
        async with api.http() as http:
            for value in ("ist_nope", "", "Bearer x"):
                response = await http.get("/v1/events/stream", params={"access_token": value})
                assert response.status_code == 401, value

    async def test_revoking_closes_the_open_stream_at_once(self, start_api: StartApi) -> None:
        # The periodic re-check is a minute away: the revocation itself must end the stream.
        api = await start_api(sse_auth_recheck_seconds=60)
        token = await api.mint(api.agent_id)
        async with sse_lines(api, access_token=token) as lines:
            assert await lines.get() == "retry: 2000"
            await asyncio.wait_for(api.app.state.stream_hub.listening.wait(), WAIT)
            async with api.http() as http:
                revoked = await http.delete(
                    "/v1/session-tokens",
                    params={"user_id": api.agent_id},
                    headers=bearer(api.admin_key),
                )
                assert revoked.status_code == 204
                started = time.monotonic()
                again = await http.get("/v1/me", headers=bearer(token))
                assert again.status_code == 401
                assert again.json()["type"].endswith("/session-token-revoked")
            async with asyncio.timeout(5):
                while (await lines.get()) is not None:
                    pass
            assert time.monotonic() - started < 5

    @pytest.mark.parametrize("credential", ["token", "key"])
    async def test_deleting_the_user_closes_its_open_streams_at_once(
        self, start_api: StartApi, credential: str
    ) -> None:
        api = await start_api(sse_auth_recheck_seconds=60)
        token = await api.mint(api.agent_id)
        params = {"access_token": token} if credential == "token" else {}
        headers = bearer(api.agent_key) if credential == "key" else {}
        async with sse_lines(api, headers=headers, **params) as lines:
            assert await lines.get() == "retry: 2000"
            await asyncio.wait_for(api.app.state.stream_hub.listening.wait(), WAIT)
            async with api.http() as http:
                deleted = await http.delete(
                    f"/v1/users/{api.agent_id}", headers=bearer(api.admin_key)
                )
                assert deleted.status_code == 204
            async with asyncio.timeout(5):
                while (await lines.get()) is not None:
                    pass

    async def test_revoking_an_api_key_closes_its_open_stream_at_once(
        self, start_api: StartApi
    ) -> None:
        api = await start_api(sse_auth_recheck_seconds=60)
        async with api.http() as http:
            created = await http.post(
                "/v1/api-keys", json={"name": "kiosk"}, headers=bearer(api.agent_key)
            )
            key = created.json()
        async with sse_lines(api, headers=bearer(key["secret"])) as lines:
            assert await lines.get() == "retry: 2000"
            await asyncio.wait_for(api.app.state.stream_hub.listening.wait(), WAIT)
            async with api.http() as http:
                revoked = await http.delete(
                    f"/v1/api-keys/{key['id']}", headers=bearer(api.agent_key)
                )
                assert revoked.status_code == 204
            async with asyncio.timeout(5):
                while (await lines.get()) is not None:
                    pass

    async def test_an_expired_token_ends_its_stream_at_the_next_recheck(
        self, start_api: StartApi
    ) -> None:
        api = await start_api(sse_auth_recheck_seconds=0.2)
        token = await api.mint(api.agent_id, ttl=60)
        async with sse_lines(api, access_token=token) as lines:
            assert await lines.get() == "retry: 2000"
            api.clock.advance(seconds=61)
            async with asyncio.timeout(5):
                while (await lines.get()) is not None:
                    pass


async def test_no_log_line_contains_a_token_or_a_key(
    committed_db: CommittedDb, tmp_path: Path
) -> None:
    """A real `inbox-service serve` (uvicorn's access log on), its output grepped."""
    async with transaction(committed_db.sessionmaker) as session:
        admin = await make_user(session, role="admin")
        key = await make_key(session, admin)
    port = _free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "DATABASE_URL": committed_db.url, "LOG_LEVEL": "DEBUG"}
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "inbox_service",
            "serve",
            "--port",
            str(port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
                async with asyncio.timeout(60):
                    while True:
                        with contextlib.suppress(httpx.TransportError):
                            if (await http.get("/readyz")).status_code == 200:
                                break
                        await asyncio.sleep(0.2)
                minted = await http.post(
                    "/v1/session-tokens", json={"user_id": admin.id}, headers=bearer(key)
                )
                token = minted.json()["token"]
                async with http.stream(
                    "GET", "/v1/events/stream", params={"access_token": token}
                ) as stream:
                    assert stream.status_code == 200
                    await anext(stream.aiter_lines())
                key_in_url = await http.get("/v1/events/stream", params={"access_token": key})
                assert key_in_url.status_code == 401
                await http.get("/v1/me", params={"access_token": token, "x": key})
                await http.get("/v1/nowhere", params={"token": token}, headers=bearer(key))
                await http.delete("/v1/session-tokens", headers=bearer(token))
                await http.get("/v1/me", headers=bearer(token))  # a revoked token's 401
        finally:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
    logged = log_path.read_text(errors="replace")
    assert "/v1/events/stream?access_token=[redacted]" in logged, logged[-2000:]
    for secret in (token, token.split("_")[-1], key, key.split("_")[-1][:64]):
        assert secret not in logged
