"""The outgoing MIME builder on its own: headers, trimming, and injection refused."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from inbox_service.ingest.store import TOKEN_RE
from inbox_service.replies import mime
from inbox_service.replies.mime import HeaderInjection, OutgoingMail, Recipient

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def mail(**kw: object) -> OutgoingMail:
    base: dict[str, object] = {
        "message_id": "01J.0123456789abcdef@example.com",
        "from_address": "support@example.com",
        "from_name": "Ana via Support",
        "reply_to": "support@example.com",
        "to": [Recipient("c@customer.test", "Cé Costa")],
        "subject": "Re: Olá",
        "date": NOW,
        "text": "Hi\n",
    }
    return OutgoingMail(**(base | kw))  # type: ignore[arg-type]


def test_plain_text_mail_is_single_part_utf8_with_crlf() -> None:
    raw = mime.build(mail())
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "text/plain"
    assert msg["Subject"] == "Re: Olá"
    assert msg["To"].addresses[0].display_name == "Cé Costa"
    assert msg["Date"].datetime == NOW


def test_references_keep_the_root_and_the_last_twenty() -> None:
    refs = [f"r{n}@x.test" for n in range(50)]
    assert mime.trim_references(refs) == ["r0@x.test", *refs[-20:]]
    msg = message_from_bytes(mime.build(mail(references=refs, in_reply_to="r49@x.test")))
    assert msg["References"].split() == ["<r0@x.test>", *(f"<{r}>" for r in refs[-20:])]


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Parcel", "Re: Parcel"),
        ("Re: Parcel", "Re: Parcel"),
        ("AW: Paket", "AW: Paket"),
        ("", "Re:"),
        ("two\r\nlines", "Re: two lines"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert mime.reply_subject(subject) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "a\r\nBcc: evil@example.com"},
        {"subject": "a=?UTF-8?Q?=0ABcc:_evil@example.com?="},  # CVE-2024-6923
        {"subject": "a\x00b"},
        {"from_name": "x\nBcc: y@evil.test"},
        {"to": [Recipient("c@customer.test", "=?utf-8?q?x=0D=0ABcc:_y@evil.test?=")]},
        {"cc": [Recipient("c@customer.test\r\nBcc: y@evil.test")]},
    ],
)
def test_line_breaks_in_header_values_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(HeaderInjection):
        mime.build(mail(**change))


def test_auto_acknowledgements_are_marked() -> None:
    msg = message_from_bytes(mime.build(mail(auto_submitted=True)))
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"


def test_message_id_carries_the_token_ingest_threads_by() -> None:
    message_id = mime.new_message_id("0123456789abcdef", "Example.COM")
    assert message_id.endswith(".0123456789abcdef@example.com")
    match = TOKEN_RE.search(message_id)
    assert match is not None
    assert match.group(1) == "0123456789abcdef"
