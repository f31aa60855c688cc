"""The IMAP client: the one module that imports aioimaplib (GPL-3.0-only, RELIABILITY F1).

The rest of the service sees `ImapSession`, three frozen dataclasses and one exception. An
`ImapError` carries a `reason` a caller can act on, and a `message` a human can read:

    ImapError.reason
    ├── dns, refused, tls, timeout   could not reach the server: retry with backoff
    ├── auth                         credentials refused: tell a human, don't hammer
    ├── folder_missing               EXAMINE failed (missing folder, no permission)
    ├── protocol                     BYE, dropped connection, a refused or malformed response
    └── unsupported                  the server lacks what was asked (IDLE, XOAUTH2)

What this module guarantees:

* It only reads, but for `append` (the Sent copy of a reply). Folders are opened with
  EXAMINE, never SELECT, and bodies are fetched with BODY.PEEK[], never BODY[] or RFC822,
  which would set \\Seen (F5).
* Every network step is bounded by `ImapSettings.timeout`. A FETCH is bounded by inactivity
  (no bytes for `timeout` seconds) so large messages can still arrive. A dropped connection
  fails the step at once; aioimaplib would leave the command pending (its issue #110 is one
  case of that).
* After a connection-level error (timeout, dropped connection, garbled stream) the session is
  finished: the socket is closed and later calls raise `ImapError("protocol")`. Open a new one.
  A refused command (NO), such as EXAMINE on a missing folder, leaves the session usable.
* `uids_after` drops UIDs at or below the watermark (the `n:*` quirk, F4), and `fetch` checks
  every body against its RFC822.SIZE, so a short literal is an error and never a message.
* TLS: `ssl` is implicit TLS (993); `starttls` upgrades a plain connection with aioimaplib's
  transport and `loop.start_tls()`, never logs in without TLS when the server does not offer
  it, and gives up if the server sends anything between its STARTTLS OK and the handshake
  (response injection). Capabilities are read again after TLS and after login.
* One session belongs to one task; do not run its methods concurrently.

Without the IDLE capability, `wait_for_change` raises `ImapError("unsupported")` and the caller
polls instead: waiting silently would hide that the server cannot push.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import aioimaplib

Security = Literal["ssl", "starttls", "none"]
Reason = Literal[
    "dns", "refused", "tls", "auth", "timeout", "folder_missing", "protocol", "unsupported"
]

FETCH_BATCH = 100
"""UIDs per UID FETCH command. aioimaplib parses a read buffer recursively, a few frames per
message, so a bounded batch also keeps it clear of the recursion limit."""

MAX_UID = 2**32 - 1
_CLOSE_TIMEOUT = 5.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: Security
    username: str
    password: str | None = None
    oauth2_token: str | None = None
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None  # None: the system's trusted CAs


class ImapError(Exception):
    """An IMAP failure; `reason` classifies it, `message` explains it in one sentence."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"ImapError({self.reason!r}, {self.message!r})"


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None  # None: no CONDSTORE, or the folder has NOMODSEQ
    exists: int


@dataclass(frozen=True)
class FetchedMessage:
    uid: int
    size: int
    raw: bytes
    flags: tuple[str, ...]


