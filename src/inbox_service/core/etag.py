"""Optimistic concurrency: `version` columns exposed as `ETag`, checked against `If-Match`."""

from __future__ import annotations

from fastapi import Response

from inbox_service.core.errors import PreconditionFailed


def etag_of(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag_of(version)


def check_if_match(if_match: str | None, version: int) -> None:
    """Raise 412 when the caller's `If-Match` names another version (absent: no check)."""
    if if_match is None or if_match.strip() == "*":
        return
    # If-Match uses the strong comparison (RFC 9110 13.1.1): a weak tag never matches.
    wanted = {tag.strip() for tag in if_match.split(",")}
    if etag_of(version) not in wanted:
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {etag_of(version)}"
        )
