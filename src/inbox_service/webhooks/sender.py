"""One webhook delivery attempt: guard, connect to the validated IP, bounded read, no raise.

The URL is checked by `ssrf.resolve_target` at every attempt, and the request goes to the
address it returned: `scheme://<ip>:port/path` with the original Host header and the host
name as TLS SNI and certificate name (httpcore's `sni_hostname` extension). Each request
says `Connection: close`, because httpx pools connections by origin, here the IP: a kept-alive
TLS connection verified for one host name must never carry a request for another.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from inbox_service.webhooks.ssrf import (
    BlockedTarget,
    Resolver,
    Target,
    UnresolvedHost,
    resolve_target,
    system_resolver,
)

MAX_READ_BYTES = 64 * 1024
EXCERPT_BYTES = 1024


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None  # None when no response came back
    latency_ms: int
    error: str | None  # network failure, or a redirect that was not followed
    response_excerpt: str  # the first KiB of the body, storable as text
    retry_after: float | None  # seconds, from Retry-After

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def new_client() -> httpx.AsyncClient:
    """The client the delivery worker shares: no proxies from the environment, no redirects."""
    return httpx.AsyncClient(
        trust_env=False,  # HTTP(S)_PROXY would route around the IP pinning
        follow_redirects=False,
        # No idle pool: post() closes each connection anyway (see the module docstring).
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
        headers={"user-agent": "inbox-service-webhooks"},
    )


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
    resolver: Resolver = system_resolver,
    timeout: float = 10.0,  # noqa: ASYNC109 (also the httpx connect/read timeouts)
) -> AttemptResult:
    """POST `body` once; network problems come back as `error`, never as exceptions."""
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    data = bytearray()
    try:
        # One deadline for DNS, connect, send and the bounded read.
        async with asyncio.timeout(timeout):
            target = await resolve_target(url, allow_private=allow_private, resolver=resolver)
            request = _pinned_request(client, target, body, headers, timeout)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                status = response.status_code
                retry_after = _retry_after(response.headers)
                if response.is_redirect:
                    location = response.headers.get("location", "")[:200]
                    error = f"redirect to {location!r} not followed"
                # Raw bytes: no decompression, so a small gzip body cannot grow in memory.
                async for chunk in response.aiter_raw():
                    data += chunk[: MAX_READ_BYTES - len(data)]
                    if len(data) >= MAX_READ_BYTES:
                        break  # closing a half-read response drops the connection
            finally:
                await response.aclose()
    except UnresolvedHost as exc:
        error = f"dns: {exc}"
    except BlockedTarget as exc:
        error = f"blocked: {exc}"
    except (TimeoutError, httpx.TimeoutException):
        error = "timeout" if status is None else error
    except (httpx.HTTPError, OSError) as exc:
        error = _describe(exc) if status is None else error
    # Once a status line arrived it is the outcome; a broken body does not change it.
    return AttemptResult(
        status_code=status,
        latency_ms=round((time.monotonic() - started) * 1000),
        error=error,
        response_excerpt=_excerpt(bytes(data)),
        retry_after=retry_after,
    )


def _pinned_request(
    client: httpx.AsyncClient,
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> httpx.Request:
    original = httpx.URL(target.url)
    merged = httpx.Headers({"content-type": "application/json"})
    merged.update(headers)
    merged["host"] = original.netloc.decode("ascii")  # host[:port], brackets for IPv6
    merged["connection"] = "close"
    merged["accept-encoding"] = "identity"
    extensions = {}
    if target.address != target.host:  # a host name: SNI and certificate check use it
        extensions["sni_hostname"] = target.host.rstrip(".")
    return client.build_request(
        "POST",
        original.copy_with(host=target.address),
        content=body,
        headers=merged,
        timeout=httpx.Timeout(timeout),
        extensions=extensions,
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from Retry-After, given as seconds or as an HTTP date."""
    value = headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    # Measure against the receiver's own clock when it sent one.
    now = _http_date(headers.get("date", "")) or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # "-0000" parses naive


def _excerpt(data: bytes) -> str:
    text = data[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    # Replacement characters take three bytes: cut again to stay within 1 KiB, and drop
    # NUL, which a PostgreSQL text column refuses.
    text = text.encode()[:EXCERPT_BYTES].decode("utf-8", errors="ignore")
    return text.replace("\x00", "\ufffd")


def _describe(exc: BaseException) -> str:
    """A short error text for the attempt log."""
    for cause in _chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, ssl.SSLError):
            return f"tls: {cause}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"protocol error: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
