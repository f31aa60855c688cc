from __future__ import annotations

from typing import Any

from inbox_service.core.errors import Conflict


class ReplyCollision(Conflict):
    """Something arrived since the caller last looked: nothing was sent."""

    slug = "reply-collision"
    title = "The conversation changed since you last saw it"

    def __init__(self, unseen: list[dict[str, Any]]) -> None:
        super().__init__(
            f"{len(unseen)} message(s) arrived since expected_last_message_id; "
            "read them and reply again",
            extra={"unseen_messages": unseen},
        )
