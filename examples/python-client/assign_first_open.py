"""Page through the open conversations, assign the first to yourself, and handle problems.

Uses the client that openapi-python-client generates from openapi/openapi.json (see
README.md here); nothing in it is written by hand. Run against a server:

    INBOX_API_URL=http://127.0.0.1:8000 INBOX_TOKEN=ist_... \
        PYTHONPATH=/tmp/inbox_client python assign_first_open.py
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus

from inbox_client import AuthenticatedClient
from inbox_client.api.conversations import (
    conversations_assign,
    conversations_get,
    conversations_list,
)
from inbox_client.api.users import users_get_me
from inbox_client.models import (
    AssignIn,
    ConversationOut,
    ConversationPage,
    ConversationStatus,
    MeOut,
    Problem,
)
from inbox_client.types import UNSET


def open_conversations(client: AuthenticatedClient) -> list[ConversationOut]:
    """Every open conversation, following `next_cursor` page by page."""
    found: list[ConversationOut] = []
    cursor: str | None = None
    while True:
        page = conversations_list.sync(
            client=client,
            status=[ConversationStatus.OPEN],
            limit=2,
            cursor=cursor if cursor is not None else UNSET,
        )
        if not isinstance(page, ConversationPage):
            raise SystemExit(f"listing failed: {page}")
        found.extend(page.items)
        if not isinstance(page.next_cursor, str):
            return found
        cursor = page.next_cursor


def main() -> None:
    client = AuthenticatedClient(
        base_url=os.environ.get("INBOX_API_URL", "http://127.0.0.1:8000"),
        token=os.environ["INBOX_TOKEN"],
        raise_on_unexpected_status=True,
    )
    with client:
        me = users_get_me.sync(client=client)
        if not isinstance(me, MeOut):
            raise SystemExit(f"who am I? {me}")
        conversations = open_conversations(client)
        if not conversations:
            raise SystemExit("no open conversation to assign")
        first = conversations[0]

        # Read it with its ETag; assign it to me only if nobody changed it meanwhile.
        read = conversations_get.sync_detailed(first.id, client=client)
        etag = read.headers["ETag"]
        assigned = conversations_assign.sync(
            first.id, client=client, body=AssignIn(assignee_id=me.id), if_match=etag
        )
        if not isinstance(assigned, ConversationOut) or assigned.assignee_id != me.id:
            raise SystemExit(f"assignment failed: {assigned}")

        # The same ETag again is stale now: a 412 problem, not an exception.
        stale = conversations_assign.sync_detailed(
            first.id, client=client, body=AssignIn(assignee_id=None), if_match=etag
        )
        if stale.status_code != HTTPStatus.PRECONDITION_FAILED:
            raise SystemExit(f"expected 412, got {stale.status_code}")
        assert isinstance(stale.parsed, Problem)

        # An id that does not exist, or is in an inbox I cannot see: a 404 problem.
        missing = conversations_get.sync_detailed("cnv_does_not_exist", client=client)
        if missing.status_code != HTTPStatus.NOT_FOUND:
            raise SystemExit(f"expected 404, got {missing.status_code}")
        assert isinstance(missing.parsed, Problem)

    print(
        json.dumps(
            {
                "listed": [c.id for c in conversations],
                "assigned": assigned.id,
                "stale": stale.parsed.title,
                "missing": missing.parsed.title,
            }
        )
    )


if __name__ == "__main__":
    main()
