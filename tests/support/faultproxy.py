"""An asyncio TCP proxy on 127.0.0.1 that misbehaves on demand (RELIABILITY.md §10).

    proxy = FaultProxy(target_port)
    await proxy.start()              # clients connect to proxy.port
    proxy.cut_after(200)             # the next 200 server bytes pass, then both sockets close
    proxy.blackhole()                # forward nothing, keep every socket open
    proxy.latency = 0.2              # delay each chunk by 200 ms
    proxy.pass_through()             # back to normal
    await proxy.close()

Modes apply at once, to open connections and new ones. `cut_after(n)` counts server→client
bytes from the moment it is called, over all connections, so a test can arm it just before the
command whose response should be torn; it fires once, then the proxy passes traffic again.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    host = "127.0.0.1"

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency = 0.0
        self._blackhole = False
        self._cut_budget: int | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    # -- modes ----------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._blackhole, self._cut_budget, self.latency = False, None, 0.0

    def blackhole(self) -> None:
        self._blackhole = True

    def cut_after(self, server_bytes: int) -> None:
        self._cut_budget = server_bytes

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()  # the pumps see EOF and the handlers return
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        server_w: asyncio.StreamWriter | None = None
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
            self._writers.add(server_w)
            pumps = [
                asyncio.create_task(self._pump(client_r, server_w, from_server=False)),
                asyncio.create_task(self._pump(server_r, client_w, from_server=True)),
            ]
            try:
                # either side ending (EOF, error, cut) ends the whole connection
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # a handler ends quietly: asyncio's stream callback chokes on a cancelled one
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await writer.wait_closed()
            self._tasks.discard(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_server: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if self._blackhole:
                    continue  # swallowed; the peer sees an open, silent socket
                if self.latency:
                    await asyncio.sleep(self.latency)
                if from_server and self._cut_budget is not None:
                    data = data[: self._cut_budget]
                    self._cut_budget -= len(data)
                    writer.write(data)
                    if self._cut_budget <= 0:
                        self._cut_budget = None  # one cut; later connections pass through
                        await writer.drain()
                        return  # the caller closes both sockets
                    continue
                writer.write(data)
                await writer.drain()
