"""One SMTP attempt, classified. Never raises for anything the server or network does.

    Outcome.kind
    ├── sent        the server accepted the message (250 after the final dot)
    ├── temporary   4xx, or the network failed before DATA: safe to try again later
    ├── permanent   5xx: the server refused; retrying cannot help
    ├── unknown     the connection broke (or timed out) after DATA began: the message may
    │               have been delivered (RFC 1047), so it is never retried blindly
    └── aborted     `before_data` said no (our lease was lost): nothing was handed over

Any refused recipient refuses the whole reply (4xx: retried, 5xx: failed), so a retry never
re-sends to the recipients that were accepted.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

OutcomeKind = Literal["sent", "temporary", "permanent", "unknown", "aborted"]


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    security: Literal["ssl", "starttls", "none"]
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    tls_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    detail: str


def _response(code: int, message: str) -> str:
    return f"{code} {message}".strip()[:2000]


def _by_code(code: int, message: str) -> Outcome:
    return Outcome("temporary" if 400 <= code < 500 else "permanent", _response(code, message))


async def send(
    target: SmtpTarget,
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
    *,
    before_data: Callable[[], Awaitable[bool]],
) -> Outcome:
    """Hand `raw` to the server. `before_data` runs (and must record that DATA begins)
    after every recipient is accepted and before the DATA command."""
    client = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        use_tls=target.security == "ssl",
        start_tls=target.security == "starttls",
        timeout=target.timeout,
        tls_context=target.tls_context,
    )
    data_started = False
    try:
        # one bound for the whole conversation; the lease outlives it (sender.py)
        async with asyncio.timeout(target.timeout * 3):
            await client.connect()
            if target.username:
                await client.login(target.username, target.password or "")
            await client.mail(sender)
            for recipient in recipients:
                await client.rcpt(recipient)
            if not await before_data():
                return Outcome("aborted", "lease lost before DATA")
            data_started = True
            response = await client.data(raw)
            return Outcome("sent", _response(response.code, response.message))
    except aiosmtplib.SMTPResponseException as exc:
        # an explicit answer, also after DATA (e.g. 451 or 554 to the final dot): definite
        return _by_code(exc.code, exc.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        detail = f"{type(exc).__name__}: {exc}"[:2000]
        return Outcome("unknown" if data_started else "temporary", detail)
    finally:
        client.close()
