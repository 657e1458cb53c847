"""Answers "what config does this proxy get?" for the API's `_config` endpoint.

A gateway computes the proxy's xDS from its own view, exactly as a stream would (same
pipeline, same encode-once cache), and answers as JSON. The request/reply transport lives in
`events.bus.requests`; this module only turns a request payload into a `Reply`, so the gateway
package stays free of NATS (DESIGN.md).

Reply body (200):

    {"mesh", "name", "projectedSequence", "xds": {"clusters": [...], "endpoints": [...],
     "listeners": [...], "routes": [...]}}

as `xds_gateway.resources.config_dump.config_json` gives it (each entry `{"name", "version",
"resource"}`).
404 if this gateway's view has no such Dataplane (yet), 400 on a malformed request.
The request may carry what the proxy's live node says (its user agent and DNS port, which the
API takes from the proxy's insight); without them the config is computed for a default Envoy.
"""

from __future__ import annotations

import msgspec

from events.bus.requests import ProxyRef, Reply
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import DEFAULT_DNS_PORT, ProxyNode
from xds_gateway.view import ProjectionView

__all__ = ["ConfigService"]

_decode_ref = msgspec.json.Decoder(ProxyRef).decode
_encode = msgspec.json.Encoder().encode


class ConfigService:
    """A request handler (`events.bus.requests.RequestHandler`) over one gateway's view."""

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
        node = ProxyNode(user_agent_name=ref.user_agent,
                         dns_port=ref.dns_port or DEFAULT_DNS_PORT)
        return Reply(200, _encode({
            "mesh": ref.mesh, "name": ref.name,
            "projectedSequence": self._view.checkpoint,
            "xds": config_json(self._view, ref.mesh, ref.name, self._cache, node=node),
        }))


def _error(status: int, message: str) -> Reply:
    return Reply(status, _encode({"error": message}))
