"""Webhooks: endpoints, deliveries, attempts and the fan-out cursor."""
