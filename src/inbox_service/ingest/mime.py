"""Parse one raw RFC 5322 message into the fields ingestion stores. Never raises.

Layers (RELIABILITY §3 rule 2):

1. The structure comes from `BytesParser` with `parts.LAZY`, a `policy.default` whose header
   reads return the raw value (unfolded, 8-bit bytes decoded) instead of a header-registry
   object. The stock policy re-parses Content-Type with the full RFC 5322 parser on every
   `get_content_type()` call, several times per part: that is where the stdlib's ~460 msg/s
   goes, and where F3's `name*` crash happens. The tree it builds is the same.
2. Every field is read by our own total readers (`headers.py`, `charsets.py`); address
   headers use the stdlib registry when the fast regex does not apply. When the registry
   raises, regex fallbacks are used and the message is `degraded`.
3. Anything else that raises ends in `_failed`: status `failed`, with whatever the header
   block still yields.

`_parse(raw, fast=False)` is the reference: `policy.default` for the tree, the header
registry for Content-Type/Content-Disposition and for every address header. The tests
assert both give identical results on the corpora and a mailgen corpus, except on five
corpus files where the reference is worse (unquoted `boundary=----=_Part…` and unquoted
`name=` values it cannot read).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser, BytesParser
from typing import Literal
from urllib.parse import unquote

from inbox_service.ingest.charsets import fix_8bit
from inbox_service.ingest.headers import (
    MAX_REFERENCES,
    Address,
    AutoKind,
    classify,
    clean_id_chain,
    decode_subject,
    decode_thread_index,
    message_ids,
    normalize_message_id,
    parse_addresses,
    parse_date,
    return_path,
)
from inbox_service.ingest.htmlsafe import html_to_text, sanitize_html
from inbox_service.ingest.parts import (
    LAZY,
    MAX_DEPTH,
    MAX_PARTS,
    Attachment,
    Msg,
    Walker,
    ids_in_header_text,
)
from inbox_service.ingest.snippets import make_snippet

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Address",
    "Attachment",
    "AutoKind",
    "ParsedMessage",
    "fallback_message_id",
    "html_to_text",
    "normalize_message_id",
    "parse_message",
    "sanitize_html",
]

_MAX_ERROR_CHARS = 2000
ParseStatus = Literal["ok", "degraded", "failed"]


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    thread_index: bytes | None
    auto: AutoKind | None
    bounced_message_ids: tuple[str, ...]
    parse_status: ParseStatus
    parse_error: str | None
    snippet: str


def fallback_message_id(raw: bytes) -> str:
    """A deterministic id for mail without a Message-ID: the same bytes, the same id."""
    return f"sha256-{hashlib.sha256(raw).hexdigest()}@inbox-service.invalid"


_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.I)


def _raw_headers(msg: Msg) -> dict[str, list[str]]:
    """Header name → unfolded values. Raw 8-bit bytes are read as UTF-8, else in the charset
    the message declares for its body (old mailers write headers in it), else cp1252."""
    items = [
        (str(name).strip().lower(), "".join(str(value).splitlines()))
        for name, value in msg.raw_items()
    ]
    hint = None
    if any(not value.isascii() for _, value in items):
        content_type = next((value for name, value in items if name == "content-type"), "")
        match = _CHARSET_PARAM.search(content_type)
        hint = match.group(1) if match is not None else None
    headers: dict[str, list[str]] = {}
    for name, value in items:
        headers.setdefault(name, []).append(fix_8bit(value, hint))
    return headers


_CID_REF = re.compile(r"""cid:([^"'\s>)]+)""", re.I)


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


@dataclass
class _Fields:
    """What the header block alone yields: shared by the normal and the failed path."""

    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    subject: str = ""
    sender: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    date: datetime | None = None
    thread_index: bytes | None = None


def _header_fields(
    headers: Mapping[str, Sequence[str]], *, fast: bool, notes: list[str]
) -> _Fields:
    f = _Fields()
    raw_id = _first(headers, "message-id")
    f.message_id = normalize_message_id(raw_id) if raw_id is not None else None
    f.in_reply_to = clean_id_chain(
        [i for v in headers.get("in-reply-to", []) for i in message_ids(v)], f.message_id
    )
    f.references = clean_id_chain(
        [i for v in headers.get("references", []) for i in message_ids(v)],
        f.message_id,
        cap=MAX_REFERENCES,
    )
    f.subject = decode_subject(_first(headers, "subject") or "")
    for name in ("from", "sender"):
        found = parse_addresses(headers.get(name, []), fast=fast, notes=notes)
        if found:
            f.sender = found[0]
            break
    else:
        rp = _first(headers, "return-path")
        f.sender = return_path(rp) if rp is not None else None
    f.to = parse_addresses(headers.get("to", []), fast=fast, notes=notes)
    f.cc = parse_addresses(headers.get("cc", []), fast=fast, notes=notes)
    f.reply_to = parse_addresses(headers.get("reply-to", []), fast=fast, notes=notes)
    f.date = parse_date(_first(headers, "date") or "")
    raw_index = _first(headers, "thread-index")
    f.thread_index = decode_thread_index(raw_index) if raw_index is not None else None
    return f


def parse_message(raw: bytes, *, max_attachment_bytes: int = 25 * 1024 * 1024) -> ParsedMessage:
    """Parse raw RFC 5322 bytes. Never raises: problems show in `parse_status`/`parse_error`."""
    return _parse(raw, max_attachment_bytes=max_attachment_bytes, fast=True)


_OBS_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.M)
_HEADER_START = re.compile(rb"[!-9;-~]+:")
_ODD_LINE = re.compile(rb"^(?![!-9;-~]+:|[ \t]|From |\r?$)", re.M)


