"""A proxy's complete config at one view generation: the generation pipeline's entry point.

`build_snapshot` turns the read models into Envoy resources (through the encode-once cache):

- per inbound a listener and a local cluster;
- per MeshService port the proxy may reach (`reachable.py`: the Mesh's `meshServices.mode`
  and the Dataplane's `reachableBackends`) an EDS cluster, its ClusterLoadAssignment and an
  outbound listener on `<VIP>:<port>`; the same per MeshMultiZoneService port, whose
  endpoints are its MeshServices' at their priorities (`multizone.py`);
- per explicit `networking.outbound` a listener on `<address or 127.0.0.1>:<port>`;
- with transparent proxying, the DNS listener (`dns.py`) answering the reachable services'
  hostnames with their VIPs;
- for proxyless gRPC nodes only, per reachable port and target an api_listener and its
  RouteConfiguration (`proxyless.py`), with what gRPC reads of the MeshTimeouts and
  MeshRetries that select the node (`proxyless_policies.py`) and of its MeshHTTPRoutes
  (`proxyless_routes.py`).

Only the inbounds and explicit outbounds depend on the individual Dataplane. The rest depends
on the mesh, what the proxy may reach, transparent proxying (bind, DNS port), gRPC or not and
the outbound policies that select it (`outbound_policies.py`), so it is built
once per view generation for every proxy with the same such key and shared
(`ResourceCache.per_generation`): 1,000 proxies of one mesh cost one build, not 1,000
(docs/benchmarks.md, "Propagation"). Each part
carries its content-derived version per type, so a stream's version of a type is a cheap
combination (xds-rules.md #12).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping

from msgspec import Struct

from events import SERVICE_TAG, Dataplane
from events.resources import MeshHTTPRouteRule
from projections import (
    DataplaneRow,
    IdentityRow,
    MeshMultiZoneServiceRow,
    MeshServiceRow,
    TrustRow,
)
from xds_gateway.resources import (
    clusters,
    dns,
    endpoints,
    http_routes,
    inbounds,
    ingress,
    listeners,
    multizone,
    names,
    outbound_policies,
    proxyless_policies,
    proxyless_routes,
    timeouts,
    tls,
)
from xds_gateway.resources.cache import EncodedResource, ResourceCache, set_version, version_of
from xds_gateway.resources.node import ProxyNode
from xds_gateway.resources.reachable import (
    Mode,
    explicit_outbound_allowed,
    explicit_target,
    mesh_mode,
    reachable,
    reachable_key,
    reachable_mmzs,
)
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, SECRET
from xds_gateway.view import ProjectionView

__all__ = ["Part", "Snapshot", "ViewSnapshots", "build_ingress_snapshot", "build_snapshot"]

_ENVOY = ProxyNode()
Add = Callable[[EncodedResource], None]
Resources = dict[str, dict[str, EncodedResource]]


class Part(Struct, frozen=True):
    """Resources of one type and the content-derived version of the set."""

    resources: Mapping[str, EncodedResource]
    version: str


_EMPTY = Part({}, set_version(()))


def _parts(out: Resources) -> dict[str, Part]:
    return {t: Part(rs, set_version(rs[n] for n in sorted(rs))) if rs else _EMPTY
            for t, rs in out.items()}


class Shared(Struct, frozen=True):
    """The part of a snapshot that does not depend on the individual Dataplane: MeshService
    clusters, ClusterLoadAssignments, outbound listeners, DNS, gRPC targets. Built once per
    view generation for every proxy with the same key (`_shared_key`)."""

    parts: dict[str, Part]
    selections: dict[tuple[str, frozenset[str]], str]
    """Memo of `Snapshot.selection_version` for named types, shared by the streams."""
    changes: dict[tuple[str, int, frozenset[str]],
                  tuple[Mapping[str, EncodedResource], list[EncodedResource]]]
    """Memo of `Snapshot.changed_since`; each value keeps its `sent` mapping alive, so the
    mapping's id in the key cannot be reused while the entry exists."""


