"""Wake-ups for the live stream: one LISTEN connection per API process, fanned out to its streams.

    commit of a transaction that wrote events ── NOTIFY inbox_events ──────┐
    commit after publish_ephemeral() ─────────── NOTIFY inbox_ephemeral ───┤
    a user's credentials revoked or deleted ───── NOTIFY inbox_auth ───────┤
                                                                           ▼
                StreamHub: one asyncpg connection LISTENing on all three; reconnects with backoff
                    │ inbox_events:    wake every stream of this process
                    │ inbox_ephemeral: queue the message for the streams allowed to see it
                    │ inbox_auth:      that user's streams re-check their credential now
                    ▼
                Subscription, one per open stream: a wake flag and a small ephemeral queue

A notification only means "read again": streams read the event log itself with the feed's
commit-safe cursor, and re-read every `sse_poll_seconds` anyway, because an event can become
deliverable with no notification at all (an older transaction ends and the horizon moves)
and notifications are lost while the listener reconnects. A hub that cannot listen (database
unreachable, PgBouncer in transaction mode) makes streams slower, never wrong. Ephemeral
messages exist only as notifications: those sent while the listener is down are lost.

The listener starts with the first stream and stops with the app's lifespan. uvicorn waits
for open responses to finish before it shuts an app down, and a stream never finishes by
itself, so `live_events_lifespan` chains uvicorn's SIGINT/SIGTERM handlers to
`stop_streams()` (`dev`, which handles signals itself, calls it directly).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import FrameType
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller
from inbox_service.events.schemas import EventOut

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "inbox_events"
EPHEMERAL_CHANNEL = "inbox_ephemeral"
AUTH_CHANNEL = "inbox_auth"  # payload: a user id
LISTENER_APPLICATION_NAME = "inbox-service-sse-listener"
# A stream this far behind on ephemeral messages drops the oldest: presence is a snapshot.
EPHEMERAL_BACKLOG = 256
_FIRST_RETRY_SECONDS = 0.5
_MAX_RETRY_SECONDS = 30.0
# A peer that vanished without closing the socket shows up only when we talk to it.
_HEALTH_CHECK_SECONDS = 30.0
_TIMEOUT_SECONDS = 10.0
_CONNECTION_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def notify_credentials_changed(session: AsyncSession, user_id: str) -> None:
    """At commit, make `user_id`'s open streams (in every API process) re-check their
    credential now rather than at the next `sse_auth_recheck_seconds`."""
    await session.execute(
        text("SELECT pg_notify(:channel, :user_id)"), {"channel": AUTH_CHANNEL, "user_id": user_id}
    )


class Subscription:
    """One open stream, as the hub sees it."""

    def __init__(self, caller: Caller, types: Iterable[str]) -> None:
        self.caller = caller  # replaced when the stream re-checks its key
        self.types = frozenset(types)
        self.wake = asyncio.Event()
        self.log_changed = False  # events committed since the stream last read the log
        self.ephemeral: deque[EventOut] = deque(maxlen=EPHEMERAL_BACKLOG)
        self.stopped = False
        self.recheck = False  # the caller's credentials changed: re-check before going on

    def wants(self, event: EventOut) -> bool:
        """The feed's rules: the listed types only, and only the caller's inboxes."""
        if self.types and event.type not in self.types:
            return False
        return self.caller.can_see(event.inbox_id)


class StreamHub:
    """The streams of one app (one API process) and the listener that wakes them."""

    def __init__(self, dsn: str | None) -> None:
        self._dsn = dsn
        self._subscriptions: set[Subscription] = set()
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        self.listening = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, caller: Caller, types: Iterable[str]) -> AsyncIterator[Subscription]:
        """Register a stream for wake-ups (starting the listener if need be) while in the block."""
        subscription = Subscription(caller, types)
        subscription.stopped = self._stopping
        self._subscriptions.add(subscription)
        idle = self._listener is None or self._listener.done()
        if self._dsn is not None and not self._stopping and idle:
            self._listener = asyncio.create_task(self._listen(self._dsn), name="sse-listener")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    @property
    def stream_count(self) -> int:
        return len(self._subscriptions)

    def stop_streams(self) -> None:
        """End every open stream, and any opened from now on: the server is stopping."""
        self._stopping = True
        for subscription in self._subscriptions:
            subscription.stopped = True
            subscription.wake.set()

    async def close(self) -> None:
        """Stop the streams and the listener."""
        self.stop_streams()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    def _wake_all(self, *_: Any) -> None:
        for subscription in self._subscriptions:
            subscription.log_changed = True
            subscription.wake.set()

    def _on_ephemeral(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            event = EventOut.model_validate_json(str(payload))
        except ValidationError:
            log.warning("ignored a malformed %s notification", EPHEMERAL_CHANNEL)
            return
        for subscription in self._subscriptions:
            if subscription.wants(event):
                subscription.ephemeral.append(event)
                subscription.wake.set()

    def _on_auth(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        for subscription in self._subscriptions:
            if subscription.caller.user_id == str(payload):
                subscription.recheck = True
                subscription.wake.set()

    async def _listen(self, dsn: str) -> None:
        """LISTEN until cancelled, reconnecting with exponential backoff."""
        retry = _FIRST_RETRY_SECONDS
        while True:
            try:
                connection = await asyncpg.connect(
                    dsn,
                    timeout=_TIMEOUT_SECONDS,
                    server_settings={"application_name": LISTENER_APPLICATION_NAME},
                )
            except _CONNECTION_ERRORS as exc:
                log.warning("live-stream listener cannot connect (%s); streams poll", exc)
            else:
                retry = _FIRST_RETRY_SECONDS
                try:
                    await self._serve(connection)
                except _CONNECTION_ERRORS as exc:
                    log.warning("live-stream listener lost its connection (%s)", exc)
                finally:
                    self.listening.clear()
                    connection.terminate()
            await asyncio.sleep(retry)
            retry = min(retry * 2, _MAX_RETRY_SECONDS)

    async def _serve(self, connection: asyncpg.Connection) -> None:
        """Forward notifications until the connection is lost."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(EVENTS_CHANNEL, self._wake_all)
        await connection.add_listener(EPHEMERAL_CHANNEL, self._on_ephemeral)
        await connection.add_listener(AUTH_CHANNEL, self._on_auth)
        self.listening.set()
        self._wake_all()  # whatever committed while nobody listened
        while True:
            try:
                await asyncio.wait_for(lost.wait(), _HEALTH_CHECK_SECONDS)
            except TimeoutError:
                await connection.execute("SELECT 1", timeout=_TIMEOUT_SECONDS)
            else:
                log.warning("live-stream listener lost its connection; reconnecting")
                return


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def live_events_lifespan(inner: Lifespan) -> Lifespan:
    """`inner`, plus the stream hub in `app.state.stream_hub`: its streams end when uvicorn
    is told to stop, and its listener is closed when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub: StreamHub = app.state.stream_hub
        restore = _chain_exit_signals(hub.stop_streams)
        try:
            async with inner(app):
                yield
        finally:
            restore()
            await hub.close()

    return lifespan


def _chain_exit_signals(on_exit: Callable[[], None]) -> Callable[[], None]:
    """Make uvicorn's own SIGINT/SIGTERM handlers (installed while `serve` runs, in each
    worker process) also call `on_exit` on this loop. Returns the undo. Any other handler
    (pytest's, `dev`'s loop handlers) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    chained: dict[int, tuple[Callable[[int, FrameType | None], Any], Callable[..., None]]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if not callable(handler) or not isinstance(
            getattr(handler, "__self__", None), uvicorn.Server
        ):
            continue

        def chain(
            signum: int,
            frame: FrameType | None,
            handler: Callable[[int, FrameType | None], Any] = handler,
        ) -> None:
            # A signal handler may run in the middle of the loop's own code: only schedule.
            loop.call_soon_threadsafe(on_exit)
            handler(signum, frame)

        signal.signal(sig, chain)
        chained[sig] = (handler, chain)

    def restore() -> None:
        for sig, (handler, chain) in chained.items():
            if signal.getsignal(sig) is chain:
                signal.signal(sig, handler)

    return restore
