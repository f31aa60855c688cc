"""The base of every request body: JSON taken as it is written.

Unknown fields are refused (a typo is an error, not a silent no-op), and numbers,
booleans and times are never read as one another: pydantic's lax mode would take `false`
for 0, `"5"` for 5 and 1700000000 for a time. A client that sends those has a bug, and a
422 tells it so where a coerced value would hide it.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict


def _members(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (unions and Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return {member for arg in typing.get_args(annotation) for member in _members(arg)}
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    return {annotation}


def _not_a_number(value: Any) -> Any:
    """Times are RFC 3339 strings; pydantic would also read 0.5 or "1700000000" as seconds."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()
    ):
        raise ValueError("a time is an RFC 3339 string, e.g. 2026-03-02T10:00:00Z")
    return value


# A time in a query string (bodies get the same rule from `StrictIn`).
Timestamp = Annotated[datetime, BeforeValidator(_not_a_number)]


class StrictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for field in cls.model_fields.values():
            members = _members(field.annotation)
            if members & {int, float, bool} and not any(
                isinstance(item, Strict) for item in field.metadata
            ):
                field.metadata.append(Strict())
                changed = True
            if datetime in members:
                field.metadata.append(BeforeValidator(_not_a_number))
                changed = True
        if changed:
            cls.model_rebuild(force=True)
