from __future__ import annotations

from fastapi import APIRouter, Query, Response, status

from inbox_service.conversations import service as conversations_service
from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session
from inbox_service.core.errors import NotFound, problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.templates import service
from inbox_service.templates.catalog import CATALOG
from inbox_service.templates.models import Template
from inbox_service.templates.schemas import (
    RenderIn,
    RenderOut,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplatePatch,
    TemplateVariableOut,
    TemplateVariablesOut,
)
from inbox_service.users.models import User

router = APIRouter(prefix="/v1", tags=["templates"], responses=problems(401, 422, 429))


@router.get("/templates", response_model=TemplatePage)
async def list_templates(
    session: Session,
    caller: CurrentCaller,
    page: PageParamsDep,
    inbox_id: str | None = Query(default=None, description="Only those usable in this inbox."),
) -> TemplatePage:
    """Templates you can use: global ones and those of your inboxes."""
    items, next_cursor = await service.list_templates(session, caller, page, inbox_id=inbox_id)
    return TemplatePage(
        items=[TemplateOut.model_validate(t) for t in items], next_cursor=next_cursor
    )


@router.post(
    "/templates",
    response_model=TemplateOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(403, 404),
)
async def create_template(
    body: TemplateIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
) -> Template:
    """Create a template; unknown placeholders and syntax errors are refused (422, with where)."""
    template = await service.create_template(session, caller, body, now=clock.now())
    response.headers["Location"] = f"/v1/templates/{template.id}"
    set_etag(response, template.version)
    return template


@router.get("/templates/{template_id}", response_model=TemplateOut, responses=problems(404))
async def get_template(
    template_id: str, session: Session, caller: CurrentCaller, response: Response
) -> Template:
    """One template."""
    template = await service.get_visible(session, caller, template_id)
    set_etag(response, template.version)
    return template


@router.patch(
    "/templates/{template_id}", response_model=TemplateOut, responses=problems(403, 404, 412)
)
async def update_template(
    template_id: str,
    body: TemplatePatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
    if_match: IfMatch = None,
) -> Template:
    """Change a template (checked again)."""
    template = await service.get_visible(session, caller, template_id)
    check_if_match(if_match, template.version)
    template = await service.update_template(session, caller, template, body, now=clock.now())
    set_etag(response, template.version)
    return template


@router.delete(
    "/templates/{template_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(403, 404),
)
async def delete_template(template_id: str, session: Session, caller: CurrentCaller) -> None:
    """Delete a template."""
    template = await service.get_visible(session, caller, template_id)
    await service.delete_template(session, caller, template)


@router.post("/templates/{template_id}/render", response_model=RenderOut, responses=problems(404))
async def render_template(
    template_id: str, body: RenderIn, session: Session, caller: CurrentCaller
) -> RenderOut:
    """Preview the template against a conversation; lists placeholders without a value."""
    template = await service.get_visible(session, caller, template_id)
    conversation = await conversations_service.get_visible_conversation(
        session, caller, body.conversation_id
    )
    if not service.usable_in(template, conversation.inbox_id):
        raise NotFound(f"template {template_id} belongs to another inbox")
    agent = await session.get(User, caller.user_id)
    return await service.render_for(
        session, template, conversation, agent=agent, variables=body.variables
    )


@router.get("/template-variables", response_model=TemplateVariablesOut)
async def list_template_variables(caller: CurrentCaller) -> TemplateVariablesOut:
    """The placeholders templates may use."""
    return TemplateVariablesOut(
        items=[
            TemplateVariableOut(name=v.name, description=v.description, example=v.example)
            for v in CATALOG
        ],
        custom="`{{ vars.<name> }}`: a value given in `variables` when rendering or replying. "
        'Any placeholder takes a fallback: `{{ contact.first_name | default("there") }}`.',
    )
