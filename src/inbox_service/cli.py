"""The `inbox-service` command: serve | worker | migrate | openapi | create-admin | dev."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from inbox_service.core.config import Settings, get_settings

OPENAPI_PATH = Path("openapi/openapi.json")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    _configure_logging(settings)
    uvicorn.run(
        "inbox_service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        # One process serves about one core; more use more cores (the API is stateless).
        workers=args.workers,
        proxy_headers=True,
        log_level=settings.log_level.lower(),
    )
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from inbox_service.core.clock import SystemClock
    from inbox_service.core.db import create_engine, create_sessionmaker
    from inbox_service.core.jobs import default_worker_id
    from inbox_service.worker import Worker, all_services

    settings = get_settings()
    _configure_logging(settings)

    async def run() -> None:
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        sessionmaker, clock = create_sessionmaker(engine), SystemClock()
        worker_id = settings.worker_id or default_worker_id()
        worker = Worker(
            sessionmaker,
            clock,
            worker_id=worker_id,
            poll_seconds=settings.worker_poll_seconds,
            services=all_services(settings, sessionmaker, clock, worker_id=worker_id),
        )
        worker.install_signal_handlers()
        try:
            await worker.run()
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def cmd_migrate(_: argparse.Namespace) -> int:
    from inbox_service.core.migrations import upgrade

    settings = get_settings()
    _configure_logging(settings)
    upgrade(settings.database_url)
    return 0


def openapi_text() -> str:
    from inbox_service.app import create_app

    spec = create_app(Settings()).openapi()
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    current = openapi_text()
    path = Path(args.output)
    if args.check:
        committed = path.read_text() if path.exists() else ""
        if committed == current:
            return 0
        diff = difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=str(path),
            tofile="generated",
        )
        sys.stderr.writelines(diff)
        print(f"{path} is stale: run `inbox-service openapi`", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from inbox_service.core.clock import SystemClock
    from inbox_service.core.db import create_engine, create_sessionmaker, transaction
    from inbox_service.users import service as users_service

    settings = get_settings()

    async def run() -> str:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                _, token = await users_service.bootstrap_admin(
                    session, email=args.email, name=args.name, now=SystemClock().now()
                )
                return token
        finally:
            await engine.dispose()

    print(asyncio.run(run()))
    return 0


def cmd_generate_key(_: argparse.Namespace) -> int:
    from inbox_service.core.crypto import generate_key

    print(generate_key())
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from inbox_service.dev import run_dev

    return run_dev(port=args.port, demo=args.demo, data_dir=Path(args.data_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inbox-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes (e.g. one per core; default 1)"
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run background work; any number may run")
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)

    openapi = commands.add_parser("openapi", help="write openapi/openapi.json")
    openapi.add_argument("--check", action="store_true", help="fail if the file is stale")
    openapi.add_argument("--output", default=str(OPENAPI_PATH))
    openapi.set_defaults(func=cmd_openapi)

    admin = commands.add_parser("create-admin", help="create an admin; print a new API key")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="Admin")
    admin.set_defaults(func=cmd_create_admin)

    key = commands.add_parser("generate-key", help="print a new INBOX_SECRET_KEY")
    key.set_defaults(func=cmd_generate_key)

    dev = commands.add_parser("dev", help="API + worker on an embedded PostgreSQL")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--demo", action="store_true", help="add a demo inbox and agent")
    dev.add_argument("--data-dir", default=".inbox-dev", help="where dev state is kept")
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
