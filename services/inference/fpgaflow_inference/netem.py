"""A modelled network distance between the load generator's clients and a server ("remote" against
"on-prem", as SONIC measured them): a relaying TCP proxy on 127.0.0.1 in front of the server, on a thread
of the load generator while a run lasts. This kernel has no netem (``tc qdisc ... netem``), so the delay
and the bandwidth limit are the proxy's.

For every connection it accepts, the relay opens one to the server and relays bytes both ways, unchanged
(HTTP/2, so gRPC, passes through as it is). Each direction is one modelled link: a chunk of n bytes read
at time t is written on at

    max(t + RTT/2, the previous chunk's delivery) + n x 8 / bandwidth

(:class:`Link`): half the round trip each way, the link busy n x 8 / bandwidth seconds a chunk, chunks in
order. An end of stream (FIN) goes through the same link, after the bytes before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from fpgaflow.spec import modelled_distance

MODELLED_BY = ("a relaying TCP proxy in the load generator: each chunk held RTT/2 each way and paced at the "
               "bandwidth limit (modelled; this kernel has no netem)")
CHUNK = 16 * 1024  # most bytes read (and so delayed) at once
QUEUED_CHUNKS = 256  # chunks one direction holds before it stops reading (4 MiB): the sender then waits
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Network:
    """Where the clients sit: ``rtt_ms`` round trip added, ``bandwidth_mbps`` each way (None: unlimited)."""

    name: str = "on-prem"
    rtt_ms: float = 0.0
    bandwidth_mbps: float | None = None

    @property
    def direct(self) -> bool:
        """No distance modelled: the clients connect to the server itself, with no proxy between."""
        return not modelled_distance(self.rtt_ms, self.bandwidth_mbps)

    @property
    def one_way_s(self) -> float:
        return self.rtt_ms / 2000

    @property
    def bits_per_s(self) -> float | None:
        return None if self.bandwidth_mbps is None else self.bandwidth_mbps * 1e6

    def describe(self) -> str:
        """"direct", or "50 ms RTT, 100 Mbit/s, modelled"."""
        if self.direct:
            return "direct"
        parts = [f"{self.rtt_ms:g} ms RTT"] if self.rtt_ms else []
        parts += [f"{self.bandwidth_mbps:g} Mbit/s"] if self.bandwidth_mbps is not None else []
        return ", ".join([*parts, "modelled"])


@dataclass
class Link:
    """One direction of a modelled path: a chunk arriving at ``arrival`` is delivered at
    max(arrival + one_way_s, the previous delivery) + its serialization time (n x 8 / bits_per_s)."""

    one_way_s: float
    bits_per_s: float | None = None
    last_delivery: float = -math.inf

    def deliver(self, arrival: float, nbytes: int) -> float:
        """Book a chunk of ``nbytes`` arriving at ``arrival`` (not before the previous one's); returns when it is delivered."""
        serialization = 0.0 if self.bits_per_s is None else nbytes * 8 / self.bits_per_s
        self.last_delivery = max(arrival + self.one_way_s, self.last_delivery) + serialization
        return self.last_delivery


def delivery_times(arrivals: Iterable[tuple[float, int]], one_way_s: float, bits_per_s: float | None = None) -> list[float]:
    """When each chunk (arrival time in s, bytes), in arrival order, leaves a :class:`Link`."""
    link = Link(one_way_s, bits_per_s)
    return [link.deliver(t, n) for t, n in arrivals]


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a HOST:PORT address: {address!r}")
    return host.strip("[]"), int(port)


class Relay:
    """The relaying proxy for one network in front of ``upstream`` (HOST:PORT), on a thread of its own with
    its own event loop, listening on ``host`` at an ephemeral port. As a context manager it gives its
    address and, on exit, stops listening, closes every connection and ends its thread."""

    def __init__(self, upstream: str, network: Network, host: str = "127.0.0.1"):
        self.upstream = split_address(upstream)
        self.network = network
        self.host = host
        self.address = ""
        self.accepted = 0  # connections accepted so far
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        """Listen; returns the address the clients call instead of the server's."""
        self._thread = threading.Thread(target=self._run, name=f"netem-{self.network.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"network model {self.network.name}: the relay did not start in {START_TIMEOUT:g} s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"network model {self.network.name}: the relay did not start: {self._error}") from self._error
        return self.address

    def stop(self) -> None:
        """Stop listening, close every relayed connection, end the thread (idempotent)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=30)
            if thread.is_alive():
                raise RuntimeError(f"network model {self.network.name}: the relay's thread did not end")
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            task = asyncio.ensure_future(self._connection(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accepted, self.host, 0)
        try:
            host, port = server.sockets[0].getsockname()[:2]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client's connection: one to the server, relayed both ways until both ends closed (or one failed)."""
        writers = [client_writer]
        pipes: list[asyncio.Task] = []
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
            writers.append(server_writer)
            pipes = [asyncio.ensure_future(self._pipe(client_reader, server_writer)),
                     asyncio.ensure_future(self._pipe(server_reader, client_writer))]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
        except OSError:
            pass  # the server refused: the client sees its connection closed
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for writer in writers:
                writer.close()
            for writer in writers:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: read chunks as they come, write each on at its delivery time on the modelled link."""
        loop = asyncio.get_running_loop()
        link = Link(self.network.one_way_s, self.network.bits_per_s)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)

        async def receive() -> None:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((link.deliver(loop.time(), len(data)), data))
                if not data:  # end of stream: delivered after the bytes before it
                    return

        async def send() -> None:
            while True:
                at, data = await queue.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(receive()), asyncio.ensure_future(send())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a reset or a failed write ends the connection
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
