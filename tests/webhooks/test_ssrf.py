"""The SSRF guard: each refusal happens before any socket is opened (RELIABILITY.md §6, F6)."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from inbox_service.webhooks import sender
from inbox_service.webhooks.ssrf import BlockedTarget, Target, UnresolvedHost, resolve_target


class StubResolver:
    """Answers from a table, and records every question."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.questions: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int, /) -> list[str]:
        self.questions.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


DNS = {
    "public.example.test": ["93.184.215.14"],
    "internal.example.test": ["10.0.0.5"],
    "rebind.example.test": ["93.184.215.14", "127.0.0.1"],
    "mapped.example.test": ["93.184.215.14", "::ffff:127.0.0.1"],
    "metadata.example.test": ["169.254.169.254"],
    "ec2v6.example.test": ["fd00:ec2::254"],
    "cgnat.example.test": ["100.64.0.1"],
    "garbage.example.test": ["not-an-address"],
    "empty.example.test": [],
}

# (url, a fragment of the reason); all refused with allow_private=False.
REFUSED = [
    ("http://127.0.0.1/", "127.0.0.1 is not a public address"),
    ("http://[::1]/", "::1 is not a public address"),
    ("http://[::ffff:127.0.0.1]/", "embeds 127.0.0.1"),
    ("http://[64:ff9b::7f00:1]/", "embeds 127.0.0.1"),  # Python: is_global == True
    ("http://[2002:7f00:1::]/", "embeds 127.0.0.1"),  # 6to4
    ("http://[::127.0.0.1]/", "not a public address"),  # IPv4-compatible, "global" too
    ("http://169.254.169.254/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://100.64.0.1/", "100.64.0.1 is not a public address"),  # CGNAT
    ("http://0.0.0.0/", "0.0.0.0 is not a public address"),
    ("http://224.0.0.1/", "not a public address"),  # multicast, "global" for Python
    ("http://2130706433/", "127.0.0.1 is not a public address"),
    ("http://0x7f000001/", "127.0.0.1 is not a public address"),
    ("http://0177.0.0.1/", "invalid URL"),  # httpx refuses leading zeros in dotted quads
    ("http://127.1/", "127.0.0.1 is not a public address"),
    ("http://1.2.3.4.5/", "neither a host name nor an IPv4 address"),
    ("http://localhost/", "local machine"),
    ("http://localhost./", "local machine"),
    ("http://api.localhost/", "local machine"),
    ("http://metadata.google.internal/", "metadata"),
    ("http://metadata.google.internal./", "metadata"),
    ("file:///etc/passwd", "scheme"),
    ("ftp://x", "scheme"),
    ("gopher://public.example.test/", "scheme"),
    ("http://user:pw@public.example.test/", "credentials"),
    ("http://public.example.test\\@127.0.0.1/", "credentials"),
    ("http:///path", "no host"),
    ("http://public.example.test:99999/", "invalid port"),
    ("http://public.example.test:0/", "invalid port"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://internal.example.test/", "internal.example.test resolves to 10.0.0.5"),
    ("http://rebind.example.test/", "resolves to 127.0.0.1"),  # every address must be public
    ("http://mapped.example.test/", "embeds 127.0.0.1"),
    ("http://metadata.example.test/", "metadata"),
    ("http://ec2v6.example.test/", "metadata"),
    ("http://cgnat.example.test/", "not a public address"),
    ("http://garbage.example.test/", "non-address"),
]


class TestResolveTarget:
    @pytest.mark.parametrize(("url", "reason"), REFUSED)
    async def test_refused_without_a_connection(
        self, url: str, reason: str, connect_log: list[tuple[str, Any]]
    ) -> None:
        with pytest.raises(BlockedTarget, match=reason.replace(".", r"\.")):
            await resolve_target(url, allow_private=False, resolver=StubResolver(DNS))
        assert connect_log == []

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1/", "http://2130706433/", "http://0x7f000001/", "http://[::1]/"]
    )
    async def test_ip_literals_are_never_looked_up(self, url: str) -> None:
        resolver = StubResolver(DNS)
        with pytest.raises(BlockedTarget):
            await resolve_target(url, allow_private=False, resolver=resolver)
        assert resolver.questions == []

    async def test_public_host_is_pinned_to_its_address(
        self, connect_log: list[tuple[str, Any]]
    ) -> None:
        resolver = StubResolver(DNS)
        target = await resolve_target(
            "https://public.example.test/hooks?x=1", allow_private=False, resolver=resolver
        )
        assert target == Target(
            url="https://public.example.test/hooks?x=1",
            host="public.example.test",
            port=443,
            scheme="https",
            address="93.184.215.14",
        )
        assert resolver.questions == [("public.example.test", 443)]
        assert connect_log == []

    async def test_nat64_of_a_public_address_is_allowed(self) -> None:
        target = await resolve_target("http://[64:ff9b::808:808]:8080/", allow_private=False)
        assert (target.address, target.port) == ("64:ff9b::808:808", 8080)

    async def test_unknown_host_is_an_unresolved_host(self) -> None:
        for host in ("nowhere.example.test", "empty.example.test"):
            with pytest.raises(UnresolvedHost, match="does not resolve"):
                await resolve_target(
                    f"https://{host}/", allow_private=False, resolver=StubResolver(DNS)
                )

    async def test_allow_private_admits_loopback_and_private_names(self) -> None:
        resolver = StubResolver({"localhost": ["127.0.0.1"], **DNS})
        for url, address in [
            ("http://127.0.0.1:8000/", "127.0.0.1"),
            ("http://localhost:8000/", "127.0.0.1"),
            ("http://internal.example.test/", "10.0.0.5"),
            ("http://[::1]/", "::1"),
        ]:
            target = await resolve_target(url, allow_private=True, resolver=resolver)
            assert target.address == address

    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254/",
            "http://metadata.google.internal/",
            "http://metadata.example.test/",
            "ftp://127.0.0.1/",
            "http://user:pw@127.0.0.1/",
        ],
    )
    async def test_allow_private_still_refuses_metadata_and_bad_urls(self, url: str) -> None:
        with pytest.raises(BlockedTarget):
            await resolve_target(url, allow_private=True, resolver=StubResolver(DNS))


