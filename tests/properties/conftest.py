"""Hypothesis settings for the property suites: repeatable in CI (derandomized, no example
database), modest example counts (each file well under 30 s), no per-example deadline
(PostgreSQL round trips vary on a shared machine)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

PROPERTIES = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    # The `db` fixture is one rolled-back transaction for the whole test; every example
    # works in an inbox of its own inside it, so sharing the fixture is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
