"""A webhook consumer for inbox-service: verify the signature, drop duplicates, handle.

Run it (Python 3.11+, `pip install standardwebhooks`; nothing else beyond the stdlib):

    WEBHOOK_SECRET=whsec_... python examples/webhook_consumer.py --port 8001

and subscribe it (the answer holds the endpoint's `secret`, shown this once; a consumer on
127.0.0.1 or a private address needs the service to run with WEBHOOK_ALLOW_PRIVATE=1):

    curl -X POST "$INBOX_URL/v1/webhooks" -H "Authorization: Bearer $INBOX_API_KEY" \\
        -H "Content-Type: application/json" -d '{"url": "https://hooks.example.com/",
        "events": ["conversation.assigned", "sla.breached"]}'

Every POST goes through the same four steps:

1. Verify the Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
   `webhook-signature`) over the raw body with the `standardwebhooks` package. A bad
   signature, a missing header or a timestamp more than 5 minutes off answers 401 and
   nothing else happens.
2. Drop duplicates: delivery is at least once (a retry after a timeout, a redelivery
   from `POST /v1/webhooks/{id}/deliveries/{delivery_id}/retry`), always with the same
   `webhook-id`. An id already handled answers 200 without handling it again.
3. Handle `conversation.assigned` and `sla.breached` (here: print a line); every other
   type is acknowledged with 200.
4. Answer 200 once handled. If the handler raises, answer 500: the service retries with
   backoff (for about a day), and the id is not marked as handled.

Events of one conversation arrive in order: the service sends the next one only after
the previous one got its 2xx. Answer quickly (the service waits at most 10 s); queue
slow work instead of doing it in the request.

The handled ids live in memory here. A real consumer keeps them in its database, with a
unique key on the webhook-id, written in the same transaction as the work it does, so a
restart or a second replica cannot handle an event twice.
"""

# ruff: noqa: T201 - printing is what this script is for

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1 << 20

Event = dict[str, Any]  # {"id", "type", "created_at", "inbox_id", "conversation_id", "data"}
EventHandler = Callable[[Event], None]


def on_conversation_assigned(event: Event) -> None:
    data = event["data"]
    conversation = data.get("conversation") or {}
    print(
        f"{event['id']}: conversation {conversation.get('id')} "
        f"({conversation.get('subject', '')!r}) assigned to {data.get('assignee_id')} "
        f"(before: {data.get('previous_assignee_id')})",
        flush=True,
    )


def on_sla_breached(event: Event) -> None:
    data = event["data"]
    conversation = data.get("conversation") or {}
    print(
        f"{event['id']}: SLA BREACHED on conversation "
        f"{conversation.get('id') or event.get('conversation_id')} "
        f"({data.get('metric', 'unknown metric')}, was due {data.get('due_at', '?')})",
        flush=True,
    )


HANDLERS: dict[str, EventHandler] = {
    "conversation.assigned": on_conversation_assigned,
    "sla.breached": on_sla_breached,
}


class SeenIds:
    """The webhook-ids handled so far, and the ones being handled right now."""

    def __init__(self) -> None:
        self._done: set[str] = set()
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def begin(self, webhook_id: str) -> Literal["new", "done", "busy"]:
        with self._lock:
            if webhook_id in self._done:
                return "done"
            if webhook_id in self._busy:
                return "busy"
            self._busy.add(webhook_id)
            return "new"

    def finish(self, webhook_id: str, *, handled: bool) -> None:
        with self._lock:
            self._busy.discard(webhook_id)
            if handled:
                self._done.add(webhook_id)


class ConsumerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        secret: str,
        handlers: Mapping[str, EventHandler] = HANDLERS,
    ) -> None:
        super().__init__(address, WebhookRequestHandler)
        self.webhook = Webhook(secret)
        self.handlers = handlers
        self.seen = SeenIds()


class WebhookRequestHandler(BaseHTTPRequestHandler):
    server: ConsumerServer

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large")
            return
        body = self.rfile.read(length)
        try:
            # The raw bytes: a re-encoded body would not match the signature.
            event: Event = self.server.webhook.verify(body, dict(self.headers.items()))
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: a garbled header
            self._answer(HTTPStatus.UNAUTHORIZED, f"invalid signature: {exc}")
            return
        webhook_id = self.headers["webhook-id"]
        state = self.server.seen.begin(webhook_id)
        if state == "done":
            self._answer(HTTPStatus.OK, "duplicate, already handled")
            return
        if state == "busy":  # the same event in another request right now: try again later
            self._answer(HTTPStatus.CONFLICT, "being handled")
            return
        handled = False
        try:
            handler = self.server.handlers.get(event["type"])
            if handler is not None:
                handler(event)
            handled = True
        except Exception as exc:  # noqa: BLE001 - any failure: 500, and the service retries
            print(f"{webhook_id}: handler failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            self.server.seen.finish(webhook_id, handled=handled)
        if handled:
            self._answer(HTTPStatus.OK, "ok")
        else:
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, "handler failed")

    def _answer(self, status: HTTPStatus, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8001, help="0: any free port")
    args = parser.parse_args(argv)
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        parser.error("set WEBHOOK_SECRET to the endpoint's whsec_... secret")
    with ConsumerServer((args.host, args.port), secret) as server:
        print(f"listening on http://{args.host}:{server.server_port}/", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
