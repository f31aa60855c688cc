"""Fan-out and delivery against a real receiver on 127.0.0.1 and a real PostgreSQL.

The sender runs on a FixedClock: retries become due when the test moves the clock, never
by sleeping. Every event is committed (`committed_db`), as the fan-out only reads events
whose transaction has finished.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from inbox_service.alerts.models import Alert
from inbox_service.core.clock import FixedClock
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import EventType, emit
from inbox_service.webhooks import service
from inbox_service.webhooks.delivery import MAX_ATTEMPTS, SenderConfig, WebhookSender
from inbox_service.webhooks.dispatch import fan_out
from inbox_service.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from inbox_service.webhooks.schemas import WebhookIn
from inbox_service.webhooks.service import UrlPolicy
from tests.conftest import CommittedDb
from tests.support.factories import make_inbox
from tests.webhooks.receiver import Receiver, Reply

pytestmark = pytest.mark.usefixtures("receiver")


@dataclass
class Rig:
    sessionmaker: SessionMaker
    clock: FixedClock
    cipher: CredentialCipher
    receiver: Receiver
    inbox_id: str
    other_inbox_id: str

    def sender(self, **config: float) -> WebhookSender:
        return WebhookSender(
            self.sessionmaker,
            self.clock,
            self.cipher,
            config=SenderConfig(allow_private=True, **{"timeout_seconds": 0.5, **config}),
            client=httpx.AsyncClient(trust_env=False),
        )

    async def endpoint(self, events: list[str] | None = None, **fields: object) -> tuple[str, str]:
        """A new endpoint pointing at the receiver: (id, secret)."""
        async with transaction(self.sessionmaker) as session:
            endpoint, secret = await service.create_webhook(
                session,
                WebhookIn.model_validate(
                    {"url": self.receiver.url(), "events": events or ["*"], **fields}
                ),
                now=self.clock.now(),
                cipher=self.cipher,
                policy=UrlPolicy(allow_private=True),
            )
            return endpoint.id, secret

    async def emit(
        self, event_type: EventType = EventType.CONVERSATION_ASSIGNED, **fields: str | None
    ) -> str:
        async with transaction(self.sessionmaker) as session:
            event = await emit(
                session,
                event_type,
                {"n": fields.pop("n", None)},
                now=self.clock.now(),
                inbox_id=fields.pop("inbox_id", self.inbox_id),
                conversation_id=fields.pop("conversation_id", None),
            )
            return event.public_id

    async def deliveries(self, endpoint_id: str) -> list[WebhookDelivery]:
        async with transaction(self.sessionmaker) as session:
            return list(
                await session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.endpoint_id == endpoint_id)
                    .order_by(WebhookDelivery.id)
                )
            )

    async def attempts(self, delivery_id: int) -> list[WebhookAttempt]:
        async with transaction(self.sessionmaker) as session:
            return list(
                await session.scalars(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id == delivery_id)
                    .order_by(WebhookAttempt.id)
                )
            )

    async def endpoint_row(self, endpoint_id: str) -> WebhookEndpoint:
        async with transaction(self.sessionmaker) as session:
            endpoint = await session.get(WebhookEndpoint, endpoint_id)
            assert endpoint is not None
            return endpoint


@pytest.fixture
async def rig(committed_db: CommittedDb, receiver: Receiver) -> Rig:
    # Real time as the start: receivers check webhook-timestamp against their own clock.
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    async with transaction(committed_db.sessionmaker) as session:
        inbox = await make_inbox(session, now=clock.now())
        other = await make_inbox(session, now=clock.now())
    clock.advance(seconds=1)  # endpoints made from here on do not get those inbox events
    return Rig(
        committed_db.sessionmaker,
        clock,
        CredentialCipher(generate_key()),
        receiver,
        inbox.id,
        other.id,
    )


def event_ids(receiver: Receiver) -> list[str]:
    return [r.headers["webhook-id"] for r in receiver.requests]


async def test_delivery_is_signed_per_standard_webhooks_and_carries_the_envelope(rig: Rig) -> None:
    _, secret = await rig.endpoint()
    event_id = await rig.emit(conversation_id="cnv_1", n="1")

    assert await rig.sender().run_once() == 1

    [request] = rig.receiver.requests
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["id"] == event_id == request.headers["webhook-id"]
    assert payload["type"] == "conversation.assigned"
    assert payload["conversation_id"] == "cnv_1"
    assert payload["data"] == {"n": "1"}
    assert request.headers["content-type"] == "application/json"
    assert int(request.headers["webhook-timestamp"]) == int(rig.clock.now().timestamp())
    tampered = request.body.replace(b'"1"', b'"2"')
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(tampered, request.headers)


async def test_after_rotation_both_secrets_verify_until_the_overlap_ends(rig: Rig) -> None:
    endpoint_id, old_secret = await rig.endpoint()
    async with transaction(rig.sessionmaker) as session:
        endpoint = await service.get_webhook(session, endpoint_id)
        new_secret, overlap_ends = await service.rotate_secret(
            session, endpoint, now=rig.clock.now(), cipher=rig.cipher
        )
    assert overlap_ends == rig.clock.now() + timedelta(hours=24)
    await rig.emit()
    await rig.sender().run_once()
    request = rig.receiver.requests[-1]
    assert len(request.headers["webhook-signature"].split()) == 2
    Webhook(old_secret).verify(request.body, request.headers)
    Webhook(new_secret).verify(request.body, request.headers)

    # A day later only the new secret signs (timestamps move with the clock, so verify
    # with the library's tolerance switched off by re-basing on the request's timestamp).
    rig.clock.advance(hours=24, seconds=1)
    await rig.emit()
    await rig.sender().run_once()
    request = rig.receiver.requests[-1]
    assert len(request.headers["webhook-signature"].split()) == 1
    fresh = {**request.headers, "webhook-timestamp": request.headers["webhook-timestamp"]}
    assert _signed_with(new_secret, request.body, fresh)
    assert not _signed_with(old_secret, request.body, fresh)


def _signed_with(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Standard Webhooks' own signer over the request, compared with what was sent."""
    wh = Webhook(secret)
    expected = wh.sign(
        headers["webhook-id"],
        datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC),
        body.decode(),
    )
    return expected in headers["webhook-signature"].split()


