"""Prometheus metrics of the API process (text format at `/metrics`)."""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "inbox_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "inbox_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# The work the worker processes do, read from the database at scrape time: any API process
# answers for the whole deployment, and nothing is lost when a worker restarts.
MESSAGES_INGESTED = Gauge(
    "inbox_messages_ingested", "Customer (inbound) messages stored, per inbox.", ["inbox_id"]
)
SYNC_LAG = Gauge(
    "inbox_sync_lag_seconds", "Time since the inbox last synced successfully.", ["inbox_id"]
)
SYNC_FAILURES = Gauge(
    "inbox_sync_consecutive_failures", "Failed sync attempts since the last success.", ["inbox_id"]
)
WEBHOOK_DELIVERIES = Gauge(
    "inbox_webhook_deliveries", "Webhook deliveries by state (outcome).", ["state"]
)
OUTBOX_DEPTH = Gauge("inbox_outbox_depth", "Replies waiting to be sent, by status.", ["status"])

_DB_GAUGES: tuple[tuple[Gauge, str], ...] = (
    (
        MESSAGES_INGESTED,
        "SELECT inbox_id, count(*) FROM messages WHERE direction = 'inbound' GROUP BY 1",
    ),
    (
        SYNC_LAG,
        "SELECT s.inbox_id, extract(epoch FROM CAST(:now AS timestamptz) - s.last_success_at) "
        "FROM inbox_sync_states s JOIN inboxes i ON i.id = s.inbox_id "
        "WHERE i.imap_enabled AND s.last_success_at IS NOT NULL",
    ),
    (SYNC_FAILURES, "SELECT inbox_id, consecutive_failures FROM inbox_sync_states"),
    (WEBHOOK_DELIVERIES, "SELECT state, count(*) FROM webhook_deliveries GROUP BY 1"),
    (
        OUTBOX_DEPTH,
        "SELECT status, count(*) FROM replies "
        "WHERE status IN ('scheduled', 'queued', 'sending', 'unknown') GROUP BY 1",
    ),
)


async def collect_database_gauges(session: AsyncSession, now: datetime) -> None:
    """Refresh the gauges above (labels that disappeared are dropped)."""
    for gauge, sql in _DB_GAUGES:
        rows = (await session.execute(text(sql), {"now": now} if ":now" in sql else {})).all()
        gauge.clear()
        for label, value in rows:
            gauge.labels(str(label)).set(float(value or 0))


def _route_of(scope: Scope) -> str:
    # Label by route template, not raw path, so ids don't explode the label space. The
    # router leaves the route it chose in the scope (matching again would cost as much as
    # routing; and the app's routes are included routers now, which have no path).
    route = scope.get("route")
    if route is None or route.matches(scope)[0] != Match.FULL:
        return "unmatched"
    return str(getattr(route, "path", "unmatched"))


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = _route_of(scope)
            REQUESTS.labels(scope["method"], route, str(status)).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
