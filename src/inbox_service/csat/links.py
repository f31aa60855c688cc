"""Issuing rating links: what `{{ csat.url }}` renders to.

Template rendering (templates/context.py) has neither the settings nor the clock in
reach, and threading them through every renderer would touch the replies and auto-ack
paths; so the process registers its link issuer once at start (`configure`, from
`create_app` and the worker). Without INBOX_SECRET_KEY or CSAT_PAGE_URL there is none,
and `csat.url` is empty (a template's `default` filter applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.core.clock import Clock
from inbox_service.core.config import Settings
from inbox_service.csat.tokens import LinkClaims, derive_keys, sign


@dataclass(frozen=True)
class LinkIssuer:
    keys: list[bytes]
    page_url: str
    valid_for: timedelta
    clock: Clock

    def url(self, token: str) -> str:
        """The page URL with the token: in place of `{token}`, else as `?token=`."""
        if "{token}" in self.page_url:
            return self.page_url.replace("{token}", quote(token, safe=""))
        parts = urlsplit(self.page_url)
        query = f"{parts.query}&token={token}" if parts.query else f"token={token}"
        return urlunsplit(parts._replace(query=query))


_issuer: LinkIssuer | None = None


def issuer_from(settings: Settings, clock: Clock) -> LinkIssuer | None:
    if settings.inbox_secret_key is None or not settings.csat_page_url:
        return None
    return LinkIssuer(
        keys=derive_keys(settings.inbox_secret_key.get_secret_value()),
        page_url=settings.csat_page_url,
        valid_for=timedelta(days=settings.csat_link_days),
        clock=clock,
    )


def configure(settings: Settings, clock: Clock) -> None:
    global _issuer
    _issuer = issuer_from(settings, clock)


async def current_cycle(session: AsyncSession, conversation_id: str) -> int:
    """How often the conversation was reopened: each reopening starts a rating cycle (read
    from the row: the trigger that keeps it writes past the instance in memory)."""
    reopens = await session.scalar(
        select(Conversation.reopen_count).where(Conversation.id == conversation_id)
    )
    return int(reopens or 0)


async def url_for(session: AsyncSession, conversation: Conversation) -> str:
    """A signed link to rate this conversation's current cycle ("" when not configured)."""
    issuer = _issuer
    if issuer is None:
        return ""
    claims = LinkClaims(
        conversation_id=conversation.id,
        cycle=await current_cycle(session, conversation.id),
        expires_at=issuer.clock.now() + issuer.valid_for,
    )
    return issuer.url(sign(issuer.keys, claims))
