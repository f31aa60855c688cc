"""Every table, imported in one place: alembic's autogenerate and the tests see them all."""

from inbox_service.alerts.models import Alert
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
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.ingest.models import FolderSyncState, InboxSyncState
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
    "Attachment",
    "Base",
    "Contact",
    "Conversation",
    "ConversationTag",
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
    "RateLimitBucket",
    "Tag",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDispatchCursor",
    "WebhookEndpoint",
]
