"""The preview line of a message: its own words, without quoted history or signature."""

from __future__ import annotations

import re

SNIPPET_CHARS = 200

# A line that starts the quoted history or the signature: everything from it on is dropped.
_CUT = re.compile(
    r"""^(?:
        --\s*$                                              # signature delimiter "-- "
      | _{20,}\s*$                                          # Outlook's rule above the header block
      | -{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine
                 |mensaje\s+original|messaggio\s+originale)\s*-{2,}\s*$
      | (?:on|am|le|el|il|op|em)\s.{0,200}?                  # "On … wrote:", "Am … schrieb …:"
        (?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|schreef|escreveu)\b.{0,200}:\s*$
      | -{3}\s.{0,200}(?:wrote|schrieb)\s*:\s*$             # "--- Name wrote:"
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_SPACE = re.compile(r"\s+")


def make_snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """About `limit` characters of the text, whitespace collapsed, cut at a word boundary."""
    kept: list[str] = []
    for line in text.splitlines():
        if _CUT.match(line.strip()):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    own = _SPACE.sub(" ", " ".join(kept)).strip()
    if not own:  # nothing of its own (a bare forward, all quoted): show what there is
        own = _SPACE.sub(" ", text[: limit * 20]).strip()
    if len(own) <= limit:
        return own
    cut = own[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit * 3 // 4 else cut
