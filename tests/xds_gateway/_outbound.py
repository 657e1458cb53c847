"""What the tests of the outbound policies' config share (MeshTimeout, MeshRetry,
MeshCircuitBreaker): Dataplane documents, a view of them folded by the real fold, and
policies applied to it."""

from __future__ import annotations

from typing import Any

from events import MeshTimeout
from events.decoding import decode_resource
from events.resources import MeshScopedResource
from tests.projections._histories import History
from tests.xds_gateway._ads import Projection, event_for
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.view import ProjectionView

Config = dict[str, list[dict[str, Any]]]
"""A proxy's config as `/config_dump` JSON, by type."""

__all__ = ["apply", "dataplane", "meshtimeout", "view_of"]


def dataplane(name: str, address: str, port: int, service: str, protocol: str = "http",
              **labels: str) -> dict[str, Any]:
    """A Dataplane of mesh `default` with one inbound of `service`."""
    doc: dict[str, Any] = {"type": "Dataplane", "mesh": "default", "name": name,
                           "networking": {"address": address, "inbound": [
                               {"port": port, "protocol": protocol,
                                "tags": {"kuma.io/service": service}}]}}
    if labels:
        doc["labels"] = labels
    return doc


def view_of(*dataplanes: dict[str, Any]) -> tuple[ProjectionView, Projection]:
    """A gateway's view of mesh `default` and `dataplanes`, and the projection that folds
    what comes next into it."""
    projection, view = Projection(), ProjectionView()
    view.apply(projection.fold([*History().mesh("default").events, *(
        event_for(doc, at=10 + i) for i, doc in enumerate(dataplanes))]))
    return view, projection


def apply(view: ProjectionView, projection: Projection, *policies: MeshScopedResource) -> None:
    """`policies` (of any kind) applied, in one batch."""
    view.apply(projection.fold(History(start=2_000_000_000_000).apply_policy(p).events[-1]
                               for p in policies))


def config_of(view: ProjectionView, name: str) -> Config:
    """The config of Dataplane `name` of mesh `default`."""
    return config_json(view, "default", name, ResourceCache())


def inbound(config: Config, address: str, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inbound listener on `address:port` and its local cluster."""
    listeners = {e["name"]: e["resource"] for e in config["listeners"]}
    clusters = {e["name"]: e["resource"] for e in config["clusters"]}
    return listeners[f"inbound:{address}:{port}"], clusters[f"localhost:{port}"]


def hcm_of(listener: dict[str, Any]) -> dict[str, Any]:
    """The HttpConnectionManager of a listener of one filter chain."""
    (chain,) = listener["filterChains"]
    found: dict[str, Any] = chain["filters"][0]["typedConfig"]
    return found


def first_route(listener: dict[str, Any]) -> dict[str, Any]:
    """The route action of the first route of its one virtual host."""
    route: dict[str, Any] = hcm_of(listener)["routeConfig"]["virtualHosts"][0]["routes"][0][
        "route"]
    return route


def meshtimeout(name: str, spec: dict[str, Any], target: dict[str, Any] | None = None
                ) -> MeshTimeout:
    """The MeshTimeout `name` of mesh default with `spec` (and top-level `target`), decoded as
    the API decodes it."""
    if target is not None:
        spec = {**spec, "targetRef": target}
    resource = decode_resource({"type": "MeshTimeout", "mesh": "default", "name": name,
                                "spec": spec})
    assert isinstance(resource, MeshTimeout)
    return resource
