from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, EmailStr, Field, StringConstraints, model_validator

from inbox_service.core.inputs import StrictIn
from inbox_service.core.pagination import Page
from inbox_service.templates.schemas import Variables

DeliveryStatus = Literal["scheduled", "queued", "sending", "sent", "failed", "unknown", "cancelled"]
# Header-bound text: no control characters at all (CR/LF would inject headers).
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
]
MAX_BODY_CHARS = 200_000


class RecipientIn(StrictIn):
    address: EmailStr
    name: DisplayName | None = None


class RecipientOut(BaseModel):
    address: str
    name: str | None


class ReplyIn(StrictIn):
    """A reply. Give `body_text` and/or `body_html`, or a `template_id` (its body becomes the
    text; `variables` fill its `vars.*`). Without `to`, it goes to the conversation's contact."""

    body_text: Annotated[str, StringConstraints(max_length=MAX_BODY_CHARS)] | None = None
    body_html: Annotated[str, StringConstraints(max_length=MAX_BODY_CHARS)] | None = None
    template_id: str | None = None
    variables: Variables = Field(default_factory=dict)
    to: list[RecipientIn] | None = Field(default=None, min_length=1, max_length=50)
    cc: list[RecipientIn] = Field(default_factory=list, max_length=50)
    expected_last_message_id: str | None = Field(
        default=None,
        description="The last message you saw (a message id, or the `timeline_message_id` of "
        "a reply). If anything arrived since (a customer message, another agent's reply), "
        "nothing is sent: 409 lists what you have not seen. Omit to skip the check.",
    )
    send_at: AwareDatetime | None = Field(
        default=None,
        description="Send later. Default: now plus the inbox's undo window.",
    )
    signature: bool = Field(default=True, description="Append your signature, if you have one.")

    @model_validator(mode="after")
    def _has_body(self) -> ReplyIn:
        if self.template_id is None and not (self.body_text or self.body_html):
            raise ValueError("give body_text, body_html or template_id")
        if self.template_id is not None and self.body_text is not None:
            raise ValueError("body_text and template_id exclude each other")
        return self


class ReplyOut(BaseModel):
    """A reply and where it is: `scheduled` (waiting for `send_at`; cancellable), `queued`
    (due, or waiting to retry; cancellable), `sending`, `sent`, `failed` (see `last_error`),
    `unknown` (the connection broke after the message was handed over: it may have been
    delivered; never resent automatically), `cancelled`."""

    id: str
    conversation_id: str
    inbox_id: str
    author_id: str | None
    kind: Literal["reply", "auto_ack"]
    delivery_status: DeliveryStatus
    timeline_message_id: str = Field(
        description="The id this reply has as a conversation message once sent."
    )
    message_id: str = Field(description="Its RFC 5322 Message-ID, without <>.")
    subject: str
    to: list[RecipientOut]
    cc: list[RecipientOut]
    text: str
    html: str | None
    template_id: str | None
    send_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None = Field(description="The SMTP error or network failure, if any.")
    smtp_response: str | None
    sent_copy: Literal["none", "pending", "appending", "appended", "skipped", "failed"]
    created_at: datetime
    sent_at: datetime | None
    cancelled_at: datetime | None


class ReplyPage(Page[ReplyOut]):
    """A page of replies."""


class SignatureIn(StrictIn):
    text: Annotated[str, StringConstraints(max_length=5_000)]


class SignatureOut(BaseModel):
    text: str
    updated_at: datetime | None
