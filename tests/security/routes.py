"""The app's operations, read from its OpenAPI document, so routes added later are covered."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from inbox_service.core.db import SessionMaker, transaction

METHODS = ("get", "put", "post", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def takes_body(self) -> bool:
        return "requestBody" in self.spec

    def url(self, values: dict[str, str] | None = None) -> str:
        """The path with its parameters filled (`x_none` where no value is given)."""
        values = values or {}
        return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), "x_none"), self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def operations(app: FastAPI, *, prefix: str = "/v1/") -> list[Operation]:
    found = []
    for path, ops in app.openapi()["paths"].items():
        if not path.startswith(prefix):
            continue
        for method in METHODS:
            if method in ops:
                found.append(Operation(method.upper(), path, ops[method]))
    return found


async def writes(db: SessionMaker) -> dict[str, int]:
    """Rows inserted, updated or deleted per table in the test's transaction so far
    (savepoints of requests included, even those rolled back): any write moves it."""
    async with transaction(db) as session:
        rows = await session.execute(
            text(
                "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del"
                " FROM pg_stat_xact_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0"
            )
        )
        return {name: int(count) for name, count in rows.all()}
