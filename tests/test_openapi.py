"""The committed OpenAPI document is the one the app generates, and follows API.md."""

from __future__ import annotations

import json
from pathlib import Path

from inbox_service.app import create_app
from inbox_service.cli import openapi_text
from inbox_service.core.config import Settings

COMMITTED = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_spec_is_current() -> None:
    assert COMMITTED.read_text() == openapi_text(), "run `uv run inbox-service openapi`"


def test_every_operation_has_a_stable_id_and_a_tag() -> None:
    spec = create_app(Settings()).openapi()
    ids = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), f"{method} {path} has no operationId"
            assert operation.get("tags"), f"{method} {path} has no tag"
            ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))
    assert "users_list" in ids
    assert "events_list" in ids


def test_problem_schema_is_documented_for_errors() -> None:
    spec = json.loads(COMMITTED.read_text())
    assert "Problem" in spec["components"]["schemas"]
    responses = spec["paths"]["/v1/inboxes/{inbox_id}"]["get"]["responses"]
    assert "application/problem+json" in responses["404"]["content"]
