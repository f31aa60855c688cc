"""The MIME tree walk: body selection, attachments, enclosed messages, decoding.

`Walker.visit` goes down the tree the stdlib parser built (RELIABILITY §3 rule 4): it never
calls `get_content()` (which raises on multipart parts and unknown charsets), decodes
transfer encodings itself when the stdlib does not recognise their spelling, treats every
`message/*` part as an attachment (re-serialised, headers exposed for bounce linking), and
stops at MAX_DEPTH / MAX_PARTS with a note that makes the message `degraded`.

Body rules: in multipart/alternative the last alternative with text wins (separately for
text/plain and text/html); in related/report/signed only the first part is body; in
mixed, every inline text part is body, in order. Other leaves are attachments.
"""

from __future__ import annotations

import base64
import binascii
import io
import quopri
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.policy import EmailPolicy
from email.utils import collapse_rfc2231_value
from typing import TYPE_CHECKING, Any

from inbox_service.ingest.charsets import clean_header_text, decode_bytes, decode_rfc2047, fix_8bit
from inbox_service.ingest.headers import normalize_message_id

MAX_DEPTH = 20
# A media type as RFC 2045 tokens; anything else (a NUL, spaces, …) is invalid syntax,
# which RFC 2045 §5.2 reads as text/plain. PostgreSQL text cannot even hold a NUL.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
MAX_PARTS = 500
if TYPE_CHECKING:
    Msg = Message[Any, Any]
else:
    Msg = Message


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    content_id: str | None
    inline: bool
    data: bytes


class LazyPolicy(EmailPolicy):
    """`policy.default`, except that reading a header returns the raw value as a `str`."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):  # a header object set by code, not parsed
            return value
        return fix_8bit("".join(value.splitlines()))


LAZY = LazyPolicy()
_STDLIB_DECODES = frozenset(
    {"quoted-printable", "base64", "x-uuencode", "uuencode", "uue", "x-uue"}
)
_CTE_ALIASES = {
    "base64": "base64",
    "base-64": "base64",
    "quoted-printable": "quoted-printable",
    "quotedprintable": "quoted-printable",
    "qp": "quoted-printable",
    "x-uuencode": "x-uuencode",
    "uuencode": "x-uuencode",
}


def raw_get(part: Msg, name: str) -> str | None:
    for key, value in part.raw_items():
        if str(key).strip().lower() == name:
            return fix_8bit("".join(str(value).splitlines()))
    return None


@dataclass(frozen=True)
class PartInfo:
    content_type: str
    charset: str | None
    disposition: str | None
    filename: str | None
    report_type: str | None


def _param_text(value: object) -> str | None:
    """A parameter as returned by `Message.get_param`: str, or an RFC 2231 triple."""
    if value is None:
        return None
    if isinstance(value, tuple):
        charset, _language, text = (*value, None, None, None)[:3]
        try:
            data = str(text or "").encode("latin-1")
        except UnicodeEncodeError:  # already text (8-bit header bytes were decoded)
            return str(text or "")
        return decode_bytes(data, str(charset) if charset else None)
    return str(collapse_rfc2231_value(str(value)))


def _media_type(part: Msg) -> str:
    content_type = part.get_content_type()
    return content_type if _MEDIA_TYPE.fullmatch(content_type) else "text/plain"


def _pick(params: Sequence[tuple[str, Any]], name: str) -> str | None:
    """`Message.get_param(name)` over a `get_params()` list: the first match wins."""
    return next((_param_text(v) for k, v in params if k.lower() == name), None)


def info_fast(part: Msg) -> PartInfo:
    ct_params = part.get_params(None) or []
    cd_params = part.get_params(None, header="content-disposition") or []
    filename = _pick(cd_params, "filename")
    return PartInfo(
        content_type=_media_type(part),
        charset=_pick(ct_params, "charset"),
        disposition=part.get_content_disposition(),
        filename=filename if filename is not None else _pick(ct_params, "name"),
        report_type=_pick(ct_params, "report-type"),
    )


def info_full(part: Msg) -> PartInfo:
    """The same fields through policy.default's header registry."""
    factory = policy.default.header_factory
    ct_raw, cd_raw = raw_get(part, "content-type"), raw_get(part, "content-disposition")
    ct_params: Mapping[str, str] = factory("content-type", ct_raw).params if ct_raw else {}
    disposition, cd_params = None, {}
    if cd_raw is not None:
        cd = factory("content-disposition", cd_raw)
        disposition, cd_params = cd.content_disposition, cd.params
    filename = cd_params.get("filename", ct_params.get("name"))
    return PartInfo(
        content_type=_media_type(part),
        charset=ct_params.get("charset"),
        disposition=disposition.lower() if disposition else None,
        filename=fix_8bit(filename) if filename is not None else None,
        report_type=ct_params.get("report-type"),
    )


