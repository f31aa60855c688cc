"""A throwaway PostgreSQL cluster for the test session, with a migrated template database.

Every test database is cloned from the template (`CREATE DATABASE … TEMPLATE …`), so the
migrations run once per session and a fresh database costs tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from inbox_service.core.db import plain_dsn
from inbox_service.core.migrations import upgrade
from inbox_service.embedded_pg import EmbeddedPostgres

TEMPLATE = "inbox_template"


class TestCluster:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, root: Path) -> None:
        self.server = EmbeddedPostgres(root / "pgdata", fast=True)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def url(self, database: str) -> str:
        return self.server.url(database)

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(plain_dsn(self.server.url("postgres")))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_template(self) -> None:
        await self._admin(f"CREATE DATABASE {TEMPLATE}")
        await asyncio.to_thread(upgrade, self.url(TEMPLATE))

    async def create_database(self, *, empty: bool = False) -> str:
        """A new database: a clone of the migrated template, or empty."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        template = "template0" if empty else TEMPLATE
        await self._admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
