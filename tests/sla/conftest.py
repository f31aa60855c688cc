from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.webhooks.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A plain-HTTP webhook receiver on 127.0.0.1."""
    server = Receiver()
    await server.start()
    yield server
    await server.close()