class Snapshot:
    """Everything one proxy gets at one view generation: its own inbounds (which win a name
    clash), the shared part, then its explicit outbounds (which lose one), per type.

    `of(type)` is the merged view; it is the shared mapping itself when the proxy adds nothing
    of that type. Callers never mutate what it returns."""

    __slots__ = ("_merged", "_versions", "first", "inputs", "last", "row", "shared")

    def __init__(self, shared: Shared, first: dict[str, Part], last: dict[str, Part],
                 row: DataplaneRow | None = None, inputs: tuple[object, ...] = ()) -> None:
        self.shared = shared
        self.first = first
        self.last = last
        self.row = row
        self.inputs = inputs
        """What `first` (the proxy's own part) was built from: its rows (reused while they are
        the same objects), the mesh's policy version and the answer for its address name."""
        self._merged: dict[str, Mapping[str, EncodedResource]] = {}
        self._versions: dict[str, str] = {}

    def of(self, type_url: str) -> Mapping[str, EncodedResource]:
        merged = self._merged.get(type_url)
        if merged is None:
            first, last = self.first[type_url], self.last[type_url]
            shared = self.shared.parts[type_url]
            if not self._own(type_url):
                merged = shared.resources
            else:
                merged = {**last.resources, **shared.resources, **first.resources}
            self._merged[type_url] = merged
        return merged

    def _own(self, type_url: str) -> bool:
        """Whether the proxy adds resources of `type_url` to the shared part."""
        return self.first[type_url] is not _EMPTY or self.last[type_url] is not _EMPTY

    @property
    def resources(self) -> dict[str, Mapping[str, EncodedResource]]:
        return {t: self.of(t) for t in PUSH_ORDER}

    def version(self, type_url: str) -> str:
        """Content-derived version of everything of `type_url` this proxy may get: equal for
        equal content on every gateway (xds-rules.md #12), cheap to combine per stream."""
        version = self._versions.get(type_url)
        if version is None:
            first, last = self.first[type_url], self.last[type_url]
            shared = self.shared.parts[type_url].version
            version = (shared if not self._own(type_url)
                       else version_of(f"{first.version} {shared} {last.version}".encode()))
            self._versions[type_url] = version
        return version

    def selection_version(self, type_url: str, names: frozenset[str]) -> str:
        """The version of the requested `names` of a named type (EDS, RDS): shared by every
        stream requesting the same names from the same shared part."""
        own = self._own(type_url)
        key = (type_url, names)
        if not own and key in self.shared.selections:
            return self.shared.selections[key]
        available = self.of(type_url)
        version = set_version(available[n] for n in sorted(names) if n in available)
        if not own:
            self.shared.selections[key] = version
        return version

    def changed_since(self, type_url: str, sent: Mapping[str, EncodedResource],
                      names: frozenset[str]) -> list[EncodedResource]:
        """The requested `names` (in name order) whose resource differs from `sent`'s, or that
        `sent` lacks. Streams that were sent the same mapping share one answer."""
        own = self._own(type_url)
        key = (type_url, id(sent), names)
        if not own:
            hit = self.shared.changes.get(key)
            if hit is not None and hit[0] is sent:
                return hit[1]
        available = self.of(type_url)
        changed = [r for n in sorted(names) if (r := available.get(n)) is not None
                   and ((old := sent.get(n)) is None or old.version != r.version)]
        if not own:
            self.shared.changes[key] = (sent, changed)
        return changed


_NONE = {t: _EMPTY for t in PUSH_ORDER}


class ViewSnapshots:
    """The `SnapshotSource` (xds_gateway.server.source) of a gateway: snapshots built from its
    projection view through its encode-once cache."""

    def __init__(self, view: ProjectionView, cache: ResourceCache) -> None:
        self.view = view
        self.cache = cache

    @property
    def generation(self) -> int:
        return self.view.generation

    def wake_on_change(self, wake: asyncio.Event) -> None:
        self.view.wake_on_change(wake)

    def stop_waking(self, wake: asyncio.Event) -> None:
        self.view.stop_waking(wake)

    def snapshot(self, mesh: str, name: str, node: ProxyNode,
                 previous: Snapshot | None) -> Snapshot:
        if mesh == ingress.ZONE_INGRESS_NODE:
            return build_ingress_snapshot(self.view, name, self.cache)
        return build_snapshot(self.view, mesh, name, self.cache, node=node, previous=previous)


