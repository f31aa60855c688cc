"""Assign every open, unassigned conversation to one agent, the longest-waiting first.

Run it (Python 3.11+, `pip install httpx`):

    export INBOX_URL=https://inbox.example.com INBOX_API_KEY=...
    python examples/triage.py usr_01HX... --dry-run      # show what it would do
    python examples/triage.py usr_01HX... [--inbox-id inb_...] [--limit 20]

It reads `GET /v1/conversations?status=open&assignee_id=none&sort=waiting_longest` a
page at a time, following `next_cursor` (keyset pages: assigning the conversations
already seen does not make the next page skip any), and assigns each one with
`POST /v1/conversations/{id}/assign {"assignee_id": ...}`. The key needs access to those
conversations (an admin's, or an agent's for the inboxes they are a member of), and the
assignee must be a member of each conversation's inbox; where not, the API answers 422
and the script reports it and goes on.

Every POST carries an `Idempotency-Key` made of this run's id and the conversation id. A
POST that timed out or lost its connection is retried with the same key, so the server
replays its first answer instead of acting twice; the next run uses new keys, so it acts
afresh on a conversation someone unassigned in between.

Exit status: 0 when every assignment went through (or with --dry-run), 1 when one failed,
2 for a usage error.
"""

# ruff: noqa: T201 - printing is what this script is for

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

RETRIES = 3  # attempts per POST
RETRY_STATUSES = {409, 429, 502, 503, 504}  # 409: the same key is still in progress


def open_unassigned(
    client: httpx.Client, *, inbox_id: str | None, page_size: int
) -> Iterator[dict[str, Any]]:
    """Open, unassigned conversations, the longest-waiting first, across every page."""
    params: dict[str, str | int] = {
        "status": "open",
        "assignee_id": "none",
        "sort": "waiting_longest",
        "limit": page_size,
    }
    if inbox_id:
        params["inbox_id"] = inbox_id
    while True:
        response = client.get("/v1/conversations", params=params)
        response.raise_for_status()
        page = response.json()
        yield from page["items"]
        if not page["next_cursor"]:
            return
        params["cursor"] = page["next_cursor"]


def assign(
    client: httpx.Client, conversation_id: str, assignee_id: str, *, run_id: str
) -> httpx.Response:
    """POST the assignment, retrying network failures and 409/429/5xx with the same key."""
    headers = {"Idempotency-Key": f"triage-{run_id}-{conversation_id}"}
    body = {"assignee_id": assignee_id}
    for attempt in range(1, RETRIES + 1):
        response: httpx.Response | None = None
        try:
            response = client.post(
                f"/v1/conversations/{conversation_id}/assign", json=body, headers=headers
            )
        except httpx.TransportError:
            if attempt == RETRIES:
                raise
        if response is not None and (
            response.status_code not in RETRY_STATUSES or attempt == RETRIES
        ):
            return response
        time.sleep(retry_delay(attempt, response))
    raise AssertionError("unreachable")


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    retry_after = response.headers.get("retry-after", "") if response is not None else ""
    return float(retry_after) if retry_after.isdigit() else 0.5 * 2**attempt


def problem(response: httpx.Response) -> str:
    """`detail` of a problem+json answer, else the status line."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"{response.status_code} {detail or response.reason_phrase}"


def triage(
    client: httpx.Client,
    assignee_id: str,
    *,
    inbox_id: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    page_size: int = 50,
) -> tuple[int, int]:
    """Assign (or with `dry_run` only list) the conversations: (done, failed)."""
    run_id = uuid.uuid4().hex
    done = failed = 0
    for n, conversation in enumerate(
        open_unassigned(client, inbox_id=inbox_id, page_size=page_size), 1
    ):
        if limit is not None and n > limit:
            break
        what = (
            f"{conversation['id']} {conversation['subject']!r} "
            f"(waiting since {conversation['waiting_since'] or '-'})"
        )
        if dry_run:
            print(f"would assign {what} to {assignee_id}")
            done += 1
            continue
        try:
            response = assign(client, conversation["id"], assignee_id, run_id=run_id)
        except httpx.TransportError as exc:
            print(f"FAILED {what}: {exc!r}")
            failed += 1
            continue
        if response.is_success:
            print(f"assigned {what} to {assignee_id}")
            done += 1
        else:
            print(f"FAILED {what}: {problem(response)}")
            failed += 1
    return done, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("assignee_id", help="the agent's user id (usr_...)")
    parser.add_argument("--inbox-id", help="only this inbox")
    parser.add_argument("--limit", type=int, help="at most this many conversations")
    parser.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    parser.add_argument("--page-size", type=int, default=50, help="1..200 (default 50)")
    args = parser.parse_args(argv)
    url, key = os.environ.get("INBOX_URL"), os.environ.get("INBOX_API_KEY")
    if not url or not key:
        parser.error("set INBOX_URL and INBOX_API_KEY")
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        try:
            done, failed = triage(
                client,
                args.assignee_id,
                inbox_id=args.inbox_id,
                limit=args.limit,
                dry_run=args.dry_run,
                page_size=args.page_size,
            )
        except httpx.HTTPStatusError as exc:  # the list itself failed: bad key, bad filter
            print(f"listing failed: {problem(exc.response)}", file=sys.stderr)
            return 1
    print(f"dry run: {done} to assign" if args.dry_run else f"{done} assigned, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
