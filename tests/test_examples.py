"""The scripts in `examples/`, run the way a reader runs them.

* `webhook_consumer.py`: its server on a free 127.0.0.1 port in a thread, sent requests
  signed with `standardwebhooks` (good, tampered, wrong secret, stale, duplicate id);
  then a real endpoint of the service delivering to it through `WebhookSender.run_once`;
  and once as a process, `python examples/webhook_consumer.py --port 0`.
* `triage.py`: its `main()` in a thread (it is a blocking httpx script) against a real
  uvicorn serving the app on a database of its own (`committed_db`), with the environment
  variables it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from inbox_service.app import create_app
from inbox_service.conversations import assign
from inbox_service.conversations.models import Conversation
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event, EventType, emit
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.webhooks import service as webhooks_service
from inbox_service.webhooks import signing
from inbox_service.webhooks.delivery import SenderConfig, WebhookSender
from inbox_service.webhooks.models import WebhookDelivery
from inbox_service.webhooks.schemas import WebhookIn
from tests.conftest import CommittedDb
from tests.support.factories import NOW, make_inbox, make_key, make_user
from tests.test_cli_dev import _free_port

ROOT = Path(__file__).resolve().parents[1]
WAIT = 10.0


def load_example(name: str) -> ModuleType:
    """Import `examples/<name>.py` (not a package: the reader runs the file itself)."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look the module up
    spec.loader.exec_module(module)
    return module


consumer_example = load_example("webhook_consumer")
triage_example = load_example("triage")


# -- the webhook consumer -----------------------------------------------------------------------


