"""A DNS server the tests control: real DNS over UDP on loopback (messages parsed and built by
dnspython), answering A and AAAA queries from `records`, which a test changes while it runs.
A gateway is pointed at it as at any DNS server (`meshlog gateway --dns-server`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Answer = list[str] | dns.rcode.Rcode
"""The addresses of a name, or the error code to answer with (NXDOMAIN, SERVFAIL)."""


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.records: dict[str, Answer] = {}
        """Name (no trailing dot) -> answer; a name not here is NXDOMAIN."""
        self.port = 0
        self.queries = 0
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.queries += 1
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        answer = self.records.get(name, dns.rcode.NXDOMAIN)
        if isinstance(answer, dns.rcode.Rcode):
            response.set_rcode(answer)
        else:
            version = 4 if question.rdtype == dns.rdatatype.A else 6
            ips = [a for a in answer if ipaddress.ip_address(a).version == version]
            if ips:
                response.answer.append(dns.rrset.from_text_list(
                    question.name, 0, "IN", dns.rdatatype.to_text(question.rdtype), ips))
        assert self._transport is not None
        self._transport.sendto(response.to_wire(), addr)


@contextlib.asynccontextmanager
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: server, local_addr=("127.0.0.1", 0))
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        transport.close()


@contextlib.contextmanager
def dns_server_thread() -> Iterator[DnsServer]:
    """`dns_server` on an event loop of its own thread, for tests that block (a test that
    changes `records` meanwhile: each query reads them when it arrives)."""
    started: queue.Queue[DnsServer] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with dns_server() as server:
            started.put(server)
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield started.get(timeout=10)
    finally:
        stop.set()
        thread.join(10)
