from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from inbox_service.core.inputs import StrictIn
from inbox_service.core.openapi import named_enum
from inbox_service.core.pagination import Page, PageCursor, PageLimit
from inbox_service.presence.schemas import PresentUser
from inbox_service.sla.schemas import ConversationSlaOut


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


# Named enums: one type per value set in generated clients (core/openapi.py).
Status = Annotated[
    Literal["open", "pending", "snoozed", "resolved"], named_enum("ConversationStatus")
]
Priority = Annotated[Literal["urgent", "high", "normal", "low"], named_enum("Priority")]
Sort = Annotated[
    Literal["newest", "oldest", "waiting_longest", "priority", "sla_due"],
    named_enum("ConversationSort"),
]
SlaFilter = Annotated[Literal["at_risk", "breached"], named_enum("SlaFilter")]


class ConversationListQuery(BaseModel):
    """`GET /v1/conversations`'s query parameters, validated as one model (FastAPI's
    per-parameter validation cost a tenth of the CPU of the API's busiest request)."""

    inbox_id: str | None = None
    status: Annotated[list[Status] | None, Field(description="Repeat for several.")] = None
    assignee_id: Annotated[
        str | None, Field(max_length=40, description="A user id, `me` or `none`.")
    ] = None
    priority: Annotated[list[Priority] | None, Field(description="Repeat for several.")] = None
    tag: Annotated[str | None, Field(max_length=64)] = None
    contact_id: str | None = None
    q: Annotated[
        str | None,
        Field(min_length=1, max_length=200, description="Words in subjects, bodies, addresses."),
    ] = None
    sla: Annotated[
        SlaFilter | None,
        Field(description="at_risk: inside a warning lead; breached: past an SLA due time."),
    ] = None
    sort: Annotated[
        Sort,
        Field(
            description="newest / oldest (last activity), waiting_longest (on us), "
            "priority (then waiting time), sla_due (earliest SLA due time first)."
        ),
    ] = "newest"
    limit: PageLimit = 50
    cursor: PageCursor = None


class ContactRef(BaseModel):
    id: str
    email: str
    name: str | None


class PrioritySourceOut(BaseModel):
    """Who set a conversation's priority: a priority rule (with the keyword it matched)
    or a person. A person's choice is never overridden by a rule."""

    type: Literal["rule", "user"]
    rule_id: str | None = None
    keyword: str | None = None
    user_id: str | None = None


class ConversationOut(BaseModel):
    """What a list row and a detail view show."""

    id: str
    inbox_id: str
    subject: str
    status: Status
    priority: Priority
    priority_source: PrioritySourceOut | None = Field(
        description="Who set the priority (null: the default, nobody)."
    )
    assignee_id: str | None
    contact: ContactRef | None
    snippet: str = Field(description="The start of the last message.")
    message_count: int
    tags: list[str]
    last_message_at: datetime = Field(description="Last activity: the latest message.")
    waiting_since: datetime | None = Field(
        description="Since when the customer waits for us (null: nothing waits)."
    )
    snoozed_until: datetime | None
    merged_into_id: str | None = Field(
        description="Set when merged into another conversation (which has its messages now)."
    )
    created_at: datetime
    updated_at: datetime
    version: int
    sla: ConversationSlaOut | None = Field(
        default=None,
        description="SLA clocks: each metric's due time, status and business time left "
        "(null: no SLA policy applies).",
    )


class ConversationPage(Page[ConversationOut]):
    """A page of conversations."""


class ConversationDetailOut(ConversationOut):
    """One conversation, with who has it open right now (presence heartbeats)."""

    viewers: list[PresentUser] = Field(description="Viewing it now (not composing).")
    composers: list[PresentUser] = Field(description="Writing in it now.")


class ConversationPatch(StrictIn):
    """Change status, priority or snooze. `snoozed` needs a future `snoozed_until`; giving
    `snoozed_until` alone snoozes; any other status clears it."""

    status: Status | None = None
    priority: Priority | None = None
    snoozed_until: datetime | None = None


class MessageSummaryOut(BaseModel):
    id: str
    direction: Literal["inbound", "outbound"]
    from_: AddressOut | None = Field(alias="from", serialization_alias="from")
    subject: str
    snippet: str
    received_at: datetime
    threaded_by: str
    auto_kind: Literal["auto_reply", "bulk", "bounce"] | None
    parse_status: Literal["ok", "degraded", "failed"]

    model_config = ConfigDict(populate_by_name=True)


class MessagePage(Page[MessageSummaryOut]):
    """A page of a conversation's messages, oldest first."""


class TimelineEntry(BaseModel):
    """One entry of the timeline: a message, a note or an activity."""

    type: Literal["message", "note", "activity"]
    id: str
    at: datetime
    actor_id: str | None = Field(description="Who did it (null: the customer or the system).")
    kind: str | None = Field(description="For activities: status_changed, tagged, …")
    data: dict[str, object]


class TimelinePage(Page[TimelineEntry]):
    """A page of timeline entries."""


TagName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f,]+$"
    ),
]


class TagIn(StrictIn):
    name: TagName = Field(description="Unique whatever its case; no commas.")


class TagOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime


class TagPage(Page[TagOut]):
    """A page of tags."""


class NoteIn(StrictIn):
    body: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] = Field(
        description="Mention users as `@usr_…` or `@their@address`."
    )
    expected_last_message_id: str | None = Field(
        default=None,
        max_length=40,
        description="The last message you saw; if others arrived since, 409 lists them.",
    )


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    conversation_id: str
    author_id: str | None
    body: str
    mentions: list[str] = Field(description="Ids of the users the note mentions.")
    created_at: datetime


class AssignIn(StrictIn):
    assignee_id: str | None = Field(description="A member of the inbox, or null to unassign.")


BulkAction = Literal["assign", "status", "priority", "tag", "untag"]


class BulkIn(StrictIn):
    """One action on many conversations, all or nothing."""

    ids: list[Annotated[str, StringConstraints(max_length=40)]] = Field(
        min_length=1, max_length=100
    )
    action: BulkAction
    value: str | None = Field(
        description="assign: a user id or null; status; priority; tag and untag: a tag name."
    )


class BulkResult(BaseModel):
    id: str
    changed: bool


class BulkOut(BaseModel):
    results: list[BulkResult]


class MergeIn(StrictIn):
    source_id: str = Field(description="The conversation whose messages move into this one.")


class SplitIn(StrictIn):
    message_id: str = Field(
        description="This message and the later replies to it move to a new conversation."
    )
