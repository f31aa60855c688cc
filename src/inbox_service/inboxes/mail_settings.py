"""An inbox's IMAP settings: validated on the way in, secrets encrypted, never shown back."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, StringConstraints, field_validator

from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.errors import Invalid
from inbox_service.core.inputs import StrictIn
from inbox_service.inboxes.models import Inbox

Security = Literal["ssl", "starttls", "none"]
ImapAuth = Literal["password", "xoauth2"]
Host = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.\-:\[\]]+$"
    ),
]
Folder = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
]


def security_of(stored: str | None) -> Security:
    """A stored security setting as the API names it (anything unknown is plain)."""
    return "ssl" if stored == "ssl" else "starttls" if stored == "starttls" else "none"


def default_port(security: str) -> int:
    """IMAP's port: 993 for implicit TLS, 143 otherwise (plain or STARTTLS)."""
    return 993 if security == "ssl" else 143


class ImapSettingsIn(StrictIn):
    """Where the inbox's mail comes from. `secret` is the password, or the OAuth2 access
    token when `auth` is `xoauth2` (Gmail, Microsoft 365); it is write-only."""

    host: Host
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 993 / 143.")
    security: Security = "ssl"
    username: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    auth: ImapAuth = "password"
    secret: SecretStr | None = Field(
        default=None, description="Write-only. Omit on update to keep the stored one."
    )
    folders: list[Folder] = Field(default_factory=lambda: ["INBOX"], min_length=1, max_length=20)
    poll_interval_seconds: int = Field(default=60, ge=10, le=86_400)
    enabled: bool = True

    @field_validator("folders")
    @classmethod
    def _unique_folders(cls, folders: list[str]) -> list[str]:
        # a field validator, so the 422 names `imap.folders` rather than just `imap`
        if len(set(folders)) != len(folders):
            raise ValueError("folders must not repeat")
        return folders


class ImapSettingsOut(BaseModel):
    host: str
    port: int
    security: Security
    username: str
    auth: ImapAuth
    has_secret: bool = Field(description="Whether a password or token is stored.")
    folders: list[str]
    poll_interval_seconds: int
    enabled: bool


def imap_settings_out(inbox: Inbox) -> ImapSettingsOut | None:
    if not inbox.imap_host:
        return None
    security = security_of(inbox.imap_security)
    return ImapSettingsOut(
        host=inbox.imap_host,
        port=inbox.imap_port or default_port(security),
        security=security,
        username=inbox.imap_username or "",
        auth="xoauth2" if inbox.imap_auth == "xoauth2" else "password",
        has_secret=inbox.imap_secret_encrypted is not None,
        folders=list(inbox.imap_folders or ["INBOX"]),
        poll_interval_seconds=inbox.imap_poll_seconds,
        enabled=inbox.imap_enabled,
    )


def may_reuse_secret(inbox: Inbox, settings: ImapSettingsIn) -> bool:
    """The stored secret goes only where it went before: same server, security, user and
    kind of secret. Anything else needs the secret again, so a caller who can edit the
    settings cannot send the stored password to a server of their choosing."""
    port = settings.port or default_port(settings.security)
    stored_port = inbox.imap_port or default_port(inbox.imap_security)
    return inbox.imap_secret_encrypted is not None and (
        inbox.imap_host,
        stored_port,
        inbox.imap_security,
        inbox.imap_username,
        inbox.imap_auth,
    ) == (settings.host, port, settings.security, settings.username, settings.auth)


def apply_imap_settings(
    inbox: Inbox, settings: ImapSettingsIn | None, cipher: CredentialCipher | None
) -> None:
    """Store `settings` on the inbox (None removes them). A new secret is encrypted."""
    if settings is None:
        inbox.imap_host = inbox.imap_username = inbox.imap_secret_encrypted = None
        inbox.imap_port = None
        inbox.imap_enabled = False
        return
    if settings.secret is not None:
        if cipher is None:
            raise Invalid(
                "this server has no INBOX_SECRET_KEY, so it cannot store secrets",
                loc=["body", "imap", "secret"],
            )
        inbox.imap_secret_encrypted = cipher.encrypt(settings.secret.get_secret_value())
    elif not may_reuse_secret(inbox, settings):
        raise Invalid(
            "secret is required (new settings never reuse the stored secret for another "
            "server, security, user or auth)",
            loc=["body", "imap", "secret"],
        )
    inbox.imap_host = settings.host
    inbox.imap_port = settings.port
    inbox.imap_security = settings.security
    inbox.imap_username = settings.username
    inbox.imap_auth = settings.auth
    inbox.imap_folders = list(settings.folders)
    inbox.imap_poll_seconds = settings.poll_interval_seconds
    inbox.imap_enabled = settings.enabled


