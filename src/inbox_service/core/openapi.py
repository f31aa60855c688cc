"""What makes the OpenAPI document generate clients with no hand edits, for every route.

* `operation_id`: `<tag>_<verb>[_<rest>]` from the route's first tag and its function name
  with the tag's nouns dropped (`list_conversations` → `conversations_list`,
  `create_session_token` → `session_tokens_create`); a route may still pass its own
  `operation_id=`. Generators name methods and modules after these.
* `named_enum`: a `Literal` alias shared by several fields becomes one named component
  schema (`ConversationStatus`), so clients get one enum type instead of one per field:
  `Status = Annotated[Literal["open", …], named_enum("ConversationStatus")]`. Any other
  string enum with exactly the same values refers to it too.
* `polish`: non-JSON answers (raw mail, attachments, metrics) are typed as strings instead of
  an empty schema, which generators turn into `Any`; an error answer declared without a body
  gets the problem+json one every error has.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute
from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from inbox_service.core.errors import PROBLEM_JSON

_BINARY_PREFIXES = ("application/octet-stream", "message/", "image/", "audio/", "video/")


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def operation_id(route: APIRoute) -> str:
    tag = str(route.tags[0]) if route.tags else route.path.strip("/").split("/")[-1]
    prefix = re.sub(r"[^a-z0-9]+", "_", tag.lower()).strip("_")
    nouns = {form for word in prefix.split("_") for form in (word, _singular(word))}
    words = [word for word in route.name.split("_") if word not in nouns]
    return "_".join([prefix, *words])


# name -> its values, filled by `named_enum` at import; `polish` adds them as components.
_NAMED_ENUMS: dict[str, list[str]] = {}
_ENUM_MARK = "x-inbox-enum"


class named_enum:  # lower case: used like a function in `Annotated[...]`
    """`Annotated` marker: document the annotated `Literal` as `$ref` to a component schema
    called `name` (validation is the Literal's, unchanged)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        inner = handler(schema)
        values = inner.get("enum")
        if values is None:
            raise TypeError(f"named_enum({self.name!r}) annotates a Literal of strings only")
        known = _NAMED_ENUMS.setdefault(self.name, list(values))
        if known != list(values):
            raise TypeError(f"two different enums are both named {self.name!r}")
        # A `$ref` here would be looked up in pydantic's own definitions: mark it, and let
        # `polish` swap the mark for the reference.
        return {**inner, _ENUM_MARK: self.name}


def _named_enum_of(node: dict[str, Any]) -> str | None:
    if _ENUM_MARK in node:
        return str(node[_ENUM_MARK])
    values = node.get("enum")
    if node.get("type") != "string" or not isinstance(values, list):
        return None
    # The same values spelled out again (another module's own Literal): the same enum.
    for name, known in _NAMED_ENUMS.items():
        if sorted(known) == sorted(values):
            return name
    return None


def _refer_to_named_enums(node: Any) -> Any:
    if isinstance(node, list):
        return [_refer_to_named_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    name = _named_enum_of(node)
    if name is not None:
        reference: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
        for key in ("description", "default"):
            if key in node:
                reference[key] = node[key]
        return reference
    return {key: _refer_to_named_enums(value) for key, value in node.items()}


def _string_schema(media_type: str) -> dict[str, Any]:
    if media_type.startswith(_BINARY_PREFIXES):
        return {"type": "string", "format": "binary"}
    return {"type": "string"}


def polish(schema: dict[str, Any]) -> dict[str, Any]:
    """The document, fixed (see the module docstring)."""
    # Every operation takes `Authorization: Bearer <API key or session token>` unless it
    # says otherwise (`security: []`); generated clients read this to attach the header.
    schema["components"] = schema.get("components", {})
    schema["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`isk_…`) or a browser session token (`ist_…`).",
        }
    }
    schema["security"] = [{"bearer": []}]
    components = schema["components"].setdefault("schemas", {})
    # Inside the components only: a component that is itself an enum stays what it is.
    for key, component in components.items():
        components[key] = {k: _refer_to_named_enums(v) for k, v in component.items()}
    schema["paths"] = _refer_to_named_enums(schema.get("paths", {}))
    for name, values in _NAMED_ENUMS.items():
        components.setdefault(name, {"type": "string", "enum": values, "title": name})
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                # Answered before any route runs: a body that is not JSON, or too large.
                responses.setdefault("400", {"description": "Malformed JSON body"})
                responses.setdefault("413", {"description": "Body larger than MAX_BODY_BYTES"})
            for status, response in responses.items():
                if str(status)[0] in "45" and not response.get("content"):
                    response["content"] = {
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
                for media_type, content in response.get("content", {}).items():
                    if not content.get("schema") and "json" not in media_type:
                        content["schema"] = _string_schema(media_type)
    return schema
