"""Opaque keyset cursors and the `{"items": [...], "next_cursor": ...}` page shape.

A cursor is the sort key of the last row of a page, base64url-encoded. Paging by key
rather than by offset keeps the order stable under concurrent inserts: every row that
existed when the walk started is seen exactly once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from inbox_service.core.errors import Invalid

T = TypeVar("T")
Row = TypeVar("Row")

MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


PageLimit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Page size.")]
PageCursor = Annotated[
    str | None, Field(max_length=512, description="`next_cursor` of the previous page.")
]


class PageQuery(BaseModel):
    """The query parameters of a page (a model: validated in one call, not one per field)."""

    limit: PageLimit = 50
    cursor: PageCursor = None


async def _page_params(  # async: FastAPI would run a `def` dependency in a worker thread
    query: Annotated[PageQuery, Query()],
) -> PageParams:
    return PageParams(limit=query.limit, cursor=query.cursor)


PageParamsDep = Annotated[PageParams, Depends(_page_params)]


def _to_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_to_json(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class NullableDatetime:
    """A cursor type: a timestamp, or null (for sort keys on nullable columns)."""


def _from_json(value: Any, kind: type) -> Any:
    if kind is NullableDatetime:
        return None if value is None else _from_json(value, datetime)
    # Strict: a crafted cursor must be a 422 here, not a 500 from the database (a NUL or a
    # lone surrogate in a string, an integer wider than bigint).
    if kind is datetime:
        if not isinstance(value, str):
            raise TypeError("not a timestamp")
        instant = datetime.fromisoformat(value)
        if instant.tzinfo is None:
            raise ValueError("naive timestamp")
        return instant
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("not an integer")
        if not -(2**63) <= value < 2**63:
            raise ValueError("out of range")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise TypeError("not a string")
        if "\x00" in value:
            raise ValueError("NUL in a string")
        value.encode()  # UnicodeEncodeError (a ValueError) for lone surrogates
        return value
    return kind(value)


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """The key values of `cursor`, converted to `types`; a bad cursor is a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError("wrong arity")
        return [_from_json(v, t) for v, t in zip(values, types, strict=True)]
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError) as exc:
        raise Invalid("cursor is not a cursor this list returned", loc=["query", "cursor"]) from exc


async def keyset_page(
    session: AsyncSession,
    stmt: Select[Row],
    *,
    keys: Sequence[InstrumentedAttribute[Any]],
    params: PageParams,
    descending: bool = False,
    key_of: Callable[[Row], Sequence[Any]],
) -> tuple[list[Row], str | None]:
    """One page of `stmt` ordered by `keys` (a unique combination), after `params.cursor`."""
    if params.cursor is not None:
        types = [key.type.python_type for key in keys]
        after = decode_cursor(params.cursor, types)
        position = tuple_(*keys)
        stmt = stmt.where(position < tuple_(*after) if descending else position > tuple_(*after))
    order = [key.desc() if descending else key.asc() for key in keys]
    rows = list((await session.scalars(stmt.order_by(*order).limit(params.limit + 1))).all())
    if len(rows) <= params.limit:
        return rows, None
    rows = rows[: params.limit]
    return rows, encode_cursor(key_of(rows[-1]))
