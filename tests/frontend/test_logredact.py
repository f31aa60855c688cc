"""Query strings and credentials are redacted from log records before any handler sees them."""

from __future__ import annotations

import logging

import httpx
import pytest

from inbox_service.core.auth import new_api_key
from inbox_service.core.logredact import install_log_redaction, redact
from inbox_service.sessions.tokens import new_token

KEY = new_api_key().token
TOKEN = new_token()[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f'127.0.0.1:5 - "GET /v1/events/stream?access_token={TOKEN}&types=a HTTP/1.1" 200',
            '127.0.0.1:5 - "GET /v1/events/stream?access_token=[redacted]&types=[redacted] '
            'HTTP/1.1" 200',
            id="access-log",
        ),
        pytest.param(
            "https://hooks.example.com/in?sig=abc#frag",
            "https://hooks.example.com/in?sig=[redacted]#frag",
            id="url-with-fragment",
        ),
        pytest.param(f"key {KEY} used", "key isk_[redacted] used", id="bare-api-key"),
        pytest.param(f"token={TOKEN}", "token=ist_[redacted]", id="bare-session-token"),
        pytest.param("no query here: a = b", "no query here: a = b", id="untouched"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_records_are_redacted_in_the_message_and_each_argument(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    logger = logging.getLogger("tests.frontend.redaction")
    url = httpx.URL("https://api.example.com/v1/x", params={"access_token": TOKEN})
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("HTTP Request: %s %s %d", "GET", url, 200)
        logger.info(f"inline {KEY}")  # a message formatted by the caller
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "HTTP Request: GET https://api.example.com/v1/x?access_token=[redacted] 200",
        "inline isk_[redacted]",
    ]
