"""inbox-service: an open, API-first shared-inbox backend."""

__version__ = "0.1.0"
