"""A proxy's computed config as JSON: what `build_snapshot` gives it, decoded from the very
bytes a stream would send (the encode-once cache), for golden files and the API's `_config`.

Shape: `{"secrets": [...], "clusters": [...], "endpoints": [...], "listeners": [...],
"routes": [...]}`, each entry `{"name", "version", "resource"}` sorted by name, `resource`
being the Envoy message in proto3 JSON (camelCase, with its `@type`), as Envoy's own
`/config_dump` shows it; like Envoy's, a secret's private key is shown as `[redacted]`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, json_format

# registers the Any types nested in listeners (tcp_proxy, HCM, router, DNS filter) for JSON
from xds_gateway.resources import dns, listeners, proxyless  # noqa: F401
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.ingress import ZONE_INGRESS_NODE
from xds_gateway.resources.node import ProxyNode
from xds_gateway.resources.snapshot import build_ingress_snapshot, build_snapshot
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_gateway.view import ProjectionView

__all__ = ["SECTIONS", "config_json"]

SECTIONS = {SECRET: "secrets", CLUSTER: "clusters", ENDPOINT: "endpoints",
            LISTENER: "listeners", ROUTE: "routes"}
"""Type URL -> key in the JSON, in push order (xds-rules.md #10)."""


def config_json(view: ProjectionView, mesh: str, name: str, cache: ResourceCache, *,
                node: ProxyNode | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every resource Dataplane `<mesh>.<name>` gets (or the zone ingress `<name>`, for mesh
    `ingress.ZONE_INGRESS_NODE`), per type; `node` as for a stream
    (default: an Envoy with the default DNS port). Empty lists for an unknown Dataplane."""
    snapshot = (build_ingress_snapshot(view, name, cache) if mesh == ZONE_INGRESS_NODE
                else build_snapshot(view, mesh, name, cache) if node is None
                else build_snapshot(view, mesh, name, cache, node=node))
    return {
        section: [
            {"name": r.name, "version": r.version,
             "resource": _redacted(json_format.MessageToDict(any_pb2.Any.FromString(r.any)))}
            for r in sorted(snapshot.resources.get(type_url, {}).values(), key=lambda r: r.name)
        ]
        for type_url, section in SECTIONS.items()
    }


def _redacted(resource: dict[str, Any]) -> dict[str, Any]:
    """A Secret without its private key (Envoy's admin shows `[redacted]` too)."""
    certificate = resource.get("tlsCertificate")
    if isinstance(certificate, dict) and "privateKey" in certificate:
        certificate["privateKey"] = {"inlineString": "[redacted]"}
    return resource
