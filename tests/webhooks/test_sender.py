"""One delivery attempt against a real receiver on the loopback interface."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from inbox_service.webhooks import sender, signing
from inbox_service.webhooks.ssrf import resolve_target
from tests.webhooks.receiver import Receiver, Reply, redirect, tls_contexts
from tests.webhooks.test_ssrf import StubResolver

BODY = json.dumps({"type": "conversation.assigned", "data": {"id": "cnv_1"}}).encode()


async def post(client: httpx.AsyncClient, url: str, **kwargs: object) -> sender.AttemptResult:
    kwargs.setdefault("allow_private", True)
    return await sender.post(client, url, BODY, {}, **kwargs)  # type: ignore[arg-type]


class TestPost:
    async def test_2xx_is_ok(self, client: httpx.AsyncClient, receiver: Receiver) -> None:
        receiver.respond(Reply(202, b'{"received": true}'))
        result = await post(client, receiver.url())
        assert result.ok
        assert (result.status_code, result.error) == (202, None)
        assert result.response_excerpt == '{"received": true}'
        assert result.retry_after is None
        assert 0 <= result.latency_ms < 5000
        [request] = receiver.requests
        assert (request.method, request.target, request.body) == ("POST", "/hook", BODY)
        assert request.headers["content-type"] == "application/json"

    async def test_signed_request_verifies_at_the_receiver(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        old, new = signing.generate_secret(), signing.generate_secret()
        headers = signing.headers([new, old], "evt_1", int(time.time()), BODY)
        result = await sender.post(client, receiver.url(), BODY, headers, allow_private=True)
        assert result.ok
        [request] = receiver.requests
        for secret in (old, new):
            assert Webhook(secret).verify(request.body, request.headers)["data"] == {"id": "cnv_1"}

    async def test_500_is_a_failure_with_its_status(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.respond(Reply(500, b"boom \xff\x00"))
        result = await post(client, receiver.url())
        assert not result.ok
        assert (result.status_code, result.error) == (500, None)
        assert result.response_excerpt == "boom \ufffd\ufffd"  # storable: no NUL, valid UTF-8

    async def test_redirect_is_not_followed(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.respond(redirect(receiver.url("/elsewhere")))
        result = await post(client, receiver.url())
        assert not result.ok
        assert result.status_code == 302
        assert result.error is not None
        assert "redirect" in result.error
        assert [r.target for r in receiver.requests] == ["/hook"]

    async def test_slow_receiver_times_out(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.respond(Reply(delay=30))
        started = time.monotonic()
        result = await post(client, receiver.url(), timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert (result.status_code, result.error) == (None, "timeout")
        assert not result.ok
        assert 400 <= result.latency_ms < 1500

    async def test_huge_response_is_read_only_in_part(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        size = 10 * 1024 * 1024
        receiver.respond(Reply(200, stream=size))
        started = time.monotonic()
        result = await post(client, receiver.url(), timeout=5)
        assert time.monotonic() - started < 2
        assert result.ok
        assert result.response_excerpt == "x" * 1024
        await receiver.idle()
        [request] = receiver.requests
        assert request.aborted  # the client hung up mid-body
        assert request.bytes_sent < size // 4

    @pytest.mark.parametrize(
        ("headers", "seconds"),
        [
            ({"retry-after": "120"}, 120.0),
            (
                {
                    "date": "Wed, 21 Oct 2015 07:28:00 GMT",
                    "retry-after": "Wed, 21 Oct 2015 07:30:00 GMT",
                },
                120.0,
            ),
            ({"retry-after": "soon"}, None),
            ({"retry-after": "-5"}, None),
        ],
    )
    async def test_retry_after_is_parsed(
        self,
        client: httpx.AsyncClient,
        receiver: Receiver,
        headers: dict[str, str],
        seconds: float | None,
    ) -> None:
        receiver.respond(Reply(429, b"slow down", headers))
        result = await post(client, receiver.url())
        assert (result.status_code, result.retry_after) == (429, seconds)

    async def test_retry_after_date_without_a_server_clock_uses_ours(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        receiver.respond(Reply(503, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
        result = await post(client, receiver.url())
        assert result.retry_after == 0.0  # in the past: retry now

    async def test_connection_refused(self, client: httpx.AsyncClient) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        result = await post(client, f"http://127.0.0.1:{port}/hook")
        assert (result.status_code, result.error) == (None, "connection refused")


class TestPinning:
    async def test_request_goes_to_the_pinned_ip_with_the_original_host(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        resolver = StubResolver({"hooks.example.test": ["127.0.0.1"]})
        url = receiver.url("/hook?x=1&y=%20", host="hooks.example.test")
        result = await post(client, url, resolver=resolver)
        assert result.ok
        [request] = receiver.requests
        assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
        assert request.target == "/hook?x=1&y=%20"
        assert resolver.questions == [("hooks.example.test", receiver.port)]

    async def test_ipv6_address_is_bracketed(self, client: httpx.AsyncClient) -> None:
        receiver = Receiver("::1")
        await receiver.start()
        try:
            resolver = StubResolver({"hooks.example.test": ["::1", "127.0.0.1"]})
            by_name = await post(client, receiver.url(host="hooks.example.test"), resolver=resolver)
            literal = await post(client, receiver.url())
        finally:
            await receiver.close()
        assert by_name.ok
        assert literal.ok
        assert [r.headers["host"] for r in receiver.requests] == [
            f"hooks.example.test:{receiver.port}",
            f"[::1]:{receiver.port}",
        ]

    async def test_every_attempt_resolves_again(
        self, client: httpx.AsyncClient, receiver: Receiver
    ) -> None:
        # DNS rebinding: public when the endpoint is created, loopback at delivery time.
        resolver = StubResolver({"hooks.example.test": ["93.184.215.14"]})
        url = receiver.url(host="hooks.example.test")
        target = await resolve_target(url, allow_private=False, resolver=resolver)
        assert target.address == "93.184.215.14"
        resolver.answers["hooks.example.test"] = ["127.0.0.1"]
        result = await post(client, url, resolver=resolver, allow_private=False)
        assert result.error is not None
        assert result.error.startswith("blocked: hooks.example.test resolves to 127.0.0.1")
        assert receiver.connections == 0


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, httpx.AsyncClient]]:
    """A TLS receiver whose certificate names only hooks.example.test, and a client trusting it.

    The client keeps connections alive (httpx's default), so only the sender can stop a
    connection verified for one name from carrying a request for another.
    """
    server_context, client_context = tls_contexts(tmp_path, "hooks.example.test")
    receiver = Receiver(ssl=server_context)
    await receiver.start()
    async with httpx.AsyncClient(verify=client_context, trust_env=False) as client:
        yield receiver, client
    await receiver.close()


class TestTls:
    RESOLVER = StubResolver(
        {"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}
    )

    async def test_sni_and_certificate_use_the_host_name(
        self, tls_receiver: tuple[Receiver, httpx.AsyncClient]
    ) -> None:
        receiver, client = tls_receiver
        result = await post(client, receiver.url(host="hooks.example.test"), resolver=self.RESOLVER)
        assert result.ok, result.error
        [request] = receiver.requests
        assert request.sni == "hooks.example.test"
        assert request.headers["host"] == f"hooks.example.test:{receiver.port}"

    async def test_certificate_for_another_name_is_refused(
        self, tls_receiver: tuple[Receiver, httpx.AsyncClient]
    ) -> None:
        receiver, client = tls_receiver
        result = await post(client, receiver.url(host="other.example.test"), resolver=self.RESOLVER)
        assert result.status_code is None
        assert result.error is not None
        assert result.error.startswith("tls: ")
        assert "other.example.test" in result.error
        assert receiver.requests == []

    async def test_a_connection_verified_for_one_name_is_not_reused_for_another(
        self, tls_receiver: tuple[Receiver, httpx.AsyncClient]
    ) -> None:
        receiver, client = tls_receiver
        first = await post(client, receiver.url(host="hooks.example.test"), resolver=self.RESOLVER)
        second = await post(client, receiver.url(host="other.example.test"), resolver=self.RESOLVER)
        third = await post(client, receiver.url(host="hooks.example.test"), resolver=self.RESOLVER)
        assert first.ok
        assert second.error is not None
        assert second.error.startswith("tls: ")  # a fresh handshake, checked for its own name
        assert third.ok
        [one, three] = receiver.requests
        assert one.connection != three.connection