class TestPostRefusals:
    """The sender applies the same guard at every attempt and reports, rather than raises."""

    @pytest.mark.parametrize(("url", "reason"), REFUSED)
    async def test_blocked_attempt_sends_nothing(
        self,
        url: str,
        reason: str,
        client: httpx.AsyncClient,
        connect_log: list[tuple[str, Any]],
    ) -> None:
        result = await sender.post(
            client, url, b"{}", {}, allow_private=False, resolver=StubResolver(DNS)
        )
        assert result.status_code is None
        assert not result.ok
        assert result.error is not None
        assert result.error.startswith("blocked: ")
        assert reason in result.error
        assert connect_log == []

    async def test_the_connection_log_does_see_a_real_attempt(
        self, client: httpx.AsyncClient, connect_log: list[tuple[str, Any]]
    ) -> None:
        # Control for the tests above: an allowed URL does reach the (refusing) socket layer,
        # and with the pinned address, not the name.
        result = await sender.post(
            client,
            "http://public.example.test/",
            b"{}",
            {},
            allow_private=False,
            resolver=StubResolver(DNS),
        )
        assert result.error is not None
        assert result.status_code is None
        assert connect_log
        assert "93.184.215.14" in repr(connect_log[0])
        assert "public.example.test" not in repr(connect_log)

    async def test_dns_failure_is_reported_as_dns(self, client: httpx.AsyncClient) -> None:
        result = await sender.post(
            client,
            "https://nowhere.example.test/",
            b"{}",
            {},
            allow_private=False,
            resolver=StubResolver(DNS),
        )
        assert result.error is not None
        assert result.error.startswith("dns: nowhere.example.test does not resolve")