def build_snapshot(view: ProjectionView, mesh: str, name: str, cache: ResourceCache, *,
                   node: ProxyNode = _ENVOY, previous: Snapshot | None = None) -> Snapshot:
    """Everything Dataplane `<mesh>.<name>` gets; `node` (from the stream's first request,
    see `node.proxy_node`) says whether it is a gRPC client and where its DNS listens.

    `previous` (this proxy's snapshot of an earlier generation) lets an unchanged Dataplane
    keep its inbound part instead of rebuilding it."""
    row = view.dataplanes.get((mesh, name))
    if row is None:
        return Snapshot(Shared(dict(_NONE), {}, {}), _NONE, _NONE)
    dp = row.dataplane
    services = view.meshservices.get(mesh, {})
    mode = mesh_mode(view.meshes.get(mesh))
    tp = dp.networking.transparent_proxying
    pol = outbound_policies.applying(view, mesh, dp, services, grpc=node.is_grpc)
    key = (mesh, reachable_key(mode, dp, services, view.meshmultizoneservices.get(mesh)),
           tp is None, node.is_grpc, 0 if tp is None else node.dns_port, pol.names)
    shared = cache.per_generation(view, view.generation, key, lambda: Shared(_collect(
        lambda add: _shared(view, cache, mesh, mode, dp, node, services, pol, add)), {}, {}))
    trust = view.trust.get(mesh)
    identity = view.identities.get((mesh, name)) if trust is not None else None
    rows = (row, trust, identity)
    # an inbound listener binds the Dataplane's address: a name's answer (`inbounds`)
    inbound_t = timeouts.for_inbounds(pol.timeouts, dp, services)  # MeshTimeouts' `from[]`
    values = (view.policy_versions[mesh] if trust is not None else 0,
              view.addresses.answers(("dataplane", mesh, name)), inbound_t)
    inputs = (*rows, *values)
    if previous is not None and len(previous.inputs) == len(inputs) and all(
            a is b for a, b in zip(previous.inputs, rows, strict=False)
    ) and previous.inputs[len(rows):] == values:
        first = previous.first  # the proxy's own part depends on these only
    else:
        first = _collect(lambda add: _own(view, cache, dp, trust, identity, inbound_t, add))
    last = (_collect(lambda add: _explicit(view, cache, mesh, mode, dp, services, pol, add,
                                           grpc=node.is_grpc))
            if dp.networking.outbound else _NONE)
    return Snapshot(shared, first, last, row, inputs)


def build_ingress_snapshot(view: ProjectionView, name: str, cache: ResourceCache) -> Snapshot:
    """Everything the zone ingress `name` gets (`ingress.py`), built once per view
    generation; nothing for an unknown one or another zone's (synced here)."""
    row = view.zoneingresses.get(name)
    if row is None or row.synced:
        return Snapshot(Shared(dict(_NONE), {}, {}), _NONE, _NONE)
    shared = cache.per_generation(view, view.generation, (ingress.ZONE_INGRESS_NODE, name),
                                  lambda: Shared(_collect(lambda add: ingress.ingress_resources(
                                      view, cache, row, add)), {}, {}))
    return Snapshot(shared, _NONE, _NONE)


def _collect(fill: Callable[[Add], None]) -> dict[str, Part]:
    out: Resources = {t: {} for t in PUSH_ORDER}

    def add(resource: EncodedResource) -> None:
        out[resource.type_url].setdefault(resource.name, resource)  # no duplicate names (#7)

    fill(add)
    return _parts(out)


def _shared(view: ProjectionView, cache: ResourceCache, mesh: str, mode: Mode,
            dp: Dataplane, node: ProxyNode, services: dict[str, MeshServiceRow],
            pol: outbound_policies.Applying, add: Add) -> None:
    """What every proxy with `dp`'s shared key gets; depends on `dp` only through the key."""
    tp = dp.networking.transparent_proxying
    trust = view.trust.get(mesh)
    if trust is not None:
        add(cache.get(SECRET, tls.ca_secret_name(mesh), ("ca", mesh, tuple(trust.roots)),
                      functools.partial(tls.ca_secret, mesh, tuple(trust.roots))))
    records: set[tuple[str, str]] = set()
    bind, grpc = tp is None, node.is_grpc
    for ms_name, ports in sorted(reachable(mode, dp, services).items()):
        d = outbound_policies.for_destination(pol, ms_name, grpc=grpc)
        _service_outbounds(
            cache, services[ms_name], ports, functools.partial(
                _service_port, view, cache, mesh, ms_name, add=add, grpc=grpc, d=d),
            functools.partial(names.grpc_targets, ms_name) if grpc else None,
            bind=bind, records=records, add=add, d=d, routes=functools.partial(
                _routes, view, cache, mesh, services, pol, add, d.h, grpc=grpc))
    multizone_services = view.meshmultizoneservices.get(mesh, {})
    for mz_name, ports in sorted(reachable_mmzs(mode, dp, multizone_services).items()):
        mz = multizone_services[mz_name]
        d = outbound_policies.for_destination(pol, None, grpc=grpc)
        _service_outbounds(
            cache, mz, ports, functools.partial(
                multizone.mzsvc_port, view, cache, mz, add=add, mtls=not grpc, d=d),
            # by hostname only: its name may be a MeshService's too
            _hostname_targets if grpc else None,
            bind=bind, records=records, add=add, d=d)
    if tp is not None:
        add(_dns(cache, node.dns_port, tuple(sorted(records))))


