"""A real Dovecot for the ingest tests, and a fresh mailbox per test."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inbox_service.ingest.imap import ImapSettings
from tests.support.dovecot import Dovecot, dovecot_available


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if not dovecot_available():
        if os.environ.get("CI"):
            pytest.fail("dovecot is not installed (apt-get install dovecot-imapd)")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    with tempfile.TemporaryDirectory(prefix="dovecot-") as root, Dovecot(Path(root)) as server:
        yield server


@dataclass
class Mailbox:
    server: Dovecot
    user: str
    password: str
    settings: ImapSettings

    def deliver(self, raw: bytes, folder: str = "INBOX") -> int:
        return self.server.append(self.user, folder, raw)


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Mailbox:
    user, password = f"u{secrets.token_hex(6)}", secrets.token_urlsafe(12)
    dovecot.add_user(user, password)
    settings = ImapSettings(dovecot.host, dovecot.port, "none", user, password, timeout=10.0)
    return Mailbox(dovecot, user, password, settings)
