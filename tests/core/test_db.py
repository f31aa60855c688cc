"""The pool pings a connection only when it sat idle; a dead one is then replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from inbox_service.core import db
from inbox_service.core.db import create_engine
from tests.conftest import CommittedDb


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        pid = await connection.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(pid, int)
    return pid


async def _kill(committed_db: CommittedDb, pid: int) -> None:
    """End that server process (a restart, a firewall) and wait until it is gone."""
    async with committed_db.engine.connect() as connection:
        ended = await connection.scalar(
            text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}
        )
    assert ended


@pytest.fixture
async def engine(committed_db: CommittedDb) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(committed_db.url, pool_size=1)
    yield engine
    await engine.dispose()


class TestPingWhenIdle:
    async def test_dead_idle_connection_is_replaced(
        self, engine: AsyncEngine, committed_db: CommittedDb, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pid = await _backend_pid(engine)
        await _kill(committed_db, pid)
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has been idle "long"

        assert await _backend_pid(engine) != pid

    async def test_connection_just_used_is_not_pinged(
        self, engine: AsyncEngine, committed_db: CommittedDb
    ) -> None:
        # The price of skipping the ping: a connection cut within the last second fails
        # its next statement once; that invalidates the pool, and the next one works.
        pid = await _backend_pid(engine)
        await _kill(committed_db, pid)

        with pytest.raises(DBAPIError):
            await _backend_pid(engine)
        assert await _backend_pid(engine) != pid
