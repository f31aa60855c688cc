from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from inbox_service.core.inputs import StrictIn
from inbox_service.core.pagination import Page
from inbox_service.templates.render import MAX_TEMPLATE_CHARS, MAX_VAR_CHARS

TemplateName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
Body = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEMPLATE_CHARS)]
Subject = Annotated[str, StringConstraints(max_length=998)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
Variables = dict[VarName, Annotated[str, StringConstraints(max_length=MAX_VAR_CHARS)]]


class TemplateIn(StrictIn):
    """A template. `body` and `subject` are Jinja2 text with the placeholders of
    `GET /v1/template-variables`; `inbox_id` null makes it global."""

    name: TemplateName
    subject: Subject | None = Field(default=None, description="Optional; may use placeholders.")
    body: Body
    inbox_id: str | None = Field(default=None, description="Scope; null: every inbox.")


class TemplatePatch(StrictIn):
    name: TemplateName | None = None
    subject: Subject | None = None
    body: Body | None = None


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    inbox_id: str | None
    name: str
    subject: str | None
    body: str
    version: int
    created_at: datetime
    updated_at: datetime


class TemplatePage(Page[TemplateOut]):
    """A page of templates."""


class RenderIn(StrictIn):
    conversation_id: str
    variables: Variables = Field(default_factory=dict, description="Values for `vars.*`.")


class RenderOut(BaseModel):
    subject: str | None
    body: str
    empty_variables: list[str] = Field(
        description="Placeholders that had no value (rendered empty or fell back to a default)."
    )


class TemplateVariableOut(BaseModel):
    name: str = Field(description="Use as `{{ name }}`.")
    description: str
    example: str


class TemplateVariablesOut(BaseModel):
    items: list[TemplateVariableOut]
    custom: str = Field(description="How to use caller-supplied values.")
