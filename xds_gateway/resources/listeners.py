"""Listeners: one per inbound (to its local cluster) and one per reachable MeshService port.

Traffic is proxied at L4 (tcp_proxy). Outbound listeners on a VIP set `freebind`, so Envoy
can bind a VIP that is not (yet) a local address instead of rejecting the whole LDS update.
"""

from __future__ import annotations

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.listener.v3.listener_components_pb2 import Filter, FilterChain
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2 import TcpProxy
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import BoolValue

__all__ = ["tcp_listener"]


def tcp_listener(name: str, address: str, port: int, cluster: str, *,
                 bind: bool = True, freebind: bool = False) -> Listener:
    proxy = Any()
    proxy.Pack(TcpProxy(stat_prefix=cluster.replace(":", "_"), cluster=cluster))
    listener = Listener(
        name=name,
        address=Address(socket_address=SocketAddress(address=address, port_value=port)),
        filter_chains=[FilterChain(filters=[Filter(name="envoy.filters.network.tcp_proxy",
                                                   typed_config=proxy)])],
        traffic_direction=0,
    )
    if not bind:
        listener.bind_to_port.CopyFrom(BoolValue(value=False))
    if freebind:
        listener.freebind.CopyFrom(BoolValue(value=True))
    return listener