@dataclass
class Consumer:
    url: str
    secret: str
    handled: list[dict[str, Any]] = field(default_factory=list)
    fail: list[str] = field(default_factory=list)  # webhook-ids whose handler raises once


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    """The example's server in a thread, with its own handlers (they print) wrapped so the
    test sees what was handled, and can make a handler fail once."""
    secret = signing.generate_secret()
    state = Consumer(url="", secret=secret)

    def wrap(handler: Any) -> Any:
        def handle(event: dict[str, Any]) -> None:
            if event["id"] in state.fail:
                state.fail.remove(event["id"])
                raise RuntimeError("the database is down")
            handler(event)
            state.handled.append(event)

        return handle

    handlers = {kind: wrap(handler) for kind, handler in consumer_example.HANDLERS.items()}
    server = consumer_example.ConsumerServer(("127.0.0.1", 0), secret, handlers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


def envelope(event_id: str, kind: str = "conversation.assigned") -> bytes:
    data: dict[str, Any] = {
        "conversation": {"id": "cnv_1", "subject": "Refund please"},
        "actor": {"id": "usr_admin"},
    }
    if kind == "conversation.assigned":
        data |= {"assignee_id": "usr_2", "previous_assignee_id": None}
    elif kind == "sla.breached":
        data |= {"metric": "first_response", "due_at": "2026-01-05T10:00:00+00:00"}
    return json.dumps(
        {
            "id": event_id,
            "type": kind,
            "created_at": "2026-01-05T09:00:00+00:00",
            "inbox_id": "inb_1",
            "conversation_id": "cnv_1",
            "data": data,
        }
    ).encode()


def signed(secret: str, msg_id: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers, made by the reference library (not by the service's code)."""
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


async def post(consumer: Consumer, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as http:
        return await http.post(consumer.url, content=body, headers=headers)


class TestWebhookConsumer:
    async def test_a_signed_assignment_is_handled_and_answered_200(
        self, consumer: Consumer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        body = envelope("evt_1")

        response = await post(consumer, body, signed(consumer.secret, "evt_1", body))

        assert (response.status_code, response.text) == (200, "ok")
        assert [e["id"] for e in consumer.handled] == ["evt_1"]
        out = capsys.readouterr().out
        assert "evt_1: conversation cnv_1 ('Refund please') assigned to usr_2" in out

    async def test_a_signed_sla_breach_is_handled(
        self, consumer: Consumer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        body = envelope("evt_2", "sla.breached")

        response = await post(consumer, body, signed(consumer.secret, "evt_2", body))

        assert response.status_code == 200
        assert [e["type"] for e in consumer.handled] == ["sla.breached"]
        assert "SLA BREACHED on conversation cnv_1 (first_response" in capsys.readouterr().out

    async def test_a_tampered_body_is_401_and_not_handled(self, consumer: Consumer) -> None:
        body = envelope("evt_3")
        headers = signed(consumer.secret, "evt_3", body)

        response = await post(consumer, body.replace(b"usr_2", b"usr_9"), headers)

        assert response.status_code == 401
        assert consumer.handled == []

    async def test_another_secret_is_401(self, consumer: Consumer) -> None:
        body = envelope("evt_4")

        response = await post(consumer, body, signed(signing.generate_secret(), "evt_4", body))

        assert response.status_code == 401
        assert consumer.handled == []

    async def test_a_replayed_old_request_is_401(self, consumer: Consumer) -> None:
        body = envelope("evt_5")
        stale = datetime.now(UTC) - timedelta(minutes=10)

        response = await post(consumer, body, signed(consumer.secret, "evt_5", body, at=stale))

        assert response.status_code == 401
        assert consumer.handled == []

    @pytest.mark.parametrize(
        ("timestamp", "signature"),
        [
            (None, None),  # no signature headers at all
            ("now", "v1"),  # no comma
            ("now", "v1,!!not base64!!"),
            ("yesterday", "v1,AAAA"),
            ("x", "v1,AAAA"),
        ],
    )
    async def test_missing_or_garbled_headers_are_401(
        self, consumer: Consumer, timestamp: str | None, signature: str | None
    ) -> None:
        times = {"now": datetime.now(UTC), "yesterday": datetime.now(UTC) - timedelta(days=1)}
        headers = {"content-type": "application/json"}
        if timestamp is not None and signature is not None:
            when = times.get(timestamp)
            headers |= {
                "webhook-id": "evt_6",
                "webhook-timestamp": str(int(when.timestamp())) if when else timestamp,
                "webhook-signature": signature,
            }

        response = await post(consumer, envelope("evt_6"), headers)

        assert response.status_code == 401
        assert consumer.handled == []

    async def test_a_duplicate_id_is_answered_200_and_handled_once(
        self, consumer: Consumer
    ) -> None:
        body = envelope("evt_7")
        first = await post(consumer, body, signed(consumer.secret, "evt_7", body))
        # A retry: the same id, signed again at a later time.
        later = datetime.now(UTC) + timedelta(seconds=30)

        again = await post(consumer, body, signed(consumer.secret, "evt_7", body, at=later))

        assert (first.status_code, again.status_code) == (200, 200)
        assert again.text == "duplicate, already handled"
        assert [e["id"] for e in consumer.handled] == ["evt_7"]

    async def test_other_event_types_are_acknowledged_without_handling(
        self, consumer: Consumer
    ) -> None:
        body = envelope("evt_8", "note.created")

        response = await post(consumer, body, signed(consumer.secret, "evt_8", body))

        assert response.status_code == 200
        assert consumer.handled == []

    async def test_a_failing_handler_answers_500_and_the_retry_is_handled(
        self, consumer: Consumer
    ) -> None:
        consumer.fail.append("evt_9")
        body = envelope("evt_9")

        failed = await post(consumer, body, signed(consumer.secret, "evt_9", body))
        retried = await post(consumer, body, signed(consumer.secret, "evt_9", body))

        assert (failed.status_code, retried.status_code) == (500, 200)
        assert [e["id"] for e in consumer.handled] == ["evt_9"]  # not mistaken for a duplicate

    async def test_the_service_delivers_to_it_and_a_redelivery_is_deduped(
        self, consumer: Consumer, committed_db: CommittedDb, capsys: pytest.CaptureFixture[str]
    ) -> None:
        sm = committed_db.sessionmaker
        cipher = CredentialCipher(generate_key())
        # Real time: the consumer checks webhook-timestamp against its own clock.
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        async with transaction(sm) as session:
            agent = await make_user(session, now=clock.now())
            inbox = await make_inbox(session, members=(agent,), now=clock.now())
            endpoint, _ = await webhooks_service.create_webhook(
                session,
                WebhookIn.model_validate(
                    {
                        "url": consumer.url,
                        "events": ["conversation.assigned", "sla.breached", "note.created"],
                        "secret": consumer.secret,
                    }
                ),
                now=clock.now(),
                cipher=cipher,
                policy=webhooks_service.UrlPolicy(allow_private=True),
            )
        [conversation_id] = await conversations_in(sm, inbox.id, 1, now=clock.now())
        clock.advance(seconds=1)
        async with transaction(sm) as session:
            conversation = await session.get_one(Conversation, conversation_id)
            await assign.assign(session, conversation, agent.id, actor_id=None, now=clock.now())
            await emit(
                session,
                EventType.SLA_BREACHED,
                {"metric": "first_response", "due_at": clock.now().isoformat()},
                now=clock.now(),
                inbox_id=inbox.id,
                conversation_id=conversation_id,
            )
        sender = WebhookSender(
            sm, clock, cipher, config=SenderConfig(allow_private=True, timeout_seconds=5)
        )
        try:
            assert await sender.run_once() == 1  # the breach waits for the assignment
            assert await sender.run_once() == 1
            assigned = await delivery_of(sm, "conversation.assigned")
            async with transaction(sm) as session:
                await webhooks_service.retry_delivery(
                    session, endpoint, assigned.public_id, now=clock.now()
                )
            assert await sender.run_once() == 1
        finally:
            await sender.client.aclose()

        assert [e["type"] for e in consumer.handled] == ["conversation.assigned", "sla.breached"]
        assert consumer.handled[0]["data"]["conversation"]["id"] == conversation_id
        redelivered = await delivery_of(sm, "conversation.assigned")
        assert (redelivered.state, redelivered.attempts) == ("succeeded", 2)
        assert redelivered.last_status_code == 200  # acknowledged, not handled again
        out = capsys.readouterr().out
        assert f"conversation {conversation_id} ('Question 1') assigned to {agent.id}" in out
        assert f"SLA BREACHED on conversation {conversation_id} (first_response" in out

    async def test_as_a_process_it_verifies_handles_and_needs_its_secret(self) -> None:
        secret = signing.generate_secret()
        script = str(ROOT / "examples" / "webhook_consumer.py")
        env = {**os.environ, "WEBHOOK_SECRET": secret, "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            "--port",
            "0",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode()
            assert line.startswith("listening on http://127.0.0.1:")
            target = Consumer(url=line.split()[-1], secret=secret)
            body = envelope("evt_10")

            good = await post(target, body, signed(secret, "evt_10", body))
            bad = await post(target, body, signed(signing.generate_secret(), "evt_11", body))

            assert (good.status_code, bad.status_code) == (200, 401)
            handled = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode()
            assert handled.startswith("evt_10: conversation cnv_1")
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            await asyncio.wait_for(process.wait(), WAIT)

        without = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            env={**os.environ, "WEBHOOK_SECRET": ""},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(without.communicate(), WAIT)
        assert without.returncode == 2
        assert b"set WEBHOOK_SECRET" in err


async def delivery_of(sm: SessionMaker, event_type: str) -> WebhookDelivery:
    async with transaction(sm) as session:
        rows = await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_type == event_type)
        )
        return rows.one()


# -- triage -------------------------------------------------------------------------------------


def mail(n: int, inbox_id: str) -> bytes:
    return (
        f"From: customer{n}@customer.test\r\nTo: support@example.com\r\n"
        f"Subject: Question {n}\r\nMessage-ID: <triage{n}.{inbox_id}@customer.test>\r\n"
        f"Date: Mon, 05 Jan 2026 08:00:00 +0000\r\n\r\nHello\r\n"
    ).encode()


async def conversations_in(
    sm: SessionMaker, inbox_id: str, count: int, *, now: datetime = NOW, first: int = 1
) -> list[str]:
    """`count` new open conversations, made the way mail makes them."""
    ids = []
    for n in range(first, first + count):
        async with transaction(sm) as session:
            raw = mail(n, inbox_id)
            context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
            await store_batch(
                session, context, [Incoming(raw=raw, parsed=parse_message(raw))], now=now
            )
            ids.append(
                await session.scalar(
                    select(Conversation.id)
                    .where(Conversation.inbox_id == inbox_id)
                    .order_by(Conversation.created_at.desc(), Conversation.id.desc())
                    .limit(1)
                )
            )
    return [i for i in ids if i is not None]


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Desk:
    """The API on a real port: an admin key, an agent in inbox A, and conversations.

    Open and unassigned: a1 (waiting 3 h), a2 (1 h), a3 (2 h) in inbox A and b1 (5 h) in
    inbox B, where the agent is not a member. a4 is open but assigned, a5 resolved."""

    url: str
    admin_key: str
    agent_id: str
    inbox_a: str
    sessionmaker: SessionMaker
    ids: dict[str, str]  # "a1" → conversation id

    async def assignees(self) -> dict[str, str | None]:
        names = {v: k for k, v in self.ids.items()}
        async with transaction(self.sessionmaker) as session:
            rows = await session.execute(select(Conversation.id, Conversation.assignee_id))
            return {names[cid]: assignee for cid, assignee in rows if cid in names}

    async def count(self, model: Any, *where: Any) -> int:
        async with transaction(self.sessionmaker) as session:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


@pytest.fixture
async def desk(committed_db: CommittedDb, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Desk]:
    sm = committed_db.sessionmaker
    async with transaction(sm) as session:
        admin = await make_user(session, role="admin")
        agent = await make_user(session)
        other = await make_user(session)
        inbox_a = await make_inbox(session, members=(agent,))
        inbox_b = await make_inbox(session, members=(other,))
        admin_key = await make_key(session, admin)
    a = await conversations_in(sm, inbox_a.id, 5)
    [b1] = await conversations_in(sm, inbox_b.id, 1, first=6)
    ids = dict(zip(["a1", "a2", "a3", "a4", "a5"], a, strict=True)) | {"b1": b1}
    waiting = {"a1": 3, "a2": 1, "a3": 2, "a4": 4, "a5": 6, "b1": 5}
    async with transaction(sm) as session:
        for name, hours in waiting.items():
            conversation = await session.get_one(Conversation, ids[name])
            conversation.waiting_since = NOW - timedelta(hours=hours)
        (await session.get_one(Conversation, ids["a4"])).assignee_id = agent.id
        (await session.get_one(Conversation, ids["a5"])).status = "resolved"
    settings = Settings(database_url=committed_db.url, rate_limit_per_minute=0)
    app = create_app(settings, sessionmaker=sm, clock=FixedClock())
    port = _free_port()
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(WAIT):
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("INBOX_URL", url)
    monkeypatch.setenv("INBOX_API_KEY", admin_key)
    yield Desk(url, admin_key, agent.id, inbox_a.id, sm, ids)
    server.should_exit = True
    await asyncio.wait_for(task, WAIT)


async def run_triage(*argv: str) -> int:
    code: int = await asyncio.to_thread(triage_example.main, list(argv))
    return code


def assigned_order(out: str, desk: Desk, prefix: str = "assigned ") -> list[str]:
    names = {v: k for k, v in desk.ids.items()}
    return [
        names[line.removeprefix(prefix).split()[0]]
        for line in out.splitlines()
        if line.startswith(prefix)
    ]


ASSIGNED = Event.type == EventType.CONVERSATION_ASSIGNED.value


class TestTriage:
    async def test_assigns_an_inboxs_open_unassigned_conversations_longest_waiting_first(
        self, desk: Desk, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Two per page: the script has to follow next_cursor twice.
        code = await run_triage(desk.agent_id, "--inbox-id", desk.inbox_a, "--page-size", "2")

        assert code == 0
        out = capsys.readouterr().out
        assert assigned_order(out, desk) == ["a1", "a3", "a2"]
        assert out.splitlines()[-1] == "3 assigned, 0 failed"
        assert await desk.assignees() == {
            "a1": desk.agent_id,
            "a2": desk.agent_id,
            "a3": desk.agent_id,
            "a4": desk.agent_id,  # was already
            "a5": None,  # resolved
            "b1": None,  # another inbox
        }
        assert await desk.count(Event, ASSIGNED) == 3
        # Each POST carried an Idempotency-Key of this run and that conversation.
        keys = await desk.count(IdempotencyKey, IdempotencyKey.key.like("triage-%"))
        assert keys == 3

    async def test_a_conversation_the_agent_cannot_take_is_reported_and_the_rest_assigned(
        self, desk: Desk, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = await run_triage(desk.agent_id, "--page-size", "3")

        assert code == 1
        out = capsys.readouterr().out
        [failure] = [line for line in out.splitlines() if line.startswith("FAILED")]
        assert failure.startswith(f"FAILED {desk.ids['b1']} 'Question 6'")
        assert "422" in failure
        assert "not a member" in failure
        assert assigned_order(out, desk) == ["a1", "a3", "a2"]
        assert out.splitlines()[-1] == "3 assigned, 1 failed"
        assert (await desk.assignees())["b1"] is None

    async def test_dry_run_lists_them_in_order_and_changes_nothing(
        self, desk: Desk, capsys: pytest.CaptureFixture[str]
    ) -> None:
        before = await desk.assignees()

        code = await run_triage(desk.agent_id, "--dry-run", "--page-size", "2")

        assert code == 0
        out = capsys.readouterr().out
        assert assigned_order(out, desk, "would assign ") == ["b1", "a1", "a3", "a2"]
        assert out.splitlines()[-1] == "dry run: 4 to assign"
        assert await desk.assignees() == before
        assert await desk.count(Event, ASSIGNED) == 0
        assert await desk.count(IdempotencyKey) == 0  # not one POST

    async def test_limit_stops_after_that_many(
        self, desk: Desk, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = await run_triage(desk.agent_id, "--inbox-id", desk.inbox_a, "--limit", "2")

        assert code == 0
        assert assigned_order(capsys.readouterr().out, desk) == ["a1", "a3"]
        assert (await desk.assignees())["a2"] is None

    async def test_a_retry_with_the_same_key_is_replayed_and_a_new_run_acts_afresh(
        self, desk: Desk
    ) -> None:
        headers = {"Authorization": f"Bearer {desk.admin_key}"}
        client = httpx.Client(base_url=desk.url, headers=headers)
        a1 = desk.ids["a1"]

        def post(run_id: str) -> httpx.Response:
            response: httpx.Response = triage_example.assign(
                client, a1, desk.agent_id, run_id=run_id
            )
            return response

        try:
            first = await asyncio.to_thread(post, "run1")
            async with transaction(desk.sessionmaker) as session:  # someone unassigns it
                (await session.get_one(Conversation, a1)).assignee_id = None
            replayed = await asyncio.to_thread(post, "run1")
            assert (await desk.assignees())["a1"] is None  # the replay did nothing
            fresh = await asyncio.to_thread(post, "run2")
        finally:
            await asyncio.to_thread(client.close)

        assert (first.status_code, replayed.status_code, fresh.status_code) == (200, 200, 200)
        assert replayed.json() == first.json()
        assert (await desk.assignees())["a1"] == desk.agent_id
        assert await desk.count(Event, ASSIGNED) == 2

    async def test_without_url_and_key_it_is_a_usage_error(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("INBOX_URL", raising=False)
        monkeypatch.delenv("INBOX_API_KEY", raising=False)

        with pytest.raises(SystemExit) as exit_info:
            triage_example.main(["usr_1"])

        assert exit_info.value.code == 2
        assert "set INBOX_URL and INBOX_API_KEY" in capsys.readouterr().err
