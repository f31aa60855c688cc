"""Webhook endpoints: CRUD, secret rotation, test sends, the delivery log and manual retry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.errors import Conflict, Invalid, NotFound
from inbox_service.core.events import EventType, emit
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.models import Inbox
from inbox_service.webhooks import signing, ssrf
from inbox_service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from inbox_service.webhooks.schemas import WebhookIn, WebhookPatch

# Standard Webhooks lets a sender sign with several secrets: the old one keeps working
# this long after a rotation, so receivers can switch without losing a delivery.
ROTATION_OVERLAP = timedelta(hours=24)
# Never sent by the fan-out: `webhook.test` goes to the endpoint it tests, and
# `presence.changed` lives on the live stream only.
NOT_SUBSCRIBABLE = {EventType.WEBHOOK_TEST.value, EventType.PRESENCE_CHANGED.value}
SUBSCRIBABLE = sorted({t.value for t in EventType} - NOT_SUBSCRIBABLE)


@dataclass(frozen=True)
class UrlPolicy:
    """How webhook URLs are checked (the resolver is swapped in tests)."""

    allow_private: bool
    resolver: ssrf.Resolver = ssrf.system_resolver


def _check_events(events: Sequence[str]) -> list[str]:
    if "*" in events:
        if len(events) > 1:
            raise Invalid('"*" already means every event type', loc=["body", "events"])
        return ["*"]
    unknown = sorted(set(events) - set(SUBSCRIBABLE))
    if unknown:
        raise Invalid(
            f"unknown event types: {', '.join(unknown)} (known: {', '.join(SUBSCRIBABLE)})",
            loc=["body", "events"],
        )
    return sorted(set(events))


async def _check_url(url: str, policy: UrlPolicy) -> str:
    try:
        await ssrf.resolve_target(url, allow_private=policy.allow_private, resolver=policy.resolver)
    except ssrf.BlockedTarget as exc:
        raise Invalid(f"url refused: {exc}", loc=["body", "url"]) from exc
    return url


async def _check_inbox(session: AsyncSession, inbox_id: str | None) -> str | None:
    if inbox_id is not None and await session.get(Inbox, inbox_id) is None:
        raise Invalid(f"no inbox {inbox_id}", loc=["body", "inbox_id"])
    return inbox_id


def _require_cipher(cipher: CredentialCipher | None) -> CredentialCipher:
    if cipher is None:
        raise Invalid(
            "this server has no INBOX_SECRET_KEY, so it cannot store webhook secrets",
            loc=["body"],
        )
    return cipher


async def create_webhook(
    session: AsyncSession,
    data: WebhookIn,
    *,
    now: datetime,
    cipher: CredentialCipher | None,
    policy: UrlPolicy,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (the only time the secret is shown)."""
    cipher = _require_cipher(cipher)
    secret = data.secret.get_secret_value() if data.secret else signing.generate_secret()
    try:
        signing.parse_secret(secret)
    except ValueError as exc:
        raise Invalid(str(exc), loc=["body", "secret"]) from exc
    endpoint = WebhookEndpoint(
        id=new_id("whk"),
        url=await _check_url(data.url, policy),
        description=data.description,
        event_types=_check_events(data.events),
        inbox_id=await _check_inbox(session, data.inbox_id),
        secret_encrypted=cipher.encrypt(secret),
        enabled=data.enabled,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


async def get_webhook(
    session: AsyncSession, webhook_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == webhook_id)
    endpoint = await session.scalar(stmt.with_for_update() if lock else stmt)
    if endpoint is None:
        raise NotFound(f"no webhook {webhook_id}")
    return endpoint


async def list_webhooks(
    session: AsyncSession, params: PageParams
) -> tuple[list[WebhookEndpoint], str | None]:
    return await keyset_page(
        session,
        select(WebhookEndpoint),
        keys=[WebhookEndpoint.id],
        params=params,
        key_of=lambda e: [e.id],
    )


async def update_webhook(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    patch: WebhookPatch,
    *,
    now: datetime,
    policy: UrlPolicy,
) -> WebhookEndpoint:
    changes = patch.model_dump(exclude_unset=True)
    for field in ("url", "events", "description", "enabled"):
        if field in changes and changes[field] is None:
            raise Invalid(f"{field} cannot be null", loc=["body", field])
    if not changes:
        return endpoint
    if "url" in changes:
        endpoint.url = await _check_url(changes["url"], policy)
    if "events" in changes:
        endpoint.event_types = _check_events(changes["events"])
    if "inbox_id" in changes:
        endpoint.inbox_id = await _check_inbox(session, changes["inbox_id"])
    if "description" in changes:
        endpoint.description = changes["description"]
    if "enabled" in changes:
        if changes["enabled"] and not endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        elif not changes["enabled"] and endpoint.enabled:
            endpoint.disabled_reason = "disabled through the API"
        endpoint.enabled = changes["enabled"]
    endpoint.version += 1
    endpoint.updated_at = now
    await session.flush()
    return endpoint


async def delete_webhook(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    *,
    now: datetime,
    cipher: CredentialCipher | None,
) -> tuple[str, datetime]:
    """A new secret, and until when the current one keeps signing beside it."""
    cipher = _require_cipher(cipher)
    secret = signing.generate_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = overlap_ends = now + ROTATION_OVERLAP
    endpoint.secret_encrypted = cipher.encrypt(secret)
    endpoint.version += 1
    endpoint.updated_at = now
    await session.flush()
    return secret, overlap_ends


def signing_secrets(
    endpoint: WebhookEndpoint, cipher: CredentialCipher, *, now: datetime
) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one until
    its overlap ends."""
    secrets = [cipher.decrypt(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and now < expires:
        secrets.append(cipher.decrypt(endpoint.previous_secret_encrypted))
    return secrets


async def send_test(
    session: AsyncSession, endpoint: WebhookEndpoint, *, actor_id: str, now: datetime
) -> WebhookDelivery:
    """Queue a `webhook.test` event for this endpoint alone."""
    if not endpoint.enabled:
        raise Conflict("the webhook is disabled; enable it before testing it")
    event = await emit(
        session,
        EventType.WEBHOOK_TEST,
        {"webhook_id": endpoint.id, "actor_id": actor_id, "message": "This is a test event."},
        now=now,
    )
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=event.id,
        event_type=event.type,
        conversation_id=None,
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    await session.flush()
    return delivery


def parse_delivery_id(delivery_id: str) -> int | None:
    number = delivery_id.removeprefix("dlv_")
    if number == delivery_id or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


async def list_deliveries(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    params: PageParams,
    *,
    state: str | None,
) -> tuple[list[WebhookDelivery], str | None]:
    """Newest first."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if state is not None:
        stmt = stmt.where(WebhookDelivery.state == state)
    key: InstrumentedAttribute[int] = WebhookDelivery.id
    return await keyset_page(
        session, stmt, keys=[key], params=params, descending=True, key_of=lambda d: [d.id]
    )


async def attempts_of(
    session: AsyncSession, deliveries: Sequence[WebhookDelivery]
) -> dict[int, list[WebhookAttempt]]:
    ids = [d.id for d in deliveries]
    log: dict[int, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        rows = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(ids))
            .order_by(WebhookAttempt.id)
        )
        for attempt in rows:
            log[attempt.delivery_id].append(attempt)
    return log


async def get_delivery(
    session: AsyncSession, endpoint: WebhookEndpoint, delivery_id: str, *, lock: bool = False
) -> WebhookDelivery:
    number = parse_delivery_id(delivery_id)
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.id == (number or 0), WebhookDelivery.endpoint_id == endpoint.id
    )
    delivery = await session.scalar(stmt.with_for_update() if lock else stmt)
    if number is None or delivery is None:
        raise NotFound(f"no delivery {delivery_id} for webhook {endpoint.id}")
    return delivery


async def retry_delivery(
    session: AsyncSession, endpoint: WebhookEndpoint, delivery_id: str, *, now: datetime
) -> WebhookDelivery:
    """Send a delivery again now (also one that succeeded: a redelivery, same `webhook-id`)."""
    delivery = await get_delivery(session, endpoint, delivery_id, lock=True)
    if (
        delivery.state == "pending"
        and delivery.locked_until is not None
        and delivery.locked_until > now
    ):
        raise Conflict("the delivery is being sent right now")
    delivery.state = "pending"
    delivery.next_attempt_at = now
    delivery.locked_until = None
    delivery.claim_token = None
    delivery.finished_at = None
    await session.flush()
    return delivery
