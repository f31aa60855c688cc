"""The mail servers of `inbox-service dev --demo`, in the dev process's event loop.

* IMAP: pymap's in-memory `dict` backend behind its `IMAPServer`, plain (no TLS) on a free
  port of 127.0.0.1, one user, INBOX seeded at every start with a few support threads
  dated relative to now (`demo_messages`). Ingest is exactly-once by Message-ID, so
  re-seeding a fresh server at each start (a new UIDVALIDITY) adds nothing twice.
* SMTP: an aiosmtpd sink on a free port that keeps what it receives (in memory, the last
  `SmtpSink.KEEP`) and logs one line per message.

pymap and aiosmtpd are dev dependencies: import this module only for `--demo`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from argparse import Namespace
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from typing import Self

from aiosmtpd.smtp import SMTP, Envelope, Session
from proxyprotocol.reader import ProxyProtocolReader
from pydantic import SecretStr
from pymap.backend.dict import Config, Login
from pymap.backend.dict.filter import FilterSet
from pymap.backend.dict.mailbox import MailboxSet
from pymap.concurrent import Subsystem
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import Cleartext

from inbox_service.inboxes.mail_settings import ImapSettingsIn, SmtpSettingsIn

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEMO_ADDRESS = "support@example.com"  # the demo inbox's address and its IMAP login
DEMO_PASSWORD = "demo"  # noqa: S105 (an in-memory demo server on the loopback interface)
POLL_SECONDS = 10
THREADS = 6  # conversations `demo_messages` makes (its replies thread into them)


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    received_at: datetime


class SmtpSink:
    """An aiosmtpd handler that accepts everything, keeps it and logs one line each."""

    KEEP = 1000

    def __init__(self) -> None:
        self.messages: deque[ReceivedMail] = deque(maxlen=self.KEEP)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            content=content,
            received_at=datetime.now(UTC),
        )
        self.messages.append(mail)
        subject = BytesHeaderParser(policy=policy.default).parsebytes(content)["subject"]
        log.info(
            "demo SMTP sink: message from <%s> to %s, subject %r (%d bytes)",
            mail.mail_from,
            ", ".join(f"<{r}>" for r in mail.rcpt_tos),
            str(subject or ""),
            len(content),
        )
        return "250 OK: kept by the inbox-service demo sink"


@dataclass
class DemoMail:
    """The running demo servers; `aclose()` (or leaving `async with`) stops both."""

    imap_port: int
    smtp_port: int
    sink: SmtpSink
    _servers: list[asyncio.Server] = field(default_factory=list, repr=False)
    host: str = HOST
    username: str = DEMO_ADDRESS
    password: str = DEMO_PASSWORD

    def imap_settings(self) -> ImapSettingsIn:
        """What the demo inbox stores to sync from the demo IMAP server."""
        return ImapSettingsIn(
            host=self.host,
            port=self.imap_port,
            security="none",
            username=self.username,
            secret=SecretStr(self.password),
            poll_interval_seconds=POLL_SECONDS,
            enabled=True,
        )

    def smtp_settings(self) -> SmtpSettingsIn:
        """Replies from the demo inbox go to the sink."""
        return SmtpSettingsIn(host=self.host, port=self.smtp_port, security="none")

    async def aclose(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def start_demo_mail(now: datetime) -> DemoMail:
    """Start the demo IMAP server (seeded with mail dated relative to `now`) and the sink."""
    _make_logs_visible()
    servers: list[asyncio.Server] = []
    try:
        imap = await _start_imap(demo_messages(now))
        servers.append(imap)
        sink = SmtpSink()
        loop = asyncio.get_running_loop()
        smtp = await loop.create_server(
            lambda: SMTP(sink, hostname="localhost", enable_SMTPUTF8=True, loop=loop), HOST, 0
        )
        servers.append(smtp)
    except BaseException:
        await DemoMail(0, 0, SmtpSink(), servers).aclose()
        raise
    return DemoMail(_port(imap), _port(smtp), sink, servers)


class _DemoConfig(Config):
    @property
    def greeting(self) -> bytes:
        return b"inbox-service demo IMAP server ready"  # pymap's default looks up the FQDN


async def _start_imap(messages: list[tuple[datetime, bytes]]) -> asyncio.Server:
    config = _DemoConfig(
        Namespace(passlib_cfg=None, proxy_protocol=None),
        host=HOST,
        port=0,
        tls_enabled=False,
        hash_context=Cleartext(),  # no CPU-heavy hashing: the password is the demo one
        cpu_subsystem=Subsystem.for_asyncio(),  # everything in this loop, no thread pool
        invalid_user_sleep=0.0,
        demo_data=False,
        demo_user=DEMO_ADDRESS,
        demo_password=DEMO_PASSWORD,
    )
    login = Login(config)
    password = await Passwords(config).hash_password(DEMO_PASSWORD)
    await login.demo_user_identity.set(UserMetadata(config, DEMO_ADDRESS, password=password))
    # The user's mailboxes, filled before anyone logs in; pymap's sessions find them here.
    mailboxes = MailboxSet()
    inbox = await mailboxes.get_mailbox("INBOX")
    for when, raw in messages:
        await inbox.append(AppendMessage(raw, when), recent=True)
    config.set_cache[DEMO_ADDRESS] = (mailboxes, FilterSet())
    imap_server = IMAPServer(login, config)
    callback = ProxyProtocolReader(config.proxy_protocol).get_callback(imap_server)
    return await asyncio.start_server(callback, HOST, 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def _make_logs_visible() -> None:
    """`dev` leaves logging unconfigured; the sink's one line per message should show."""
    if not log.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


