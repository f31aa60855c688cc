"""The ingest tests' real Dovecot and mailbox fixtures, for the worker end-to-end test."""

from tests.ingest.conftest import dovecot, mailbox

__all__ = ["dovecot", "mailbox"]
