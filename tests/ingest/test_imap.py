"""The IMAP adapter against a real Dovecot (tests/support/dovecot.py), with a fault proxy in
between where the network has to misbehave. Nothing is mocked except the DNS resolver.

Every test runs under `bounded(...)`, so a hang fails the test instead of the run. Every
test gets a fresh user, so tests share one server but never a mailbox.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest

from inbox_service.ingest import imap
from inbox_service.ingest.imap import ImapError, ImapSession, ImapSettings
from tests.support.dovecot import Dovecot, free_port
from tests.support.faultproxy import FaultProxy

P = ParamSpec("P")
R = TypeVar("R")

SHORT = 1.0  # the adapter timeout where a test waits for one to expire


def bounded(
    seconds: float = 15.0,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Fail an async test that runs longer than `seconds` instead of hanging the run."""

    def wrap(test: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(test)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            async with asyncio.timeout(seconds):
                return await test(*args, **kwargs)

        return run

    return wrap


@dataclass
class Mailbox:
    """A fresh user on the session's Dovecot, and settings that reach it directly."""

    server: Dovecot
    user: str
    settings: ImapSettings

    def append(self, raw: bytes, flags: tuple[str, ...] = (), folder: str = "INBOX") -> int:
        return self.server.append(self.user, folder, raw, flags)

    def via(self, proxy: FaultProxy, **changes: Any) -> ImapSettings:
        return replace(self.settings, host=proxy.host, port=proxy.port, **changes)


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Mailbox:
    user, password = f"u{secrets.token_hex(6)}", secrets.token_urlsafe(12)
    dovecot.add_user(user, password)
    settings = ImapSettings(dovecot.host, dovecot.port, "none", user, password, timeout=10.0)
    return Mailbox(dovecot, user, settings)


@pytest.fixture
async def proxy(dovecot: Dovecot) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(dovecot.port) as p:
        yield p


def message(n: int, body: bytes = b"hello\r\n") -> bytes:
    head = f"From: a@example.test\r\nSubject: message {n}\r\nMessage-ID: <m{n}@test>\r\n"
    return head.encode() + b"\r\n" + body


# -- opening a session ---------------------------------------------------------------------------


class TestOpen:
    @bounded()
    async def test_login_reads_capabilities(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            assert {"IMAP4REV1", "IDLE", "UIDPLUS", "CONDSTORE"} <= session.capabilities

    @bounded()
    async def test_wrong_password_is_auth(self, mailbox: Mailbox) -> None:
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(replace(mailbox.settings, password="wrong"))
        assert raised.value.reason == "auth"
        assert raised.value.message.startswith(f"login failed for user {mailbox.user}: ")
        assert "AUTHENTICATIONFAILED" in raised.value.message

    @bounded()
    async def test_password_is_quoted(self, mailbox: Mailbox, dovecot: Dovecot) -> None:
        dovecot.add_user(f"{mailbox.user}q", 'pä"ss\\wörd ✓')
        settings = replace(mailbox.settings, username=f"{mailbox.user}q", password='pä"ss\\wörd ✓')
        async with await ImapSession.open(settings) as session:
            assert "IDLE" in session.capabilities

    @bounded()
    async def test_closed_port_is_refused(self, mailbox: Mailbox) -> None:
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(replace(mailbox.settings, port=free_port()))
        assert raised.value.reason == "refused"

    @bounded()
    async def test_unresolvable_host_is_dns(
        self, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        looked_up: list[object] = []

        def no_such_host(host: object, *args: object, **kwargs: object) -> Any:
            looked_up.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(replace(mailbox.settings, host="imap.example.invalid"))
        assert raised.value.reason == "dns"
        assert raised.value.message == "could not resolve imap.example.invalid"
        assert looked_up == ["imap.example.invalid"]

    @bounded()
    async def test_silent_server_times_out(self, mailbox: Mailbox, proxy: FaultProxy) -> None:
        proxy.blackhole()  # TCP connects, the greeting never comes
        started = time.monotonic()
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(mailbox.via(proxy, timeout=SHORT))
        assert raised.value.reason == "timeout"
        assert time.monotonic() - started < SHORT + 1.5

    @bounded()
    async def test_missing_credentials_is_auth(self, mailbox: Mailbox) -> None:
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(replace(mailbox.settings, password=None))
        assert raised.value.reason == "auth"

    @bounded()
    async def test_xoauth2_not_offered_is_unsupported(self, mailbox: Mailbox) -> None:
        # This Dovecot has no oauth2 passdb, so only the refusal can be tested here.
        settings = replace(mailbox.settings, password=None, oauth2_token="token")
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(settings)
        assert raised.value.reason == "unsupported"


class TestTls:
    @bounded()
    async def test_ssl_with_the_test_ca(self, mailbox: Mailbox, dovecot: Dovecot) -> None:
        settings = replace(
            mailbox.settings,
            port=dovecot.imaps_port,
            security="ssl",
            ssl_context=dovecot.client_ssl_context(),
        )
        async with await ImapSession.open(settings) as session:
            assert (await session.examine("INBOX")).exists == 0

    @bounded()
    async def test_ssl_with_an_untrusted_certificate_is_tls(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        settings = replace(mailbox.settings, port=dovecot.imaps_port, security="ssl")
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(settings)  # the system CAs don't know the test CA
        assert raised.value.reason == "tls"
        assert "not trusted" in raised.value.message

    @bounded()
    async def test_ssl_to_a_plain_text_port_is_tls(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        settings = replace(
            mailbox.settings, security="ssl", ssl_context=dovecot.client_ssl_context()
        )
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(settings)
        assert raised.value.reason == "tls"

    @bounded()
    async def test_starttls_with_the_test_ca(self, mailbox: Mailbox, dovecot: Dovecot) -> None:
        settings = replace(
            mailbox.settings, security="starttls", ssl_context=dovecot.client_ssl_context()
        )
        async with await ImapSession.open(settings) as session:
            # capabilities are read again after the handshake: STARTTLS is gone
            assert "STARTTLS" not in session.capabilities
            assert "IDLE" in session.capabilities
            assert (await session.examine("INBOX")).uidvalidity > 0
        # Dovecot's own word that this user's login went over TLS
        logins = [line for line in dovecot.log().splitlines() if f"user=<{mailbox.user}>" in line]
        assert logins
        assert all(", TLS, " in line for line in logins if "Login:" in line)

    @bounded()
    async def test_starttls_with_an_untrusted_certificate_is_tls(self, mailbox: Mailbox) -> None:
        with pytest.raises(ImapError) as raised:
            await ImapSession.open(replace(mailbox.settings, security="starttls"))
        assert raised.value.reason == "tls"

    @bounded(30)
    async def test_starttls_never_falls_back_to_plain_text(self) -> None:
        with tempfile.TemporaryDirectory(prefix="dovecot-") as root:
            plain = Dovecot(Path(root), tls=False)
            await asyncio.to_thread(plain.start)
            try:
                plain.add_user("bob", "secret")
                settings = ImapSettings(
                    plain.host, plain.port, "starttls", "bob", "secret", timeout=5.0
                )
                with pytest.raises(ImapError) as raised:
                    await ImapSession.open(settings)
                assert raised.value.reason == "tls"
                assert "does not offer STARTTLS" in raised.value.message
                assert "Login: user=<bob>" not in plain.log()
            finally:
                await asyncio.to_thread(plain.stop)


# -- reading a folder ------------------------------------------------------------------------------


class TestExamine:
    @bounded()
    async def test_reports_the_folder_state(self, mailbox: Mailbox, dovecot: Dovecot) -> None:
        for n in range(3):
            mailbox.append(message(n))
        async with await ImapSession.open(mailbox.settings) as session:
            state = await session.examine("INBOX")
        expected = dovecot.status(mailbox.user)
        assert state.uidvalidity == expected["uidvalidity"]
        assert state.uidnext == expected["uidnext"] == 4
        assert state.highestmodseq == expected["highestmodseq"]
        assert state.exists == 3

    @bounded()
    async def test_sees_a_forced_uidvalidity_change(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        mailbox.append(message(1))
        dovecot.set_uidvalidity(mailbox.user, "INBOX", 42)
        async with await ImapSession.open(mailbox.settings) as session:
            assert (await session.examine("INBOX")).uidvalidity == 42

    @bounded()
    async def test_missing_folder_keeps_the_session_usable(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            with pytest.raises(ImapError) as raised:
                await session.examine("Nope")
            assert raised.value.reason == "folder_missing"
            assert "Nope" in raised.value.message
            with pytest.raises(ImapError, match="examine"):
                await session.uids_after(0)  # nothing is open now
            assert (await session.examine("INBOX")).exists == 0

    @bounded()
    async def test_folder_names_are_quoted_and_utf7_encoded(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        name = 'Entwürfe & "Co" ✉'
        dovecot.doveadm("mailbox", "create", "-u", mailbox.user, name)
        mailbox.append(message(1), folder="INBOX")
        async with await ImapSession.open(mailbox.settings) as session:
            state = await session.examine(name)
        assert state.exists == 0
        assert state.uidvalidity == dovecot.status(mailbox.user, name)["uidvalidity"]

    @bounded()
    async def test_deleted_and_recreated_folder_gets_a_new_uidvalidity(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        dovecot.create_folder(mailbox.user, "Test")
        first_uid = mailbox.append(message(1), folder="Test")
        async with await ImapSession.open(mailbox.settings) as session:
            before = await session.examine("Test")
            await session.examine("INBOX")
            dovecot.delete_folder(mailbox.user, "Test")
            dovecot.create_folder(mailbox.user, "Test")
            assert mailbox.append(message(2), folder="Test") == first_uid  # UID 1 again (T1.5)
            after = await session.examine("Test")
        assert after.uidvalidity != before.uidvalidity


class TestUidsAfter:
    @bounded()
    async def test_returns_uids_above_the_watermark(self, mailbox: Mailbox) -> None:
        uids = [mailbox.append(message(n)) for n in range(4)]
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            assert await session.uids_after(0) == uids
            assert await session.uids_after(uids[1]) == uids[2:]

    @bounded()
    async def test_watermark_at_the_last_uid_returns_nothing(self, mailbox: Mailbox) -> None:
        # UID SEARCH UID 4:* matches UID 3 when 3 is the highest (RFC 3501 §6.4.8, F4)
        last = [mailbox.append(message(n)) for n in range(3)][-1]
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            for _ in range(3):
                assert await session.uids_after(last) == []
            assert await session.uids_after(last + 100) == []

    @bounded()
    async def test_empty_folder(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            assert await session.uids_after(0) == []


# -- fetching -------------------------------------------------------------------------------------


class TestFetch:
    @bounded()
    async def test_returns_exact_bytes_and_leaves_flags_alone(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        raws = [
            message(1),
            # protocol-looking lines and 8-bit text inside a body must stay body
            message(2, "Grüße\r\n{12}\r\n)\r\n* 3 EXISTS\r\nA1 OK done\r\n".encode()),
            message(3, b""),  # headers only
            message(4, b"x" * 70 + b"\r\n" + b"\r\n" * 3),
        ]
        uids = [mailbox.append(raw) for raw in raws]
        flagged = mailbox.append(message(5), flags=("\\Flagged", "$Label1"))
        before = dovecot.flags(mailbox.user)
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            fetched = await session.fetch([*uids, flagged])
        assert [m.raw for m in fetched[:4]] == raws
        assert [m.uid for m in fetched] == [*uids, flagged]
        assert all(m.size == len(m.raw) for m in fetched)
        assert {"\\Flagged", "$Label1"} <= set(fetched[4].flags)
        after = dovecot.flags(mailbox.user)
        assert after == before  # in particular: no \Seen (F5)
        assert not any("\\Seen" in flags for flags in after.values())

    @bounded()
    async def test_large_message(self, mailbox: Mailbox) -> None:
        body = b"".join(b"%07d " % i + b"z" * 90 + b"\r\n" for i in range(20_000))  # ~2 MB
        raw = message(1, body)
        uid = mailbox.append(raw)
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            [fetched] = await session.fetch([uid])
        assert fetched.raw == raw

    @bounded(30)
    async def test_many_small_messages_in_batches(self, mailbox: Mailbox, dovecot: Dovecot) -> None:
        count = imap.FETCH_BATCH * 2 + 17
        raws = [message(n, b"") for n in range(count)]
        with dovecot.imap(mailbox.user) as client:
            for raw in raws:
                client.append("INBOX", None, None, raw)
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            uids = await session.uids_after(0)
            fetched = await session.fetch(uids)
            ids = await session.message_ids()
        assert [m.raw for m in fetched] == raws
        assert len(ids) == count

    @bounded()
    async def test_uids_gone_from_the_server_are_left_out(self, mailbox: Mailbox) -> None:
        uid = mailbox.append(message(1))
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            assert [m.uid for m in await session.fetch([uid, uid + 5, 999])] == [uid]
            assert await session.fetch([]) == []

    @bounded()
    async def test_connection_cut_inside_a_literal_is_an_error(
        self, mailbox: Mailbox, proxy: FaultProxy
    ) -> None:
        raw = message(1, b"y" * 300_000)
        uid = mailbox.append(raw)
        async with await ImapSession.open(mailbox.via(proxy)) as session:
            await session.examine("INBOX")
            proxy.cut_after(50_000)
            with pytest.raises(ImapError) as raised:
                await session.fetch([uid])
            assert raised.value.reason == "protocol"
            assert "closed the connection during UID FETCH" in raised.value.message
            with pytest.raises(ImapError, match="open a new one"):
                await session.uids_after(0)  # the session is finished
        # the next run completes (T1.10)
        async with await ImapSession.open(mailbox.via(proxy)) as session:
            await session.examine("INBOX")
            assert [m.raw for m in await session.fetch([uid])] == [raw]

    @bounded()
    async def test_silence_during_a_fetch_times_out(
        self, mailbox: Mailbox, proxy: FaultProxy
    ) -> None:
        uid = mailbox.append(message(1))
        async with await ImapSession.open(mailbox.via(proxy, timeout=SHORT)) as session:
            await session.examine("INBOX")
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(ImapError) as raised:
                await session.fetch([uid])
            assert raised.value.reason == "timeout"
            assert time.monotonic() - started < SHORT + 1.5

    @bounded()
    async def test_slow_network_still_delivers(self, mailbox: Mailbox, proxy: FaultProxy) -> None:
        raw = message(1, b"w" * 100_000)
        uid = mailbox.append(raw)
        proxy.latency = 0.05
        async with await ImapSession.open(mailbox.via(proxy)) as session:
            await session.examine("INBOX")
            assert [m.raw for m in await session.fetch([uid])] == [raw]


class TestMessageIds:
    @bounded()
    async def test_maps_uids_to_message_ids(self, mailbox: Mailbox) -> None:
        plain = mailbox.append(message(1))
        folded = mailbox.append(b"Subject: x\r\nMessage-ID:\r\n <folded@test>\r\n\r\nbody\r\n")
        missing = mailbox.append(b"Subject: no id\r\n\r\nbody\r\n")
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            assert await session.message_ids() == {plain: "<m1@test>", folded: "<folded@test>"}
            assert await session.message_ids([folded, missing]) == {folded: "<folded@test>"}


# -- waiting for mail -----------------------------------------------------------------------------


class TestWaitForChange:
    @bounded()
    async def test_new_mail_from_another_connection(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            waiting = asyncio.create_task(session.wait_for_change(10))
            await asyncio.sleep(0.3)  # IDLE is running
            started = time.monotonic()
            await asyncio.to_thread(mailbox.append, message(1))
            assert await waiting is True
            assert time.monotonic() - started < 3
            assert await session.uids_after(0) == [1]  # DONE was sent: the session works

    @bounded()
    async def test_quiet_folder_times_out(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            started = time.monotonic()
            assert await session.wait_for_change(SHORT) is False
            assert SHORT <= time.monotonic() - started < SHORT + 1
            assert await session.wait_for_change(0.2) is False  # and again
            assert await session.uids_after(0) == []

    @bounded()
    async def test_mail_that_arrived_before_idle_is_not_missed(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            assert await session.uids_after(0) == []
            uid = mailbox.append(message(1))  # between the sync and the wait
            started = time.monotonic()
            assert await session.wait_for_change(10) is True
            assert time.monotonic() - started < 1
            assert await session.uids_after(0) == [uid]

    @bounded()
    async def test_mail_that_arrived_before_a_second_examine_is_not_missed(
        self, mailbox: Mailbox
    ) -> None:
        # the runner's order: sync (examine, uids_after, fetch), examine again, then wait;
        # the second EXAMINE counts the new message, so IDLE would never announce it
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            assert await session.uids_after(0) == []
            uid = mailbox.append(message(1))
            await session.examine("INBOX")
            started = time.monotonic()
            assert await session.wait_for_change(10) is True
            assert time.monotonic() - started < 1
            assert await session.uids_after(0) == [uid]
            assert await session.wait_for_change(0.3) is False  # and no busy loop after

    @bounded()
    async def test_server_hanging_up_during_idle_fails_fast(
        self, mailbox: Mailbox, dovecot: Dovecot
    ) -> None:
        # aioimaplib issue #110: a BYE during IDLE must not hang the caller
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            waiting = asyncio.create_task(session.wait_for_change(30))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await asyncio.to_thread(dovecot.doveadm, "kick", mailbox.user)
            with pytest.raises(ImapError) as raised:
                await waiting
            assert raised.value.reason == "protocol"
            assert time.monotonic() - started < 3

    @bounded()
    async def test_cancelled_wait_finishes_the_session(self, mailbox: Mailbox) -> None:
        async with await ImapSession.open(mailbox.settings) as session:
            await session.examine("INBOX")
            waiting = asyncio.create_task(session.wait_for_change(30))
            await asyncio.sleep(0.3)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            with pytest.raises(ImapError, match="open a new one"):
                await session.uids_after(0)  # the server may still be idling on that socket

    @bounded()
    async def test_silent_server_during_idle_start_times_out(
        self, mailbox: Mailbox, proxy: FaultProxy
    ) -> None:
        async with await ImapSession.open(mailbox.via(proxy, timeout=SHORT)) as session:
            await session.examine("INBOX")
            proxy.blackhole()
            with pytest.raises(ImapError) as raised:
                await session.wait_for_change(30)
            assert raised.value.reason == "timeout"


# -- closing and the one-call check -------------------------------------------------------------


class TestClose:
    @bounded()
    async def test_close_twice_and_use_after_close(self, mailbox: Mailbox) -> None:
        session = await ImapSession.open(mailbox.settings)
        await session.examine("INBOX")
        await session.close()
        await session.close()
        with pytest.raises(ImapError, match="closed"):
            await session.uids_after(0)

    @bounded()
    async def test_close_on_a_dead_network_is_bounded(
        self, mailbox: Mailbox, proxy: FaultProxy
    ) -> None:
        session = await ImapSession.open(mailbox.via(proxy, timeout=SHORT))
        proxy.blackhole()
        started = time.monotonic()
        await session.close()
        assert time.monotonic() - started < 2 * SHORT + 0.5


class TestTestConnection:
    @bounded()
    async def test_examines_every_folder(self, mailbox: Mailbox, dovecot: Dovecot) -> None:
        dovecot.create_folder(mailbox.user, "Archive")
        mailbox.append(message(1))
        states = await imap.test_connection(mailbox.settings, ["INBOX", "Archive"])
        assert [s.exists for s in states] == [1, 0]

    @bounded()
    async def test_missing_folder(self, mailbox: Mailbox) -> None:
        with pytest.raises(ImapError) as raised:
            await imap.test_connection(mailbox.settings, ["INBOX", "Missing"])
        assert raised.value.reason == "folder_missing"