def _service_outbounds(cache: ResourceCache, row: MeshServiceRow | MeshMultiZoneServiceRow,
                       ports: Iterable[int], cluster: Callable[[int], str],
                       grpc_targets: Callable[[list[str], int], list[str]] | None, *,
                       bind: bool, records: set[tuple[str, str]], add: Add,
                       d: outbound_policies.Destination,
                       routes: Callable[[int, str, str], http_routes.Routed | None] | None = None
                       ) -> None:
    """What a proxy gets for a service it may reach (a MeshService or a MeshMultiZoneService):
    per port the cluster `cluster(port)` adds (it returns the cluster's name), an outbound
    listener on the service's VIP and, for a proxyless gRPC node, an api_listener per target
    `grpc_targets` names; the hostnames' DNS records go to `records`."""
    vip = row.status.vips[0].ip if row.status.vips else None
    hostnames = sorted(a.hostname for a in row.status.addresses)
    if vip is not None:
        records.update((h, vip) for h in hostnames)
    for port in ports:
        cname = cluster(port)
        protocol = listeners.port_protocol(row.spec.ports, port)
        routed = routes(port, cname, protocol) if routes is not None and (
            vip is not None or grpc_targets is not None) else None
        if vip is not None:  # a gRPC client's outbound listeners (which it ignores) unrouted
            add(outbound_policies.outbound(
                cache, vip, port, cname, protocol, bind=bind, d=d,
                routed=routed if grpc_targets is None else None))
        if grpc_targets is not None:
            for target in grpc_targets(hostnames, port):
                for resource in proxyless_policies.grpc_target(cache, target, cname, d.g,
                                                               routed):
                    add(resource)


def _hostname_targets(hostnames: list[str], port: int) -> list[str]:
    return [f"{hostname}:{port}" for hostname in hostnames]


def _explicit(view: ProjectionView, cache: ResourceCache, mesh: str, mode: Mode,
              dp: Dataplane, services: dict[str, MeshServiceRow],
              pol: outbound_policies.Applying, add: Add, *, grpc: bool) -> None:
    """A proxy's explicit outbounds; a proxyless gRPC client's (`grpc`) take what of `pol`
    its clusters take (`outbound_policies.for_destination`) and its own mTLS, as in
    `_shared`."""
    for outbound in dp.networking.outbound:
        if not explicit_outbound_allowed(mode, outbound):
            continue
        target = explicit_target(outbound, services)
        multizone_target = multizone.explicit_target(
            outbound, view.meshmultizoneservices.get(mesh, {}))
        routed = None
        if target is not None:
            d = outbound_policies.for_destination(pol, target[0], grpc=grpc)
            cname = _service_port(view, cache, mesh, target[0], target[1], add,
                                  grpc=grpc, d=d)
            protocol = listeners.port_protocol(services[target[0]].spec.ports, target[1])
            routed = None if grpc else _routes(view, cache, mesh, services, pol, add, d.h,
                                               target[1], cname, protocol)
        elif multizone_target is not None:
            d = outbound_policies.for_destination(pol, None, grpc=grpc)
            cname = multizone.mzsvc_port(view, cache, *multizone_target, add,
                                         mtls=not grpc, d=d)
            protocol = listeners.port_protocol(multizone_target[0].spec.ports,
                                               multizone_target[1])
        else:
            continue
        add(outbound_policies.outbound(cache, outbound.address or "127.0.0.1", outbound.port,
                                       cname, protocol, d=d, routed=routed))


def _routes(view: ProjectionView, cache: ResourceCache, mesh: str,
            services: dict[str, MeshServiceRow], pol: outbound_policies.Applying, add: Add,
            rules: tuple[MeshHTTPRouteRule, ...] | None, port: int, cname: str,
            protocol: str, *, grpc: bool = False) -> http_routes.Routed | None:
    """The routes of the outbound to a MeshService port (cluster `cname`) under its merged
    MeshHTTPRoute `rules`; the clusters of their backends are added (`http_routes`), for a
    proxyless gRPC client (`grpc`) what of the routes gRPC takes and the clusters they send
    to, as its own (`proxyless_routes`). An L4 port has none."""
    if protocol not in listeners.HTTP_PROTOCOLS:
        return None
    routed = http_routes.resolve(rules, mesh, cname, port, services)
    if grpc:
        routed = proxyless_routes.grpc_routed(routed, mesh)
    for service, backend_port in () if routed is None else routed.ports:
        _service_port(view, cache, mesh, service, backend_port, add, grpc=grpc,
                      d=outbound_policies.for_destination(pol, service, grpc=grpc))
    return routed


