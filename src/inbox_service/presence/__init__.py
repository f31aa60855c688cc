"""Presence (who is viewing or writing in a conversation) and collision checks."""
