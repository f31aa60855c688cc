"""Liveness, readiness and metrics, for load balancers and Prometheus."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from inbox_service.core.db import SessionMaker
from inbox_service.core.errors import problem_response
from inbox_service.core.metrics import collect_database_gauges
from inbox_service.core.migrations import head_revision

log = logging.getLogger(__name__)
# Probes and scrapes take no credentials.
PUBLIC: dict[str, object] = {"security": []}

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    migration: str | None


@router.get("/healthz", response_model=Health, openapi_extra=PUBLIC)
async def get_health() -> Health:
    """The process is up (no dependencies checked)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "Not ready"}},
    openapi_extra=PUBLIC,
)
async def get_readiness(request: Request) -> Response | Readiness:
    """The database answers and its schema is at the migration head this code expects."""
    sessionmaker: SessionMaker = request.app.state.sessionmaker
    try:
        async with sessionmaker() as session:
            current = await session.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError:
        return problem_response(
            503,
            slug="not-ready",
            title="Not ready",
            detail="the database is unreachable or not migrated",
        )
    expected = head_revision()
    if current != expected:
        return problem_response(
            503,
            slug="not-ready",
            title="Not ready",
            detail=f"database at migration {current}, code expects {expected}",
        )
    return Readiness(status="ok", database="ok", migration=current)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    openapi_extra=PUBLIC,
)
async def get_metrics(request: Request) -> Response:
    """Prometheus metrics of this process, and the deployment's from the database (messages
    ingested, sync lag and failures per inbox, webhook deliveries by state, outbox depth)."""
    sessionmaker: SessionMaker = request.app.state.sessionmaker
    try:
        async with sessionmaker() as session:
            await collect_database_gauges(session, request.app.state.clock.now())
    except SQLAlchemyError:  # the process metrics still answer; the gauges keep old values
        log.warning("metrics: the database gauges could not be read", exc_info=True)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
