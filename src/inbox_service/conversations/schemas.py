from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AddressOut(BaseModel):
    name: str | None
    address: str


class AttachmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str | None
    content_type: str
    size: int
    inline: bool
    content_id: str | None
    url: str = Field(description="Download URL (needs the same credentials).")


class MessageOut(BaseModel):
    """One message. `html` is sanitized for display (render it in a sandboxed iframe);
    inline images point at their attachment URLs; remote images are removed."""

    id: str
    inbox_id: str
    conversation_id: str | None
    direction: Literal["inbound", "outbound"]
    message_id: str | None = Field(description="The RFC 5322 Message-ID, without <>.")
    in_reply_to: list[str]
    references: list[str]
    subject: str
    from_: AddressOut | None = Field(alias="from", serialization_alias="from")
    to: list[AddressOut]
    cc: list[AddressOut]
    reply_to: list[AddressOut]
    sent_at: datetime | None = Field(description="The Date header, as the sender wrote it.")
    received_at: datetime
    text: str | None
    html: str | None
    snippet: str
    threaded_by: str = Field(
        description="How it joined its conversation: in_reply_to, references, token, "
        "thread_index, subject or new."
    )
    auto_kind: Literal["auto_reply", "bulk", "bounce"] | None
    parse_status: Literal["ok", "degraded", "failed"]
    parse_error: str | None
    size: int
    attachments: list[AttachmentOut]

    model_config = ConfigDict(populate_by_name=True)
