"""Database plumbing: the declarative Base, engine and session factories, `transaction()`.

Services never commit; the caller owns the unit of work. A request or a job opens one
`transaction(sessionmaker)`, which commits on success and rolls back on any exception.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SessionMaker = async_sessionmaker[AsyncSession]

# A pooled connection that was back in the pool for less than this is handed out without a
# ping: it just worked. (`pool_pre_ping` pings on every checkout, and with asyncpg a ping is
# three round trips, BEGIN, a query and ROLLBACK: more than a small request's own queries.)
# One idle for longer, which a server restart or a firewall may have cut meanwhile, is
# pinged, and the pool is renewed when it is dead. The price: after a restart, a request
# on a connection used within this last second fails once (and that invalidates the pool).
PING_AFTER_IDLE_SECONDS = 1.0
_IDLE_SINCE = "inbox_idle_since"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()


def plain_dsn(url: str) -> str:
    """The SQLAlchemy URL as a DSN asyncpg itself accepts (for raw connections)."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def create_engine(
    url: str, *, pool_size: int = 10, statement_timeout_ms: int | None = None
) -> AsyncEngine:
    # Every timestamp is UTC; the session time zone keeps date_trunc & co honest.
    server_settings = {"timezone": "UTC", "application_name": "inbox-service"}
    if statement_timeout_ms:
        # A runaway query must not hold a pooled connection long after its client left.
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # Last in, first out: at a modest rate the same few connections serve every
        # request (never idle, never pinged) and the others stay idle.
        pool_use_lifo=True,
        connect_args={"server_settings": server_settings},
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """`pool_pre_ping` for connections idle more than PING_AFTER_IDLE_SECONDS only."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)  # None: a new connection
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # As pool_pre_ping: the pool replaces this one and renews the older ones.
                raise exc.InvalidatePoolError() from error
            raise


def create_sessionmaker(bind: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(bind, expire_on_commit=False, autoflush=True)


@asynccontextmanager
async def transaction(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the block succeeds, roll back when it raises."""
    async with sessionmaker() as session, session.begin():
        yield session


async def end_before_network_io(session: AsyncSession) -> None:
    """Commit what the request did so far, before it waits on a remote server.

    A transaction held open across network I/O would hold back the event feed (and
    vacuum) for as long as the remote server takes. Nothing may be written afterwards:
    the request's `transaction()` has nothing left to commit.
    """
    await session.commit()