class ImapSession:
    """One logged-in IMAP connection. Create it with `await ImapSession.open(settings)`."""

    capabilities: frozenset[str]

    def __init__(
        self,
        settings: ImapSettings,
        protocol: _Protocol,
        transport: asyncio.Transport,
        lost: asyncio.Future[None],
    ) -> None:
        self._settings = settings
        self._protocol = protocol
        self._transport = transport
        self._lost = lost
        self._loop = asyncio.get_running_loop()
        self._where = f"{settings.host}:{settings.port}"
        self._folder: str | None = None
        self._uidvalidity: int | None = None
        self._seen_uid: int | None = None  # the highest UID uids_after() has reported
        self._failed: str | None = None
        self._closed = False
        # cancelled tasks still unwinding; close() waits for them so none is destroyed pending
        self._orphans: set[asyncio.Future[Any]] = set()
        self.capabilities = frozenset()

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    async def open(cls, settings: ImapSettings) -> ImapSession:
        """Connect, negotiate TLS as configured, and log in (LOGIN, or XOAUTH2 with a token)."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[None] = loop.create_future()

        def on_lost(exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

        protocol = _Protocol(loop, on_lost)
        context = _context(settings) if settings.security == "ssl" else None
        try:
            async with asyncio.timeout(settings.timeout):
                transport, _ = await loop.create_connection(
                    lambda: protocol, settings.host, settings.port, ssl=context
                )
        except OSError as exc:  # TimeoutError, socket.gaierror and ssl.SSLError included
            raise _connect_error(exc, settings, tls=context is not None) from exc
        session = cls(settings, protocol, transport, lost)
        try:
            await session._handshake()
        except BaseException:
            await session.close()
            raise
        return session

    async def close(self) -> None:
        """LOGOUT and close the socket. Never raises; takes at most a few seconds."""
        if self._closed:
            return
        limit = min(self._settings.timeout, _CLOSE_TIMEOUT)
        if self._failed is None and self._protocol.state in _CONNECTED_STATES:
            with contextlib.suppress(Exception):  # closing must not raise, whatever happened
                await self._race("LOGOUT", self._protocol.logout(), limit)
        self._closed = True
        self._transport.close()
        for attempt in range(2):
            try:
                async with asyncio.timeout(limit / 2):
                    await asyncio.shield(self._lost)
                break
            except TimeoutError:
                if attempt == 0:
                    self._transport.abort()  # a TLS close_notify the peer never answers
        self._cancel_pending()
        if self._orphans:
            await asyncio.wait(self._orphans, timeout=limit / 2)

    async def __aenter__(self) -> ImapSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading --------------------------------------------------------------------------------

    async def examine(self, folder: str) -> FolderState:
        """Open `folder` read-only (EXAMINE); later calls work on it."""
        args = [_mailbox(folder)]
        if "CONDSTORE" in self.capabilities:
            args.append("(CONDSTORE)")  # asks the server to report HIGHESTMODSEQ
        command = aioimaplib.Command("EXAMINE", self._protocol.new_tag(), *args, loop=self._loop)
        response = await self._step(f"EXAMINE {folder}", self._protocol.execute(command))
        if response.result != "OK":
            # a failed EXAMINE leaves no folder open (RFC 3501 §6.3.2)
            self._protocol.state = aioimaplib.AUTH
            self._folder = self._uidvalidity = self._seen_uid = None
            raise ImapError(
                "folder_missing", f"folder {folder!r} cannot be opened: {_text(response)}"
            )
        self._protocol.state = aioimaplib.SELECTED  # aioimaplib only tracks SELECT
        self._protocol.new_mail.clear()  # this response's EXISTS is a count, not news
        found: dict[str, int] = {}
        for line in _lines(response):
            if match := _EXAMINE_RE.search(line):
                key = (match["key"] or match["exists"]).decode().upper()
                found.setdefault(key, int(match["value"] or match["count"]))
        if "UIDVALIDITY" not in found:
            raise self._fail("protocol", f"EXAMINE {folder} did not report a UIDVALIDITY")
        if (folder, found["UIDVALIDITY"]) != (self._folder, self._uidvalidity):
            self._seen_uid = None  # another folder, or the same one with new UIDs
        self._folder, self._uidvalidity = folder, found["UIDVALIDITY"]
        return FolderState(
            uidvalidity=found["UIDVALIDITY"],
            uidnext=found.get("UIDNEXT"),
            highestmodseq=found.get("HIGHESTMODSEQ"),
            exists=found.get("EXISTS", 0),
        )

    async def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above the watermark `last_uid`, ascending (UID SEARCH UID last+1:*)."""
        self._require_folder()
        self._protocol.new_mail.clear()  # from here on, the caller knows what this returns
        uids = await self._search_after(last_uid)
        self._seen_uid = max([last_uid, *uids])
        return uids

    async def _search_after(self, last_uid: int) -> list[int]:
        if last_uid >= MAX_UID:
            return []
        response = await self._step(
            "UID SEARCH",
            self._protocol.search("UID", f"{last_uid + 1}:*", charset=None, by_uid=True),
        )
        self._require_ok("UID SEARCH", response)
        uids = {
            int(token)
            for line in _lines(response)[:-1]
            if _NUMBERS_RE.fullmatch(line)
            for token in line.split()
        }
        # n:* always matches the highest UID, even when it is below n (RFC 3501 §6.4.8, F4)
        return sorted(uid for uid in uids if uid > last_uid)

    async def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """Raw bytes, size and flags of `uids`, ascending; UIDs no longer on the server are
        missing from the result. Never sets \\Seen."""
        self._require_folder()
        messages: list[FetchedMessage] = []
        for batch in _batches(uids):
            items = await self._fetch_items(batch, "(UID RFC822.SIZE FLAGS BODY.PEEK[])")
            for uid, item in items.items():
                raw, size, flags = item.get("BODY[]"), item.get("RFC822.SIZE"), item.get("FLAGS")
                # the response was complete, so the session stays usable: a caller can fetch
                # the batch one UID at a time to find the message the server garbles
                if not isinstance(raw, bytes) or not isinstance(size, bytes) or not size.isdigit():
                    raise ImapError("protocol", f"UID FETCH returned no body or size for {uid}")
                if len(raw) != int(size):
                    raise ImapError(
                        "protocol",
                        f"message {uid} is {len(raw)} bytes but the server announced {int(size)}",
                    )
                flag_list = flags if isinstance(flags, list) else []
                names = tuple(f.decode() for f in flag_list if isinstance(f, bytes))
                messages.append(FetchedMessage(uid=uid, size=len(raw), raw=raw, flags=names))
        return sorted(messages, key=lambda m: m.uid)

    async def message_ids(self, uids: Sequence[int] | None = None) -> dict[int, str]:
        """UID → Message-ID header value (as sent, brackets kept), for UIDVALIDITY
        re-approval. `None` means every message in the folder; messages without the
        header are left out."""
        self._require_folder()
        if uids is None:
            uids = await self.uids_after(0)
        found: dict[int, str] = {}
        for batch in _batches(uids):
            items = await self._fetch_items(batch, "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for uid, item in items.items():
                header = next(
                    (v for k, v in item.items() if k.startswith("BODY[HEADER.FIELDS")), None
                )
                if isinstance(header, bytes) and (message_id := _message_id(header)):
                    found[uid] = message_id
        return found

    async def search_message_id(self, message_id: str) -> list[int]:
        """UIDs in the open folder whose Message-ID header contains `message_id` (how an
        outgoing reply of unknown outcome is looked for in the Sent folder)."""
        self._require_folder()
        response = await self._step(
            "UID SEARCH HEADER",
            self._protocol.search(
                "HEADER", "Message-ID", _quoted(message_id), charset=None, by_uid=True
            ),
        )
        self._require_ok("UID SEARCH HEADER", response)
        return sorted(
            {
                int(token)
                for line in _lines(response)[:-1]
                if _NUMBERS_RE.fullmatch(line)
                for token in line.split()
            }
        )

    async def append(self, folder: str, raw: bytes, *, flags: Sequence[str] = ("\\Seen",)) -> None:
        """APPEND `raw` to `folder` with `flags`: the one write, for a reply's Sent copy."""
        response = await self._step(
            f"APPEND {folder}",
            self._protocol.append(
                raw, _mailbox(folder), " ".join(flags) or None, None, timeout=self._settings.timeout
            ),
        )
        self._require_ok(f"APPEND {folder}", response)

    async def wait_for_change(self, timeout: float) -> bool:  # noqa: ASYNC109 (a result, not a deadline)
        """IDLE until the server reports new mail (True) or `timeout` seconds pass (False).

        Mail that arrived after the last `uids_after()` is not missed: if the folder has a
        UID above the highest one `uids_after()` reported (one UID SEARCH; it survives a
        re-EXAMINE of the same folder), or the server reported new mail during another
        command, this returns True at once. Always ends IDLE with DONE before returning.
        Raises `ImapError("unsupported")` if the server cannot IDLE: poll instead.
        """
        self._require_folder()
        if "IDLE" not in self.capabilities:
            raise ImapError("unsupported", f"{self._where} does not support IDLE; poll instead")
        protocol = self._protocol
        if self._seen_uid is not None:
            protocol.new_mail.clear()  # the search below is the better answer
            if await self._search_after(self._seen_uid):
                return True
        if protocol.new_mail.is_set():
            protocol.new_mail.clear()
            return True
        idle = asyncio.ensure_future(protocol.idle())
        started = asyncio.ensure_future(protocol.wait_for_idle_response())
        try:
            return await self._idle(idle, started, timeout)
        except asyncio.CancelledError:
            self._fail("protocol", "cancelled during IDLE")  # the server is still idling
            raise
        finally:
            for task in (started, idle):
                if not task.done():
                    task.cancel()
                    self._orphans.add(task)
            while not protocol.idle_queue.empty():  # aioimaplib's copy of what we saw
                protocol.idle_queue.get_nowait()

    async def _idle(
        self, idle: asyncio.Future[Any], started: asyncio.Future[Any], limit: float
    ) -> bool:
        """Wait for '+ idling', then for new mail, the limit or a hang-up; then DONE."""
        protocol = self._protocol
        await self._step("IDLE", asyncio.wait({idle, started}, return_when=asyncio.FIRST_COMPLETED))
        if idle.done():  # answered without "+ idling": a NO or BAD
            raise ImapError("protocol", f"IDLE refused: {_text(await self._step('IDLE', idle))}")
        new_mail = asyncio.ensure_future(protocol.new_mail.wait())
        try:
            await asyncio.wait(
                {new_mail, idle, self._lost},
                timeout=limit,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            new_mail.cancel()
        if not idle.done():
            if self._lost.done():
                raise self._fail("protocol", self._closed_during("IDLE"))
            protocol.idle_done()  # DONE
            self._require_ok("IDLE", await self._step("IDLE", idle))
        changed = protocol.new_mail.is_set()
        protocol.new_mail.clear()
        return changed

    # -- internals -----------------------------------------------------------------------------

    async def _handshake(self) -> None:
        await self._step("greeting", self._protocol.wait("AUTH|NONAUTH"))
        if self._settings.security == "starttls":
            await self._starttls()
        if self._protocol.state == aioimaplib.NONAUTH:  # not PREAUTH
            await self._login()
        # ask again: capabilities change after STARTTLS and login, and aioimaplib's parse of
        # the login response keeps stray words
        await self._step("CAPABILITY", self._protocol.capability())
        self.capabilities = frozenset(c.upper() for c in self._protocol.capabilities)

    async def _starttls(self) -> None:
        if "STARTTLS" not in {c.upper() for c in self._protocol.capabilities}:
            raise ImapError(
                "tls", f"{self._where} does not offer STARTTLS; not logging in without TLS"
            )
        command = aioimaplib.Command("STARTTLS", self._protocol.new_tag(), loop=self._loop)
        response = await self._step("STARTTLS", self._protocol.execute(command))
        if response.result != "OK":
            raise ImapError("tls", f"{self._where} refused STARTTLS: {_text(response)}")
        protocol = self._protocol
        if protocol.plaintext_after_starttls or protocol.incomplete_line:
            # a man in the middle injecting responses that would pass as TLS-protected ones
            raise self._fail("tls", f"{self._where} sent plain text after STARTTLS; giving up")
        # start_tls() stops reading before its first await, so nothing can slip in between
        protocol.awaiting_tls = False
        try:
            async with asyncio.timeout(self._settings.timeout):
                transport = await self._loop.start_tls(
                    self._transport,
                    self._protocol,
                    _context(self._settings),
                    server_hostname=self._settings.host,
                )
        except OSError as exc:
            error = _connect_error(exc, self._settings, tls=True)
            raise self._fail(error.reason, error.message) from exc
        except BaseException:  # cancelled: the socket is half-way into TLS, don't reuse it
            self._fail("tls", "cancelled during the TLS handshake")
            raise
        if transport is None:
            raise self._fail("tls", self._closed_during("the TLS handshake"))
        # aioimaplib writes through protocol.transport; from here on that is the TLS layer
        self._transport = self._protocol.transport = transport

    async def _login(self) -> None:
        settings = self._settings
        capabilities = {c.upper() for c in self._protocol.capabilities}
        try:
            if settings.oauth2_token is not None:
                if "AUTH=XOAUTH2" not in capabilities:
                    raise ImapError("unsupported", f"{self._where} does not offer XOAUTH2 login")
                token = f"user={settings.username}\x01auth=Bearer {settings.oauth2_token}\x01\x01"
                sasl = base64.b64encode(token.encode()).decode()
                command = aioimaplib.Command(
                    "AUTHENTICATE", self._protocol.new_tag(), "XOAUTH2", sasl, loop=self._loop
                )
                secret = sasl
            elif settings.password is not None:
                if "LOGINDISABLED" in capabilities:
                    raise ImapError(
                        "auth",
                        f"{self._where} refuses to log in without TLS; use ssl or starttls",
                    )
                secret = _quoted(settings.password)
                command = aioimaplib.Command(
                    "LOGIN",
                    self._protocol.new_tag(),
                    _quoted(settings.username),
                    secret,
                    loop=self._loop,
                )
            else:
                raise ImapError("auth", f"no password or OAuth2 token for user {settings.username}")
        except ValueError as exc:  # aioimaplib refuses CR, LF and NUL in arguments
            message = f"the credentials for user {settings.username} contain a line break or NUL"
            raise ImapError("auth", message) from exc
        # scrub: aioimaplib logs commands at DEBUG; its own login() misses quoted passwords
        # and xoauth2() logs the base64 string that carries the token
        response = await self._step("login", self._protocol.execute(command, scrub=secret))
        if response.result != "OK":
            challenge = self._protocol.auth_challenge
            detail = _text(response) + (f" ({challenge})" if challenge else "")
            raise ImapError("auth", f"login failed for user {settings.username}: {detail}")
        self._protocol.state = aioimaplib.AUTH

    async def _fetch_items(self, uids: list[int], items: str) -> dict[int, dict[str, Any]]:
        command = self._protocol.fetch(
            _uid_set(uids), items, by_uid=True, timeout=self._settings.timeout
        )
        # bounded by aioimaplib's inactivity timer (CommandTimeout), not by total time
        response = await self._race("UID FETCH", command, None)
        self._require_ok("UID FETCH", response)
        try:
            parsed = _parse_fetch(response.lines[:-1])
        except (ValueError, IndexError) as exc:
            raise self._fail("protocol", f"could not parse the UID FETCH response: {exc}") from exc
        wanted = set(uids)
        by_uid: dict[int, dict[str, Any]] = {}
        for item in parsed:
            uid = item.get("UID")
            if isinstance(uid, bytes) and uid.isdigit() and int(uid) in wanted:
                # an unsolicited FLAGS update may arrive as a separate FETCH: merge
                by_uid.setdefault(int(uid), {}).update(item)
        return dict(sorted(by_uid.items()))

    async def _step(self, what: str, step: Awaitable[_T]) -> _T:
        return await self._race(what, step, self._settings.timeout)

    async def _race(self, what: str, step: Awaitable[_T], limit: float | None) -> _T:
        """Run one network step against the timeout and the connection dropping."""
        task = asyncio.ensure_future(step)
        if self._closed or self._failed is not None:
            task.cancel()
            why = f"after an error: {self._failed}" if self._failed else "closed"
            raise ImapError("protocol", f"the IMAP session is {why}; open a new one")
        racers: set[asyncio.Future[Any]] = {task, self._lost}
        try:
            done, _ = await asyncio.wait(racers, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            self._orphans.add(task)
            self._fail("protocol", f"cancelled during {what}")
            raise
        if task in done:
            try:
                return task.result()
            except aioimaplib.CommandTimeout as exc:
                raise self._fail(
                    "timeout",
                    f"{what}: no data from {self._where} for {self._settings.timeout:g} s",
                ) from exc
            except (aioimaplib.AioImapException, OSError, ValueError) as exc:
                raise self._fail("protocol", f"{what} failed: {exc}") from exc
        task.cancel()
        self._orphans.add(task)
        if self._lost.done():
            raise self._fail("protocol", self._closed_during(what))
        raise self._fail("timeout", f"{what}: no answer from {self._where} within {limit:g} s")

    def _fail(self, reason: Reason, message: str) -> ImapError:
        """Give up on the connection: it is in an unknown state now."""
        if self._failed is None:
            self._failed = message
        self._transport.abort()
        self._cancel_pending()
        return ImapError(reason, message)

    def _cancel_pending(self) -> None:
        """Cancel aioimaplib's own tasks. It never fails a command when the connection dies,
        so its greeting handler can wait forever while holding its state lock."""
        for task in list(self._protocol.tasks):
            if not task.done():
                task.cancel()
                self._orphans.add(task)

    def _closed_during(self, what: str) -> str:
        said = f" (it said: {self._protocol.bye})" if self._protocol.bye else ""
        return f"{self._where} closed the connection during {what}{said}"

    def _require_folder(self) -> None:
        if self._folder is None:
            raise ImapError("protocol", "no folder is open; call examine() first")

    def _require_ok(self, what: str, response: Any) -> None:
        if response.result != "OK":
            raise ImapError("protocol", f"{what} refused: {response.result} {_text(response)}")


async def test_connection(settings: ImapSettings, folders: Sequence[str]) -> list[FolderState]:
    """Log in and EXAMINE each folder; raises `ImapError` on the first failure."""
    async with await ImapSession.open(settings) as session:
        return [await session.examine(folder) for folder in folders]


# -- the aioimaplib protocol, with three additions ---------------------------------------------


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """Notices EXISTS (new mail) in any response, remembers the server's BYE text, answers
    a SASL error challenge so the server can send its NO, and drops (and reports) anything
    the server sends between its STARTTLS OK and the TLS handshake."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Any) -> None:
        super().__init__(loop, on_lost)
        self.new_mail = asyncio.Event()
        self.bye: str | None = None
        self.auth_challenge: str | None = None
        self.awaiting_tls = False
        self.plaintext_after_starttls = False

    def data_received(self, d: bytes) -> None:
        if self.awaiting_tls:
            self.plaintext_after_starttls = True
            return
        super().data_received(d)

    def _response_done(self, line: bytes) -> None:
        command = self.pending_sync_command
        super()._response_done(line)
        if command is not None and command.name == "STARTTLS" and command.response.result == "OK":
            self.awaiting_tls = True

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        if self.awaiting_tls:  # more lines in the same read as the STARTTLS OK
            self.plaintext_after_starttls = True
            return None
        if _EXISTS_LINE_RE.match(line):
            self.new_mail.set()
        elif line.startswith(b"* BYE"):
            self.bye = line[5:].strip().decode(errors="replace")
        return super()._handle_line(line, current_cmd)

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # we always send the initial response, so a challenge reports an error (XOAUTH2
            # sends JSON); an empty reply lets the server finish with NO (RFC 4959)
            encoded = line[1:].strip()
            with contextlib.suppress(ValueError):
                encoded = base64.b64decode(encoded, validate=True)
            self.auth_challenge = encoded.decode(errors="replace")
            self.transport.write(b"\r\n")
            return
        super()._continuation(line)


_CONNECTED_STATES = (aioimaplib.NONAUTH, aioimaplib.AUTH, aioimaplib.SELECTED)
_EXISTS_LINE_RE = re.compile(rb"\* \d+ EXISTS\b", re.IGNORECASE)
_EXAMINE_RE = re.compile(
    rb"\[(?P<key>UIDVALIDITY|UIDNEXT|HIGHESTMODSEQ) (?P<value>\d+)\]"
    rb"|^(?P<count>\d+) (?P<exists>EXISTS)\b",
    re.IGNORECASE,
)
_NUMBERS_RE = re.compile(rb"[\d ]*")


def _context(settings: ImapSettings) -> ssl.SSLContext:
    return settings.ssl_context or ssl.create_default_context()


def _connect_error(exc: OSError, settings: ImapSettings, *, tls: bool) -> ImapError:
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, TimeoutError):
        return ImapError("timeout", f"connecting to {where} timed out after {settings.timeout:g} s")
    if isinstance(exc, socket.gaierror):
        return ImapError("dns", f"could not resolve {settings.host}")
    if isinstance(exc, ConnectionRefusedError):
        return ImapError("refused", f"{where} refused the connection")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapError(
            "tls", f"the TLS certificate of {where} is not trusted: {exc.verify_message}"
        )
    if isinstance(exc, ssl.SSLError) or (tls and isinstance(exc, ConnectionError)):
        # a reset during the handshake: often a TLS client talking to a plain-text port
        return ImapError("tls", f"TLS with {where} failed: {exc.strerror or exc}")
    return ImapError("refused", f"could not connect to {where}: {exc.strerror or exc}")


def _lines(response: Any) -> list[bytes]:
    return [bytes(line) for line in response.lines]


def _text(response: Any) -> str:
    """The text of the tagged status line (the last line of an aioimaplib response)."""
    lines = _lines(response)
    return lines[-1].decode(errors="replace").strip() if lines else ""


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox(name: str) -> str:
    """A mailbox name as a quoted string in modified UTF-7 (RFC 3501 §5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode()
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if "\x20" <= char <= "\x7e":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return _quoted("".join(out))


def _batches(uids: Sequence[int]) -> Iterator[list[int]]:
    unique = sorted(set(uids))
    for uid in unique:
        if not 0 < uid <= MAX_UID:
            raise ValueError(f"not a UID: {uid}")
    for start in range(0, len(unique), FETCH_BATCH):
        yield unique[start : start + FETCH_BATCH]


def _uid_set(uids: list[int]) -> str:
    """Ascending UIDs as an IMAP sequence set: [1, 2, 3, 7] → "1:3,7"."""
    ranges: list[str] = []
    start = prev = uids[0]
    for uid in [*uids[1:], None]:
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
        if uid is not None:
            start = prev = uid
    return ",".join(ranges)


# -- FETCH response parsing --------------------------------------------------------------------
# aioimaplib returns raw lines: `bytes` for protocol text, `bytearray` for literals, e.g.
#   [b'1 FETCH (UID 7 RFC822.SIZE 42 FLAGS (\\Seen) BODY[] {42}', bytearray(b'...'), b')']

_TOKEN_RE = re.compile(
    rb"""\s*(?:
        (?P<open>\()
      | (?P<close>\))
      | "(?P<string>(?:[^"\\]|\\.)*)"
      | \{(?P<literal>\d+)\}\s*$
      | (?P<atom>[^\s()"\[\]{}]+(?:\[[^\]]*\](?:<[\d.]+>)?)?)
    )""",
    re.VERBOSE | re.DOTALL,
)

_Token = tuple[str, bytes]


def _tokens(parts: Sequence[bytes | bytearray]) -> Iterator[_Token]:
    queue = iter(parts)
    for part in queue:
        if isinstance(part, bytearray):
            raise ValueError("a literal without its {size} announcement")
        pos = 0
        while pos < len(part):
            match = _TOKEN_RE.match(part, pos)
            if match is None or match.end() == pos:
                if part[pos:].strip():
                    raise ValueError(f"unexpected bytes {part[pos : pos + 40]!r}")
                break
            pos = match.end()
            kind = cast("str", match.lastgroup)
            if kind == "literal":
                literal = next(queue, None)
                if not isinstance(literal, bytearray) or len(literal) != int(match["literal"]):
                    raise ValueError("a literal is missing or has the wrong length")
                yield "literal", bytes(literal)
            elif kind == "string":
                yield kind, re.sub(rb"\\(.)", rb"\1", match["string"])
            else:
                yield kind, match[kind]


def _parse_fetch(parts: Sequence[bytes | bytearray]) -> list[dict[str, Any]]:
    """Each `n FETCH (NAME value …)` as {NAME: value}; values are bytes, lists or None."""
    tokens = list(_tokens(parts))
    messages: list[dict[str, Any]] = []
    i = 0
    while i < len(tokens):
        if tokens[i][0] != "atom" or tokens[i + 1] != ("atom", b"FETCH"):
            raise ValueError(f"expected a FETCH response at {tokens[i][1][:40]!r}")
        values, i = _value(tokens, i + 2)
        if not isinstance(values, list) or len(values) % 2:
            raise ValueError("a FETCH response is not a list of name/value pairs")
        messages.append(
            {bytes(k).decode().upper(): v for k, v in zip(values[::2], values[1::2], strict=True)}
        )
    return messages


def _value(tokens: list[_Token], i: int) -> tuple[Any, int]:
    kind, data = tokens[i]
    if kind == "open":
        items: list[Any] = []
        i += 1
        while tokens[i][0] != "close":
            item, i = _value(tokens, i)
            items.append(item)
        return items, i + 1
    if kind == "close":
        raise ValueError("unbalanced parenthesis")
    if kind == "atom" and data.upper() == b"NIL":
        return None, i + 1
    return data, i + 1


def _message_id(header: bytes) -> str | None:
    """The Message-ID value from a HEADER.FIELDS literal; never raises (F3)."""
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", header)
    match = re.search(rb"^message-id[ \t]*:[ \t]*(.*?)[ \t\r]*$", unfolded, re.I | re.M)
    if match is None or not match[1]:
        return None
    return match[1].decode("utf-8", errors="replace")
