"""A webhook receiver on the loopback interface that records requests and answers as told.

    receiver = Receiver()                    # Receiver(host="::1"), Receiver(ssl=server_context)
    await receiver.start()                   # listens on receiver.host:receiver.port
    receiver.respond(Reply(500), Reply(200)) # one reply per request, in order; then 200 "ok"
    receiver.respond(Reply(delay=30))        # sleep before answering (close() cancels it)
    receiver.respond(redirect(url))          # a 302 to url
    receiver.respond(Reply(stream=10 << 20)) # a 10 MB body, written 64 KiB at a time
    receiver.requests[0].headers["host"], .body, .connection, .sni, .bytes_sent, .aborted
    await receiver.idle()                    # every connection handler has finished
    await receiver.close()

It is plain asyncio plus h11 (httpx's HTTP/1.1 engine), so a test sees exactly what went over
the wire: which connection carried a request, the TLS server name the client asked for, and
whether the client hung up before the whole answer was written.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    stream: int = 0  # when > 0, a body of this many bytes instead of `body`


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", {"location": location})


@dataclass
class Received:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    connection: int  # 1 for the first connection the receiver accepted, and so on
    sni: str | None  # the TLS server name the client asked for
    bytes_sent: int = 0  # body bytes of the reply handed to the kernel
    aborted: bool = False  # the client went away before the whole reply was written


class Receiver:
    def __init__(self, host: str = "127.0.0.1", *, ssl: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = 0
        self.requests: list[Received] = []
        self.connections = 0
        self._ssl = ssl
        self._replies: collections.deque[Reply] = collections.deque()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if ssl is not None:
            ssl.sni_callback = _remember_sni

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        """A URL for this receiver; `host` replaces the address (for a stub resolver)."""
        scheme = "https" if self._ssl else "http"
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{name}:{self.port}{path}"

    def respond(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def idle(self) -> None:
        """Wait (up to 5 s) until every connection handler has finished."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one connection -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        # A small send buffer, so how much of a big reply got out says how much the client read.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
        ssl_object = writer.get_extra_info("ssl_object")
        sni = getattr(ssl_object, "sni", None)
        conn = h11.Connection(h11.SERVER)
        try:
            while await self._exchange(conn, reader, writer, number, sni):
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, ssl.SSLError):
            pass  # the client hung up, or spoke nonsense; the record says how far it got
        finally:
            # Not awaited: a TLS close waits for the client's close_notify, which a client
            # that gave up never sends; the transport finishes closing on its own.
            writer.close()
            self._tasks.discard(task)

    async def _exchange(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
        sni: str | None,
    ) -> bool:
        """Serve one request; True when the connection can carry another."""
        event = await _next_event(conn, reader)
        if not isinstance(event, h11.Request):
            return False
        body = bytearray()
        while isinstance(part := await _next_event(conn, reader), h11.Data):
            body += part.data
        received = Received(
            method=event.method.decode(),
            target=event.target.decode(),
            headers={k.decode().lower(): v.decode() for k, v in event.headers},
            body=bytes(body),
            connection=number,
            sni=sni,
        )
        self.requests.append(received)
        reply = self._replies.popleft() if self._replies else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        size = reply.stream or len(reply.body)
        headers = [*reply.headers.items(), ("content-length", str(size))]
        try:
            writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
            chunks = (b"x" * min(CHUNK, size - n) for n in range(0, size, CHUNK))
            for chunk in chunks if reply.stream else [reply.body]:
                writer.write(conn.send(h11.Data(data=chunk)))
                await writer.drain()
                received.bytes_sent += len(chunk)
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            received.aborted = True
            return False
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(CHUNK))
    return event


def _remember_sni(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
    ssl_object.sni = name  # type: ignore[attr-defined]


def tls_contexts(directory: Path, hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for `hostname`, and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
