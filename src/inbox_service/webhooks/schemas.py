from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from inbox_service.core.inputs import StrictIn
from inbox_service.core.pagination import Page

Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
EventTypes = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
    Field(
        min_length=1,
        max_length=50,
        description='Event types to receive, e.g. `["conversation.assigned", "sla.breached"]`, '
        'or `["*"]` for all of them.',
    ),
]
DeliveryState = Literal["pending", "succeeded", "failed"]


class WebhookIn(StrictIn):
    url: Url = Field(description="http(s) URL that receives a POST per event.")
    events: EventTypes
    inbox_id: str | None = Field(
        default=None, description="Only events of this inbox (default: every inbox)."
    )
    description: Description = ""
    secret: SecretStr | None = Field(
        default=None,
        description="`whsec_` + base64 of 24..64 random bytes; generated when omitted. "
        "Write-only: shown once in the answer to this call.",
    )
    enabled: bool = True


class WebhookPatch(StrictIn):
    url: Url | None = None
    events: EventTypes | None = None
    inbox_id: str | None = None
    description: Description | None = None
    enabled: bool | None = Field(
        default=None, description="Re-enabling clears `disabled_reason` and `failing_since`."
    )


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[str]
    inbox_id: str | None
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="Why the endpoint was disabled, if it was.")
    failing_since: datetime | None = Field(
        description="Start of the current run of failed attempts; null after a success."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="Until then, deliveries are also signed with the secret before the last "
        "rotation."
    )
    version: int
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret; shown only in this answer.")


class WebhookSecretOut(BaseModel):
    id: str
    secret: str = Field(description="The new signing secret; shown only in this answer.")
    previous_secret_expires_at: datetime = Field(
        description="The old secret keeps signing alongside the new one until then."
    )


class WebhookPage(Page[WebhookOut]):
    pass


class AttemptOut(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str = Field(description="The first KiB of the response body.")


class DeliveryOut(BaseModel):
    id: str = Field(description="`dlv_…`")
    webhook_id: str
    event_id: str = Field(description="`evt_…`, sent as `webhook-id`: the same on every retry.")
    event_type: str
    conversation_id: str | None
    state: DeliveryState = Field(
        description="`pending` (waiting for its next attempt, or being sent), `succeeded`, "
        "or `failed` (given up after about a day of retries, or by a 410)."
    )
    attempts: int
    next_attempt_at: datetime | None = Field(description="When pending: the next attempt.")
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptOut] = Field(description="Every attempt, oldest first.")


class DeliveryPage(Page[DeliveryOut]):
    pass