async def test_500_then_timeout_then_200_is_delivered_with_each_attempt_logged(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    await rig.emit(conversation_id="cnv_1")
    rig.receiver.respond(Reply(500, b"boom"), Reply(delay=3), Reply(200, b"thanks"))
    sender = rig.sender()

    assert await sender.run_once() == 1  # 500
    [delivery] = await rig.deliveries(endpoint_id)
    assert delivery.state == "pending"
    first_wait = delivery.next_attempt_at - rig.clock.now()
    assert timedelta(seconds=4.5) <= first_wait <= timedelta(seconds=5.5)
    assert await sender.run_once() == 0  # not due yet: nothing is sent early

    rig.clock.advance(first_wait)
    assert await sender.run_once() == 1  # times out after 0.5 s
    [delivery] = await rig.deliveries(endpoint_id)
    second_wait = delivery.next_attempt_at - rig.clock.now()
    assert second_wait > first_wait

    rig.clock.advance(second_wait)
    assert await sender.run_once() == 1  # 200
    [delivery] = await rig.deliveries(endpoint_id)
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("succeeded", 3, 200)

    log = await rig.attempts(delivery.id)
    assert [a.status_code for a in log] == [500, None, 200]
    assert log[0].response_excerpt == "boom"
    assert log[1].error is not None
    assert "timeout" in log[1].error.lower()
    assert log[2].response_excerpt == "thanks"
    assert all(a.latency_ms >= 0 for a in log)
    assert log[1].latency_ms >= 400
    # One webhook-id for all three; a fresh timestamp per attempt.
    await rig.receiver.idle()
    assert len(set(event_ids(rig.receiver))) == 1
    assert len({r.headers["webhook-timestamp"] for r in rig.receiver.requests}) == 3
    assert (await rig.endpoint_row(endpoint_id)).failing_since is None


async def test_one_conversation_waits_for_its_earlier_event_while_others_flow(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    sender = rig.sender()
    x1 = await rig.emit(conversation_id="cnv_x", n="x1")
    rig.receiver.respond(Reply(503))
    await sender.run_once()  # x1 fails and waits for its retry
    x2 = await rig.emit(conversation_id="cnv_x", n="x2")
    y1 = await rig.emit(conversation_id="cnv_y", n="y1")

    assert await sender.run_once() == 1
    assert event_ids(rig.receiver) == [x1, y1]  # y flows; x2 is held behind x1

    rig.clock.advance(seconds=10)
    await sender.run_once()  # x1 succeeds; x2 was not claimable in the same pass
    await sender.run_once()
    assert event_ids(rig.receiver) == [x1, y1, x1, x2]
    assert [d.state for d in await rig.deliveries(endpoint_id)] == ["succeeded"] * 3


async def test_410_disables_the_endpoint_with_an_alert_and_stops_sending(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    await rig.emit(conversation_id="cnv_1")
    await rig.emit(conversation_id="cnv_2")
    rig.receiver.respond(Reply(410), Reply(410))
    sender = rig.sender()
    await sender.run_once()

    endpoint = await rig.endpoint_row(endpoint_id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None
    assert "410" in endpoint.disabled_reason
    assert {d.state for d in await rig.deliveries(endpoint_id)} == {"failed"}
    async with transaction(rig.sessionmaker) as session:
        alert = await session.scalar(select(Alert).where(Alert.kind == "webhook_disabled"))
    assert alert is not None
    assert alert.data["webhook_id"] == endpoint_id

    sent = len(rig.receiver.requests)
    await rig.emit()
    rig.clock.advance(hours=1)
    assert await sender.run_once() == 0
    assert len(rig.receiver.requests) == sent
    assert len(await rig.deliveries(endpoint_id)) == 2  # no fan-out to a disabled endpoint


async def test_an_endpoint_failing_for_the_whole_window_is_given_up_and_disabled(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    await rig.emit(conversation_id="cnv_1")
    rig.receiver.respond(*[Reply(500)] * MAX_ATTEMPTS)
    sender = rig.sender()
    started = rig.clock.now()
    for _ in range(MAX_ATTEMPTS):
        assert await sender.run_once() == 1
        [delivery] = await rig.deliveries(endpoint_id)
        if delivery.state == "pending":
            rig.clock.set(delivery.next_attempt_at)

    [delivery] = await rig.deliveries(endpoint_id)
    assert (delivery.state, delivery.attempts) == ("failed", MAX_ATTEMPTS)
    window = rig.clock.now() - started
    assert timedelta(hours=19) < window < timedelta(hours=27)  # "about a day"
    endpoint = await rig.endpoint_row(endpoint_id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason
    assert len(await rig.attempts(delivery.id)) == MAX_ATTEMPTS


async def test_an_endpoint_that_recovered_meanwhile_is_not_disabled(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    await rig.emit(conversation_id="cnv_1")
    sender = rig.sender()
    rig.receiver.respond(*[Reply(500)] * (MAX_ATTEMPTS - 1))
    for attempt in range(MAX_ATTEMPTS):
        await sender.run_once()
        if attempt == MAX_ATTEMPTS - 2:
            # Between the last two attempts, another conversation's delivery succeeds.
            await rig.emit(conversation_id="cnv_2")
            assert await sender.run_once() == 1
            rig.receiver.respond(Reply(500))
        first = (await rig.deliveries(endpoint_id))[0]
        if first.state == "pending":
            rig.clock.set(first.next_attempt_at)

    assert [d.state for d in await rig.deliveries(endpoint_id)] == ["failed", "succeeded"]
    assert (await rig.endpoint_row(endpoint_id)).enabled


async def test_fan_out_follows_types_inbox_filter_creation_time_and_targets(rig: Rig) -> None:
    everything, _ = await rig.endpoint()
    assigned_only, _ = await rig.endpoint(["conversation.assigned"])
    other_inbox, _ = await rig.endpoint(["*"], inbox_id=rig.other_inbox_id)
    await rig.emit(EventType.CONVERSATION_ASSIGNED)
    await rig.emit(EventType.NOTE_CREATED)
    await rig.emit(EventType.NOTE_CREATED, inbox_id=rig.other_inbox_id)
    await rig.emit(EventType.INBOX_CREATED, inbox_id=None)
    rig.clock.advance(seconds=1)
    late, _ = await rig.endpoint()  # created after those events: gets none of them
    async with transaction(rig.sessionmaker) as session:
        await service.send_test(
            session,
            await service.get_webhook(session, assigned_only),
            actor_id="x",
            now=rig.clock.now(),
        )

    assert await fan_out(rig.sessionmaker, rig.clock) == 7  # the rig's two inboxes, then ours
    types = {
        endpoint: [d.event_type for d in await rig.deliveries(endpoint)]
        for endpoint in (everything, assigned_only, other_inbox, late)
    }
    assert types == {
        everything: ["conversation.assigned", "note.created", "note.created", "inbox.created"],
        assigned_only: ["webhook.test", "conversation.assigned"],
        other_inbox: ["note.created"],
        late: [],
    }
    # Running it again finds nothing new and creates nothing twice.
    assert await fan_out(rig.sessionmaker, rig.clock) == 0
    assert len(await rig.deliveries(everything)) == 4


async def test_fan_out_never_skips_an_event_committed_late(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    async with transaction(rig.sessionmaker) as slow:
        await emit(
            slow, EventType.NOTE_CREATED, {"n": "slow"}, now=rig.clock.now(), inbox_id=rig.inbox_id
        )
        await rig.emit(n="fast")  # a later event id, committed first
        await fan_out(rig.sessionmaker, rig.clock)  # sees neither: "slow" holds the horizon
    await fan_out(rig.sessionmaker, rig.clock)
    async with transaction(rig.sessionmaker) as session:
        events = await session.scalars(
            select(WebhookDelivery.event_type).where(WebhookDelivery.endpoint_id == endpoint_id)
        )
        assert sorted(events) == ["conversation.assigned", "note.created"]


async def test_two_senders_deliver_every_event_exactly_once(rig: Rig) -> None:
    endpoint_id, secret = await rig.endpoint()
    sent = [await rig.emit(conversation_id=f"cnv_{i % 7}", n=str(i)) for i in range(60)]
    a, b = rig.sender(concurrency=8), rig.sender(concurrency=8)

    for _ in range(30):
        done = await asyncio.gather(a.run_once(), b.run_once())
        if sum(done) == 0 and len(rig.receiver.requests) >= len(sent):
            break

    received = event_ids(rig.receiver)
    assert sorted(received) == sorted(sent)  # each once: none lost, none twice
    for request in rig.receiver.requests:
        Webhook(secret).verify(request.body, request.headers)
    # Within each conversation, in event order.
    by_conversation: dict[str, list[int]] = {}
    for request in rig.receiver.requests:
        body = json.loads(request.body)
        by_conversation.setdefault(body["conversation_id"], []).append(int(body["data"]["n"]))
    assert all(ns == sorted(ns) for ns in by_conversation.values())
    assert {d.state for d in await rig.deliveries(endpoint_id)} == {"succeeded"}


async def test_a_lapsed_claim_cannot_overwrite_the_newer_attempt(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    await rig.emit(conversation_id="cnv_1")
    stale = rig.sender()
    await fan_out(rig.sessionmaker, rig.clock)
    [first_claim] = await stale.claim()
    rig.clock.advance(stale.config.lease + timedelta(seconds=1))  # that worker is presumed dead

    fresh = rig.sender()
    assert await fresh.run_once() == 1  # delivered by the fresh claim
    result = await stale.send(first_claim)  # the old worker wakes up and finishes
    await stale.record([(first_claim, result)])
    [delivery] = await rig.deliveries(endpoint_id)
    assert delivery.state == "succeeded"
    assert delivery.attempts == 2
    assert len(await rig.attempts(delivery.id)) == 2  # both attempts are in the log


async def test_manual_retry_sends_again_with_the_same_webhook_id(rig: Rig) -> None:
    endpoint_id, _ = await rig.endpoint()
    event_id = await rig.emit()
    sender = rig.sender()
    await sender.run_once()
    [delivery] = await rig.deliveries(endpoint_id)
    async with transaction(rig.sessionmaker) as session:
        endpoint = await service.get_webhook(session, endpoint_id)
        await service.retry_delivery(session, endpoint, delivery.public_id, now=rig.clock.now())
    assert await sender.run_once() == 1
    assert event_ids(rig.receiver) == [event_id, event_id]
    [delivery] = await rig.deliveries(endpoint_id)
    assert (delivery.state, delivery.attempts) == ("succeeded", 2)


async def test_dns_rebinding_to_loopback_is_refused_at_delivery_time(rig: Rig) -> None:
    """The name resolved to a public address when the webhook was made; now it answers
    127.0.0.1, where the receiver listens: the attempt is refused and never connects."""
    answers = {"hooks.example.test": ["93.184.215.14"]}

    async def resolver(host: str, port: int, /) -> list[str]:
        return answers[host]

    url = rig.receiver.url(host="hooks.example.test")
    async with transaction(rig.sessionmaker) as session:
        endpoint, _ = await service.create_webhook(
            session,
            WebhookIn(url=url, events=["*"]),
            now=rig.clock.now(),
            cipher=rig.cipher,
            policy=UrlPolicy(allow_private=False, resolver=resolver),
        )
    await rig.emit()
    answers["hooks.example.test"] = ["127.0.0.1"]
    sender = WebhookSender(
        rig.sessionmaker,
        rig.clock,
        rig.cipher,
        config=SenderConfig(allow_private=False, timeout_seconds=0.5),
        resolver=resolver,
    )

    assert await sender.run_once() == 1
    [delivery] = await rig.deliveries(endpoint.id)
    [attempt] = await rig.attempts(delivery.id)
    assert attempt.status_code is None
    assert attempt.error is not None
    assert "127.0.0.1" in attempt.error
    assert delivery.state == "pending"  # retried later: the name may point back out
    assert rig.receiver.connections == 0
