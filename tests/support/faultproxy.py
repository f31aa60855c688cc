"""An asyncio TCP proxy on 127.0.0.1 that misbehaves on demand (RELIABILITY.md §10).

    proxy = FaultProxy(target_port)
    await proxy.start()              # clients connect to proxy.port
    proxy.cut_after(200)             # the next 200 server bytes pass, then both sockets close
    proxy.blackhole()                # forward nothing, keep every socket open
    proxy.latency = 0.2              # delay each chunk by 200 ms
    proxy.stall()                    # hold every byte (not lost) until pass_through()
    proxy.cut_client_after(300)      # the same as cut_after, counting client→server bytes
    proxy.drop()                     # reset every open connection now (RST)
    proxy.pass_through()             # back to normal
    await proxy.close()

Modes apply at once, to open connections and new ones. `cut_after(n)` counts server→client
bytes from the moment it is called, over all connections, so a test can arm it just before the
command whose response should be torn; it fires once, then the proxy passes traffic again.

`Chaos(proxy, seed)` runs those faults at random (seeded) moments until told to stop: the
fault-injection suite (tests/hardening/test_faults*.py) puts one in front of each dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field


class FaultProxy:
    host = "127.0.0.1"

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency = 0.0
        self._blackhole = False
        self._cut_budget: int | None = None
        self._client_cut_budget: int | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    # -- modes ----------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._blackhole, self._cut_budget, self.latency = False, None, 0.0
        self._client_cut_budget = None
        self._flowing.set()

    def blackhole(self) -> None:
        self._blackhole = True

    def cut_after(self, server_bytes: int) -> None:
        self._cut_budget = server_bytes

    def cut_client_after(self, client_bytes: int) -> None:
        self._client_cut_budget = client_bytes

    def stall(self) -> None:
        """Hold traffic both ways (buffered, delivered after `pass_through`): a peer that
        stopped answering without closing, as long as the caller's timeouts allow."""
        self._flowing.clear()

    def drop(self) -> None:
        """Reset every open connection at once (RST, no FIN): a crashed peer or a cut cable."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # linger 0: close() sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

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
                await self._flowing.wait()
                if self._blackhole:
                    continue  # swallowed; the peer sees an open, silent socket
                if self.latency:
                    await asyncio.sleep(self.latency)
                if not from_server and self._client_cut_budget is not None:
                    data = data[: self._client_cut_budget]
                    self._client_cut_budget -= len(data)
                    writer.write(data)
                    if self._client_cut_budget <= 0:
                        self._client_cut_budget = None
                        await writer.drain()
                        return
                    continue
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


@dataclass
class Chaos:
    """Seeded random faults on one proxy: after a random pause within `every`, the next of
    `faults` — drop (RST), cut (server bytes), cut_client (client bytes), stall (held for a
    random time), slow (latency for a while) — then normal traffic again. The faults come in
    rounds, each a seeded shuffle of all of them, so every kind runs within one round.
    `log` records what was done, so a failure says which faults ran (and the seed replays
    the same choices; the exact byte at which they land depends on timing)."""

    proxy: FaultProxy
    seed: int
    faults: tuple[str, ...] = ("drop", "cut", "cut_client", "stall", "slow")
    every: tuple[float, float] = (0.05, 0.5)
    stall_seconds: tuple[float, float] = (0.1, 1.0)
    cut_bytes: tuple[int, int] = (1, 6000)
    log: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        plan: list[str] = []
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), rng.uniform(*self.every))
                    break
                if not plan:
                    plan = rng.sample(self.faults, len(self.faults))
                fault = plan.pop()
                self.log.append(fault)
                if fault == "drop":
                    self.proxy.drop()
                elif fault == "cut":
                    self.proxy.cut_after(rng.randint(*self.cut_bytes))
                elif fault == "cut_client":
                    self.proxy.cut_client_after(rng.randint(*self.cut_bytes))
                else:
                    if fault == "stall":
                        self.proxy.stall()
                    else:
                        self.proxy.latency = rng.uniform(0.01, 0.2)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rng.uniform(*self.stall_seconds))
                    self.proxy.pass_through()
        finally:
            self.proxy.pass_through()

    async def __aenter__(self) -> Chaos:
        self._task = asyncio.create_task(self.run(self._stop), name=f"chaos:{self.proxy.port}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """End the faults; from here on the proxy passes everything."""
        self._stop.set()
        if self._task is not None:
            await self._task
