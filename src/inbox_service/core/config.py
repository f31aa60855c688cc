"""Settings, read from environment variables (and a `.env` file when present)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each field is the lower-case name of its env var."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/inbox",
        description="SQLAlchemy URL of the PostgreSQL database (asyncpg driver).",
    )
    db_pool_size: int = Field(default=10, ge=1, description="Connections per process.")
    api_statement_timeout_ms: int = Field(
        default=30_000, ge=0, description="Longest SQL statement an API request may run (0: none)."
    )
    inbox_secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts stored credentials (IMAP/SMTP passwords, "
        "webhook secrets). Generate one with `inbox-service generate-key`.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest accepted request body (413 above)."
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=0, description="Requests per API key (or client IP) per minute; 0 = off."
    )
    worker_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle worker looks for work."
    )
    worker_id: str | None = Field(default=None, description="Name of this worker in leases.")
    ingest_parse_processes: int = Field(
        default=-1,
        ge=-1,
        description="Processes that parse mail beside the event loop (-1: one per core, "
        "0: parse in the worker process itself).",
    )
    ingest_batch_size: int = Field(default=100, ge=1, le=1000, description="UIDs per FETCH.")
    ingest_max_attachment_bytes: int = Field(
        default=25 * 1024 * 1024, ge=0, description="Attachments above this are not stored."
    )
    imap_idle_renew_seconds: float = Field(
        default=540, gt=0, description="Re-issue IMAP IDLE after this long (servers cut it)."
    )
    imap_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect and read timeout for IMAP servers."
    )
    imap_rescan_seconds: float = Field(
        default=5.0, gt=0, description="How often a worker looks for inboxes to take over."
    )
    smtp_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Connect and read timeout for SMTP servers; a whole send takes at most "
        "three times this.",
    )
    reply_max_attempts: int = Field(
        default=12,
        ge=1,
        le=50,
        description="Attempts per reply on temporary SMTP failures (backoff 30 s doubling to "
        "1 h: 12 span about 6 hours) before it is `failed`.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach private, loopback and link-local addresses (tests, "
        "on-premises receivers). Off: such URLs are refused at creation and at every attempt.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Longest one webhook delivery attempt may take."
    )
    webhook_concurrency: int = Field(
        default=64, ge=1, le=1000, description="Webhook deliveries in flight per worker."
    )
    sse_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a live stream re-reads the event log without a notification.",
    )
    sse_keepalive_seconds: float = Field(
        default=15.0, gt=0, description="Idle time after which a live stream sends a comment."
    )
    sse_auth_recheck_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often a live stream re-checks its key (revoked, expired, user deleted).",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long an API process reuses a key's check (user, role, inboxes). A "
        "revoked key, a deleted user or a membership change made through another process "
        "takes effect within this time (at once in the process that made it); 0: check "
        "every request.",
    )
    csat_page_url: str | None = Field(
        default=None,
        description="Your page that shows the rating form; `{{ csat.url }}` is this URL "
        "with the signed token in place of `{token}`, or added as `?token=`. Unset: no "
        "rating links (needs INBOX_SECRET_KEY too).",
    )
    csat_link_days: int = Field(
        default=30, ge=1, le=365, description="How long a rating link stays valid."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated browser origins (`https://app.example.com`) allowed to "
        "call `/v1/*` with CORS; none by default. `*` is refused: credentials are involved.",
    )

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _no_wildcard_origin(cls, value: list[str]) -> list[str]:
        for origin in value:
            if "*" in origin:
                raise ValueError("CORS_ALLOW_ORIGINS lists origins; `*` is refused")
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
