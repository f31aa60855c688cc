"""A controllable SMTP server (aiosmtpd) on 127.0.0.1 for the outbox tests.

Modes, set per test: `temp_failures` (RCPT answers 451 that many times), `permanent`
(RCPT answers 550), `drop_after_data` (the message is received whole, then the connection
is cut before the 250: the send's outcome is unknown to the client), `hang_after_data`
(received, then no answer for that many seconds). `stop()` and `start()` take the server
down and bring it back on the same port. `on_message` sees every message received (used
to file a copy in a Dovecot Sent folder, like Gmail does).
"""

from __future__ import annotations

import asyncio
import email
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.dovecot import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> Message:
        return email.message_from_bytes(self.raw)


@dataclass
class _State:
    temp_failures: int = 0
    permanent: bool = False
    drop_after_data: int = 0
    hang_after_data: float = 0.0
    received: list[Received] = field(default_factory=list)
    on_message: Callable[[bytes], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler:
    def __init__(self, state: _State) -> None:
        self.state = state

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.state.lock:
            if self.state.permanent:
                return "550 5.1.1 No such user"
            if self.state.temp_failures > 0:
                self.state.temp_failures -= 1
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        with self.state.lock:
            self.state.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), raw))
            drop = self.state.drop_after_data > 0
            if drop:
                self.state.drop_after_data -= 1
            hang, self.state.hang_after_data = self.state.hang_after_data, 0.0
        if self.state.on_message is not None:
            await asyncio.to_thread(self.state.on_message, raw)
        if drop:
            server.transport.abort()  # after the final dot, before any reply
            return "250 OK (never sent)"
        if hang:
            await asyncio.sleep(hang)
        return "250 2.0.0 Ok: queued as TEST"


class SmtpSink:
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = free_port()
        self.state = _State()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(_Handler(self.state), hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    def count(self, message_id: str) -> int:
        return sum(1 for r in self.received if f"<{message_id}>".encode() in r.raw)
