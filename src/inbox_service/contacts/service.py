"""Contacts: an agent sees the contacts who have conversations in their inboxes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.contacts.models import Contact
from inbox_service.conversations.models import Conversation
from inbox_service.core.auth import Caller
from inbox_service.core.errors import NotFound
from inbox_service.core.pagination import PageParams, keyset_page


def _visible(caller: Caller) -> ColumnElement[bool]:
    return exists().where(
        Conversation.contact_id == Contact.id, caller.scope(Conversation.inbox_id)
    )


async def list_contacts(
    session: AsyncSession, caller: Caller, params: PageParams, *, q: str | None
) -> tuple[list[Contact], str | None]:
    stmt = select(Contact)
    if not caller.is_admin:
        stmt = stmt.where(_visible(caller))
    if q:
        pattern = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Contact.email.like(pattern), func.lower(Contact.name).like(pattern)))
    return await keyset_page(
        session, stmt, keys=[Contact.id], params=params, key_of=lambda c: [c.id]
    )


async def get_visible(session: AsyncSession, caller: Caller, contact_id: str) -> Contact:
    stmt = select(Contact).where(Contact.id == contact_id)
    if not caller.is_admin:
        stmt = stmt.where(_visible(caller))
    contact = await session.scalar(stmt)
    if contact is None:
        raise NotFound(f"no contact {contact_id}")
    return contact


async def rename(session: AsyncSession, contact: Contact, name: str, *, now: datetime) -> Contact:
    if contact.name != name:
        contact.name = name
        contact.version += 1
        contact.updated_at = now
        await session.flush()
    return contact