def _service_port(view: ProjectionView, cache: ResourceCache, mesh: str, service: str,
                  port: int, add: Add, *, grpc: bool = False,
                  d: outbound_policies.Destination = outbound_policies.NO_POLICY) -> str:
    """Add the EDS cluster of a MeshService port and its endpoints; return the cluster name.
    With the mesh's mTLS on, the cluster originates it: by SDS for Envoy; for a proxyless
    gRPC client (`grpc`) from its bootstrap's certificate providers (gRFC A29,
    `tls.grpc_upstream_tls`) in a STRICT mesh, and plaintext in a PERMISSIVE one, whose
    inbounds cannot tell gRPC's TLS from the app's own (`listeners.py`; README, "mTLS")."""
    cname = names.msvc_cluster(mesh, service, port)
    ms = view.meshservices.get(mesh, {}).get(service)
    protocol = listeners.port_protocol(ms.spec.ports, port) if ms is not None else "tcp"
    h2, ci = protocol in listeners.HTTP2_PROTOCOLS, outbound_policies.cluster_inputs(d, protocol)
    trust = view.trust.get(mesh)
    if trust is not None and (not grpc or trust.mode == "STRICT"):
        san = _service_san(mesh, ms)
        sni = tls.sni(mesh, tls.sni_name(ms.labels if ms else {}, service), port)
        upstream = tls.grpc_upstream_tls if grpc else tls.upstream_tls
        add(cache.get(CLUSTER, cname, ("eds-grpc" if grpc else "eds", mesh, san, sni, h2, *ci),
                      lambda: outbound_policies.policed_cluster(clusters.eds_cluster(
                          cname, upstream(mesh, san, sni), http2=h2), d, protocol)))
    else:
        add(cache.get(CLUSTER, cname, ("eds", h2, *ci), lambda: outbound_policies.policed_cluster(
            clusters.eds_cluster(cname, http2=h2), d, protocol)))
    ep_row = view.endpoints.get(mesh, {}).get(service)
    if ep_row is None:
        return cname
    port_eps = endpoints.port_endpoints(ep_row, port)
    if port_eps is not None:
        # keyed by the row's bytes as received (their hash is computed once and kept by the
        # bytes object), not by re-encoding it for every proxy
        # and by the answers for the DNS names among its addresses (none: `()`)
        key = (ep_row.zone, port, view.endpoints_bytes[mesh][service],
               view.addresses.answers(("endpoints", mesh, service)))
        add(cache.get(ENDPOINT, cname, key, lambda: endpoints.load_assignment(
            cname, ep_row.zone, port_eps, view.addresses.ip)))
    return cname


def _service_san(mesh: str, ms: MeshServiceRow | None) -> str | None:
    """The identity an outbound to `ms` checks: its workloads' `kuma.io/service` (the
    selector's, as a generated MeshService has it); None when the selector names none (then
    any workload of the mesh)."""
    service = ms.spec.selector.dataplane_tags.get(SERVICE_TAG) if ms is not None else None
    return None if service is None else f"spiffe://{mesh}/{service}"


def _own(view: ProjectionView, cache: ResourceCache, dp: Dataplane, trust: TrustRow | None,
         identity: IdentityRow | None, t: tuple[timeouts.Timeouts | None, ...], add: Add
         ) -> None:
    """What only this proxy gets: its inbounds (with `t`, `timeouts.for_inbounds`) and, with
    mTLS, its certificate."""
    if trust is not None and identity is not None:
        add(cache.get(SECRET, tls.identity_secret_name(dp.mesh), ("identity", identity.cert),
                      functools.partial(tls.identity_secret, dp.mesh, identity.cert,
                                        identity.key)))
    inbounds.inbounds(view, dp, trust, cache, add, t)


def _dns(cache: ResourceCache, port: int, records: tuple[tuple[str, str], ...]
         ) -> EncodedResource:
    return cache.get(LISTENER, names.DNS_LISTENER, ("dns", port, records),
                     lambda: dns.dns_listener(names.DNS_LISTENER, "127.0.0.1", port, records))
