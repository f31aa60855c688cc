from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from inbox_service.core.crypto import cipher_from
from inbox_service.core.deps import CurrentCaller, CurrentClock, CurrentSettings, IfMatch, Session
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.webhooks import service
from inbox_service.webhooks.models import WebhookDelivery, WebhookEndpoint
from inbox_service.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    DeliveryState,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
    WebhookSecretOut,
)
from inbox_service.webhooks.service import UrlPolicy

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=problems(401, 403, 422, 429))


def _url_policy(request: Request, settings: CurrentSettings) -> UrlPolicy:
    # Tests swap the DNS resolver through app.state; production uses the system's.
    resolver = getattr(request.app.state, "webhook_resolver", None)
    if resolver is None:
        return UrlPolicy(allow_private=settings.webhook_allow_private)
    return UrlPolicy(allow_private=settings.webhook_allow_private, resolver=resolver)


Policy = Annotated[UrlPolicy, Depends(_url_policy)]


def _out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.event_types,
        inbox_id=endpoint.inbox_id,
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        version=endpoint.version,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _delivery_out(delivery: WebhookDelivery, attempts: list[AttemptOut]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.public_id,
        webhook_id=delivery.endpoint_id,
        event_id=f"evt_{delivery.event_id}",
        event_type=delivery.event_type,
        conversation_id=delivery.conversation_id,
        state=delivery.state,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.state == "pending" else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        attempt_log=attempts,
    )


async def _deliveries_out(session: Session, deliveries: list[WebhookDelivery]) -> list[DeliveryOut]:
    log = await service.attempts_of(session, deliveries)
    return [
        _delivery_out(d, [AttemptOut.model_validate(a, from_attributes=True) for a in log[d.id]])
        for d in deliveries
    ]


@router.get("", response_model=WebhookPage)
async def list_webhooks(
    session: Session, caller: CurrentCaller, page: PageParamsDep
) -> WebhookPage:
    """Webhook endpoints (admin)."""
    caller.require_admin()
    endpoints, next_cursor = await service.list_webhooks(session, page)
    return WebhookPage(items=[_out(e) for e in endpoints], next_cursor=next_cursor)


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
async def create_webhook(
    body: WebhookIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    settings: CurrentSettings,
    policy: Policy,
    response: Response,
) -> WebhookCreated:
    """Subscribe a URL to event types (admin). The signing secret is shown only here."""
    caller.require_admin()
    endpoint, secret = await service.create_webhook(
        session, body, now=clock.now(), cipher=cipher_from(settings.inbox_secret_key), policy=policy
    )
    response.headers["Location"] = f"/v1/webhooks/{endpoint.id}"
    set_etag(response, endpoint.version)
    return WebhookCreated(**_out(endpoint).model_dump(), secret=secret)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=problems(404))
async def get_webhook(
    webhook_id: str, session: Session, caller: CurrentCaller, response: Response
) -> WebhookOut:
    """One webhook endpoint (admin)."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id)
    set_etag(response, endpoint.version)
    return _out(endpoint)


@router.patch("/{webhook_id}", response_model=WebhookOut, responses=problems(404, 412))
async def update_webhook(
    webhook_id: str,
    body: WebhookPatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    policy: Policy,
    response: Response,
    if_match: IfMatch = None,
) -> WebhookOut:
    """Change the URL, event types, inbox filter or description; disable or re-enable."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id, lock=True)
    check_if_match(if_match, endpoint.version)
    endpoint = await service.update_webhook(session, endpoint, body, now=clock.now(), policy=policy)
    set_etag(response, endpoint.version)
    return _out(endpoint)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(404))
async def delete_webhook(webhook_id: str, session: Session, caller: CurrentCaller) -> None:
    """Delete the endpoint and its delivery log; nothing more is sent to it."""
    caller.require_admin()
    await service.delete_webhook(session, await service.get_webhook(session, webhook_id, lock=True))


@router.post(
    "/{webhook_id}/rotate-secret", response_model=WebhookSecretOut, responses=problems(404)
)
async def rotate_webhook_secret(
    webhook_id: str,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    settings: CurrentSettings,
) -> WebhookSecretOut:
    """A new signing secret. For 24 h deliveries carry a signature with each secret, so
    receivers can switch over without missing one."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id, lock=True)
    secret, overlap_ends = await service.rotate_secret(
        session, endpoint, now=clock.now(), cipher=cipher_from(settings.inbox_secret_key)
    )
    return WebhookSecretOut(
        id=endpoint.id,
        secret=secret,
        previous_secret_expires_at=overlap_ends,
    )


@router.post(
    "/{webhook_id}/test",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(404, 409),
)
async def test_webhook(
    webhook_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> DeliveryOut:
    """Queue a `webhook.test` event for this endpoint; follow it in its deliveries."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id)
    delivery = await service.send_test(session, endpoint, actor_id=caller.user_id, now=clock.now())
    return _delivery_out(delivery, [])


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, responses=problems(404))
async def list_webhook_deliveries(
    webhook_id: str,
    session: Session,
    caller: CurrentCaller,
    page: PageParamsDep,
    state: Annotated[
        DeliveryState | None, Query(description="Only deliveries in this state.")
    ] = None,
) -> DeliveryPage:
    """The endpoint's deliveries, newest first, each with its attempts."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id)
    deliveries, next_cursor = await service.list_deliveries(session, endpoint, page, state=state)
    return DeliveryPage(items=await _deliveries_out(session, deliveries), next_cursor=next_cursor)


@router.get(
    "/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryOut, responses=problems(404)
)
async def get_webhook_delivery(
    webhook_id: str, delivery_id: str, session: Session, caller: CurrentCaller
) -> DeliveryOut:
    """One delivery with its attempts."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id)
    delivery = await service.get_delivery(session, endpoint, delivery_id)
    return (await _deliveries_out(session, [delivery]))[0]


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(404, 409),
)
async def retry_webhook_delivery(
    webhook_id: str, delivery_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> DeliveryOut:
    """Send this delivery again now, with the same `webhook-id` (also after a success)."""
    caller.require_admin()
    endpoint = await service.get_webhook(session, webhook_id)
    delivery = await service.retry_delivery(session, endpoint, delivery_id, now=clock.now())
    return (await _deliveries_out(session, [delivery]))[0]
