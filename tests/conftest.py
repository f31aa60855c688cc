"""Test harness: a real PostgreSQL for the session, and two isolation modes.

* `db`: one outer transaction per test, rolled back at the end. The app gets a
  sessionmaker bound to that connection with `join_transaction_mode="create_savepoint"`,
  so each request still commits its own (savepoint) unit of work, as in production.
* `committed_db`: a fresh database cloned from the migrated template, for anything that
  needs several connections or real commits (two workers, the late-commit event feed).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, create_engine, create_sessionmaker, transaction
from tests.support.factories import bearer, make_inbox, make_key, make_user
from tests.support.postgres import TestCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TestCluster]:
    with tempfile.TemporaryDirectory(prefix="inbox-tests-") as root:
        cluster = TestCluster(Path(root))
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
async def pg_template(pg_cluster: TestCluster) -> TestCluster:
    await pg_cluster.create_template()
    return pg_cluster


@pytest.fixture(scope="session")
async def shared_engine(pg_template: TestCluster) -> AsyncIterator[AsyncEngine]:
    name = await pg_template.create_database()
    engine = create_engine(pg_template.url(name), pool_size=2)
    yield engine
    await engine.dispose()
    await pg_template.drop_database(name)


@pytest.fixture
async def db(shared_engine: AsyncEngine) -> AsyncIterator[SessionMaker]:
    """A sessionmaker whose work is rolled back when the test ends."""
    async with shared_engine.connect() as connection:
        outer = await connection.begin()
        yield async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
        )
        await outer.rollback()


@dataclass
class CommittedDb:
    url: str
    engine: AsyncEngine
    sessionmaker: SessionMaker


@pytest.fixture
async def committed_db(pg_template: TestCluster) -> AsyncIterator[CommittedDb]:
    """A database of its own, for tests that need real commits and several connections."""
    name = await pg_template.create_database()
    url = pg_template.url(name)
    engine = create_engine(url, pool_size=5)
    yield CommittedDb(url=url, engine=engine, sessionmaker=create_sessionmaker(engine))
    await engine.dispose()
    await pg_template.drop_database(name)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def settings() -> Settings:
    return Settings(
        database_url="postgresql+asyncpg://unused/unused",
        rate_limit_per_minute=0,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def app(settings: Settings, db: SessionMaker, clock: FixedClock) -> FastAPI:
    return create_app(settings, sessionmaker=db, clock=clock)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def session(db: SessionMaker) -> AsyncIterator[AsyncSession]:
    """A session for arranging data; each `transaction` in the app sees what it flushed."""
    async with transaction(db) as s:
        yield s


@dataclass
class Team:
    """An admin, an agent in inbox A, an outsider agent in inbox B, each with a key."""

    admin_headers: dict[str, str]
    agent_headers: dict[str, str]
    outsider_headers: dict[str, str]
    admin_id: str
    agent_id: str
    outsider_id: str
    inbox_a: str
    inbox_b: str


@pytest.fixture
async def team(db: SessionMaker) -> Team:
    async with transaction(db) as s:
        admin = await make_user(s, role="admin")
        agent = await make_user(s)
        outsider = await make_user(s)
        inbox_a = await make_inbox(s, members=(agent,))
        inbox_b = await make_inbox(s, members=(outsider,))
        return Team(
            admin_headers=bearer(await make_key(s, admin)),
            agent_headers=bearer(await make_key(s, agent)),
            outsider_headers=bearer(await make_key(s, outsider)),
            admin_id=admin.id,
            agent_id=agent.id,
            outsider_id=outsider.id,
            inbox_a=inbox_a.id,
            inbox_b=inbox_b.id,
        )
