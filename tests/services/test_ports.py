"""Ports handed to processes before they bind them (services.runtime.nats_cluster.unused_ports):
outside the kernel's ephemeral range, free, and never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

from services.runtime.nats_cluster import unused_ports


def test_unused_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = unused_ports(20) + unused_ports(20)
    assert len(set(ports)) == len(ports)  # also across calls: none handed out twice
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(10_000 <= port < ephemeral for port in ports), ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: a process told it can bind it
