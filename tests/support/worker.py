"""`inbox-service worker` as a child process, for tests that kill it and start another.

The child runs on the real clock, so tests poll the database in bounded loops: every wait
has a timeout, and the child is always killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 10.0


@dataclass
class Child:
    process: asyncio.subprocess.Process
    stderr: asyncio.Task[bytes]

    async def output(self) -> str:
        with suppress(TimeoutError):
            return (await asyncio.wait_for(asyncio.shield(self.stderr), 5)).decode(errors="replace")
        return "<stderr not available>"

    async def exit_code(self, *, within: float) -> int:
        return await asyncio.wait_for(self.process.wait(), within)


@asynccontextmanager
async def worker_process(
    database_url: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Child]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WORKER_POLL_SECONDS": "0.05",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    env.pop("WORKER_ID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "inbox_service",
        "worker",
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    child = Child(process, asyncio.create_task(process.stderr.read()))
    try:
        yield child
    finally:
        if process.returncode is None:
            process.kill()
        with suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        with suppress(TimeoutError):
            await asyncio.wait_for(child.stderr, 5)


async def wait_for(
    child: Child, condition: Callable[[], Awaitable[bool]], what: str, *, within: float
) -> None:
    """Poll `condition` until it holds; fail (with the child's log) on timeout or exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if child.process.returncode is not None:
            raise AssertionError(
                f"worker exited ({child.process.returncode}) before {what}:\n"
                + await child.output()
            )
        if loop.time() > deadline:
            raise AssertionError(f"no {what} within {within} s:\n" + await child.output())
        await asyncio.sleep(0.05)
