"""Subject normalisation for threading (RFC 5256 §2.1 "base subject") and Outlook's GUID.

`base_subject` takes an already decoded subject (`ParsedMessage.subject`) and applies the
RFC 5256 algorithm to a fixpoint, with the reply/forward prefixes of the languages our
customers write in (RELIABILITY §2 rule 4), reply counters (`Re[2]:`, `RE(3):`), French
spacing (`RE :`), full-width colons (NFKC) and casefolding. Because it loops until nothing
changes, it is idempotent: `base_subject(base_subject(s)) == base_subject(s)`.
"""

from __future__ import annotations

import re
import unicodedata

# Reply and forward prefixes, casefolded (German, Scandinavian, Dutch, Italian, French,
# Spanish/Portuguese, Polish, Turkish, Chinese, Japanese, Korean, Greek, Russian).
# fmt: off
_PREFIXES = frozenset({
    "re", "fw", "fwd", "aw", "wg", "sv", "vs", "vb", "antw", "antwort", "rif", "r", "tr",
    "réf", "ref", "rép", "rv", "enc", "res", "odp", "pd", "ynt", "ilt",
    "回复", "回覆", "答复", "答覆", "转发", "轉寄", "转寄", "返信", "転送", "답장", "회신", "전달",
    "απ", "σχετ", "πρθ", "отв", "пересл",
})
# fmt: on
_PREFIX = "|".join(sorted({re.escape(p) for p in _PREFIXES}, key=len, reverse=True))
_BLOB = r"\[[^\[\]]*\]"
# subj-leader: (blob)* prefix [counter] [blob] ":"   (RFC 5256 subj-refwd, widened)
_LEADER = re.compile(
    rf"^(?:{_BLOB}\s*)*(?:{_PREFIX})\.?\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*(?:{_BLOB}\s*)?:\s*"
)
_LEADING_BLOB = re.compile(rf"^{_BLOB}\s*")
_TRAILER = re.compile(r"\s*\(fwd\)\s*$")
_WRAPPER = re.compile(r"^\[fwd:(.*)\]$", re.DOTALL)


def _normalise(subject: str) -> str:
    for _ in range(4):  # NFKC and casefold can feed each other; stop at a fixpoint
        before = subject
        subject = unicodedata.normalize("NFKC", subject).casefold()
        subject = " ".join(subject.split())
        if subject == before:
            break
    return subject


def base_subject(subject: str) -> str:
    """`Re: AW: [list] Fwd: Hello (fwd)` → `hello`; see the module docstring."""
    current = _normalise(subject)
    for _ in range(len(current) + 2):  # every round that changes something shortens it
        before = current
        current = _TRAILER.sub("", current)
        stripped = _LEADER.sub("", current, count=1)
        if stripped == current:
            blob = _LEADING_BLOB.sub("", current, count=1)
            if blob.strip():  # a leading [blob] goes only if something is left
                stripped = blob
        current = stripped.strip()
        wrapped = _WRAPPER.match(current)
        if wrapped is not None and wrapped.group(1).strip():
            current = wrapped.group(1).strip()
        current = _normalise(current)
        if current == before:
            break
    return current


def thread_index_guid(thread_index: bytes) -> bytes | None:
    """The 16-byte conversation GUID of an Outlook Thread-Index (offset 6), or None if short."""
    if len(thread_index) < 22:
        return None
    return bytes(thread_index[6:22])
