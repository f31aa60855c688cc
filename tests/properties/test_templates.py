"""The template validator: any text either saves or is refused with a line and a column
(never a 500), and whatever saves renders within bounded time and size.

Text is built from Jinja fragments that matter (delimiters, the catalog's placeholders,
filters, sandbox-escape attempts, loops, arithmetic, comments, raw blocks, NUL, line
breaks) mixed with arbitrary text. Checked on the functions (many examples) and through
the API (`POST /v1/templates`, then `POST /v1/templates/{id}/render` on a real
conversation whose every variable is at its maximum length)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from inbox_service.conversations.models import Conversation
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.templates import render
from inbox_service.templates.catalog import CATALOG
from inbox_service.templates.render import MAX_OUTPUT_CHARS, MAX_VAR_CHARS, TemplateProblem
from tests.conftest import Team
from tests.properties.conftest import PROPERTIES

PLACEHOLDERS = [v.name for v in CATALOG] + ["vars.x", "vars.long"]
FRAGMENTS = st.sampled_from(
    ["{{", "}}", "{%", "%}", "{#", "#}", " if ", " elif ", " else ", " endif ", " for ",
     " in ", " endfor ", " set ", " raw ", " endraw ", " macro ", " include ", " import ",
     "|", "|upper", "|truncate(5)", "|default('x')", "|d(\"y\")", "|attr('format')",
     "|format", "|safe", "~", "+", "*", "**", "(", ")", "[", "]", "'", '"', ".", "_",
     "__class__", ".__mro__", "range(9**9)", "cycler", "lipsum", "loop", "self", "x", "1",
     "99999", " and ", " or ", " not ", " is defined ", " == ", "\n", "\r\n", "\x00", "é",
     "\u202e", "contact", ".name", "vars", ".x", *PLACEHOLDERS]
)  # fmt: skip


@st.composite
def sources(draw: st.DrawFn) -> str:
    """Mostly fragment soup; sometimes well-formed placeholders, so that some text saves."""
    if draw(st.booleans()):
        parts = draw(st.lists(FRAGMENTS | st.text(max_size=5), max_size=25))
    else:
        parts = draw(
            st.lists(
                st.sampled_from(PLACEHOLDERS).map(lambda p: "{{ " + p + " }}")
                | st.sampled_from(PLACEHOLDERS).map(lambda p: "{{ " + p + "|upper }}")
                | st.sampled_from(PLACEHOLDERS).map(
                    lambda p: "{% if " + p + " %}yes{% else %}no{% endif %}"
                )
                | st.text(max_size=8),
                max_size=12,
            )
        )
    return "".join(parts)


def assert_problem_is_located(problem: TemplateProblem, source: str) -> None:
    assert problem.message
    assert 1 <= problem.line <= source.count("\n") + 2, (problem, source)
    assert problem.column >= 1, (problem, source)


ROOTS = {v.name.split(".")[0] for v in CATALOG}
# Every placeholder at its longest value: the worst case rendering must stay bounded.
FULL_CONTEXT = {
    root: dict.fromkeys(
        (v.name.split(".")[1] for v in CATALOG if v.name.startswith(root + ".")),
        "W" * MAX_VAR_CHARS,
    )
    for root in ROOTS
} | {"vars": {"x": "v", "long": "L" * MAX_VAR_CHARS}}


@settings(PROPERTIES, max_examples=400)
@given(source=sources() | st.text(max_size=200))
def test_validate_accepts_or_locates_the_problem_and_what_passes_renders_bounded(
    source: str,
) -> None:
    try:
        used = render.validate(source)
    except TemplateProblem as problem:
        event("refused")
        assert_problem_is_located(problem, source)
        return
    event("saved")
    assert set(used) <= {*PLACEHOLDERS, *(u for u in used if u.startswith("vars."))}
    started = time.perf_counter()
    try:
        output = render.render(source, FULL_CONTEXT)
    except TemplateProblem as problem:  # e.g. the output would be too long
        event("render refused")
        assert_problem_is_located(problem, source)
    else:
        assert len(output) <= MAX_OUTPUT_CHARS
    assert time.perf_counter() - started < 5.0  # bounded, with room for a busy machine


@pytest.fixture
async def conversation_id(db: SessionMaker, team: Team) -> str:
    raw = (
        f"From: {'N' * 150} <ana@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: {'S' * 900}\r\nMessage-ID: <t@customer.test>\r\n\r\nhello\r\n"
    ).encode()
    async with transaction(db) as session:
        await store_batch(
            session,
            InboxContext(inbox_id=team.inbox_a, team_addresses=frozenset()),
            [Incoming(raw=raw, parsed=parse_message(raw))],
            now=datetime(2026, 1, 5, 9, tzinfo=UTC),
        )
        found = await session.scalar(
            select(Conversation.id).where(Conversation.inbox_id == team.inbox_a)
        )
        assert found is not None
        return found


@settings(PROPERTIES, max_examples=200)
@given(body=sources(), subject=st.none() | sources())
async def test_the_api_saves_or_answers_422_with_line_and_column_and_renders_bounded(
    client: httpx.AsyncClient, team: Team, conversation_id: str, body: str, subject: str | None
) -> None:
    created = await client.post(
        "/v1/templates",
        json={"name": "generated", "body": body, "subject": subject},
        headers=team.admin_headers,
    )
    assert created.status_code in (201, 422), created.text
    if created.status_code == 422:
        problem = created.json()
        assert created.headers["content-type"].startswith("application/problem+json")
        if problem["type"].endswith("invalid-template"):
            assert problem["line"] >= 1, problem
            assert problem["column"] >= 1, problem
            event("refused: invalid template")
        else:  # the field itself is refused, not its text: only an empty body here
            assert body == "", problem
            event("refused: empty body")
        return
    event("saved")
    started = time.perf_counter()
    rendered = await client.post(
        f"/v1/templates/{created.json()['id']}/render",
        json={"conversation_id": conversation_id, "variables": {"long": "L" * MAX_VAR_CHARS}},
        headers=team.agent_headers,
    )
    assert time.perf_counter() - started < 5.0
    assert rendered.status_code in (200, 422), rendered.text
    if rendered.status_code == 200:
        out = rendered.json()
        assert len(out["body"]) <= MAX_OUTPUT_CHARS
        assert out["subject"] is None or len(out["subject"]) <= MAX_OUTPUT_CHARS
