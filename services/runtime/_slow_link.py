"""`SlowLink`: a TCP forwarder on loopback that delays what it forwards, in each direction, by
a fixed time: a network link between hosts, for `NatsCluster`'s routes.

On loopback a follower applies a write microseconds after the leader acknowledges it; across
hosts it is a link's latency later. Fronting every node's cluster port with one of these
gives the cluster that latency, so what depends on it (a follower answering a read before it
has a write the leader acknowledged) happens here as it does there.
"""

from __future__ import annotations

import asyncio

__all__ = ["SlowLink"]

_CHUNK = 64 * 1024
_CLOSE_S = 1.0
"""How long `close` waits for a connection to flush before it drops it."""
_IN_FLIGHT = 256
"""Chunks a direction holds before it stops reading (its sender then waits, as on a full
link)."""


class SlowLink:
    """Listens on 127.0.0.1:`port` and forwards each connection to 127.0.0.1:`target_port`,
    every chunk `delay_s` after it arrived, in order. It keeps listening while its target is
    down (a node restarted comes back behind the same link)."""

    def __init__(self, port: int, target_port: int, delay_s: float) -> None:
        self.port = port
        self.target_port = target_port
        self.delay_s = delay_s
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        """Connections being accepted and their pipes."""
        self._open: set[asyncio.StreamWriter] = set()
        """Both ends of every connection made (a few per link: the routes of its node)."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Stop listening and close every connection, and wait until they are closed: a
        socket left to the garbage collector after its event loop has gone is a
        ResourceWarning, which the test suite turns into an error."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        writers, self._open = list(self._open), set()
        for writer in writers:
            writer.close()
        for writer in writers:
            try:
                async with asyncio.timeout(_CLOSE_S):
                    await writer.wait_closed()
            except TimeoutError:  # a peer that reads no more: drop what is buffered
                writer.transport.abort()
            except OSError:
                pass
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        accepting = asyncio.current_task()
        if accepting is not None:
            self._track(accepting)  # a close meanwhile cancels it, then closes `writer`
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the target is down: the node dialling tries again later
            self._open.discard(writer)
            writer.close()
            return
        self._open.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            self._track(asyncio.ensure_future(self._forward(source, sink)))

    async def _forward(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Read as it comes, write each chunk once it is `delay_s` old: the delay does not
        add up over a burst (a link's latency, not its bandwidth)."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_IN_FLIGHT)

        async def read() -> None:
            try:
                while data := await source.read(_CHUNK):
                    await chunks.put((loop.time() + self.delay_s, data))
            except OSError:
                pass
            await chunks.put((loop.time() + self.delay_s, b""))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            # closed first: a cancel while waiting for `reading` below must not leave it open
            sink.close()  # kept in `_open`: `close` waits until it is closed
            reading.cancel()
            await asyncio.wait([reading])
