"""Every table, imported in one place: alembic's autogenerate and the tests see them all."""

from inbox_service.core.db import Base
from inbox_service.core.events import Event
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.core.jobs import PeriodicJob
from inbox_service.core.ratelimit import RateLimitBucket
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.users.models import ApiKey, User

__all__ = [
    "ApiKey",
    "Base",
    "Event",
    "IdempotencyKey",
    "Inbox",
    "InboxMember",
    "PeriodicJob",
    "RateLimitBucket",
    "User",
]
