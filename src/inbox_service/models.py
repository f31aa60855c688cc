"""Every table, imported in one place: alembic's autogenerate and the tests see them all."""

from inbox_service.alerts.models import Alert
from inbox_service.assignment.models import AssignmentCursor, AssignmentRequest
from inbox_service.contacts.models import Contact
from inbox_service.conversations.models import (
    Activity,
    Attachment,
    Conversation,
    ConversationTag,
    Message,
    MessageLocation,
    MessageRaw,
    Note,
    Tag,
)
from inbox_service.core.db import Base
from inbox_service.core.events import Event
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.core.jobs import PeriodicJob
from inbox_service.core.ratelimit import RateLimitBucket
from inbox_service.csat.models import CsatRating
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.ingest.models import FolderSyncState, InboxSyncState
from inbox_service.presence.models import Presence
from inbox_service.replies.models import AutoAckSent, Reply, Signature
from inbox_service.rules.models import PriorityRule, PriorityRulesRevision
from inbox_service.sessions.models import SessionToken
from inbox_service.sla.models import ConversationSla, SlaPolicy, SlaPolicyInbox
from inbox_service.templates.models import Template
from inbox_service.users.models import ApiKey, User
from inbox_service.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookDispatchCursor,
    WebhookEndpoint,
)

__all__ = [
    "Activity",
    "Alert",
    "ApiKey",
    "AssignmentCursor",
    "AssignmentRequest",
    "Attachment",
    "AutoAckSent",
    "Base",
    "Contact",
    "Conversation",
    "ConversationSla",
    "ConversationTag",
    "CsatRating",
    "Event",
    "FolderSyncState",
    "IdempotencyKey",
    "Inbox",
    "InboxMember",
    "InboxSyncState",
    "Message",
    "MessageLocation",
    "MessageRaw",
    "Note",
    "PeriodicJob",
    "Presence",
    "PriorityRule",
    "PriorityRulesRevision",
    "RateLimitBucket",
    "Reply",
    "SessionToken",
    "Signature",
    "SlaPolicy",
    "SlaPolicyInbox",
    "Tag",
    "Template",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDispatchCursor",
    "WebhookEndpoint",
]
