"""Request bodies take JSON types as written: no `false` for 0, no number for a time."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from pydantic import Field, ValidationError

from inbox_service.core.inputs import StrictIn
from tests.conftest import Team


class Sample(StrictIn):
    count: int | None = Field(default=None, ge=0)
    flag: bool = False
    at: datetime | None = None
    ratio: float | None = None


class TestStrictIn:
    @pytest.mark.parametrize(
        "body",
        [
            {"count": False},
            {"count": "3"},
            {"count": 3.0},
            {"flag": 0},
            {"flag": "true"},
            {"at": 0},
            {"at": 1_700_000_000.5},
            {"at": "1700000000"},
            {"at": "0.5"},
            {"ratio": True},
            {"unknown": 1},
        ],
    )
    def test_coercions_and_unknown_fields_are_refused(self, body: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            Sample.model_validate(body)

    def test_json_types_as_written_are_taken(self) -> None:
        sample = Sample.model_validate(
            {"count": 3, "flag": True, "at": "2026-03-02T10:00:00Z", "ratio": 1}
        )
        assert (sample.count, sample.flag, sample.ratio) == (3, True, 1.0)
        assert sample.at is not None
        assert sample.at.year == 2026


class TestThroughTheApi:
    async def test_a_boolean_for_a_number_is_422_and_nothing_is_created(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        body = {"email": "typed@example.com", "name": "Typed", "capacity": False}
        response = await client.post("/v1/users", json=body, headers=team.admin_headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", "capacity"]
        users = await client.get("/v1/users", headers=team.admin_headers)
        assert "typed@example.com" not in users.text

    async def test_a_number_for_a_time_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.patch(
            "/v1/conversations/cnv_0000000000000000000000000",
            json={"snoozed_until": 0},
            headers=team.admin_headers,
        )
        assert response.status_code == 422, response.text
        assert "RFC 3339" in response.text
