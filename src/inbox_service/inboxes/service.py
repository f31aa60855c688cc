"""Inboxes and their members."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.assignment import service as assignment_service
from inbox_service.core.auth import Caller
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.errors import Invalid, NotFound
from inbox_service.core.events import EventType, emit
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.mail_settings import (
    AutoAckIn,
    apply_auto_ack,
    apply_imap_settings,
    apply_smtp_settings,
)
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.inboxes.schemas import InboxIn, InboxOut, InboxPatch
from inbox_service.ingest import service as ingest_service
from inbox_service.templates.models import Template
from inbox_service.users import service as users_service

# PATCH fields an inbox cannot be without: null there is a mistake, not "leave as is".
_NOT_NULL = {"name", "address", "auto_assignment"}
_NOT_NULL |= {"undo_send_seconds"}
# Settings objects applied by their own functions, not copied field by field.
_NESTED = {"imap", "smtp", "auto_ack"}


async def _check_auto_ack(session: AsyncSession, inbox_id: str, settings: AutoAckIn | None) -> None:
    """The acknowledgement template must exist and be usable in this inbox."""
    if settings is None or settings.template_id is None:
        return
    template = await session.get(Template, settings.template_id)
    if template is None or template.inbox_id not in (None, inbox_id):
        raise Invalid(
            f"no template {settings.template_id} usable in this inbox",
            loc=["body", "auto_ack", "template_id"],
        )


def _snapshot(inbox: Inbox) -> dict[str, object]:
    return {"inbox": InboxOut.model_validate(inbox).model_dump(mode="json")}


async def get_visible(session: AsyncSession, caller: Caller, inbox_id: str) -> Inbox:
    """The inbox, if the caller may see it; 404 otherwise (also for another team's ids)."""
    inbox = await session.scalar(select(Inbox).where(Inbox.id == inbox_id, caller.scope(Inbox.id)))
    if inbox is None:
        raise NotFound(f"no inbox {inbox_id}")
    return inbox


async def list_inboxes(
    session: AsyncSession, caller: Caller, params: PageParams
) -> tuple[list[Inbox], str | None]:
    stmt = select(Inbox).where(caller.scope(Inbox.id))
    return await keyset_page(session, stmt, keys=[Inbox.id], params=params, key_of=lambda i: [i.id])


async def create_inbox(
    session: AsyncSession, data: InboxIn, *, now: datetime, cipher: CredentialCipher | None = None
) -> Inbox:
    """A new inbox; with IMAP settings, the workers start syncing it right away."""
    inbox = Inbox(id=new_id("inb"), created_at=now, updated_at=now, version=1,
                  **data.model_dump(exclude=_NESTED))  # fmt: skip
    apply_imap_settings(inbox, data.imap, cipher)
    apply_smtp_settings(inbox, data.smtp, cipher)
    await _check_auto_ack(session, inbox.id, data.auto_ack)
    apply_auto_ack(inbox, data.auto_ack)
    session.add(inbox)
    await session.flush()
    if data.imap is not None:
        await ingest_service.settings_changed(session, inbox.id)
    await emit(session, EventType.INBOX_CREATED, _snapshot(inbox), now=now, inbox_id=inbox.id)
    return inbox


async def update_inbox(
    session: AsyncSession,
    inbox: Inbox,
    patch: InboxPatch,
    *,
    now: datetime,
    cipher: CredentialCipher | None = None,
) -> Inbox:
    """Apply `patch`; an empty patch changes nothing (no new version, no event)."""
    changes = patch.model_dump(exclude_unset=True, exclude=_NESTED)
    nulls = sorted(field for field in _NOT_NULL if field in changes and changes[field] is None)
    if nulls:
        raise Invalid(f"{nulls[0]} cannot be null", loc=["body", nulls[0]])
    if "subject_threading_days" in changes and changes["subject_threading_days"] is None:
        raise Invalid(
            "subject_threading_days cannot be null", loc=["body", "subject_threading_days"]
        )
    if not changes and not _NESTED & patch.model_fields_set:
        return inbox
    for field, value in changes.items():
        setattr(inbox, field, value)
    if "imap" in patch.model_fields_set:
        apply_imap_settings(inbox, patch.imap, cipher)
        await ingest_service.settings_changed(session, inbox.id)
    if "smtp" in patch.model_fields_set:
        apply_smtp_settings(inbox, patch.smtp, cipher)
    if "auto_ack" in patch.model_fields_set:
        await _check_auto_ack(session, inbox.id, patch.auto_ack)
        apply_auto_ack(inbox, patch.auto_ack)
    inbox.version += 1
    inbox.updated_at = now
    await session.flush()
    await emit(session, EventType.INBOX_UPDATED, _snapshot(inbox), now=now, inbox_id=inbox.id)
    return inbox


async def delete_inbox(session: AsyncSession, inbox: Inbox, *, now: datetime) -> None:
    await emit(session, EventType.INBOX_DELETED, _snapshot(inbox), now=now, inbox_id=inbox.id)
    await session.delete(inbox)
    await session.flush()


async def list_members(session: AsyncSession, inbox: Inbox) -> list[InboxMember]:
    rows = await session.scalars(
        select(InboxMember).where(InboxMember.inbox_id == inbox.id).order_by(InboxMember.user_id)
    )
    return list(rows)


async def add_member(
    session: AsyncSession, inbox: Inbox, user_id: str, *, now: datetime
) -> tuple[InboxMember, bool]:
    """Make the user a member; (membership, created). Adding twice changes nothing."""
    await users_service.get_user(session, user_id)
    created = await session.scalar(
        insert(InboxMember)
        .values(inbox_id=inbox.id, user_id=user_id, created_at=now)
        .on_conflict_do_nothing()
        .returning(InboxMember.user_id)
    )
    member = await session.get_one(InboxMember, (inbox.id, user_id))
    if created is not None:
        await emit(
            session,
            EventType.INBOX_MEMBER_ADDED,
            {"inbox_id": inbox.id, "user_id": user_id},
            now=now,
            inbox_id=inbox.id,
        )
        await assignment_service.wake(session, user_id=user_id, now=now)  # waiting work
    return member, created is not None


async def remove_member(
    session: AsyncSession, inbox: Inbox, user_id: str, *, now: datetime
) -> None:
    removed = await session.scalar(
        delete(InboxMember)
        .where(InboxMember.inbox_id == inbox.id, InboxMember.user_id == user_id)
        .returning(InboxMember.user_id)
    )
    if removed is None:
        raise NotFound(f"user {user_id} is not a member of inbox {inbox.id}")
    await emit(
        session,
        EventType.INBOX_MEMBER_REMOVED,
        {"inbox_id": inbox.id, "user_id": user_id},
        now=now,
        inbox_id=inbox.id,
    )
