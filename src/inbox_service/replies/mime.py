"""Outgoing mail, built once at enqueue time (RELIABILITY §5 rules 1 and 4).

Header values never reach the generator unchecked: CR, LF and NUL are refused in every
header-bound input, also when they hide in an RFC 2047 encoded word (`=?UTF-8?Q?=0A…?=`),
which the stdlib of Python < 3.11.10 / 3.12.5 would write out as a real header line
(CVE-2024-6923, RELIABILITY F2). The generated header block is then parsed back and must
name exactly the headers we set: a last check that nothing was injected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

from inbox_service.core.ids import ulid
from inbox_service.ingest.charsets import decode_rfc2047

MAX_REFERENCES_TAIL = 20
_CONTROL = re.compile(r"[\r\n\x00]")


class HeaderInjection(ValueError):
    """A header-bound value carries a line break or NUL (possibly encoded)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} must not contain line breaks or NUL characters")
        self.what = what


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str | None = None


@dataclass(frozen=True)
class OutgoingMail:
    message_id: str  # without <>
    from_address: str
    from_name: str | None
    reply_to: str
    to: Sequence[Recipient]
    subject: str
    date: datetime
    text: str
    html: str | None = None
    cc: Sequence[Recipient] = ()
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    auto_submitted: bool = False
    extra: Sequence[tuple[str, str]] = field(default_factory=tuple)


def check_header_value(what: str, value: str | None) -> None:
    """Refuse CR/LF/NUL, raw or inside an encoded word."""
    if value is None:
        return
    if _CONTROL.search(value) or ("=?" in value and _CONTROL.search(decode_rfc2047(value))):
        raise HeaderInjection(what)


def new_message_id(thread_token: str, domain: str) -> str:
    """`<ULID.token@domain>`: the token threads replies back (ingest/store.py, rule 3)."""
    return f"{ulid()}.{thread_token}@{domain.lower()}"


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower() or "localhost"


def trim_references(references: Sequence[str]) -> list[str]:
    """The first id (the thread's root) and the last 20 (RELIABILITY §5 rule 4)."""
    refs = list(dict.fromkeys(references))
    if len(refs) <= MAX_REFERENCES_TAIL + 1:
        return refs
    return [refs[0], *refs[-MAX_REFERENCES_TAIL:]]


def reply_subject(subject: str) -> str:
    """`Re: <subject>` (once); stray line breaks in a stored subject become spaces."""
    stripped = " ".join(_CONTROL.sub(" ", subject).split())
    if re.match(r"^(re|aw|sv|antw)\s*(\[\d+\])?\s*:", stripped, re.I):
        return stripped
    return f"Re: {stripped}" if stripped else "Re:"


def _address(recipient: Recipient) -> HeaderAddress:
    return HeaderAddress(display_name=recipient.name or "", addr_spec=recipient.address)


def build(mail: OutgoingMail) -> bytes:
    """RFC 5322 bytes with CRLF line ends; multipart/alternative when there is HTML."""
    check_header_value("subject", mail.subject)
    check_header_value("from name", mail.from_name)
    for what, recipients in (("to", mail.to), ("cc", mail.cc)):
        for r in recipients:
            check_header_value(f"{what} name", r.name)
            check_header_value(f"{what} address", r.address)
    for name, value in mail.extra:
        check_header_value(name, value)
    msg = EmailMessage(policy=policy.SMTP)
    msg["Message-ID"] = f"<{mail.message_id}>"
    msg["Date"] = format_datetime(mail.date)
    msg["From"] = _address(Recipient(mail.from_address, mail.from_name))
    msg["Reply-To"] = _address(Recipient(mail.reply_to))
    msg["To"] = [_address(r) for r in mail.to]
    if mail.cc:
        msg["Cc"] = [_address(r) for r in mail.cc]
    msg["Subject"] = mail.subject
    if mail.in_reply_to:
        msg["In-Reply-To"] = f"<{mail.in_reply_to}>"
    if mail.references:
        msg["References"] = " ".join(f"<{r}>" for r in trim_references(mail.references))
    if mail.auto_submitted:
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    for name, value in mail.extra:
        msg[name] = value
    for name in ("Subject", "From", "To", "Cc"):
        if name in msg and _CONTROL.search(str(msg[name])):
            raise HeaderInjection(name.lower())
    msg.set_content(mail.text)
    if mail.html is not None:
        msg.add_alternative(mail.html, subtype="html")
    raw = msg.as_bytes()
    _verify(raw, [name.lower() for name in msg])
    return raw


def _verify(raw: bytes, expected: list[str]) -> None:
    """The header block we wrote has exactly the headers we set (no injected line)."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    written = [name.lower() for name in message_from_bytes(head + b"\r\n\r\n")]
    if sorted(written) != sorted(expected):
        raise HeaderInjection("a header")