def _repair_header_block(raw: bytes) -> bytes:
    """Two repairs the stdlib lacks; without them it takes the rest of the header for body.

    * `Subject  : x` (RFC 5322 obs-optional) → `Subject: x`;
    * a junk line inside the header block (`quite Delivered-To: x`), followed by more
      header fields, becomes a continuation of the field before it.
    """
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    end = min(ends) if ends else len(raw)
    obsolete = _OBS_NAME.search(raw, 0, end) is not None
    odd = _ODD_LINE.search(raw, 1, end) is not None
    if not obsolete and not odd:
        return raw
    head = _OBS_NAME.sub(rb"\1:", raw[:end]) if obsolete else raw[:end]
    if odd:
        lines = head.split(b"\n")
        for index in range(len(lines) - 1, 0, -1):
            line = lines[index]
            if line[:1] in (b" ", b"\t") or _HEADER_START.match(line) or not line.strip():
                continue
            following = next(
                (later for later in lines[index + 1 :] if later[:1] not in (b" ", b"\t")), b""
            )
            if _HEADER_START.match(following):
                lines[index] = b" " + line
        head = b"\n".join(lines)
    return head + raw[end:]


def _parse(raw: bytes, *, max_attachment_bytes: int, fast: bool) -> ParsedMessage:
    notes: list[str] = []
    try:
        raw = _repair_header_block(raw)
        try:
            msg: Msg = BytesParser(policy=LAZY if fast else policy.default).parsebytes(raw)
        except Exception as exc:
            if fast:
                raise
            notes.append(f"policy.default parser raised {type(exc).__name__}: {exc}")
            msg = BytesParser(policy=LAZY).parsebytes(raw)
        return _build(raw, msg, max_attachment_bytes=max_attachment_bytes, fast=fast, notes=notes)
    except Exception as exc:  # noqa: BLE001 - one bad message must never stop ingestion
        return _failed(raw, exc, notes)


