"""What the generation pipeline needs to know about the proxy on a stream, from its xDS `Node`.

Taken once from the first request of a stream (xds-rules.md #1) and passed to
`build_snapshot(..., node=...)`:

- `user_agent_name`: gRPC clients ("gRPC C-core ...", "gRPC Go", "gRPC Java"...) get the
  `api_listener`s of proxyless gRPC (xds-rules.md #13); Envoy ("envoy") ignores those, so
  they are not sent to it.
- `dns_port`: the port of the DNS listener of a transparent proxy, from the node metadata key
  `dataplane.dns.port` (the key kuma-dp uses to tell Kuma's control plane the same thing);
  `DEFAULT_DNS_PORT` without it.
"""

from __future__ import annotations

from envoy.config.core.v3.base_pb2 import Node
from msgspec import Struct

__all__ = ["DEFAULT_DNS_PORT", "DNS_PORT_KEY", "IDENTITY_AGENT", "InvalidNode", "ProxyNode",
           "proxy_node"]

DNS_PORT_KEY = "dataplane.dns.port"
IDENTITY_AGENT = "meshlog-grpc-identity"
"""The `user_agent_name` of `meshlog grpc-identity` (services.runtime.grpc_identity), which
asks for a proxyless gRPC client's secrets as its Dataplane: not the client's config stream,
so it publishes no insight (the client's own stream does: `proxies.lifecycle`)."""
DEFAULT_DNS_PORT = 15053
"""Kuma's DNS port on 127.0.0.1 (the resolver kuma-dp redirects DNS traffic to)."""


class InvalidNode(ValueError):
    """The node carries metadata the gateway cannot use; the message names key and value."""


class ProxyNode(Struct, frozen=True, kw_only=True):
    user_agent_name: str = ""
    dns_port: int = DEFAULT_DNS_PORT

    @property
    def is_grpc(self) -> bool:
        """A proxyless gRPC client (xds-rules.md #13), not an Envoy."""
        return self.user_agent_name.startswith("gRPC")


def proxy_node(node: Node) -> ProxyNode:
    """Parse the stream's first `Node`; raise `InvalidNode` for unusable metadata."""
    dns_port = DEFAULT_DNS_PORT
    fields = node.metadata.fields
    if DNS_PORT_KEY in fields:
        value = fields[DNS_PORT_KEY]
        kind = value.WhichOneof("kind")
        raw = getattr(value, kind) if kind in ("number_value", "string_value", "bool_value") \
            else kind
        dns_port = _port(raw)
    return ProxyNode(user_agent_name=node.user_agent_name, dns_port=dns_port)


def _port(raw: object) -> int:
    # kuma-dp sends the port as a string; a number is accepted too
    try:
        port = int(raw) if isinstance(raw, str) else None if isinstance(raw, bool) else raw
    except ValueError:
        port = None
    if isinstance(port, float) and port.is_integer():
        port = int(port)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidNode(
            f"node.metadata[{DNS_PORT_KEY!r}]: {raw!r} is not a port in 1..65535")
    return port
