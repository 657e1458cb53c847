"""A proxy's inbounds: per inbound (not `Ignored`) its local cluster (the app) and its
listener (`listeners.inbound_listener`), with mTLS and MeshTrafficPermission when the mesh
has mTLS on, and the timeouts of the MeshTimeouts' `from[]` or `rules[]` that apply to that
inbound (`timeouts.py`, 5). Part of the proxy's own part of its snapshot (`snapshot.py`)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener

from events import MESH_TRAFFIC_PERMISSION, Dataplane, Inbound
from projections import TrustRow
from xds_gateway.resources import clusters, listeners, names, rbac, timeouts
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.resources.listeners import InboundTls
from xds_gateway.type_urls import CLUSTER, LISTENER
from xds_gateway.view import ProjectionView

__all__ = ["inbounds"]


def _inbound_tls(view: ProjectionView, dp: Dataplane, inbound: Inbound, trust: TrustRow
                 ) -> InboundTls:
    services = view.meshservices.get(dp.mesh, {})
    selecting = sorted(name for name, ms in services.items()
                       if ms.spec.selector.dataplane_tags and all(
                           inbound.tags.get(k) == v
                           for k, v in ms.spec.selector.dataplane_tags.items()))
    policies = [row.policy for row in view.policies(MESH_TRAFFIC_PERMISSION, dp.mesh).values()]
    port = inbound.port
    return InboundTls(mesh=dp.mesh, mode=trust.mode, rbac=rbac.inbound_rbac(
        dp.mesh, dp, inbound, selecting, policies, stat_prefix=f"inbound_{port}."))


def inbounds(view: ProjectionView, dp: Dataplane, trust: TrustRow | None,
             cache: ResourceCache, add: Callable[[EncodedResource], None],
             t: tuple[timeouts.Timeouts | None, ...] = ()) -> None:
    """`dp`'s inbound resources, to `add`; `t`: what the MeshTimeouts' `from[]` give each
    inbound (`timeouts.for_inbounds`, in `networking.inbound`'s order), `()` or None:
    nothing (the resources and their cache keys are then the ones they always had)."""
    for at, inbound in enumerate(dp.networking.inbound):
        if inbound.state == "Ignored":
            continue
        address = inbound.address or dp.networking.address
        service_port = inbound.service_port or inbound.port
        service_address = inbound.service_address or "127.0.0.1"
        cname = names.local_cluster(service_port)
        protocol = inbound.protocol or inbound.tags.get("kuma.io/protocol") or "tcp"
        h2 = protocol in listeners.HTTP2_PROTOCOLS
        it = t[at] if t else None
        ct, lt = timeouts.for_cluster(it, protocol), timeouts.for_listener(it, protocol)
        add(cache.get(CLUSTER, cname, ("local", service_address, service_port, h2)
                      + (() if ct is None else (ct,)),
                      functools.partial(_timed_local, cname, service_address, service_port,
                                        h2, ct)))
        # Envoy binds IPs only: a DNS name's answer, named by it as Kuma names the listener
        # of the address it resolved; without one, every address
        ip = view.addresses.ip(address)
        lname = names.inbound_listener(ip or address, inbound.port)
        bind = ip or "0.0.0.0"
        inbound_tls = _inbound_tls(view, dp, inbound, trust) if trust is not None else None
        tls_key = None if inbound_tls is None else (
            inbound_tls.mesh, inbound_tls.mode,
            inbound_tls.rbac.SerializeToString(deterministic=True))
        l7 = protocol in listeners.HTTP_PROTOCOLS
        add(cache.get(LISTENER, lname, ("inbound", bind, inbound.port, cname, tls_key, l7, h2)
                      + (() if lt is None else (lt,)),
                      functools.partial(_timed_inbound, lname, bind, inbound.port, cname,
                                        inbound_tls, protocol, lt),
                      refs=frozenset({cname})))


def _timed_local(name: str, address: str, port: int, h2: bool, ct: timeouts.Timeouts | None
                 ) -> Cluster:
    return timeouts.timed_cluster(clusters.local_cluster(name, address, port, http2=h2), ct)


def _timed_inbound(name: str, bind: str, port: int, cluster: str, tls: InboundTls | None,
                   protocol: str, lt: timeouts.Timeouts | None) -> Listener:
    return timeouts.timed_listener(
        listeners.inbound_listener(name, bind, port, cluster, tls, protocol), lt)
