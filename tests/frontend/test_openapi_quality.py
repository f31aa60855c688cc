"""The OpenAPI document generates clients with no hand edits: checked on every operation,
so routes added later are held to the same rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from inbox_service.app import create_app
from inbox_service.core.config import Settings
from inbox_service.core.errors import PROBLEM_JSON

METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}
OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def schemas_in(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every schema object of the document, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}/{key}"
            if key in {"schema", "items", "additionalProperties", "contentSchema"}:
                yield here, value
            elif key in {"properties", "$defs"} and isinstance(value, dict):
                for name, sub in value.items():
                    yield f"{here}/{name}", sub
            elif key in {"anyOf", "oneOf", "allOf"} and isinstance(value, list):
                for i, sub in enumerate(value):
                    yield f"{here}/{i}", sub
            yield from schemas_in(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schemas_in(value, f"{where}/{i}")


def is_named(schema: dict[str, Any]) -> bool:
    if "$ref" in schema:
        return True
    return schema.get("type") == "array" and "$ref" in schema.get("items", {})


def test_every_operation_has_a_readable_unique_id_prefixed_by_its_tag(
    spec: dict[str, Any],
) -> None:
    seen: dict[str, str] = {}
    for path, method, operation in operations(spec):
        tags = operation.get("tags")
        assert tags, f"{method} {path} has no tag"
        operation_id = operation.get("operationId", "")
        assert OPERATION_ID.match(operation_id), f"{method} {path}: {operation_id!r}"
        prefix = re.sub(r"[^a-z0-9]+", "_", tags[0].lower()).strip("_")
        assert operation_id.startswith(prefix + "_"), operation_id
        assert operation_id not in seen, f"{operation_id}: {seen.get(operation_id)} too"
        seen[operation_id] = f"{method} {path}"
    # The names API.md promises.
    assert {"conversations_list", "conversations_assign", "session_tokens_create"} <= set(seen)


def test_no_schema_is_left_untyped(spec: dict[str, Any]) -> None:
    for where, schema in schemas_in(spec):
        if isinstance(schema, bool):
            continue
        assert schema != {}, f"untyped (Any) schema at {where}"


def test_bodies_and_answers_are_named_schemas(spec: dict[str, Any]) -> None:
    for path, method, operation in operations(spec):
        for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
            assert is_named(content["schema"]) or any(
                is_named(s) for s in content["schema"].get("anyOf", [])
            ), f"{method} {path} request {media_type}"
        for status, response in operation["responses"].items():
            for media_type, content in response.get("content", {}).items():
                if media_type.endswith("json"):
                    assert is_named(content["schema"]), f"{method} {path} {status} {media_type}"


def test_errors_are_declared_as_problem_json(spec: dict[str, Any]) -> None:
    assert "Problem" in spec["components"]["schemas"]
    for path, method, operation in operations(spec):
        responses = operation["responses"]
        if path.startswith("/v1/"):
            public = operation.get("security") == []
            for status in ("422",) if public else ("401", "422"):
                assert status in responses, f"{method} {path} does not declare {status}"
        for status, response in responses.items():
            if status[0] in "45":
                content = response.get("content", {})
                assert list(content) == [PROBLEM_JSON], f"{method} {path} {status}"
                assert content[PROBLEM_JSON]["schema"] == {"$ref": "#/components/schemas/Problem"}


def test_every_cursor_list_answers_the_same_page_shape(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    pages = 0
    for path, method, operation in operations(spec):
        names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        if "cursor" not in names:
            continue
        pages += 1
        assert "limit" in names, f"{method} {path}"
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = components[ref.rsplit("/", 1)[1]]
        assert set(page["properties"]) == {"items", "next_cursor"}, ref
        assert set(page["required"]) == {"items", "next_cursor"}, ref
        assert "$ref" in page["properties"]["items"]["items"], ref
        assert page["properties"]["next_cursor"]["anyOf"] == [
            {"type": "string"},
            {"type": "null"},
        ], ref
    assert pages >= 10


def test_shared_value_sets_are_named_enums(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    conversation = components["ConversationOut"]["properties"]
    assert conversation["status"] == {"$ref": "#/components/schemas/ConversationStatus"}
    assert components["ConversationStatus"]["enum"] == ["open", "pending", "snoozed", "resolved"]
    assert set(components["Priority"]["enum"]) == {"urgent", "high", "normal", "low"}
    patch = components["ConversationPatch"]["properties"]["status"]
    assert {"$ref": "#/components/schemas/ConversationStatus"} in patch["anyOf"]
    for where, schema in schemas_in(spec):
        if isinstance(schema, dict) and "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            assert name in components, f"{where} refers to a missing {name}"
    for name, schema in components.items():
        if "enum" in schema:
            assert schema["type"] == "string", name
            assert all(isinstance(value, str) for value in schema["enum"]), name
