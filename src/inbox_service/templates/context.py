"""The values behind the placeholders, for one conversation and one agent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.contacts.models import Contact
from inbox_service.conversations.models import Conversation
from inbox_service.csat import links as csat_links
from inbox_service.inboxes.models import Inbox
from inbox_service.sla import hooks as sla_hooks
from inbox_service.users.models import User

Context = dict[str, dict[str, str]]


def first_name(name: str | None) -> str:
    """The first word of a display name; "" when there is none (so `default` applies)."""
    if not name:
        return ""
    words = name.replace(",", " ").split()
    if "," in name and len(words) > 1:  # "Silva, Ana"
        return words[1]
    return words[0] if words else ""


def human_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return "a minute"


async def expected_response(session: AsyncSession, conversation: Conversation) -> str:
    """The first-response target of the inbox's SLA policy; empty without one."""
    delta = await sla_hooks.first_response_estimate(session, conversation)
    return human_duration(delta) if delta is not None else ""


async def build(
    session: AsyncSession,
    conversation: Conversation,
    *,
    agent: User | None,
    inbox: Inbox,
    variables: Mapping[str, str] | None = None,
) -> Context:
    """Every catalog value for this conversation (empty ones left out: they are Undefined)."""
    contact = (
        await session.get(Contact, conversation.contact_id) if conversation.contact_id else None
    )
    values: Context = {
        "contact": {
            "first_name": first_name(contact.name) if contact else "",
            "name": (contact.name or "") if contact else "",
            "email": contact.email if contact else "",
        },
        "agent": {"name": agent.name if agent else "", "email": agent.email if agent else ""},
        "inbox": {"name": inbox.name, "address": inbox.address},
        "conversation": {
            "id": conversation.id,
            "subject": conversation.subject,
            "expected_response": await expected_response(session, conversation),
        },
        "csat": {"url": await csat_links.url_for(session, conversation)},
        "vars": dict(variables or {}),
    }
    return {root: {k: v for k, v in attrs.items() if v} for root, attrs in values.items()}
