"""`inbox-service dev`: API + worker in one process on an embedded PostgreSQL.

Unless `DATABASE_URL` is set, a cluster is started from `<data-dir>/pgdata` on a free
port of 127.0.0.1 (state survives restarts), the `inbox` database is created, migrations
are applied, an admin key is printed, and Ctrl-C stops the API, the worker and the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import uvicorn
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.clock import SystemClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import CredentialCipher, cipher_from, generate_key
from inbox_service.core.db import create_engine, create_sessionmaker, plain_dsn, transaction
from inbox_service.core.migrations import upgrade
from inbox_service.embedded_pg import EmbeddedPostgres, PostgresNotFound
from inbox_service.inboxes.mail_settings import ImapSettingsIn, SmtpSettingsIn

if TYPE_CHECKING:
    from inbox_service.demo import DemoMail

DEV_ADMIN_EMAIL = "admin@example.com"
DEV_DATABASE = "inbox"
DEMO_ADDRESS = "support@example.com"


def _secret_key(data_dir: Path) -> str:
    """A Fernet key kept in the data dir, so stored credentials survive restarts."""
    path = data_dir / "secret.key"
    if not path.exists():
        path.write_text(generate_key())
        path.chmod(0o600)
    return path.read_text().strip()


async def _ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(plain_dsn(server_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `dev` stops the API and worker together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(settings: Settings, port: int, demo: bool) -> None:
    from inbox_service.app import create_app
    from inbox_service.core.jobs import default_worker_id
    from inbox_service.users import service as users_service
    from inbox_service.worker import Worker, all_services

    engine = create_engine(settings.database_url, pool_size=4)
    sessionmaker = create_sessionmaker(engine)
    clock = SystemClock()
    mail = None
    if demo:  # the demo IMAP server and SMTP sink (dev dependencies, checked in run_dev)
        from inbox_service.demo import start_demo_mail

        mail = await start_demo_mail(clock.now())
    async with transaction(sessionmaker) as session:
        admin, token = await users_service.bootstrap_admin(
            session, email=DEV_ADMIN_EMAIL, name="Dev Admin", now=clock.now()
        )
        if mail is not None:
            cipher = cipher_from(settings.inbox_secret_key)
            await _add_demo_data(
                session,
                admin.id,
                mail.imap_settings(),
                cipher,
                now=clock.now(),
                smtp=mail.smtp_settings(),
            )
        else:
            await _pause_demo_inbox(session)

    app = create_app(settings, clock=clock)
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level=settings.log_level.lower())
    )
    worker_id = default_worker_id()
    worker = Worker(
        sessionmaker,
        clock,
        worker_id=worker_id,
        poll_seconds=settings.worker_poll_seconds,
        services=all_services(settings, sessionmaker, clock, worker_id=worker_id),
    )

    def shut_down() -> None:
        server.should_exit = True
        # uvicorn waits for open responses: end the live event streams, or it never stops.
        app.state.stream_hub.stop_streams()
        worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shut_down)
    worker_task = asyncio.create_task(worker.run())
    serve_task = asyncio.create_task(server.serve())
    while not server.started and not serve_task.done():  # noqa: ASYNC110 (uvicorn has only a flag)
        await asyncio.sleep(0.05)
    if server.started:
        base = f"http://127.0.0.1:{port}"
        print(
            f"\ninbox-service dev is running\n  API:   {base}\n  Docs:  {base}/docs\n"
            f"  Admin: {DEV_ADMIN_EMAIL}\n  API key (admin): {token}\n"
            f"  Try:   curl -H 'Authorization: Bearer {token}' {base}/v1/me\n"
            + _demo_banner(mail, base, token)
            + "Ctrl-C stops everything.\n",
            flush=True,
        )
    try:
        await serve_task
    finally:
        worker.stop()
        await worker_task
        if mail is not None:
            await mail.aclose()
        await engine.dispose()


def _demo_banner(mail: DemoMail | None, base: str, token: str) -> str:
    if mail is None:
        return ""
    return (
        f"  IMAP:  {mail.host}:{mail.imap_port} (demo mailbox, no TLS; user {mail.username}, "
        f"password {mail.password})\n"
        f"  SMTP:  {mail.host}:{mail.smtp_port} (sink: keeps and logs what it receives)\n"
        f"  Mail:  curl -H 'Authorization: Bearer {token}' "
        f"'{base}/v1/events?types=conversation.created'\n"
    )


async def _add_demo_data(
    session: AsyncSession,
    admin_id: str,
    imap: ImapSettingsIn,
    cipher: CredentialCipher | None,
    *,
    now: datetime,
    smtp: SmtpSettingsIn | None = None,
) -> None:
    """A demo inbox with the admin and a demo agent as members (once), syncing from the
    demo IMAP server (on every start, as its port is new each time)."""
    from inbox_service.inboxes import service as inboxes_service
    from inbox_service.inboxes.models import Inbox
    from inbox_service.inboxes.schemas import InboxIn, InboxPatch
    from inbox_service.users import service as users_service
    from inbox_service.users.models import User
    from inbox_service.users.schemas import UserIn

    inbox = await session.scalar(select(Inbox).where(Inbox.address == DEMO_ADDRESS))
    if inbox is not None:
        patch = InboxPatch(imap=imap, smtp=smtp)
        await inboxes_service.update_inbox(session, inbox, patch, now=now, cipher=cipher)
        return
    inbox = await inboxes_service.create_inbox(
        session,
        InboxIn(name="Demo Support", address=DEMO_ADDRESS, imap=imap, smtp=smtp),
        now=now,
        cipher=cipher,
    )
    agent = await session.scalar(select(User).where(User.email == "agent@example.com"))
    if agent is None:
        agent = await users_service.create_user(
            session, UserIn(email="agent@example.com", name="Demo Agent"), now=now
        )
    for user_id in (admin_id, agent.id):
        await inboxes_service.add_member(session, inbox, user_id, now=now)


async def _pause_demo_inbox(session: AsyncSession) -> None:
    """Without --demo there is no demo IMAP server: don't let its inbox fail to sync."""
    from inbox_service.inboxes.models import Inbox

    inbox = await session.scalar(
        select(Inbox).where(Inbox.address == DEMO_ADDRESS, Inbox.imap_host == "127.0.0.1")
    )
    if inbox is not None:
        inbox.imap_enabled = False


