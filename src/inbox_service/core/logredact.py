"""Query strings and credentials never reach a log line.

`?access_token=<session token>` (the browser's event stream) would otherwise be written by
uvicorn's access log, and any URL with secrets in its query by whoever logs it (httpx logs
each request's URL). A log record factory, installed once per process by `create_app`,
replaces every query value with `[redacted]` and any API key or session token with its
prefix, in the message and in each argument, before any handler formats it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
_QUERY_VALUE = re.compile(r"([?&][^=&\s#?\"'<>]+=)[^&\s#\"'<>]*")
_CREDENTIAL = re.compile(r"\b(is[kt]_)[0-9a-z]{16}_[0-9a-f]+")
_MARK = "_inbox_redacts"


def redact(text: str) -> str:
    text = _QUERY_VALUE.sub(rf"\1{REDACTED}", text)
    return _CREDENTIAL.sub(rf"\1{REDACTED}", text)


def _redact_arg(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value  # keeps `%d` and `%f` working
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean


def install_log_redaction() -> None:
    """Idempotent: a second app in the same process does not wrap the factory again."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, _MARK, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_arg(arg) for key, arg in record.args.items()}
        return record

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)