def _build(
    raw: bytes, msg: Msg, *, max_attachment_bytes: int, fast: bool, notes: list[str]
) -> ParsedMessage:
    headers = _raw_headers(msg)
    if not headers:
        notes.append("no header fields")
    fields = _header_fields(headers, fast=fast, notes=notes)
    walker = Walker(
        fast=fast,
        max_attachment_bytes=max_attachment_bytes,
        linesep="\r\n" if b"\r\n" in raw[:4096] else "\n",
        notes=notes,
    )
    top, texts, htmls = walker.visit_top(msg)
    html = "\n".join(htmls) if htmls else None
    text = "\n\n".join(texts) if texts else None
    if text is None and html is not None:
        try:
            text = html_to_text(html)
        except Exception as exc:  # noqa: BLE001 - keep the message, without derived text
            notes.append(f"html_to_text raised {type(exc).__name__}")
    auto = classify(
        headers,
        sender=fields.sender,
        content_type=top.content_type,
        report_type=(top.report_type or "").strip().lower() or None,
        has_delivery_status=walker.has_delivery_status
        or top.content_type == "message/delivery-status",
    )
    attachments = walker.attachments
    if html is not None and any(a.content_id and not a.inline for a in attachments):
        # An image the HTML shows through cid: is inline, whatever its disposition says.
        shown = {unquote(ref).strip("<>").lower() for ref in _CID_REF.findall(html)}
        attachments = [
            replace(a, inline=True) if a.content_id and a.content_id.lower() in shown else a
            for a in attachments
        ]
    bounced: tuple[str, ...] = ()
    if auto == "bounce":
        found = walker.enclosed_ids or ids_in_header_text(text or "")
        bounced = clean_id_chain(found, fields.message_id)
    return ParsedMessage(
        message_id=fields.message_id,
        in_reply_to=fields.in_reply_to,
        references=fields.references,
        subject=fields.subject,
        sender=fields.sender,
        to=fields.to,
        cc=fields.cc,
        reply_to=fields.reply_to,
        date=fields.date,
        text=text,
        html=html,
        attachments=tuple(attachments),
        thread_index=fields.thread_index,
        auto=auto,
        bounced_message_ids=bounced,
        parse_status="degraded" if notes else "ok",
        parse_error="; ".join(notes)[:_MAX_ERROR_CHARS] if notes else None,
        snippet=make_snippet(text or ""),
    )


_HEADER_LINE = re.compile(rb"^([!-9;-~]+)[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.M)


def _headers_best_effort(raw: bytes) -> dict[str, list[str]]:
    try:
        return _raw_headers(BytesHeaderParser(policy=LAZY).parsebytes(raw))
    except Exception:  # noqa: BLE001, S110 - fall through to the regex
        pass
    block = re.split(rb"\r?\n\r?\n", raw[:1_048_576], maxsplit=1)[0]
    headers: dict[str, list[str]] = {}
    for match in _HEADER_LINE.finditer(block):
        name = match.group(1).decode("ascii").lower()
        value = match.group(2).decode("ascii", "surrogateescape")
        headers.setdefault(name, []).append(fix_8bit("".join(value.splitlines())))
    return headers


def _failed(raw: bytes, exc: BaseException, notes: list[str]) -> ParsedMessage:
    error = "; ".join([*notes, f"{type(exc).__name__}: {exc}"])[:_MAX_ERROR_CHARS]
    auto: AutoKind | None = None
    try:
        headers = _headers_best_effort(raw)
        fields = _header_fields(headers, fast=True, notes=[])
        content_type = (_first(headers, "content-type") or "").split(";")[0].strip().lower()
        auto = classify(
            headers,
            sender=fields.sender,
            content_type=content_type,
            report_type=None,
            has_delivery_status=False,
        )
    except Exception:  # noqa: BLE001 - nothing at all could be read
        fields = _Fields()
    return ParsedMessage(
        message_id=fields.message_id,
        in_reply_to=fields.in_reply_to,
        references=fields.references,
        subject=fields.subject,
        sender=fields.sender,
        to=fields.to,
        cc=fields.cc,
        reply_to=fields.reply_to,
        date=fields.date,
        text=None,
        html=None,
        attachments=(),
        thread_index=fields.thread_index,
        auto=auto,
        bounced_message_ids=(),
        parse_status="failed",
        parse_error=error,
        snippet="",
    )
