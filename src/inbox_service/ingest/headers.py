"""Header fields: Message-IDs, addresses, dates, Thread-Index, and the auto-mail classes.

Every reader takes the raw (unfolded, 8-bit-decoded) header value and never raises.

Addresses have a fast path and a full path. The full path is the stdlib's RFC 5322
parser (`policy.default`'s header registry), about 300 µs per header; the fast path is one
regular expression for the shapes nearly all mail uses (`Name <a@b.example>`,
`"Name" <a@b.example>`, `=?utf-8?…?= <a@b.example>`, `a@b.example`, comma-separated) and
must give exactly what the full path gives (tested on the corpora and with hypothesis).
Anything else goes to the full path; if that raises (cpython #148518, #151857: `To: "`,
`To: (c):`, `To: .`), a conservative regex extracts what looks like `local@domain`
(RELIABILITY §3 rule 7) and the caller marks the message degraded.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, Literal

from inbox_service.ingest.charsets import (
    ENCODED_WORD,
    STRICT_ENCODED_WORD,
    clean_header_text,
    decode_rfc2047,
)

AutoKind = Literal["auto_reply", "bulk", "bounce"]

MAX_REFERENCES = 100
# Structured parsing cost grows with the value; longer address lists take the regex path.
MAX_STRUCTURED_CHARS = 16_384
MAX_ADDRESSES = 1_000
_MAX_ID_CHARS = 998
_EARLIEST = datetime(1980, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Address:
    name: str | None
    address: str


Notes = list[str]


# --- Message-IDs -------------------------------------------------------------------------

_ANGLE = re.compile(r"<([^<>]*)>")
_WHITESPACE = re.compile(r"\s+")


def normalize_message_id(value: str) -> str | None:
    """`<Local@Example.COM>` → `Local@example.com`; None for an empty or garbage id.

    The first `<…>` wins; without brackets, the first whitespace-separated token. Inner
    whitespace (folding) is removed, the domain part (after the last `@`) lower-cased, the
    local part kept as is. Ids without `@` are kept (some MTAs send them), ids with an
    empty local or domain part, control characters or more than 998 characters are not.
    """
    match = _ANGLE.search(value)
    if match is not None:
        candidate = _WHITESPACE.sub("", match.group(1))
    else:
        tokens = value.split()
        candidate = tokens[0] if tokens else ""
    if not candidate or len(candidate) > _MAX_ID_CHARS or not candidate.isprintable():
        return None
    if "<" in candidate or ">" in candidate:
        return None
    local, at, domain = candidate.rpartition("@")
    if not at:
        return candidate
    if not local or not domain:
        return None
    return f"{local}@{domain.lower()}"


def message_ids(value: str) -> list[str]:
    """All normalised ids in a References / In-Reply-To value, in order, duplicates kept."""
    if "<" in value:
        raw: Iterable[str] = (f"<{inner}>" for inner in _ANGLE.findall(value))
    else:
        raw = re.split(r"[\s,]+", value)
    return [norm for token in raw if (norm := normalize_message_id(token)) is not None]


def clean_id_chain(
    ids: Sequence[str], own_id: str | None, *, cap: int | None = None
) -> tuple[str, ...]:
    """Drop self-references and repeats (a repeat is a loop), then keep first + last `cap-1`."""
    seen: set[str] = set() if own_id is None else {own_id}
    out: list[str] = []
    for item in ids:
        if item not in seen:
            seen.add(item)
            out.append(item)
    if cap is not None and len(out) > cap:
        out = out[:1] + out[len(out) - (cap - 1) :]
    return tuple(out)


# --- Addresses ---------------------------------------------------------------------------

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_WORD = r'[^\s"(),:;<>@\[\]\\]+'
_FAST_MAILBOX = re.compile(
    rf"""[ \t]*(?:
        (?P<bare>{_ADDR})
      | (?:"(?P<quoted>[^"\\\x00-\x08\x0a-\x1f\x7f]*)"|(?P<phrase>{_WORD}(?:[ \t]+{_WORD})*))?
        [ \t]*<(?P<angle>{_ADDR})>
    )[ \t]*(?P<end>,|\Z)""",
    re.VERBOSE,
)
# A whitespace-delimited run of encoded words, for the full path (see _normalize_ews).
_EW = STRICT_ENCODED_WORD.pattern
_EW_RUN = re.compile(rf"""(?<![^\s"]){_EW}(?:[ \t]+{_EW})*(?![^\s"<,])""")
_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@]+@[^<>\s@]+?)\s*>")
_LOOSE_ADDR = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_HEADER_FACTORY: Callable[[str, str], Any] = policy.default.header_factory


def _words_ok(text: str) -> bool:
    """Encoded words only as whole whitespace-delimited tokens (how the full parser sees them)."""
    if "=?" not in text:
        return True
    return all("=?" not in word or STRICT_ENCODED_WORD.fullmatch(word) for word in text.split())


_DOMAIN = re.compile(r'[^\s<>()\[\],;:"@\\]+|\[[^\[\]\\]*\]')
_BARE_LOCAL = re.compile(r'[^\s<>()\[\],;:"@\\]+')


def make_address(name: str | None, addr_spec: str) -> Address | None:
    """An Address, or None when there is no usable address (a bare phrase, `<>`, junk)."""
    addr_spec = clean_header_text(addr_spec)
    local, at, domain = addr_spec.rpartition("@")
    if at:
        quoted = len(local) > 1 and local.startswith('"') and local.endswith('"')
        if not (quoted or _BARE_LOCAL.fullmatch(local)) or not _DOMAIN.fullmatch(domain):
            return None
        addr_spec = f"{local}@{domain.lower()}"
    elif not _BARE_LOCAL.fullmatch(addr_spec):
        return None
    display = clean_header_text(name) if name else ""
    return Address(display or None, clean_header_text(addr_spec))


def _fast_addresses(value: str) -> list[Address] | None:
    out: list[Address] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _FAST_MAILBOX.match(value, pos)
        if match is None:
            return None
        pos = match.end()
        if match.group("bare") is not None:
            address = make_address(None, match.group("bare"))
        else:
            name = match.group("quoted")
            if name is None:
                phrase = match.group("phrase")
                name = " ".join(phrase.split()) if phrase is not None else None
            if name is not None and not _words_ok(name):
                return None
            address = make_address(decode_rfc2047(name) if name else None, match.group("angle"))
        if address is None or (match.group("end") == "," and pos >= end):
            return None
        out.append(address)
    return out or None


def _normalize_ews(value: str) -> str:
    """Re-encode each run of encoded words as one UTF-8 word holding our decoding of it.

    The stdlib decodes each word on its own (a character split across two words breaks)
    and knows neither our charset aliases nor the fallback chain.
    """

    def one_word(match: re.Match[str]) -> str:
        # cleaned here, as the name will be anyway: the registry rejects decoded CR/LF
        data = clean_header_text(decode_rfc2047(match.group(0))).encode("utf-8", "surrogatepass")
        return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="

    return _EW_RUN.sub(one_word, value) if "=?" in value else value


class _Unusable(ValueError):
    """The parser returned something no mailer meant (`From: Big Bug bb@bug.com`)."""


def _full_addresses(value: str) -> list[Address]:
    header = _HEADER_FACTORY("to", _normalize_ews(value))
    out: list[Address] = []
    for item in header.addresses:
        addr_spec = str(item.addr_spec)
        if addr_spec.startswith('"') and '"' not in value:
            raise _Unusable(addr_spec)
        address = make_address(str(item.display_name), addr_spec)
        if address is None and "@" in addr_spec:
            raise _Unusable(addr_spec)
        if address is not None:
            out.append(address)
    return out


def fallback_addresses(value: str) -> list[Address]:
    """Best effort for values the parser rejects (RELIABILITY §3 rule 7).

    Angle addresses first (they are what a mailer meant), then `getaddresses`, then a
    plain regex. Text inside encoded words is display-name text and never an address.
    """
    plain = ENCODED_WORD.sub(" ", value)
    words = [m.span() for m in ENCODED_WORD.finditer(value)]
    angles = [
        m for m in _ANGLE_ADDR.finditer(value) if not any(a <= m.start() < b for a, b in words)
    ]
    if angles:
        out: list[Address] = []
        previous = 0
        for match in angles:
            raw_name = value[previous : match.start()]
            raw_name = raw_name.strip().lstrip(",;").strip().strip("\"'").strip()
            address = make_address(decode_rfc2047(raw_name) or None, match.group(1))
            if address is not None:
                out.append(address)
            previous = match.end()
        return out
    try:
        pairs = getaddresses([plain])
    except Exception:  # noqa: BLE001 - the regex below is the last resort
        pairs = []
    found = [
        make_address(name or None, addr)
        for name, addr in pairs
        if "@" in addr and not _WHITESPACE.search(addr)
    ]
    out = [address for address in found if address is not None]
    if out:
        return out
    matches = list(_LOOSE_ADDR.finditer(plain))
    name: str | None = None
    if len(matches) == 1:  # `Big Bug bb@bug.com`: what is left around the address is a name
        rest = plain[: matches[0].start()] + plain[matches[0].end() :]
        name = rest.strip().strip("<>\"'()[]").strip() or None
    loose = (make_address(name, m.group(0).strip(".")) for m in matches)
    return [address for address in loose if address is not None]


def parse_addresses(values: Sequence[str], *, fast: bool, notes: Notes) -> tuple[Address, ...]:
    """All mailboxes of one or more occurrences of an address header, duplicates removed."""
    result: list[Address] = []
    for value in values:
        if not value.strip():
            continue
        found = _fast_addresses(value) if fast else None
        if found is None:
            if len(value) > MAX_STRUCTURED_CHARS:
                notes.append(f"address header of {len(value)} characters: regex extraction")
                found = fallback_addresses(value)
            else:
                try:
                    found = _full_addresses(value)
                except Exception as exc:  # noqa: BLE001 - cpython #148518 / #151857 and kin
                    notes.append(f"address parser: {type(exc).__name__} on {value[:80]!r}")
                    found = fallback_addresses(value)
        result.extend(found)
    seen: set[tuple[str | None, str]] = set()
    unique: list[Address] = []
    for address in result:
        key = (address.name, address.address)
        if key not in seen:
            seen.add(key)
            unique.append(address)
    return tuple(unique[:MAX_ADDRESSES])


def return_path(value: str) -> Address | None:
    """The envelope sender from Return-Path; None for the null path `<>`."""
    match = _ANGLE.search(value)
    inner = match.group(1) if match is not None else value
    inner = _WHITESPACE.sub("", inner)
    return make_address(None, inner) if inner else None


def is_null_return_path(values: Sequence[str]) -> bool:
    return any(_WHITESPACE.sub("", value) in ("<>", "") for value in values[:1])


# --- Date, subject, Thread-Index ----------------------------------------------------------


def parse_date(value: str) -> datetime | None:
    """An aware UTC datetime, or None when missing, unparseable or outside 1980-2099."""
    value = value.strip()
    if not value:
        return None
    parsed: datetime | None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000": no zone information; RFC 5322 says treat as UTC
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return parsed if _EARLIEST <= parsed < _LATEST else None


MAX_SUBJECT_CHARS = 2_000


def decode_subject(value: str) -> str:
    return clean_header_text(decode_rfc2047(value))[:MAX_SUBJECT_CHARS]


def decode_thread_index(value: str) -> bytes | None:
    compact = "".join(value.split())
    if not compact:
        return None
    try:
        return base64.b64decode(compact, validate=True) or None
    except (binascii.Error, ValueError):
        return None


# --- Automatic mail (RELIABILITY §4) --------------------------------------------------------

_DAEMONS = frozenset({"mailer-daemon", "mail-daemon", "mailerdaemon"})
_FAILURE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|delivery (?:status|failure|has failed)|failure notice"
    r"|mail delivery failed|could not be delivered|non-?delivery|unzustellbar|non remis",
    re.I,
)
_NOREPLY = re.compile(r"no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?(?:[-+=.].*)?", re.I)
_SUPPRESS = frozenset({"all", "oof", "autoreply"})


def _token(value: str) -> str:
    """`auto-generated (failure)` → `auto-generated`; `Bulk;` → `bulk`."""
    return re.split(r"[\s;(]", value.strip().lower(), maxsplit=1)[0] if value.strip() else ""


def classify(
    headers: Mapping[str, Sequence[str]],
    *,
    sender: Address | None,
    content_type: str,
    report_type: str | None,
    has_delivery_status: bool,
) -> AutoKind | None:
    """bounce > explicit auto-reply > bulk/list/automated > weak auto-reply signals > None."""

    def first(name: str) -> str:
        values = headers.get(name)
        return values[0] if values else ""

    local = sender.address.rpartition("@")[0] or sender.address if sender else ""
    local = local.lower()
    if (
        (content_type == "multipart/report" and report_type == "delivery-status")
        or has_delivery_status
        or "x-failed-recipients" in headers
        or local in _DAEMONS
        or (local == "postmaster" and _FAILURE_SUBJECT.search(first("subject")) is not None)
    ):
        return "bounce"
    auto_submitted = _token(first("auto-submitted"))
    precedence = _token(first("precedence") or first("x-precedence"))
    if (
        auto_submitted == "auto-replied"
        or precedence == "auto_reply"
        or any(_token(first(h)) not in ("", "no") for h in ("x-autoreply", "x-autorespond"))
        or "x-autoresponder" in headers
        or (content_type == "multipart/report" and report_type is not None)
    ):
        return "auto_reply"
    if (
        auto_submitted not in ("", "no")
        or precedence in ("bulk", "list", "junk")
        or "list-id" in headers
        or "list-unsubscribe" in headers
        or _NOREPLY.fullmatch(local) is not None
        or local == "postmaster"
    ):
        return "bulk"
    suppress = {t.strip().lower() for t in first("x-auto-response-suppress").split(",")}
    if suppress & _SUPPRESS or is_null_return_path(headers.get("return-path", [])):
        return "auto_reply"
    return None
