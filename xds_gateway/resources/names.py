"""Envoy resource names, following Kuma (reference/kuma-behaviour.md)."""

from __future__ import annotations

__all__ = [
    "DNS_LISTENER",
    "grpc_targets",
    "inbound_listener",
    "local_cluster", "msvc_cluster", "mzsvc_cluster", "outbound_listener",
    "parse_node_id",
]

DNS_LISTENER = "meshlog:dns"
"""The UDP DNS listener of a transparent proxy (Kuma: `kuma:dns`)."""


def msvc_cluster(mesh: str, name: str, port: int, namespace: str = "", zone: str = "") -> str:
    """`<mesh>_<name>_<namespace>_<zone>_msvc_<port>`; empty parts stay empty."""
    return f"{mesh}_{name}_{namespace}_{zone}_msvc_{port}"


def mzsvc_cluster(mesh: str, name: str, port: int, namespace: str = "", zone: str = "") -> str:
    """A MeshMultiZoneService port: `<mesh>_<name>_<namespace>_<zone>_mzsvc_<port>`, the
    zone and namespace empty for one of global (Kuma: `default_redis___mzsvc_6379`)."""
    return f"{mesh}_{name}_{namespace}_{zone}_mzsvc_{port}"


def local_cluster(service_port: int) -> str:
    return f"localhost:{service_port}"


def inbound_listener(address: str, port: int) -> str:
    return f"inbound:{address}:{port}"


def outbound_listener(address: str, port: int) -> str:
    return f"outbound:{address}:{port}"


def grpc_targets(name: str, hostnames: list[str], port: int) -> list[str]:
    """Names of one MeshService port for proxyless gRPC: `xds:///<target>` with target
    `<meshservice>:<port>` or `<hostname>:<port>` (e.g. `backend.svc.mesh.local:8080`).

    gRPC asks for the Listener by the target's path and matches the virtual host on it, so each
    target is a Listener name, its RouteConfiguration name and its virtual host domain.
    """
    return sorted({f"{name}:{port}", *(f"{h}:{port}" for h in hostnames)})


def parse_node_id(node_id: str) -> tuple[str, str] | None:
    """`<mesh>.<dataplane name>` -> (mesh, name); the mesh is up to the first dot."""
    mesh, dot, name = node_id.partition(".")
    if not dot or not mesh or not name:
        return None
    return mesh, name
