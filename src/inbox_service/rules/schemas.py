from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from inbox_service.conversations.schemas import PrioritySourceOut, TagName
from inbox_service.core.inputs import StrictIn
from inbox_service.core.openapi import named_enum
from inbox_service.core.pagination import Page
from inbox_service.rules.matcher import Priority

# Where a rule looks (one named enum for generated clients).
MatchIn = Annotated[Literal["subject", "body"], named_enum("PriorityRuleField")]


def _phrase(value: str) -> str:
    """A keyword as stored: NFC, inner whitespace collapsed; it must contain a letter or
    digit (a keyword of only spaces or punctuation would match nothing useful)."""
    value = " ".join(unicodedata.normalize("NFC", value).split())
    if not any(c.isalnum() for c in value):
        raise ValueError("a keyword needs at least one letter or digit")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("a keyword cannot contain control characters")
    return value


def _domain(value: str) -> str:
    value = value.strip().lower().lstrip("@").rstrip(".")
    if not value or "@" in value or any(c.isspace() for c in value) or "." not in value:
        raise ValueError("a sender domain looks like example.com")
    return value


Phrase = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_phrase)]
Keywords = Annotated[
    list[Phrase],
    Field(
        min_length=1,
        max_length=100,
        description="Words or phrases, matched literally as whole words, ignoring case "
        "(Unicode-aware); the words of a phrase may be split across lines.",
    ),
]
Exclusions = Annotated[
    list[Phrase],
    Field(
        max_length=100,
        description='If any of these phrases is found (where the rule looks, e.g. "not '
        'urgent"), the rule does not match that mail.',
    ),
]
Domains = Annotated[
    list[Annotated[str, StringConstraints(max_length=253), AfterValidator(_domain)]],
    Field(
        max_length=100,
        description="Only mail from these domains (or their subdomains); empty: any sender.",
    ),
]
Tags = Annotated[
    list[TagName],
    Field(max_length=20, description="Tags added to the conversation (created if missing)."),
]
MatchInList = Annotated[
    list[MatchIn],
    Field(min_length=1, description="Where to look: the subject, the body (text or the text "
          "of an HTML-only mail), or both."),
]  # fmt: skip
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
InboxId = Annotated[str, StringConstraints(max_length=40, pattern=r"^[^\x00-\x1f\x7f]+$")]


class PriorityRuleIn(StrictIn):
    name: Name
    keywords: Keywords
    exclusions: Exclusions = []
    match_in: MatchInList = ["subject", "body"]
    sender_domains: Domains = []
    priority: Priority | None = Field(
        default=None,
        description="Priority to set; when several rules match, the highest wins "
        "(urgent > high > normal > low). Null: the rule only adds tags.",
    )
    tags: Tags = []
    inbox_id: InboxId | None = Field(
        default=None, description="Only this inbox (null: every inbox)."
    )
    position: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Order among the rules (ascending; default: after the last one). On a tie "
        "of priorities, the first matching rule is named as the source.",
    )
    enabled: bool = True


class PriorityRulePatch(StrictIn):
    name: Name | None = None
    keywords: Keywords | None = None
    exclusions: Exclusions | None = None
    match_in: MatchInList | None = None
    sender_domains: Domains | None = None
    priority: Priority | None = None
    tags: Tags | None = None
    inbox_id: InboxId | None = None
    position: int | None = Field(default=None, ge=0, le=1_000_000)
    enabled: bool | None = None


class PriorityRuleOut(BaseModel):
    id: str
    name: str
    position: int
    enabled: bool
    inbox_id: str | None
    keywords: list[str]
    exclusions: list[str]
    match_in: list[MatchIn]
    sender_domains: list[str]
    priority: Priority | None
    tags: list[str]
    version: int
    created_at: datetime
    updated_at: datetime


class PriorityRulePage(Page[PriorityRuleOut]):
    """Priority rules in their order."""


class RuleTestIn(StrictIn):
    subject: Annotated[str, StringConstraints(max_length=10_000)] = ""
    body: Annotated[str, StringConstraints(max_length=1_000_000)] | None = Field(
        default=None, description="The plain-text body."
    )
    html: Annotated[str, StringConstraints(max_length=1_000_000)] | None = Field(
        default=None,
        description="An HTML body; used, as ingest does, only when `body` is absent.",
    )
    sender: Annotated[str, StringConstraints(max_length=320)] | None = Field(
        default=None, description="The sender's address (for rules limited to domains)."
    )
    inbox_id: InboxId | None = Field(
        default=None, description="Apply that inbox's rules too (default: only global rules)."
    )


class KeywordHitOut(BaseModel):
    keyword: str = Field(description="The keyword as the rule spells it.")
    field: MatchIn
    start: int = Field(description="Offset of the match in the subject or body text.")
    end: int
    text: str = Field(description="The matched text as written in the mail.")


class RuleMatchOut(BaseModel):
    rule_id: str
    name: str
    priority: Priority | None
    tags: list[str]
    matches: list[KeywordHitOut]


class RuleTestOut(BaseModel):
    matched_rules: list[RuleMatchOut] = Field(description="In rule order.")
    priority: Priority | None = Field(
        description="What a new conversation of this mail gets (null: no rule sets one, "
        "the default `normal` stays)."
    )
    priority_source: PrioritySourceOut | None
    tags: list[str]


class ReapplyIn(StrictIn):
    inbox_id: InboxId
    since: datetime = Field(
        description="Re-evaluate mail received since then, in conversations not resolved."
    )


class ReapplyOut(BaseModel):
    conversations: int = Field(description="Conversations looked at.")
    changed: int = Field(description="Conversations whose priority or tags changed.")
