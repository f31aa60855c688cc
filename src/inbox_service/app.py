"""`create_app(settings)`: the FastAPI application with its middlewares and routers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from inbox_service import __version__
from inbox_service.alerts.router import router as alerts_router
from inbox_service.contacts.router import router as contacts_router
from inbox_service.conversations.actions_router import router as actions_router
from inbox_service.conversations.messages_router import router as messages_router
from inbox_service.conversations.router import router as conversations_router
from inbox_service.core.bodylimit import BodyLimitMiddleware
from inbox_service.core.clock import Clock, SystemClock
from inbox_service.core.config import Settings, get_settings
from inbox_service.core.cors import ApiCorsMiddleware
from inbox_service.core.db import SessionMaker, create_engine, create_sessionmaker, plain_dsn
from inbox_service.core.errors import PROBLEM_JSON, install_handlers
from inbox_service.core.idempotency import IdempotencyMiddleware
from inbox_service.core.logredact import install_log_redaction
from inbox_service.core.metrics import MetricsMiddleware
from inbox_service.core.nosniff import NoSniffMiddleware
from inbox_service.core.openapi import operation_id, polish
from inbox_service.core.ratelimit import RateLimitMiddleware
from inbox_service.csat import links as csat_links
from inbox_service.csat.router import router as csat_router
from inbox_service.events.hub import StreamHub, live_events_lifespan
from inbox_service.events.router import router as events_router
from inbox_service.inboxes.router import router as inboxes_router
from inbox_service.ingest.router import router as ingest_router
from inbox_service.ops.router import router as ops_router
from inbox_service.presence.router import router as presence_router
from inbox_service.replies.router import router as replies_router
from inbox_service.reports.router import router as reports_router
from inbox_service.rules.router import router as rules_router
from inbox_service.sessions.router import router as sessions_router
from inbox_service.sla.router import router as sla_router
from inbox_service.templates.router import router as templates_router
from inbox_service.users.auth import CachedAuthenticator, authenticate
from inbox_service.users.router import router as users_router
from inbox_service.webhooks.router import router as webhooks_router

DESCRIPTION = """\
An open, API-first shared-inbox backend. Authenticate with `Authorization: Bearer <api key>`.
Errors are RFC 9457 `application/problem+json`; lists are cursor-paginated; POSTs accept
`Idempotency-Key`; editable objects carry `version`/`ETag` and accept `If-Match`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    sessionmaker: SessionMaker | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The API. Tests pass their own sessionmaker (bound to a test transaction) and clock."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if sessionmaker is not None:
            yield
            return
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            statement_timeout_ms=settings.api_statement_timeout_ms,
        )
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_sessionmaker = create_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        _settle_heap()
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="inbox-service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=live_events_lifespan(lifespan),
        generate_unique_id_function=operation_id,
        license_info={"name": "GPL-3.0-or-later", "identifier": "GPL-3.0-or-later"},
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    csat_links.configure(settings, app.state.clock)  # what `{{ csat.url }}` signs with
    app.state.authenticate = (
        CachedAuthenticator(timedelta(seconds=settings.auth_cache_seconds))
        if settings.auth_cache_seconds > 0
        else authenticate
    )
    app.state.stream_hub = StreamHub(plain_dsn(settings.database_url))
    if sessionmaker is not None:
        app.state.sessionmaker = app.state.read_sessionmaker = sessionmaker

    install_handlers(app)
    install_log_redaction()
    for router in (
        ops_router,
        users_router,
        inboxes_router,
        ingest_router,
        conversations_router,
        messages_router,
        actions_router,
        contacts_router,
        events_router,
        webhooks_router,
        replies_router,
        templates_router,
        presence_router,
        rules_router,
        sla_router,
        alerts_router,
        sessions_router,
        reports_router,
        csat_router,
    ):
        app.include_router(router)

    # Outermost first: metrics see everything; the body is bounded before anyone reads it;
    # rate limits apply before idempotency replays, so a replay also counts.
    app.add_middleware(
        IdempotencyMiddleware,
        sessionmaker=lambda: app.state.sessionmaker,
        clock=lambda: app.state.clock,
    )
    app.add_middleware(
        RateLimitMiddleware,
        limit=settings.rate_limit_per_minute,
        sessionmaker=lambda: app.state.sessionmaker,
        clock=lambda: app.state.clock,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(NoSniffMiddleware)  # outside the body limit: 413s carry it too
    if settings.cors_allow_origins:  # outermost: 429s and 413s carry CORS headers too
        app.add_middleware(ApiCorsMiddleware, origins=settings.cors_allow_origins)
    app.openapi = _with_problem_only_errors(app)  # type: ignore[method-assign]
    return app


def _settle_heap() -> None:
    """Collect garbage less often in a serving process: a list request allocates thousands
    of short-lived objects, and at CPython's default (a young collection every 700) they were
    collected several times per request and promoted, with the long-lived modules and app
    traversed again and again: 8-10 % of the API's CPU. Frozen, the start-up heap is never
    traversed; a young generation of 10,000 lets request garbage die by reference count."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000)


def _with_problem_only_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Error responses are documented as `application/problem+json` only (what we send)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {})
                        if PROBLEM_JSON in content:
                            content.pop("application/json", None)
            app.openapi_schema = polish(schema)
        return app.openapi_schema

    return openapi