# --- the demo mailbox --------------------------------------------------------------------

_SUPPORT = f"Demo Support <{DEMO_ADDRESS}>"
# A tiny, valid one-page PDF ("Factura 10377") and a 1x1 PNG, as customers attach them.
_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Contents 4 0 R"
    b"/Resources<</Font<</F1 5 0 R>>>>>>endobj\n"
    b"4 0 obj<</Length 44>>stream\nBT /F1 24 Tf 72 760 Td (Factura 10377) Tj ET\nendstream\n"
    b"endobj\n5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _mail(
    when: datetime,
    sender: str,
    subject: str,
    message_id: str,
    body: str,
    *,
    to: str = _SUPPORT,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    html: bool = False,
    headers: tuple[tuple[str, str], ...] = (),
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> tuple[datetime, bytes]:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    for name, value in headers:
        msg[name] = value
    msg.set_content(body, subtype="html" if html else "plain")
    for filename, mime_type, data in attachments:
        maintype, subtype = mime_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    # Non-ASCII headers leave as RFC 2047 encoded words, lines end in CRLF.
    return when, msg.as_bytes(policy=policy.SMTP)


def demo_messages(now: datetime) -> list[tuple[datetime, bytes]]:
    """`THREADS` support threads in 14 messages, oldest first, with stable Message-IDs."""

    def ago(**delta: float) -> datetime:
        return now - timedelta(**delta)

    emma = "Emma Carter <emma.carter@example.net>"
    jonas = "Jonas Müller <jonas.mueller@example.org>"
    priya = "Priya Raman <priya.raman@acme-logistics.example>"
    oncall = "Acme On-Call <oncall@acme-logistics.example>"
    lucia = "Lucía Fernández <lucia.fernandez@example.org>"
    marco = "Marco Rossi <marco.rossi@studio-rossi.example>"
    outlook = (("X-Mailer", "Microsoft Outlook 16.0"), ("Thread-Topic", "Doppelte Abbuchung"))
    de_subject = "Doppelte Abbuchung – Rechnung RE-20931 bitte prüfen"  # noqa: RUF001
    es_subject = "Solicitud de reembolso: pedido nº 10377"
    outage = "URGENT: checkout API returning 502 for all requests"
    seats = "Adding two seats to our plan"
    mails = [
        # 1. A delayed order: a nudge (In-Reply-To) and a reply to our answer (References).
        _mail(ago(days=3, hours=2), emma, "Order #48213 still not delivered",
              "order-48213@example.net",
              "Hi,\n\nI ordered a standing desk (order #48213) twelve days ago and the tracking "
              "page hasn't changed since it left your warehouse last Tuesday.\n\nCould you check "
              "where it is? I need it for a new hire starting Monday.\n\nThanks,\nEmma"),
        _mail(ago(days=2, hours=1), emma, "Re: Order #48213 still not delivered",
              "order-48213-nudge@example.net",
              "Any news on this? Still nothing on the tracking page.\n\nEmma\n\n"
              "> I ordered a standing desk (order #48213) twelve days ago ...",
              in_reply_to="order-48213@example.net", references=("order-48213@example.net",)),
        _mail(ago(hours=20), emma, "Re: Order #48213 still not delivered",
              "order-48213-arrived@example.net",
              "It arrived this morning, thank you! One corner of the box was crushed though and "
              "the left leg is scratched. Can you send a replacement leg?\n\nEmma\n\n"
              "> Thanks for your patience: the parcel was held at the Leipzig depot and is out\n"
              "> for delivery today.",
              in_reply_to="reply-48213@support.example.com",
              references=("order-48213@example.net", "reply-48213@support.example.com")),
        # 2. German, Outlook: "AW:" replies without In-Reply-To/References (subject fallback).
        _mail(ago(days=2, hours=5), jonas, de_subject, "DB8PR04MB7001.1@example.org",
              "Guten Tag,\n\nfür die Rechnung RE-20931 wurde mein Konto am 3. zweimal belastet "
              "(je 249,00 €). Bitte prüfen Sie das und erstatten Sie den doppelten Betrag.\n\n"
              "Mit freundlichen Grüßen\nJonas Müller", headers=outlook),
        _mail(ago(days=1, hours=3), jonas, f"AW: {de_subject}", "DB8PR04MB7001.2@example.org",
              "Hallo,\n\nanbei wie gewünscht der Kontoauszug-Ausschnitt: beide Buchungen tragen "
              "die Referenz RE-20931.\n\nGruß\nJonas Müller\n\n-----Ursprüngliche Nachricht-----\n"
              "Von: Demo Support <support@example.com>\nBetreff: AW: Doppelte Abbuchung",
              headers=outlook),
        _mail(ago(hours=3), jonas, f"AW: AW: {de_subject}", "DB8PR04MB7001.3@example.org",
              "Danke, die Gutschrift ist heute eingegangen. Das Ticket kann geschlossen werden.\n\n"
              "Jonas Müller", headers=outlook),
        # 3. An outage: the customer's on-call and the reporter reply with full headers.
        _mail(ago(minutes=50), priya, outage, "incident-0412@acme-logistics.example",
              "Since 09:40 UTC every call to POST /v2/checkout returns 502 Bad Gateway. Our "
              "webshop is down for all customers. Request id of one failure: 7f3c9a21.\n\n"
              "Please escalate. Phone: +1 555 0100\n\nPriya Raman, Head of Operations",
              headers=(("X-Priority", "1 (Highest)"), ("Importance", "High"))),
        _mail(ago(minutes=35), oncall, f"Re: {outage}", "incident-0412-2@acme-logistics.example",
              "On-call here. Error rate is 100% from all three regions; status page still says "
              "operational. Any ETA?\n\n"
              "> Since 09:40 UTC every call to POST /v2/checkout returns 502",
              to=f"{_SUPPORT}, {priya}", in_reply_to="incident-0412@acme-logistics.example",
              references=("incident-0412@acme-logistics.example",)),
        _mail(ago(minutes=12), priya, f"Re: {outage}", "incident-0412-3@acme-logistics.example",
              "Checkout works again since 10:32. We will need a written incident report for our "
              "management by Friday.\n\nPriya",
              in_reply_to="incident-0412-2@acme-logistics.example",
              references=("incident-0412@acme-logistics.example",
                          "incident-0412-2@acme-logistics.example")),
        # 4. Spanish refund request with the invoice attached, and a photo in the reply.
        _mail(ago(days=1, hours=8), lucia, es_subject, "reembolso-10377@example.org",
              "Hola:\n\nEl pedido nº 10377 llegó con la lámpara rota. Adjunto la factura. "
              "¿Podrían devolverme el importe (89,90 €)?\n\nUn saludo,\nLucía Fernández",
              attachments=(("factura-10377.pdf", "application/pdf", _PDF),)),
        _mail(ago(hours=6), lucia, f"RE: {es_subject}", "reembolso-10377-2@example.org",
              "Les envío también una foto del daño. ¿Necesitan que devuelva la lámpara?\n\nLucía",
              in_reply_to="reembolso-10377@example.org",
              references=("reembolso-10377@example.org",),
              attachments=(("foto-lampara.png", "image/png", _PNG),)),
        # 5. A question, then the customer's out-of-office answering our reply to it.
        _mail(ago(hours=7), marco, seats, "seats-2291@studio-rossi.example",
              "Hello, we are hiring two designers next month. Can we add two seats to our Team "
              "plan mid-cycle, and how is that billed?\n\nMarco"),
        _mail(ago(hours=5), marco, f"Automatic reply: Re: {seats}", "ooo-2291@studio-rossi.example",
              "I am out of the office until Monday with limited access to email. For urgent "
              "matters please call the studio on +39 02 555 0199.\n\nMarco Rossi",
              in_reply_to="reply-2291@support.example.com",
              references=("seats-2291@studio-rossi.example", "reply-2291@support.example.com"),
              headers=(("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All"))),
        # 6. An HTML-only newsletter from a carrier (bulk, list headers).
        _mail(ago(hours=9), "ShipFast Updates <news@shipfast.example>",
              "Your carrier update: new pickup windows from next week",
              "newsletter-2024-17@shipfast.example", _NEWSLETTER, html=True,
              headers=(("List-Id", "ShipFast customer updates <updates.shipfast.example>"),
                       ("List-Unsubscribe", "<https://shipfast.example/unsubscribe?u=demo>"),
                       ("Precedence", "bulk"))),
    ]  # fmt: skip
    return sorted(mails, key=lambda mail: mail[0])


_NEWSLETTER = """<!DOCTYPE html>
<html><head><style>body{font-family:Arial,sans-serif} .cta{background:#e4572e;color:#fff}</style>
</head><body>
<table width="600" align="center"><tr><td>
<h1>New pickup windows</h1>
<p>From next Monday, drivers collect between <b>14:00 and 18:00</b> instead of 12:00&ndash;16:00.
Parcels handed over by 18:00 still leave the same day.</p>
<p><a class="cta" href="https://shipfast.example/pickups?utm_source=newsletter">See your
schedule</a></p>
<p style="font-size:11px;color:#888">You receive this because you ship with ShipFast.
<a href="https://shipfast.example/unsubscribe?u=demo">Unsubscribe</a></p>
<img src="https://shipfast.example/open.gif?u=demo" width="1" height="1" alt="">
</td></tr></table>
</body></html>
"""
