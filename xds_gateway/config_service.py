"""Answers "what config does this proxy get?" for the API's `_config` endpoint.

A gateway computes the proxy's xDS from its own view, exactly as a stream would (same
pipeline, same encode-once cache), and answers as JSON. The request/reply transport lives in
`events.requests`; this module only turns a request payload into a `Reply`, so the gateway
package stays free of NATS (DESIGN.md).

Reply body (200):

    {"mesh", "name", "projectedSequence", "xds": {"clusters": [...], "endpoints": [...],
     "listeners": [...], "routes": [...]}}

each entry `{"name", "version", "resource": <the Envoy message as proto3 JSON, with @type>}`.
404 if this gateway's view has no such Dataplane (yet), 400 on a malformed request.
"""

from __future__ import annotations

from typing import Any

import msgspec
from google.protobuf import any_pb2, json_format

from events.requests import ProxyRef, Reply
from xds_gateway.cache import ResourceCache
from xds_gateway.snapshot import build_snapshot
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_gateway.view import ProjectionView

__all__ = ["ConfigService"]

_SECTIONS = {CLUSTER: "clusters", ENDPOINT: "endpoints", LISTENER: "listeners",
             ROUTE: "routes"}
_decode_ref = msgspec.json.Decoder(ProxyRef).decode
_encode = msgspec.json.Encoder().encode


class ConfigService:
    """A request handler (`events.requests.RequestHandler`) over one gateway's view."""

    def __init__(self, view: ProjectionView, cache: ResourceCache) -> None:
        self._view = view
        self._cache = cache

    async def handle(self, payload: bytes) -> Reply:
        try:
            ref = _decode_ref(payload)
        except msgspec.DecodeError as exc:
            return _error(400, f"the request is not a proxy reference "
                               f"{{\"mesh\", \"name\"}}: {exc}")
        if (ref.mesh, ref.name) not in self._view.dataplanes:
            return _error(404, f"Dataplane {ref.name!r} of mesh {ref.mesh!r} is not in this "
                               f"gateway's view (at sequence {self._view.checkpoint})")
        return Reply(200, _encode({
            "mesh": ref.mesh, "name": ref.name,
            "projectedSequence": self._view.checkpoint,
            "xds": _config_json(self._view, ref.mesh, ref.name, self._cache),
        }))


def _config_json(view: ProjectionView, mesh: str, name: str, cache: ResourceCache
                 ) -> dict[str, Any]:
    """The proxy's snapshot, each resource decoded from the very bytes a stream would send."""
    snapshot = build_snapshot(view, mesh, name, cache)
    out: dict[str, Any] = {}
    for type_url, section in _SECTIONS.items():
        resources = snapshot.resources.get(type_url, {})
        out[section] = [
            {"name": r.name, "version": r.version,
             "resource": json_format.MessageToDict(any_pb2.Any.FromString(r.any))}
            for r in sorted(resources.values(), key=lambda r: r.name)]
    return out


def _error(status: int, message: str) -> Reply:
    return Reply(status, _encode({"error": message}))
