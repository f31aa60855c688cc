from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 86_400
DEFAULT_TTL_SECONDS = 3_600


class SessionTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(
        default=None,
        description="The user the token acts as (admin keys only); default: the key's own user.",
    )
    ttl_seconds: int = Field(
        default=DEFAULT_TTL_SECONDS,
        ge=MIN_TTL_SECONDS,
        le=MAX_TTL_SECONDS,
        description="How long the token works.",
    )


class SessionTokenCreated(BaseModel):
    token: str = Field(description="The bearer token; shown in this answer only.")
    user_id: str
    expires_at: datetime
