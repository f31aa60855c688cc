"""Templates: CRUD (checked at save), rendering against a conversation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.core.auth import Caller
from inbox_service.core.errors import Invalid, NotFound
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.models import Inbox
from inbox_service.templates import context as template_context
from inbox_service.templates import render
from inbox_service.templates.models import Template
from inbox_service.templates.render import TemplateProblem
from inbox_service.templates.schemas import RenderOut, TemplateIn, TemplatePatch
from inbox_service.users.models import User


class TemplateInvalid(Invalid):
    """A template refused at save: the problem names the placeholder and where it is."""

    slug = "invalid-template"
    title = "Invalid template"

    def __init__(self, field: str, problem: TemplateProblem) -> None:
        super().__init__(str(problem), loc=["body", field])
        self.extra |= {"line": problem.line, "column": problem.column}


def check_fields(subject: str | None, body: str | None) -> None:
    """Refuse unknown placeholders, syntax errors and anything outside the sandbox grammar."""
    for field, source in (("subject", subject), ("body", body)):
        if source is None:
            continue
        try:
            render.validate(source)
        except TemplateProblem as problem:
            raise TemplateInvalid(field, problem) from None
    if subject is not None and (breaks := re.search(r"[\r\n]", subject)):
        line = subject.count("\n", 0, breaks.start()) + 1  # where the first break is
        column = breaks.start() - subject.rfind("\n", 0, breaks.start())
        raise TemplateInvalid("subject", TemplateProblem("subject must be one line", line, column))


def _visible(caller: Caller) -> ColumnElement[bool]:
    return or_(Template.inbox_id.is_(None), caller.scope(Template.inbox_id))


async def get_visible(session: AsyncSession, caller: Caller, template_id: str) -> Template:
    found = await session.scalar(
        select(Template).where(Template.id == template_id, _visible(caller))
    )
    if found is None:
        raise NotFound(f"no template {template_id}")
    return found


def require_editable(caller: Caller, template: Template | None, inbox_id: str | None) -> None:
    """Global templates are the admins'; an inbox's templates, its members'."""
    if inbox_id is None or (template is not None and template.inbox_id is None):
        caller.require_admin()
    else:
        caller.require_visible(inbox_id)


async def list_templates(
    session: AsyncSession, caller: Caller, params: PageParams, *, inbox_id: str | None
) -> tuple[list[Template], str | None]:
    stmt = select(Template).where(_visible(caller))
    if inbox_id is not None:
        # what can be used in that inbox: its own templates and the global ones
        stmt = stmt.where(or_(Template.inbox_id.is_(None), Template.inbox_id == inbox_id))
    return await keyset_page(
        session, stmt, keys=[Template.id], params=params, key_of=lambda t: [t.id]
    )


async def create_template(
    session: AsyncSession, caller: Caller, data: TemplateIn, *, now: datetime
) -> Template:
    require_editable(caller, None, data.inbox_id)
    if data.inbox_id is not None and await session.get(Inbox, data.inbox_id) is None:
        raise NotFound(f"no inbox {data.inbox_id}")
    check_fields(data.subject, data.body)
    template = Template(
        id=new_id("tpl"),
        inbox_id=data.inbox_id,
        name=data.name,
        subject=data.subject,
        body=data.body,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(template)
    await session.flush()
    return template


async def update_template(
    session: AsyncSession,
    caller: Caller,
    template: Template,
    patch: TemplatePatch,
    *,
    now: datetime,
) -> Template:
    require_editable(caller, template, template.inbox_id)
    changes = patch.model_dump(exclude_unset=True)
    for field in ("name", "body"):
        if field in changes and changes[field] is None:
            raise Invalid(f"{field} cannot be null", loc=["body", field])
    if not changes:
        return template
    check_fields(changes.get("subject"), changes.get("body"))
    for field, value in changes.items():
        setattr(template, field, value)
    template.version += 1
    template.updated_at = now
    await session.flush()
    return template


async def delete_template(session: AsyncSession, caller: Caller, template: Template) -> None:
    require_editable(caller, template, template.inbox_id)
    await session.delete(template)
    await session.flush()


def usable_in(template: Template, inbox_id: str) -> bool:
    return template.inbox_id is None or template.inbox_id == inbox_id


async def render_for(
    session: AsyncSession,
    template: Template,
    conversation: Conversation,
    *,
    agent: User | None,
    variables: Mapping[str, str],
) -> RenderOut:
    """The template rendered for `conversation`, and which placeholders had no value."""
    inbox = await session.get_one(Inbox, conversation.inbox_id)
    values = await template_context.build(
        session, conversation, agent=agent, inbox=inbox, variables=variables
    )
    used = render.check(template.body) + (
        render.check(template.subject) if template.subject else []
    )
    try:
        body = render.render(template.body, values)
        subject = render.render(template.subject, values) if template.subject else None
    except TemplateProblem as problem:
        raise Invalid(str(problem), loc=["body", "template_id"]) from None
    return RenderOut(
        subject=subject,
        body=body,
        empty_variables=render.empty_placeholders(list(dict.fromkeys(used)), values),
    )
