"""Migrations on real PostgreSQL: head → base → head on an empty database, and the
models agree with what the migrations build (autogenerate finds nothing to do)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from inbox_service.core.db import create_engine
from inbox_service.core.migrations import downgrade, head_revision, upgrade
from inbox_service.models import Base
from tests.conftest import CommittedDb
from tests.support.postgres import TestCluster

TABLES = {table.name for table in Base.metadata.sorted_tables}


@pytest.fixture
async def empty_db(pg_template: TestCluster) -> AsyncIterator[str]:
    """The URL of a brand-new database with no schema at all."""
    name = await pg_template.create_database(empty=True)
    try:
        yield pg_template.url(name)
    finally:
        await pg_template.drop_database(name)


async def tables_and_version(url: str) -> tuple[set[str], list[str]]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            tables = set(
                await conn.scalars(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            )
            versions: list[str] = []
            if "alembic_version" in tables:
                versions = list(await conn.scalars(text("SELECT version_num FROM alembic_version")))
            return tables, versions
    finally:
        await engine.dispose()


class TestMigrations:
    async def test_upgrade_downgrade_upgrade_on_an_empty_database(self, empty_db: str) -> None:
        assert await tables_and_version(empty_db) == (set(), [])

        await asyncio.to_thread(upgrade, empty_db)
        tables, versions = await tables_and_version(empty_db)
        assert tables == TABLES | {"alembic_version"}
        assert versions == [head_revision()]

        await asyncio.to_thread(downgrade, empty_db)
        assert await tables_and_version(empty_db) == ({"alembic_version"}, [])

        await asyncio.to_thread(upgrade, empty_db)
        tables, versions = await tables_and_version(empty_db)
        assert tables == TABLES | {"alembic_version"}
        assert versions == [head_revision()]

    async def test_upgrade_at_head_is_a_no_op(self, empty_db: str) -> None:
        await asyncio.to_thread(upgrade, empty_db)
        await asyncio.to_thread(upgrade, empty_db)
        _, versions = await tables_and_version(empty_db)
        assert versions == [head_revision()]

    async def test_downgrade_leaves_no_types_or_sequences_behind(self, empty_db: str) -> None:
        await asyncio.to_thread(upgrade, empty_db)
        await asyncio.to_thread(downgrade, empty_db)
        engine = create_engine(empty_db, pool_size=1)
        try:
            async with engine.connect() as conn:
                leftovers = list(
                    await conn.scalars(
                        text(
                            "SELECT c.relname FROM pg_class c"
                            " JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%'"
                        )
                    )
                )
                types = list(
                    await conn.scalars(
                        text(
                            "SELECT t.typname FROM pg_type t"
                            " JOIN pg_namespace n ON n.oid = t.typnamespace"
                            " WHERE n.nspname = 'public' AND t.typtype = 'e'"
                        )
                    )
                )
        finally:
            await engine.dispose()
        assert leftovers == []
        assert types == []

    async def test_models_match_the_migrations(self, committed_db: CommittedDb) -> None:
        def diff(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))

        async with committed_db.engine.connect() as conn:
            differences = await conn.run_sync(diff)
        assert differences == []
