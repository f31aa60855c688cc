"""Any bytes in → a stored message or a clear parse error in quarantine, never an exception.

tests/ingest/test_mime.py proves the parser never raises; this goes one level up, to what
the sync runs for every fetched batch: `parse_message` then `store_batch` (threading,
contacts, rules, SLA, events, the rows). Inputs: raw bytes; mail built from hostile header
values (line breaks, NUL, encoded words, odd charsets, boundaries, filenames); and a
realistic multipart mail with bytes flipped, cut or inserted at random places.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from inbox_service.conversations.models import Message, MessageRaw
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, dedupe_key_of, store_batch
from tests.properties.conftest import PROPERTIES
from tests.support.factories import make_inbox

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)

FRAGMENTS = st.sampled_from(
    ["\r\n", "\n", "\r", "\r\n ", "=?utf-8?q?", "?=", "=?utf-8?b?", "=0A", "=0D", "=00",
     "=?x-unknown?q?a?=", "=?iso-8859-8-i?b?4A==?=", "<", ">", '"', ",", ":", ";", "@", "(",
     ")", "\\", "\x00", "\x7f", "é", "\u202e", "\u2028", "\udcff", "boundary=", "name*=",
     "filename*0*=", "UTF-8''%00%0D%0A", "../../", "<a@b>", "<[x@y]>", "Re: ", "[#", "+"]
)  # fmt: skip
HEADER_TEXT = st.lists(FRAGMENTS | st.text(max_size=6), max_size=10).map("".join)
HEADER_NAMES = st.sampled_from(
    ["Subject", "From", "To", "Cc", "Reply-To", "Sender", "Message-ID", "In-Reply-To",
     "References", "Date", "Content-Type", "Content-Disposition", "Content-Transfer-Encoding",
     "Thread-Index", "Auto-Submitted", "Precedence", "X-Autoreply", "Return-Path",
     "MIME-Version", "X-Failed-Recipients"]
)  # fmt: skip

BASE = (
    b"From: Ana Silva <ana@customer.test>\r\nTo: support@example.com\r\n"
    b"Subject: =?utf-8?q?Parcel_=C3=A9?=\r\nMessage-ID: <base@customer.test>\r\n"
    b"In-Reply-To: <x@customer.test>\r\nReferences: <w@customer.test> <x@customer.test>\r\n"
    b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b'--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
    b"--inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 is late=\r\n\r\n"
    b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p onclick=x()>Caf\xc3\xa9</p><script>x()</script>\r\n--inner--\r\n"
    b'--outer\r\nContent-Type: application/pdf; name="a.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n\r\n"
    b"JVBERi0xLjQK\r\n--outer--\r\n"
)


def header_mail(items: list[tuple[str, str]], body: bytes) -> bytes:
    head = b"".join(
        f"{name}: {value}\r\n".encode("utf-8", "surrogatepass") for name, value in items
    )
    return head + b"\r\n" + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(BASE)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if action == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at : at + draw(st.integers(1, 40))]
        elif action == "insert":
            raw[at:at] = draw(st.sampled_from([b"\r\n", b"\x00", b"--outer", b"\r\n\r\n", b"=?"]))
        else:
            del raw[at:]
    return bytes(raw)


MAILS = (
    st.binary(max_size=1500)
    | st.builds(
        header_mail,
        st.lists(st.tuples(HEADER_NAMES, HEADER_TEXT), max_size=10),
        st.binary(max_size=300),
    )
    | mutated()
)


@settings(PROPERTIES, max_examples=400)
@given(raws=st.lists(MAILS, min_size=1, max_size=4))
# Found by this property: a NUL in a Content-Type reached PostgreSQL and failed the batch.
@example(raws=[b"Content-Type:\x00/\r\n\r\n"])
@example(raws=[b"From: a@b.test\r\nContent-Type: te\x00xt/pl\x00ain\r\n\r\nx"])
# … and a lone surrogate (an encoded word without a charset) in an address or a name.
@example(raws=[b"From:=??b?/A?=\r\n\r\n", b"To:=??b?/A?=\r\n\r\n", b"Cc: =??q?=FC?=\r\n\r\n"])
@example(raws=[b"From: =??q?=FC?= <a@b.test>\r\nSubject: =??q?=FC?=\r\n\r\nx"])
async def test_any_bytes_are_stored_or_quarantined_with_a_reason(
    db: SessionMaker, raws: list[bytes]
) -> None:
    async with transaction(db) as session:
        inbox = await make_inbox(session)
    context = InboxContext(inbox_id=inbox.id, team_addresses=frozenset({inbox.address}))
    items = [Incoming(raw=raw, parsed=parse_message(raw), folder="INBOX", uidvalidity=1, uid=i)
             for i, raw in enumerate(raws, 1)]  # fmt: skip
    async with transaction(db) as session:
        result = await store_batch(session, context, items, now=NOW)

    first: dict[str, bytes] = {}
    for item in items:
        first.setdefault(dedupe_key_of(item), item.raw)
    assert result.stored == len(first)
    assert result.duplicates == len(items) - len(first)
    async with transaction(db) as session:
        rows = (
            await session.execute(
                select(Message, MessageRaw.raw)
                .join(MessageRaw, MessageRaw.message_id == Message.id)
                .where(Message.inbox_id == inbox.id)
            )
        ).all()
    assert {m.dedupe_key: bytes(raw) for m, raw in rows} == first  # bytes kept exactly
    for message, _ in rows:
        event(f"parse_status={message.parse_status}, quarantined={message.conversation_id is None}")
        if message.conversation_id is None:  # the inbox's quarantine
            assert message.parse_status != "ok", message.dedupe_key
            assert message.parse_error, message.dedupe_key
        else:
            assert message.parse_status in {"ok", "degraded", "failed"}
