"""Which MeshService ports a proxy may reach: the Mesh's `meshServices.mode` and the
Dataplane's `transparentProxying.reachableBackends` (reference/kong-mesh-meshservice.txt,
"Migration"; reference/kuma-behaviour.md, "Mesh spec.meshServices.mode").

meshlog has no `kuma.io/service` model of destinations: a destination is a MeshService. So:

- `Exclusive` (the schema default, also for a Mesh without `meshServices`) and `Everywhere`
  (Kuma: MeshService *and* kuma.io/service resources; meshlog has only the former) give a
  proxy every MeshService of its mesh, or only its `reachableBackends` when it lists them.
- `ReachableBackends`: MeshServices are generated but a proxy gets only those its Dataplane
  lists in `reachableBackends`; a Dataplane that lists none gets none (as in Kuma).
- `Disabled`: no MeshService destinations at all (no VIP outbounds, no DNS records, no gRPC
  targets). Explicit `networking.outbound` entries that name a `kuma.io/service` tag (the
  legacy model Disabled keeps) are still served; `backendRef` outbounds are not.

A reachable ref matches by `name`, or by `labels` (every given label present on the
MeshService row, control-plane labels included); with `port` only that port of the service,
without it every port. MeshMultiZoneServices are reachable the same way (`reachable_mmzs`),
by refs of their kind (Kuma's auto-reachable services ignore them, kumahq/kuma#11748);
refs to MeshExternalServices match nothing yet. Explicit outbounds are a declaration of
their own and are not filtered by `reachableBackends` (which belongs to transparent
proxying), only by the mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from events import SERVICE_TAG, Dataplane, Outbound
from events.resources import BackendRef
from projections import MeshMultiZoneServiceRow, MeshRow, MeshServiceRow

__all__ = [
    "Mode", "Reachable", "explicit_outbound_allowed", "explicit_target", "mesh_mode",
    "reachable", "reachable_key", "reachable_mmzs",
]

Mode = Literal["Disabled", "Everywhere", "ReachableBackends", "Exclusive"]

Reachable = dict[str, tuple[int, ...]]
"""MeshService name -> its reachable ports, in the order of `spec.ports`."""


def mesh_mode(mesh: MeshRow | None) -> Mode:
    """The mesh's mode; a missing Mesh row or `meshServices` means the schema default."""
    if mesh is None or mesh.mesh.mesh_services is None:
        return "Exclusive"
    return mesh.mesh.mesh_services.mode


def reachable(mode: Mode, dataplane: Dataplane, services: Mapping[str, MeshServiceRow]
              ) -> Reachable:
    """The MeshService ports `dataplane` gets outbounds, clusters and DNS records for."""
    return _reachable(mode, dataplane, services, "MeshService")


def reachable_mmzs(mode: Mode, dataplane: Dataplane,
                   services: Mapping[str, MeshMultiZoneServiceRow]) -> Reachable:
    """The MeshMultiZoneService ports `dataplane` gets outbounds, clusters and DNS records
    for: the same rules, with refs of kind MeshMultiZoneService."""
    return _reachable(mode, dataplane, services, "MeshMultiZoneService")


def _reachable(mode: Mode, dataplane: Dataplane,
               services: Mapping[str, MeshServiceRow] | Mapping[str, MeshMultiZoneServiceRow],
               kind: str) -> Reachable:
    if mode == "Disabled":
        return {}
    tp = dataplane.networking.transparent_proxying
    refs = tp.reachable_backends.refs if tp is not None and tp.reachable_backends else None
    if refs is None:
        if mode == "ReachableBackends":
            return {}
        return {name: tuple(p.port for p in ms.spec.ports) for name, ms in services.items()}
    chosen: dict[str, set[int]] = {}
    for ref in refs:
        for name, ports in _matches(ref, services, kind):
            chosen.setdefault(name, set()).update(ports)
    return {name: tuple(p.port for p in services[name].spec.ports if p.port in chosen[name])
            for name in sorted(chosen)}


_EVERY_SERVICE = ("*",)


def reachable_key(mode: Mode, dataplane: Dataplane, services: Mapping[str, MeshServiceRow],
                  multizone: Mapping[str, MeshMultiZoneServiceRow] | None = None
                  ) -> tuple[object, ...]:
    """Equal for Dataplanes that `reachable` and `reachable_mmzs` give the same ports, so the
    part of a snapshot built from them can be shared (snapshot.py). Without
    `reachableBackends` refs (the common case) the key is known without matching anything."""
    tp = dataplane.networking.transparent_proxying
    if mode != "Disabled" and (tp is None or tp.reachable_backends is None
                               or tp.reachable_backends.refs is None):
        return () if mode == "ReachableBackends" else _EVERY_SERVICE
    return (tuple(reachable(mode, dataplane, services).items()),
            tuple(reachable_mmzs(mode, dataplane, multizone or {}).items()))


def explicit_outbound_allowed(mode: Mode, outbound: Outbound) -> bool:
    """Disabled keeps only the legacy `kuma.io/service`-tagged outbounds."""
    return mode != "Disabled" or outbound.backend_ref is None


def explicit_target(outbound: Outbound, services: dict[str, MeshServiceRow]
                     ) -> tuple[str, int] | None:
    """(MeshService name, port) an explicit outbound points at, if it exists."""
    ref = outbound.backend_ref
    if ref is not None:
        if ref.kind != "MeshService" or ref.name is None:
            return None
        service, port = ref.name, ref.port
    elif outbound.tags is not None and SERVICE_TAG in outbound.tags:
        service, port = outbound.tags[SERVICE_TAG], None
    else:
        return None
    ms = services.get(service)
    if ms is None:
        return None
    ports = [p.port for p in ms.spec.ports]
    if port is None:
        return (service, ports[0]) if len(ports) == 1 else None
    return (service, port) if port in ports else None


def _matches(ref: BackendRef,
             services: Mapping[str, MeshServiceRow] | Mapping[str, MeshMultiZoneServiceRow],
             kind: str) -> list[tuple[str, list[int]]]:
    if ref.kind != kind:
        return []
    if ref.name is not None:
        candidates = [ref.name] if ref.name in services else []
    elif ref.labels is not None:
        wanted = ref.labels.items()
        candidates = [n for n, ms in services.items() if wanted <= ms.labels.items()]
    else:
        candidates = []
    out = []
    for name in candidates:
        ports = [p.port for p in services[name].spec.ports]
        if ref.port is not None:
            ports = [ref.port] if ref.port in ports else []
        if ports:
            out.append((name, ports))
    return out