def _clean_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


@dataclass
class Walker:
    fast: bool
    max_attachment_bytes: int
    linesep: str
    notes: list[str]
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    enclosed_ids: list[str] = field(default_factory=list)
    has_delivery_status: bool = False
    parts: int = 0
    stopped: bool = False

    def info(self, part: Msg) -> PartInfo:
        if self.fast:
            return info_fast(part)
        try:
            return info_full(part)
        except Exception as exc:  # noqa: BLE001 - F3: the registry rejects some parameters
            self.notes.append(f"content-type parser raised {type(exc).__name__}")
            return info_fast(part)

    def visit_top(self, msg: Msg) -> tuple[PartInfo, list[str], list[str]]:
        info = self.info(msg)
        texts, htmls = self.visit(msg, 0, body=True, info=info)
        return info, texts, htmls

    def visit(
        self, part: Msg, depth: int, *, body: bool, info: PartInfo | None = None
    ) -> tuple[list[str], list[str]]:
        """Walk `part`; return the (texts, htmls) it contributes to the message body."""
        if self.stopped:
            return [], []
        self.parts += 1
        if self.parts > MAX_PARTS or depth > MAX_DEPTH:
            self.stopped = True
            self.notes.append(f"MIME limits reached (parts ≤ {MAX_PARTS}, depth ≤ {MAX_DEPTH})")
            return [], []
        if info is None:
            info = self.info(part)
        maintype = info.content_type.partition("/")[0]
        if part.is_multipart():
            payload = part.get_payload()
            if maintype == "message" or not isinstance(payload, list):
                self.message_part(part, info)
                return [], []
            children = [child for child in payload if isinstance(child, Message)]
            return self.multipart(info, children, depth, body=body)
        if maintype == "multipart":  # its boundary was never found: the payload is text
            self.notes.append(f"{info.content_type} without a usable boundary")
            info = PartInfo("text/plain", info.charset, None, None, None)
        return self.leaf(part, info, body=body)

    def multipart(
        self, info: PartInfo, children: Sequence[Msg], depth: int, *, body: bool
    ) -> tuple[list[str], list[str]]:
        subtype = info.content_type.partition("/")[2]
        results = []
        for index, child in enumerate(children):
            # related/report/signed: only the first part is the body, the rest are resources
            first_only = subtype in ("related", "report", "signed")
            results.append(
                self.visit(child, depth + 1, body=body and (index == 0 or not first_only))
            )
        if subtype == "alternative":  # in increasing order of preference: take the last one
            texts = next((t for t, _ in reversed(results) if t), [])
            htmls = next((h for _, h in reversed(results) if h), [])
            return texts, htmls
        return [t for ts, _ in results for t in ts], [h for _, hs in results for h in hs]

    def leaf(self, part: Msg, info: PartInfo, *, body: bool) -> tuple[list[str], list[str]]:
        ctype = info.content_type
        if (
            body
            and ctype in ("text/plain", "text/html")
            and info.disposition != "attachment"
            and not (info.filename and (self.texts if ctype == "text/plain" else self.htmls))
        ):
            data = self.payload(part, info, limit=None)
            text = _clean_text(decode_bytes(data or b"", info.charset))
            (self.texts if ctype == "text/plain" else self.htmls).append(text)
            return ([text], []) if ctype == "text/plain" else ([], [text])
        data = self.payload(part, info, limit=self.max_attachment_bytes)
        if ctype == "text/rfc822-headers" and data:
            self.enclosed_ids.extend(ids_in_header_text(decode_bytes(data, info.charset)))
        self.add_attachment(part, info, data)
        return [], []

    def message_part(self, part: Msg, info: PartInfo) -> None:
        """message/rfc822 (attached or bounced mail), message/delivery-status, …"""
        if info.content_type == "message/delivery-status":
            self.has_delivery_status = True
        payload = part.get_payload()
        if isinstance(payload, list) and info.content_type in ("message/rfc822", "message/global"):
            for enclosed in payload[:1]:
                if not isinstance(enclosed, Message):
                    continue
                own = raw_get(enclosed, "message-id")
                if own is not None and (mid := normalize_message_id(own)) is not None:
                    self.enclosed_ids.append(mid)
        self.add_attachment(part, info, self.serialize_body(part))

    def add_attachment(self, part: Msg, info: PartInfo, data: bytes | None) -> None:
        content_id = raw_get(part, "content-id")
        cid = clean_header_text(content_id).strip("<> ") if content_id else ""
        filename = clean_header_text(decode_rfc2047(info.filename)) if info.filename else ""
        inline = info.disposition == "inline" or (info.disposition is None and bool(cid))
        self.attachments.append(
            Attachment(
                filename=filename or None,
                content_type=info.content_type,
                content_id=cid or None,
                inline=inline,
                data=data if data is not None else b"",
            )
        )

    def payload(self, part: Msg, info: PartInfo, *, limit: int | None) -> bytes | None:
        """The decoded payload; None (and a note) when it is over `limit`."""
        raw_cte = str(raw_get(part, "content-transfer-encoding") or "")
        cte = _CTE_ALIASES.get(re.sub(r"[\s;\"']", "", raw_cte).lower(), "")
        if limit is not None:
            encoded = getattr(part, "_payload", None)  # not decoded yet: estimate from it
            size = len(encoded) if isinstance(encoded, str | bytes) else 0
            if (size * 3 // 4 if cte == "base64" else size) > limit:
                self.notes.append(f"{info.content_type} part over {limit} bytes: data dropped")
                return None
        try:
            data = part.get_payload(decode=True)
        except Exception as exc:  # noqa: BLE001 - one broken part, not a broken message
            self.notes.append(f"{info.content_type} part not decodable: {type(exc).__name__}")
            return b""
        if not isinstance(data, bytes):
            return b""
        if cte and raw_cte.lower() not in _STDLIB_DECODES:  # `base64;`, ` Base64 `, `qp`
            data = _decode_cte(data, cte)
        if limit is not None and len(data) > limit:
            self.notes.append(f"{info.content_type} part over {limit} bytes: data dropped")
            return None
        return data

    def serialize_body(self, part: Msg) -> bytes | None:
        buffer = io.BytesIO()
        gen_policy = LAZY.clone(refold_source="none", cte_type="8bit", linesep=self.linesep)
        try:
            BytesGenerator(buffer, mangle_from_=False, policy=gen_policy).flatten(part)
        except Exception as exc:  # noqa: BLE001 - keep the rest of the message
            self.notes.append(f"could not re-serialise an enclosed message: {type(exc).__name__}")
            return None
        data = buffer.getvalue()
        separator = (self.linesep * 2).encode()
        _headers, found, body = data.partition(separator)
        data = body if found else b""
        if len(data) > self.max_attachment_bytes:
            self.notes.append(f"enclosed message over {self.max_attachment_bytes} bytes: dropped")
            return None
        return data


def _decode_cte(data: bytes, cte: str) -> bytes:
    try:
        if cte == "base64":
            compact = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            if len(compact) % 4 == 1:  # a stray character: cannot be decoded, drop it
                compact = compact[:-1]
            return base64.b64decode(compact + b"=" * (-len(compact) % 4))
        if cte == "quoted-printable":
            return quopri.decodestring(data)
        return binascii.a2b_uu(data) if cte == "x-uuencode" and data else data
    except (binascii.Error, ValueError):
        return data


_HEADER_ID = re.compile(r"^message-id:[ \t]*((?:.*)(?:\n[ \t]+.*)*)", re.I | re.M)


def ids_in_header_text(text: str) -> list[str]:
    """Message-IDs in a block of header lines (text/rfc822-headers, a quoted bounce)."""
    text = text.replace("\r\n", "\n")
    return [m for raw in _HEADER_ID.findall(text) if (m := normalize_message_id(raw))]
