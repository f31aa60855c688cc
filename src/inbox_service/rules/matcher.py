"""One compiled matcher for every enabled priority rule; pure Python, no database.

Every keyword and exclusion phrase of every rule goes into a single regex shaped like a
trie (`(?<!\\w)(?:refund(?:\\s+request(?!\\w)|(?!\\w))|urgent(?!\\w)|…)`), so a text is
scanned once whatever the number of rules: at each position only the branches whose first
character fits are tried. The regex sits in a lookahead, so occurrences that overlap
("product outage" in "product outage report") are all found; at one position it takes the
longest phrase, and the shorter phrases that are word-prefixes of it are added from a table.

Matching is literal (a keyword like `urgent.*` is escaped), whole-word (lookarounds on `\\w`,
which is Unicode-aware), case-insensitive (`re.IGNORECASE` on lower-cased keywords, plus
the case-folded spelling when it differs: "straße" also finds "STRASSE") and spans line
breaks (the words of a phrase are joined by `\\s+`). Texts and keywords are NFC-normalized,
so a decomposed "Ü" (U + combining diaeresis) matches a composed one. A match is mapped
back to its keywords by its lower-cased (or, failing that, case-folded), space-collapsed
text: a keyword matches its own spellings only, whatever other rules hold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, NamedTuple

Priority = Literal["urgent", "high", "normal", "low"]
Field = Literal["subject", "body"]
PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "normal", "low")
RANK: dict[str, int] = {p: i for i, p in enumerate(PRIORITIES)}  # lower is more urgent
# Text beyond this many characters of one field is not scanned (bounds a huge mail's cost).
MAX_SCAN_CHARS = 1_000_000
# Occurrences listed per rule (the dry run shows them; the count is what matters).
MAX_HITS_PER_RULE = 50

_WORD = re.compile(r"\w")
_WS = object()  # trie atom: a run of whitespace between the words of a phrase


def nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class RuleSpec:
    """A rule as the matcher needs it (built from the database row or by the bench)."""

    id: str
    keywords: tuple[str, ...]
    name: str = ""
    position: int = 0
    inbox_id: str | None = None
    exclusions: tuple[str, ...] = ()
    fields: tuple[Field, ...] = ("subject", "body")
    sender_domains: tuple[str, ...] = ()
    priority: Priority | None = None
    tags: tuple[str, ...] = ()

    def accepts_sender(self, sender: str | None) -> bool:
        if not self.sender_domains:
            return True
        domain = (sender or "").rpartition("@")[2].lower().rstrip(".")
        return any(domain == d or domain.endswith("." + d) for d in self.sender_domains)


@dataclass(frozen=True)
class Mail:
    subject: str
    body: str
    sender: str | None = None
    inbox_id: str | None = None


@dataclass(frozen=True)
class Hit:
    """One occurrence of a keyword: offsets into the (NFC) subject or body."""

    keyword: str
    field: Field
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class RuleMatch:
    """A matching rule and its keywords' occurrences (`found`: keyword, hits in scan order).
    `hits` is built on first use: ingest needs only the first hit of one rule."""

    rule: RuleSpec
    found: tuple[tuple[str, Sequence[Hit]], ...]

    @cached_property
    def hits(self) -> tuple[Hit, ...]:
        """Every occurrence, subject first, by position, as the rule spells the keyword."""
        listed = [
            Hit(keyword, h.field, h.start, h.end, h.text) for keyword, hits in self.found
            for h in hits
        ]  # fmt: skip
        if len(self.found) > 1:
            listed.sort(key=lambda h: (h.field != "subject", h.start, -h.end))
        return tuple(listed[:MAX_HITS_PER_RULE])


@dataclass(frozen=True)
class Evaluation:
    """What the rules say about one mail: the matching rules in rule order, the highest
    priority among them (and which rule and keyword gave it), and every tag they add."""

    matches: tuple[RuleMatch, ...] = ()
    priority: Priority | None = None
    source: RuleMatch | None = None
    tags: tuple[str, ...] = ()

    @property
    def keyword(self) -> str | None:
        return self.source.hits[0].keyword if self.source else None


class _Entry(NamedTuple):
    rule: int  # index into Matcher.rules
    keyword: str  # as the rule spells it
    exclusion: bool
    fields: tuple[Field, ...] | None  # None: subject and body


@dataclass
class _Node:
    children: dict[object, _Node] = field(default_factory=dict)
    end: bool = False


def _atoms(variant: str) -> list[object]:
    atoms: list[object] = []
    for i, word in enumerate(variant.split()):
        if i:
            atoms.append(_WS)
        atoms.extend(word)
    return atoms


def _regex_of(node: _Node) -> str:
    branches = [
        (r"\s+" if atom is _WS else re.escape(str(atom))) + _regex_of(child)
        for atom, child in sorted(
            node.children.items(), key=lambda kv: "" if kv[0] is _WS else str(kv[0])
        )
    ]
    if node.end:
        branches.append(r"(?!\w)")  # last: the longest phrase at a position wins
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


def _variants(keyword: str) -> set[str]:
    """Spellings to put in the regex: lower-cased, and case-folded when that differs."""
    text = " ".join(nfc(keyword).split())
    return {text.lower(), text.casefold()}


def _lookup_key(matched: str) -> str:
    return " ".join(matched.lower().split())


def _word_prefixes(key: str, keys: Container[str]) -> list[str]:
    """The keys that also match wherever `key` matches: its prefixes followed, inside
    `key`, by a character that is not a word character (their `(?!\\w)` holds there)."""
    return [key[:i] for i in range(1, len(key)) if not _WORD.match(key[i]) and key[:i] in keys]


def _insert(root: _Node, variant: str) -> None:
    node = root
    for atom in _atoms(variant):
        node = node.children.setdefault(atom, _Node())
    node.end = True


class Matcher:
    """All enabled rules, compiled once; `evaluate` is what ingest and the dry run call."""

    def __init__(self, rules: Sequence[RuleSpec]) -> None:
        self.rules = tuple(sorted(rules, key=lambda r: (r.position, r.id)))
        # spelling (lower-cased or case-folded, single spaces) -> the keywords spelled so
        self._entries: dict[str, list[_Entry]] = {}
        root = _Node()
        for index, rule in enumerate(self.rules):
            only = None if set(rule.fields) >= {"subject", "body"} else rule.fields
            for words, exclusion in ((rule.keywords, False), (rule.exclusions, True)):
                for word in words:
                    for variant in _variants(word):
                        if variant:
                            self._entries.setdefault(variant, []).append(
                                _Entry(index, word, exclusion, only)
                            )
                            _insert(root, variant)
        self._prefixes = {key: _word_prefixes(key, self._entries) for key in self._entries}
        self._single: dict[str, re.Pattern[str]] = {}
        self._regex: re.Pattern[str] | None = None
        if self._entries:
            self._regex = re.compile(r"(?=(?<!\w)(" + _regex_of(root) + "))", re.IGNORECASE)

    @property
    def empty(self) -> bool:
        return self._regex is None

    def _span_of(self, key: str, text: str, start: int) -> int:
        """Where the shorter phrase `key` ends when it starts at `start` (rare: only for
        keywords that are word-prefixes of another keyword)."""
        pattern = self._single.get(key)
        if pattern is None:
            root = _Node()
            _insert(root, key)
            pattern = self._single[key] = re.compile(_regex_of(root), re.IGNORECASE)
        match = pattern.match(text, start)
        return match.end() if match else start + len(key)

    def scan(self, text: str, field_name: Field) -> list[tuple[str, Hit]]:
        """(spelling, hit) for every keyword or exclusion occurrence in `text` (NFC)."""
        if self._regex is None or not text:
            return []
        found: list[tuple[str, Hit]] = []
        for match in self._regex.finditer(text, 0, MAX_SCAN_CHARS):
            start, end = match.span(1)
            matched = match.group(1)
            key = _lookup_key(matched)
            if key not in self._entries:  # a case-insensitive match lower() does not undo
                key = " ".join(matched.casefold().split())
            found.append((key, Hit(key, field_name, start, end, matched)))
            for shorter in self._prefixes.get(key, ()):
                stop = self._span_of(shorter, text, start)
                found.append((shorter, Hit(shorter, field_name, start, stop, text[start:stop])))
        return found

    def evaluate(self, mail: Mail) -> Evaluation:
        """Which rules match `mail` and what they do together."""
        if self._regex is None:
            return Evaluation()
        # Occurrences per key first: a key shared by many rules is looked at once.
        by_key: dict[str, list[Hit]] = {}
        for field_name, text in (("subject", mail.subject), ("body", mail.body)):
            for key, hit in self.scan(nfc(text or ""), field_name):  # type: ignore[arg-type]
                by_key.setdefault(key, []).append(hit)
        per_rule: dict[int, list[tuple[str, list[Hit]]]] = {}
        excluded: set[int] = set()
        for key, hits in by_key.items():
            for index, keyword, exclusion, fields in self._entries.get(key, ()):
                inside = hits
                if fields is not None:
                    inside = [h for h in hits if h.field in fields]
                    if not inside:
                        continue
                if exclusion:
                    excluded.add(index)
                else:
                    per_rule.setdefault(index, []).append((keyword, inside))
        matches = []
        for index in sorted(per_rule.keys() - excluded):
            rule = self.rules[index]
            if rule.inbox_id is not None and rule.inbox_id != mail.inbox_id:
                continue
            if not rule.accepts_sender(mail.sender):
                continue
            matches.append(RuleMatch(rule, tuple(per_rule[index])))
        return _combine(matches)


def _combine(matches: Sequence[RuleMatch]) -> Evaluation:
    source: RuleMatch | None = None
    tags: dict[str, str] = {}
    for match in matches:
        priority = match.rule.priority
        if priority is not None and (
            source is None or RANK[priority] < RANK[source.rule.priority or "low"]
        ):
            source = match
        for tag in match.rule.tags:
            tags.setdefault(tag.casefold(), tag)
    return Evaluation(
        matches=tuple(matches),
        priority=source.rule.priority if source else None,
        source=source,
        tags=tuple(tags.values()),
    )
