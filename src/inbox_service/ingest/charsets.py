"""Text decoding for mail: charset aliases, the fallback chain, RFC 2047 words, header hygiene.

Every function here is total: bytes in, `str` out, never an exception. The chain
(RELIABILITY §3 rule 3): the declared charset after the alias map, strict; then UTF-8,
strict (mislabelled mail is usually UTF-8); then, for a declared charset other than UTF-8
or ASCII, that charset with replacement characters. Otherwise (undeclared, unknown, or
declared UTF-8/ASCII that is not): UTF-8 with replacement characters when only a few
sequences are broken (a truncated character), else cp1252 with replacement characters.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from functools import lru_cache

# Labels seen in real mail that Python's codec registry does not know, or knows as a
# narrower charset than the one mailers actually use (WHATWG Encoding Standard mapping).
# `None` means "no information": use the undeclared chain.
_ALIASES: dict[str, str | None] = {
    "x-unknown": None,
    "unknown": None,
    "unknown-8bit": None,
    "x-user-defined": None,
    "default": None,
    "none": None,
    "charset": None,
    "1": None,
    "utf8": "utf-8",
    "uft-8": "utf-8",
    "utf-8-bom": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-greek": "mac_greek",
    "x-mac-turkish": "mac_turkish",
    "x-mac-ce": "mac_latin2",
    "x-mac-centraleurope": "mac_latin2",
    "x-mac-icelandic": "mac_iceland",
    "ansi": "cp1252",
    "ansi_x3.4-1968": "ascii",
    "us-ascii": "ascii",
}
# Codecs that are text encodings to Python but must never decode mail text.
_REFUSED = frozenset({"unicode_escape", "raw_unicode_escape", "undefined", "mbcs", "oem"})
_MAX_CHARSET_LEN = 64


@lru_cache(maxsize=512)
def python_codec(charset: str | None) -> str | None:
    """The Python codec name for a MIME charset label, or None when it is unknown or unusable."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").strip().lower()
    label = label.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    if not label or len(label) > _MAX_CHARSET_LEN:
        return None
    if label in _ALIASES:
        label_or_none = _ALIASES[label]
        if label_or_none is None:
            return None
        label = label_or_none
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode body or header bytes with the §3 chain; never raises."""
    codec = python_codec(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if codec is not None and codec not in ("ascii", "utf-8"):
        try:
            return data.decode(codec, "replace")
        except (UnicodeDecodeError, LookupError):  # pragma: no cover - replace never raises
            pass
    as_utf8 = data.decode("utf-8", "replace")
    # UTF-8 with a few broken sequences (a character cut off by truncation) stays UTF-8;
    # in cp1252 text nearly every 8-bit byte is an invalid UTF-8 sequence.
    if as_utf8.count("\ufffd") * 10 <= sum(1 for byte in data if byte >= 0x80):
        return as_utf8
    return data.decode("cp1252", "replace")


def fix_8bit(value: str, charset: str | None = None) -> str:
    """Re-decode a header value parsed from bytes: raw 8-bit bytes arrive as surrogates."""
    if value.isascii():
        return value
    # ascii bytes + surrogate-escaped 8-bit bytes (+ any real characters, as UTF-8)
    return decode_bytes(value.encode("utf-8", "surrogateescape"), charset)


# RFC 2047 encoded-word, leniently: encoded text may contain spaces (broken mailers do that).
ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([qQbB])\?(.*?)\?=", re.DOTALL)
# The strict form: what a token must look like to be treated as a whole encoded word.
STRICT_ENCODED_WORD = re.compile(r"=\?[^?\s]{1,80}\?[qQbB]\?[^?\s]*\?=")
_WS_ONLY = re.compile(r"[ \t\r\n]*")


def _ew_bytes(encoding: str, text: str) -> bytes | None:
    raw = text.encode("utf-8", "surrogateescape")
    if encoding in "qQ":
        return binascii.a2b_qp(raw, header=True)
    compact = re.sub(rb"[^A-Za-z0-9+/]", b"", raw)
    if not compact and raw.strip(b" \t="):
        return None  # nothing but junk: keep the word as it is
    compact = compact[: len(compact) - len(compact) % 4] if len(compact) % 4 == 1 else compact
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        return None


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded-words anywhere in `value` (lenient, like most mail clients).

    Adjacent encoded-words separated only by whitespace are joined without that whitespace,
    and their bytes are concatenated per charset first, so a multi-byte character split
    across two words survives. Words with unknown charsets go through the same chain as
    bodies. Text that is not an encoded word is returned unchanged.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[tuple[str | None, bytearray]] = []  # decoded runs, by charset label
    pos = 0
    for match in ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        data = _ew_bytes(match.group(2), match.group(3))
        if data is None:  # undecodable: keep the word literally
            continue
        if gap and (not pending or _WS_ONLY.fullmatch(gap) is None):
            _flush(pending, out)
            out.append(gap)
        charset = match.group(1).split("*", 1)[0].lower()
        if pending and pending[-1][0] == charset:
            pending[-1][1].extend(data)
        else:
            pending.append((charset, bytearray(data)))
        pos = match.end()
    _flush(pending, out)
    out.append(value[pos:])
    return "".join(out)


def _flush(pending: list[tuple[str | None, bytearray]], out: list[str]) -> None:
    for charset, data in pending:
        out.append(decode_bytes(bytes(data), charset))
    pending.clear()


# Everything `str.splitlines()` treats as a line break, plus NUL and the other C0/C1
# controls except TAB. Header-bound text must never carry a line break (F2). Lone
# surrogates (the stdlib's stand-ins for undecodable bytes, e.g. from an encoded word with
# no charset) cannot be encoded as UTF-8, so neither stored nor sent: they go too.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x80-\x9f\u2028\u2029\ud800-\udfff]+")
_SPACES = re.compile(r"\s+")


def clean_header_text(value: str) -> str:
    """Header text safe to store and to re-emit: line breaks and controls become one space."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()
