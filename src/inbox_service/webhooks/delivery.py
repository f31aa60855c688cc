"""Sending deliveries: claim with a lease, POST outside any transaction, record the result.

A claim marks due deliveries with a lease (`locked_until`) and a token, then commits; the
HTTP attempt runs with no transaction open; the result is written only where the token
still matches, so an attempt that outlived its lease cannot overwrite a newer one. A
worker killed mid-attempt leaves the lease to expire and another worker sends again with
the same `webhook-id` (at least once; receivers dedupe on it).

Per endpoint, a delivery is claimed only when no earlier delivery of the same
conversation is still pending: one conversation's events arrive in order, while other
conversations (and other endpoints) keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import httpx
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.alerts.service import raise_alert
from inbox_service.core.clock import Clock
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.db import SessionMaker, plain_dsn, transaction
from inbox_service.core.events import Event
from inbox_service.core.ids import new_id
from inbox_service.events.schemas import EventOut
from inbox_service.webhooks import sender, signing, ssrf
from inbox_service.webhooks.dispatch import fan_out
from inbox_service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from inbox_service.webhooks.service import signing_secrets

log = logging.getLogger(__name__)

# Waits before attempts 2, 3, …: about a day in all (Standard Webhooks / Svix style), each
# with ±10% jitter so a recovering receiver is not hit by every retry at once.
RETRY_DELAYS = tuple(
    timedelta(seconds=s)
    for s in (5, 30, 120, 600, 1800, 3600, 2 * 3600, 4 * 3600, 6 * 3600, 8 * 3600)
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
CLAIM_BATCH = 100
RECORD_BATCH = 200

_CLAIM = text(
    """
    WITH due AS (
        SELECT d.id FROM webhook_deliveries d
        JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
        WHERE d.state = 'pending' AND d.next_attempt_at <= :now
          AND (d.locked_until IS NULL OR d.locked_until < :now)
          AND NOT EXISTS (
              SELECT 1 FROM webhook_deliveries earlier
              WHERE earlier.state = 'pending' AND earlier.endpoint_id = d.endpoint_id
                AND earlier.conversation_id = d.conversation_id AND earlier.id < d.id)
        ORDER BY d.next_attempt_at, d.id
        LIMIT :limit
        FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook_deliveries SET locked_until = :lease, claim_token = :token,
        attempts = webhook_deliveries.attempts + 1
    FROM due WHERE webhook_deliveries.id = due.id
    RETURNING webhook_deliveries.id
    """
)

# Every success of a batch in one statement; a row whose claim token changed (the lease ran
# out and another claim owns the delivery) is left alone and not returned.
_SUCCEEDED = text(
    """
    UPDATE webhook_deliveries d
    SET state = 'succeeded', finished_at = :now, locked_until = NULL, claim_token = NULL,
        last_status_code = r.status_code, last_error = r.error
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[]), CAST(:codes AS smallint[]),
                CAST(:errors AS text[])) AS r(id, token, status_code, error)
    WHERE d.id = r.id AND d.claim_token = r.token
    RETURNING d.id
    """
)


@dataclass(frozen=True)
class Claimed:
    """One leased delivery, with what it takes to send it."""

    token: str
    delivery_id: int
    endpoint_id: str
    attempt: int
    url: str
    secrets: list[str]
    event_id: str
    body: bytes


Outcome = tuple[Claimed, sender.AttemptResult]


@dataclass(frozen=True)
class SenderConfig:
    allow_private: bool = False
    timeout_seconds: float = 10.0
    concurrency: int = 64
    poll_seconds: float = 1.0

    @property
    def lease(self) -> timedelta:
        # Longer than any attempt (bounded by the timeout) plus the time to record it.
        return timedelta(seconds=2 * self.timeout_seconds + 2)


def next_delay(attempt: int, retry_after: float | None) -> timedelta | None:
    """The wait after failed attempt number `attempt`; None when it was the last."""
    if attempt >= MAX_ATTEMPTS:
        return None
    delay = RETRY_DELAYS[attempt - 1] * random.uniform(0.9, 1.1)  # noqa: S311 (jitter, not a secret)
    if retry_after is not None:
        # Honour Retry-After, within the retry window's longest wait.
        delay = max(delay, min(timedelta(seconds=retry_after), RETRY_DELAYS[-1]))
    return delay


class WebhookSender:
    """Claims due deliveries and sends them; `run()` is the worker service."""

    def __init__(
        self,
        sessionmaker: SessionMaker,
        clock: Clock,
        cipher: CredentialCipher | None,
        *,
        config: SenderConfig,
        client: httpx.AsyncClient | None = None,
        resolver: ssrf.Resolver = ssrf.system_resolver,
        database_url: str | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.cipher = cipher
        self.config = config
        self.client = client or sender.new_client()
        self.resolver = resolver
        self.database_url = database_url
        self._wake = asyncio.Event()

    async def claim(self, limit: int = CLAIM_BATCH) -> list[Claimed]:
        """Lease up to `limit` due deliveries."""
        now = self.clock.now()
        token = new_id("clm")
        async with transaction(self.sessionmaker) as session:
            ids = list(
                await session.scalars(
                    _CLAIM.bindparams(
                        now=now, limit=limit, lease=now + self.config.lease, token=token
                    )
                )
            )
            if not ids:
                return []
            rows = (
                await session.execute(
                    select(WebhookDelivery, WebhookEndpoint, Event)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .join(Event, Event.id == WebhookDelivery.event_id)
                    .where(WebhookDelivery.id.in_(ids))
                    .order_by(WebhookDelivery.id)
                )
            ).all()
            claimed: list[Claimed] = []
            secrets: dict[str, list[str]] = {}  # decrypted once per endpoint
            for delivery, endpoint, event in rows:
                if endpoint.id not in secrets:
                    secrets[endpoint.id] = self._secrets(endpoint, now)
                claimed.append(
                    Claimed(
                        token=token,
                        delivery_id=delivery.id,
                        endpoint_id=endpoint.id,
                        attempt=delivery.attempts,
                        url=endpoint.url,
                        secrets=secrets[endpoint.id],
                        event_id=event.public_id,
                        body=EventOut.of(event).model_dump_json().encode(),
                    )
                )
        return claimed

    def _secrets(self, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
        if self.cipher is None:
            return []
        try:
            return signing_secrets(endpoint, self.cipher, now=now)
        except ValueError:  # INBOX_SECRET_KEY changed: the attempt is logged as failed
            return []

    async def send(self, item: Claimed) -> sender.AttemptResult:
        if not item.secrets:
            return sender.AttemptResult(
                status_code=None,
                latency_ms=0,
                error="the signing secret cannot be decrypted (INBOX_SECRET_KEY?)",
                response_excerpt="",
                retry_after=None,
            )
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "inbox-service-webhooks/1",
            **signing.headers(item.secrets, item.event_id, timestamp, item.body),
        }
        return await sender.post(
            self.client,
            item.url,
            item.body,
            headers,
            allow_private=self.config.allow_private,
            resolver=self.resolver,
            timeout=self.config.timeout_seconds,
        )

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Log each attempt and move its delivery on: done, retried later, or given up.

        One statement logs every attempt and one settles every success; failures (rare)
        are settled one by one. Only the claim that made an attempt settles it. Then the
        endpoints of the settled deliveries are locked, once each and in id order, and
        each outcome updates its endpoint in turn (failing since, disabled)."""
        now = self.clock.now()
        async with transaction(self.sessionmaker) as session:
            await session.execute(
                insert(WebhookAttempt),
                [
                    {
                        "delivery_id": item.delivery_id,
                        "attempted_at": now,
                        "status_code": result.status_code,
                        "latency_ms": result.latency_ms,
                        "error": (result.error or "")[:500] or None,
                        "response_excerpt": result.response_excerpt[:1024],
                    }
                    for item, result in outcomes
                ],
            )
            succeeded = await self._settle_successes(
                session, [(item, result) for item, result in outcomes if result.ok], now
            )
            settled: list[tuple[Claimed, sender.AttemptResult, timedelta | None]] = []
            for item, result in outcomes:
                if result.ok:
                    if item.delivery_id in succeeded:
                        settled.append((item, result, None))
                    continue
                delay = (
                    None
                    if result.status_code == 410
                    else next_delay(item.attempt, result.retry_after)
                )
                if await self._settle_failure(session, item, result, delay, now):
                    settled.append((item, result, delay))
            # Deliveries not settled had lost their lease: someone else owns them now.
            if not settled:
                return
            endpoints = {
                endpoint.id: endpoint
                for endpoint in await session.scalars(
                    select(WebhookEndpoint)
                    .where(WebhookEndpoint.id.in_({item.endpoint_id for item, _, _ in settled}))
                    .order_by(WebhookEndpoint.id)
                    .with_for_update()
                )
            }
            for item, result, delay in settled:
                endpoint = endpoints.get(item.endpoint_id)
                if endpoint is not None:
                    await self._update_endpoint(session, endpoint, item, result, delay, now)

    async def _settle_successes(
        self, session: AsyncSession, outcomes: Sequence[Outcome], now: datetime
    ) -> set[int]:
        """Mark these deliveries succeeded where the claim is still theirs; those ids."""
        if not outcomes:
            return set()
        rows = await session.scalars(
            _SUCCEEDED,
            {
                "now": now,
                "ids": [item.delivery_id for item, _ in outcomes],
                "tokens": [item.token for item, _ in outcomes],
                "codes": [result.status_code for _, result in outcomes],
                "errors": [(result.error or "")[:500] or None for _, result in outcomes],
            },
        )
        return set(rows)

    async def _settle_failure(
        self,
        session: AsyncSession,
        item: Claimed,
        result: sender.AttemptResult,
        delay: timedelta | None,
        now: datetime,
    ) -> bool:
        """Schedule the next attempt, or give up when there is none (`delay` None); False
        when the claim is no longer ours."""
        values: dict[str, object] = {
            "locked_until": None,
            "claim_token": None,
            "last_status_code": result.status_code,
            "last_error": (result.error or "")[:500] or None,
        }
        if delay is None:
            values |= {"state": "failed", "finished_at": now}
        else:
            values |= {"next_attempt_at": now + delay}
        settled = await session.scalar(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == item.delivery_id, WebhookDelivery.claim_token == item.token
            )
            .values(**values)
            .returning(WebhookDelivery.id)
        )
        return settled is not None

    async def _update_endpoint(
        self,
        session: AsyncSession,
        endpoint: WebhookEndpoint,
        item: Claimed,
        result: sender.AttemptResult,
        delay: timedelta | None,
        now: datetime,
    ) -> None:
        """A success ends the endpoint's run of failures; a 410, or a delivery given up
        after failing for the whole window while the endpoint failed throughout,
        disables it."""
        if result.ok:
            endpoint.failing_since = None
            return
        if endpoint.failing_since is None:
            endpoint.failing_since = now
        if result.status_code == 410:
            await self._disable(session, endpoint, "the endpoint answered 410 Gone", now)
        elif delay is None and endpoint.enabled:
            first_attempt = await session.scalar(
                select(func.min(WebhookAttempt.attempted_at)).where(
                    WebhookAttempt.delivery_id == item.delivery_id
                )
            )
            if first_attempt is not None and endpoint.failing_since <= first_attempt:
                await self._disable(
                    session,
                    endpoint,
                    f"every attempt failed for {len(RETRY_DELAYS) + 1} tries over about a day"
                    f" (last: {result.error or result.status_code})",
                    now,
                )

    async def _disable(
        self, session: AsyncSession, endpoint: WebhookEndpoint, reason: str, now: datetime
    ) -> None:
        if not endpoint.enabled:
            return
        endpoint.enabled = False
        endpoint.disabled_reason = reason[:500]
        endpoint.version += 1
        endpoint.updated_at = now
        await raise_alert(
            session,
            "webhook_disabled",
            f"Webhook {endpoint.url} disabled: {reason}",
            now=now,
            inbox_id=endpoint.inbox_id,
            data={"webhook_id": endpoint.id, "reason": reason},
        )
        log.warning("webhook %s disabled: %s", endpoint.id, reason)

    async def run_once(self) -> int:
        """Fan out new events, then send every due delivery once; the number sent."""
        await fan_out(self.sessionmaker, self.clock)
        claimed = await self.claim(self.config.concurrency)
        if claimed:
            results = await asyncio.gather(*(self.send(item) for item in claimed))
            await self.record(list(zip(claimed, results, strict=True)))
        return len(claimed)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until `stopping`: keep up to `concurrency` attempts in flight and record their
        results in batches. New events wake it (NOTIFY), else it polls."""
        outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        in_flight: set[asyncio.Task[None]] = set()
        helpers = [
            asyncio.create_task(self._listen(stopping)),
            asyncio.create_task(self._record_loop(outcomes)),
        ]
        try:
            while not stopping.is_set():
                free = self.config.concurrency - len(in_flight)
                claimed: list[Claimed] = []
                try:
                    await fan_out(self.sessionmaker, self.clock)
                    if free:
                        claimed = await self.claim(min(free, CLAIM_BATCH))
                except Exception:
                    log.exception("webhook fan-out or claim failed; retrying")
                for item in claimed:
                    task = asyncio.create_task(self._attempt(item, outcomes))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if len(claimed) < CLAIM_BATCH:
                    self._wake.clear()
                    await _wait_any(stopping, self._wake, timeout=self.config.poll_seconds)
        finally:
            # Attempts in flight finish (the timeout bounds them) and are recorded.
            await asyncio.gather(*in_flight, return_exceptions=True)
            await outcomes.join()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self.client.aclose()

    async def _attempt(self, item: Claimed, outcomes: asyncio.Queue[Outcome]) -> None:
        await outcomes.put((item, await self.send(item)))

    async def _record_loop(self, outcomes: asyncio.Queue[Outcome]) -> None:
        """Record finished attempts, many per transaction when they finish together."""
        while True:
            batch = [await outcomes.get()]
            while not outcomes.empty() and len(batch) < RECORD_BATCH:
                batch.append(outcomes.get_nowait())
            try:
                await self.record(batch)
            except Exception:
                # Unrecorded attempts keep their lease; when it ends they are sent again.
                log.exception("recording %d webhook attempts failed", len(batch))
            finally:
                for _ in batch:
                    outcomes.task_done()
                self._wake.set()  # slots are free, and an ordered successor may be due

    async def _listen(self, stopping: asyncio.Event) -> None:
        """Wake the loop when events commit (NOTIFY inbox_events); polling covers the rest."""
        if self.database_url is None:
            return
        while not stopping.is_set():
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(plain_dsn(self.database_url))
                try:
                    connection.add_termination_listener(lambda _, lost=lost: lost.set())
                    await connection.add_listener("inbox_events", lambda *_: self._wake.set())
                    await _wait_any(stopping, lost)
                finally:
                    await connection.close()
            except (OSError, asyncpg.PostgresError):
                log.warning("webhook listener lost its connection; polling until it is back")
            if not stopping.is_set():
                await _wait_any(stopping, timeout=5)


async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:  # noqa: ASYNC109
    """Until one of `events` is set, or `timeout` seconds pass."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
