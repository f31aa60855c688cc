"""The placeholders a template may use: one registry, read by validation, rendering and
`GET /v1/template-variables`. A new variable (e.g. `csat.url`, later) is one more entry
here plus its value in `context.py`; `vars.*` are the caller's own, given per render."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str  # dotted: "contact.first_name"
    description: str
    example: str


CATALOG: tuple[Variable, ...] = (
    Variable("contact.first_name", "The contact's first name (from their name).", "Ana"),
    Variable("contact.name", "The contact's full name.", "Ana Silva"),
    Variable("contact.email", "The contact's email address.", "ana@example.com"),
    Variable("agent.name", "The name of the agent replying.", "Bruno"),
    Variable("agent.email", "The email address of the agent replying.", "bruno@example.com"),
    Variable("inbox.name", "The inbox's name.", "Support"),
    Variable("inbox.address", "The inbox's address.", "support@example.com"),
    Variable("conversation.id", "The conversation's id.", "cnv_01J…"),
    Variable("conversation.subject", "The conversation's subject.", "Invoice 42"),
    Variable(
        "conversation.expected_response",
        "When we expect to answer, from the inbox's SLA policy (e.g. `4 hours`); empty "
        'without a policy, so give it a fallback: `| default("soon")`.',
        "4 hours",
    ),
    Variable(
        "csat.url",
        "A signed link for the customer to rate this conversation (1-5) on your rating "
        "page (CSAT_PAGE_URL); valid CSAT_LINK_DAYS days, one rating per resolution "
        "cycle. Empty when ratings are not configured.",
        "https://example.com/rate?token=…",
    ),
)

ROOTS: dict[str, frozenset[str]] = {}
for _variable in CATALOG:
    _root, _, _attr = _variable.name.partition(".")
    ROOTS[_root] = ROOTS.get(_root, frozenset()) | {_attr}

# `vars.<name>`: free-form values given by the caller (render preview, replies).
CUSTOM_ROOT = "vars"