# -- SMTP: where replies go (issue 6) ------------------------------------------------------


def default_smtp_port(security: str) -> int:
    """465 for implicit TLS, 587 for STARTTLS, 25 for plain."""
    return {"ssl": 465, "starttls": 587}.get(security, 25)


class SmtpSettingsIn(StrictIn):
    """Where the inbox's replies are sent. `secret` is write-only; `username` null: no AUTH."""

    host: Host
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 465/587/25.")
    security: Security = "ssl"
    username: Annotated[str, StringConstraints(min_length=1, max_length=320)] | None = None
    secret: SecretStr | None = Field(
        default=None, description="Write-only. Omit on update to keep the stored one."
    )
    sent_folder: Folder | None = Field(
        default=None,
        description="IMAP folder that gets a copy of each sent reply (null: none). Needs the "
        "inbox's IMAP settings.",
    )
    provider_files_sent: bool = Field(
        default=False,
        description="The provider files sent mail itself (Gmail, Microsoft 365): no copy is "
        "appended, and a send of unknown outcome is looked up in `sent_folder`.",
    )


class SmtpSettingsOut(BaseModel):
    host: str
    port: int
    security: Security
    username: str | None
    has_secret: bool = Field(description="Whether a password is stored.")
    sent_folder: str | None
    provider_files_sent: bool


def smtp_settings_out(inbox: Inbox) -> SmtpSettingsOut | None:
    if not inbox.smtp_host:
        return None
    security = security_of(inbox.smtp_security)
    return SmtpSettingsOut(
        host=inbox.smtp_host,
        port=inbox.smtp_port or default_smtp_port(security),
        security=security,
        username=inbox.smtp_username,
        has_secret=inbox.smtp_secret_encrypted is not None,
        sent_folder=inbox.smtp_sent_folder,
        provider_files_sent=inbox.smtp_provider_files_sent,
    )


def apply_smtp_settings(
    inbox: Inbox, settings: SmtpSettingsIn | None, cipher: CredentialCipher | None
) -> None:
    """Store `settings` (None removes them). The stored secret is kept only for the same
    server, port, security and user (as for IMAP)."""
    if settings is None:
        inbox.smtp_host = inbox.smtp_username = inbox.smtp_secret_encrypted = None
        inbox.smtp_port = None
        inbox.smtp_sent_folder = None
        inbox.smtp_provider_files_sent = False
        return
    port = settings.port or default_smtp_port(settings.security)
    stored = (
        inbox.smtp_host,
        inbox.smtp_port or default_smtp_port(inbox.smtp_security),
        inbox.smtp_security,
        inbox.smtp_username,
    )
    if settings.secret is not None:
        if cipher is None:
            raise Invalid(
                "this server has no INBOX_SECRET_KEY, so it cannot store secrets",
                loc=["body", "smtp", "secret"],
            )
        inbox.smtp_secret_encrypted = cipher.encrypt(settings.secret.get_secret_value())
    elif settings.username is None:
        inbox.smtp_secret_encrypted = None
    elif inbox.smtp_secret_encrypted is None or stored != (
        settings.host,
        port,
        settings.security,
        settings.username,
    ):
        raise Invalid(
            "secret is required (new settings never reuse the stored secret for another "
            "server, security or user)",
            loc=["body", "smtp", "secret"],
        )
    inbox.smtp_host = settings.host
    inbox.smtp_port = settings.port
    inbox.smtp_security = settings.security
    inbox.smtp_username = settings.username
    inbox.smtp_sent_folder = settings.sent_folder
    inbox.smtp_provider_files_sent = settings.provider_files_sent


class AutoAckIn(StrictIn):
    """Acknowledge each new conversation with a template (RFC 3834 rules apply)."""

    enabled: bool = False
    template_id: str | None = Field(default=None, description="Required when enabled.")
    window_seconds: int = Field(
        default=86_400,
        ge=60,
        le=30 * 86_400,
        description="At most one acknowledgement per sender within this many seconds.",
    )


class AutoAckOut(BaseModel):
    enabled: bool
    template_id: str | None
    window_seconds: int


def auto_ack_out(inbox: Inbox) -> AutoAckOut:
    return AutoAckOut(
        enabled=inbox.auto_ack_enabled,
        template_id=inbox.auto_ack_template_id,
        window_seconds=inbox.auto_ack_window_seconds,
    )


def apply_auto_ack(inbox: Inbox, settings: AutoAckIn | None) -> None:
    settings = settings or AutoAckIn()
    if settings.enabled and settings.template_id is None:
        raise Invalid("template_id is required to enable auto_ack", loc=["body", "auto_ack"])
    inbox.auto_ack_enabled = settings.enabled
    inbox.auto_ack_template_id = settings.template_id
    inbox.auto_ack_window_seconds = settings.window_seconds