def run_dev(*, port: int, demo: bool, data_dir: Path) -> int:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env_settings = Settings()
    overrides: dict[str, object] = {}
    if env_settings.inbox_secret_key is None:
        overrides["inbox_secret_key"] = SecretStr(_secret_key(data_dir))

    if demo:
        try:
            importlib.import_module("inbox_service.demo")
        except ImportError as exc:  # pymap and aiosmtpd are dev dependencies
            print(
                f"inbox-service dev --demo needs pymap and aiosmtpd ({exc}): "
                "install the dev dependencies: uv sync",
                file=sys.stderr,
            )
            return 2

    postgres: EmbeddedPostgres | None = None
    if "DATABASE_URL" not in os.environ:
        try:
            postgres = EmbeddedPostgres(data_dir / "pgdata")
            postgres.start()
        except PostgresNotFound as exc:
            print(f"inbox-service dev: {exc}", file=sys.stderr)
            return 2
        asyncio.run(_ensure_database(postgres.url(), DEV_DATABASE))
        overrides["database_url"] = postgres.url(DEV_DATABASE)
    settings = env_settings.model_copy(update=overrides)
    try:
        upgrade(settings.database_url)
        asyncio.run(_serve(settings, port, demo))
    finally:
        # A second Ctrl-C must not interrupt the cluster's shutdown half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if postgres is not None:
            postgres.stop()
    return 0
