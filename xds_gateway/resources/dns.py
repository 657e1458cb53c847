"""The DNS listener of a transparent proxy: Envoy's UDP DNS filter answering the hostnames of
the MeshServices the proxy may reach with their VIPs (reference/kuma-behaviour.md, "DNS").

Kuma puts the same filter behind kuma-dp's resolver on 127.0.0.1; meshlog binds it at
`127.0.0.1:<dns port>` (node metadata `dataplane.dns.port`, default 15053; see `node.py`).
The records come sorted from `snapshot.py`, so equal content encodes to equal bytes and the
listener is built once per content (DESIGN.md invariant 9).
"""

from __future__ import annotations

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.listener.v3.listener_components_pb2 import ListenerFilter
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.listener.v3.udp_listener_config_pb2 import UdpListenerConfig
from envoy.data.dns.v3.dns_table_pb2 import DnsTable
from envoy.extensions.filters.udp.dns_filter.v3.dns_filter_pb2 import DnsFilterConfig
from google.protobuf.any_pb2 import Any

__all__ = ["DNS_FILTER", "dns_listener"]

DNS_FILTER = "envoy.filters.udp.dns_filter"


def dns_listener(name: str, address: str, port: int,
                 records: tuple[tuple[str, str], ...]) -> Listener:
    """A UDP listener answering each `(hostname, ip)` of `records` with an A record."""
    table = DnsTable(virtual_domains=[
        DnsTable.DnsVirtualDomain(
            name=hostname,
            endpoint=DnsTable.DnsEndpoint(
                address_list=DnsTable.AddressList(address=[ip])),
        )
        for hostname, ip in records
    ])
    config = Any()
    config.Pack(DnsFilterConfig(
        stat_prefix="meshlog_dns",
        server_config=DnsFilterConfig.ServerContextConfig(inline_dns_table=table),
    ))
    return Listener(
        name=name,
        address=Address(socket_address=SocketAddress(
            protocol=SocketAddress.UDP, address=address, port_value=port)),
        udp_listener_config=UdpListenerConfig(),
        # UDP listeners take their filters as listener filters, not filter chains
        listener_filters=[ListenerFilter(name=DNS_FILTER, typed_config=config)],
    )
