"""Replies: the outbox (enqueue, MIME built once, SMTP send, reconciliation) and auto-acks."""
