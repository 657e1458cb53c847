"""MeshService generation from Dataplane inbounds (Kuma's universal-zone generator).

One MeshService per distinct inbound `kuma.io/service` value that is a DNS-1035 label. Ports:
one per inbound of that service, in inbound order. When Dataplanes of one service disagree on
the ports, the existing spec wins while a Dataplane still has it, else the oldest Dataplane's
(first registration sequence) wins. A user-created MeshService of the same name is never touched.

A service name that is not a DNS-1035 label gets no MeshService (Kuma skips it silently);
meshlog says so on the Dataplane: `service_name_conditions` gives the Dataplane row a
`MeshServiceGenerated=False, reason InvalidServiceName` condition naming the inbound and the
value, which `GET /meshes/{mesh}/dataplanes/{name}` (and `meshlog get dataplane NAME`) show
under `status.conditions`.

When the last Dataplane of a service goes, its MeshService stays for the grace period (Kuma:
1 h; `GracePeriodConfigured` in the log changes it, 0 = go at once): the row gets
`expires_at` = the event's time + the grace period, and `expire_due` removes it when an event
with a later time is folded (the projector appends `ClockTicked` when one falls due). A
Dataplane that comes back in time keeps the MeshService; its VIP is sticky either way.

Another zone's generated MeshService (`projections.remote`) follows the same rules in every
other log, with `winner` and `orphaned` from here: the same ports, and the grace period of its
own zone (`grace_period_ms(state, zone)`), as Kuma shows there the object its zone made.

A generated MeshService is labelled with the provenance (`kuma.io/origin`, `kuma.io/zone`,
`kuma.io/env`) of the Dataplane it was generated from: the oldest one of its service (first
registration sequence, then name), the same rule as for ports. Kuma generates from a zone's
own Dataplanes only, so they all agree there; in a log that also holds other zones' events,
this keeps the result a function of the log, whatever zone the projector runs in.
"""

from __future__ import annotations

import functools

import msgspec

from events import SERVICE_TAG, Dataplane, MeshServicePort, is_dns1035_label
from events.resources import MeshServiceSelector, MeshServiceSpec, is_app_protocol
from projections._provenance import inherited_labels, same_provenance
from projections.ipam import allocate_vip
from projections.state import ProjectionState, ms_key
from projections.views import (
    Condition,
    DataplaneRow,
    GracePeriodRow,
    MeshServiceRow,
    MeshServiceStatus,
    RowMeta,
)

__all__ = [
    "DEFAULT_GRACE_PERIOD_MS",
    "GENERATOR_LABELS",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "expire_due",
    "grace_period_key",
    "grace_period_ms",
    "orphaned",
    "ports_of",
    "regenerate",
    "same_ports_for_same_tags",
    "service_name_conditions",
    "winner",
]

DEFAULT_GRACE_PERIOD_MS = 3_600_000

MANAGED_BY_LABEL = "kuma.io/managed-by"
MANAGED_BY = "meshservice-generator"
GENERATOR_LABELS = {MANAGED_BY_LABEL: MANAGED_BY}
"""Labels of every generated MeshService, besides its mesh, name and provenance."""


_PORTS_MEMO_SIZE = 16_384
_ports_memo: dict[tuple[int, str], tuple[Dataplane, list[MeshServicePort]]] = {}
"""`ports_of` by (Dataplane object, service): a Dataplane's ports are compared on every event
of its service (`regenerate`, `derive`), and rows are immutable. The entry holds the object,
so its id is not reused while the entry lives; the memo is emptied when full."""


def ports_of(dp: Dataplane, service: str) -> list[MeshServicePort]:
    """The ports `dp`'s inbounds of `service` give a generated MeshService, in inbound order."""
    return list(_ports(dp, service))


def _ports(dp: Dataplane, service: str) -> list[MeshServicePort]:
    """`ports_of`, shared with the memo: to compare, never to keep or change."""
    key = (id(dp), service)
    hit = _ports_memo.get(key)
    if hit is not None and hit[0] is dp:
        return hit[1]
    ports = _ports_of(dp, service)
    if len(_ports_memo) >= _PORTS_MEMO_SIZE:
        _ports_memo.clear()
    _ports_memo[key] = (dp, ports)
    return ports


def _ports_of(dp: Dataplane, service: str) -> list[MeshServicePort]:
    ports = []
    for inbound in dp.networking.inbound:
        if inbound.tags.get(SERVICE_TAG) != service:
            continue
        protocol = inbound.protocol or inbound.tags.get("kuma.io/protocol") or "tcp"
        ports.append(MeshServicePort(
            port=inbound.port,
            target_port=inbound.port,
            name=inbound.name or str(inbound.port),
            app_protocol=protocol if is_app_protocol(protocol) else "tcp",
        ))
    return ports


def same_ports_for_same_tags(a: Dataplane, b: Dataplane) -> bool:
    """Do `a` and `b`, whose inbounds have the same tags (`state.same_tags`), give every
    service the same ports? `_ports_of` reads an inbound's port, name and protocol besides its
    tags: kept next to it so that the two cannot drift apart."""
    for i, o in zip(a.networking.inbound, b.networking.inbound, strict=True):
        if i.port != o.port or i.name != o.name or i.protocol != o.protocol:
            return False
    return True


def service_name_conditions(dp: Dataplane) -> list[Condition]:
    """One condition per inbound whose `kuma.io/service` cannot name a MeshService."""
    out = []
    for i, inbound in enumerate(dp.networking.inbound):
        service = inbound.tags.get(SERVICE_TAG)
        if service is None or _names_a_service(service):
            continue
        out.append(Condition(
            type="MeshServiceGenerated", status="False", reason="InvalidServiceName",
            message=f"networking.inbound[{i}].tags[\"{SERVICE_TAG}\"]: {service!r} is not a "
                    "DNS-1035 label (lower-case letters, digits and '-', starting with a letter, "
                    "at most 63 characters), so no MeshService is generated for it"))
    return out


@functools.lru_cache(maxsize=4096)
def _names_a_service(value: str) -> bool:
    """Can `value` name a MeshService (a DNS-1035 label)? Asked on every Dataplane event."""
    return is_dns1035_label(value)


def grace_period_key(kind: str, zone: str = "") -> str:
    """The key of a `graceperiod` row: the kind for this log's own control plane's setting,
    `<zone>/<kind>` for another zone's (`projections.remote`: its generated MeshServices
    wait out their own zone's grace period here too)."""
    return f"{zone}/{kind}" if zone else kind


def grace_period_ms(state: ProjectionState, zone: str = "") -> int:
    """How long a generated MeshService outlives its last Dataplane: this log's own setting,
    or with `zone` that other zone's (its `GracePeriodConfigured`, synced here with the rest
    of its subjects); no record means the default, as it does there."""
    row = state.get("graceperiod", grace_period_key("MeshService", zone))
    return row.grace_period_ms if isinstance(row, GracePeriodRow) else DEFAULT_GRACE_PERIOD_MS


def expire_due(state: ProjectionState, at: int) -> None:
    """Remove the generated MeshServices whose grace period is over at `at`."""
    for mesh, name in state.due(at):
        state.delete_meshservice(mesh, name)


def regenerate(
    state: ProjectionState, mesh: str, service: str, seq: int, at: int,
    changed: Dataplane | None = None, previous: Dataplane | None = None,
    same_ports: bool = False,
) -> None:
    """Bring the generated MeshService `service` of `mesh` in line with its Dataplanes.
    `changed` is the Dataplane as registered (and labelled) by the event being folded, if
    any; `previous` the same Dataplane before it, when its inbounds' tags did not change;
    `same_ports`: and every inbound's port, name and protocol neither, so its ports are the
    same for every service."""
    current = state.meshservice(mesh, service)
    if current is not None and current.origin == "user":
        return
    if not _names_a_service(service):
        return
    waiting = current is not None and current.expires_at is not None
    if (previous is not None and changed is not None and current is not None and not waiting
            and (same_ports or _ports(previous, service) == _ports(changed, service))
            and same_provenance(previous.labels, changed.labels)):
        # the service has the same Dataplanes, this one with the same ports and provenance
        # (a health flip): what the last regeneration decided holds
        state.stale_services.add((mesh, service))
        return
    if (current is not None and changed is not None and not waiting
            and _ports(changed, service) == current.spec.ports
            and same_provenance(changed.labels, current.labels)):
        # the changed Dataplane still has the current ports and provenance: the existing
        # spec wins, and the oldest Dataplane (whose provenance it has) is still the oldest
        state.stale_services.add((mesh, service))
        return
    dataplanes = state.dataplanes_with_tag(mesh, SERVICE_TAG, service)
    if not dataplanes:
        if current is not None:
            orphaned(state, current, at, grace_period_ms(state))
        return
    oldest, ports = winner(dataplanes, service, current)
    spec = MeshServiceSpec(selector=MeshServiceSelector(dataplane_tags={SERVICE_TAG: service}),
                           ports=ports)
    labels = {"kuma.io/mesh": mesh, "kuma.io/display-name": service,
              **inherited_labels(oldest.dataplane.labels), **GENERATOR_LABELS}
    if current is not None and current.spec == spec and current.labels == labels and not waiting:
        state.stale_services.add((mesh, service))
        return
    created = current.meta.creation_time if current is not None else at
    row = MeshServiceRow(
        mesh=mesh, name=service, labels=labels, spec=spec,
        status=current.status if current is not None else MeshServiceStatus(),
        meta=RowMeta(version=seq, creation_time=created, modification_time=at),
        origin="generated",
    )
    state.put("meshservice", ms_key(mesh, service), row)
    allocate_vip(state, mesh, "MeshService", service)
    state.stale_services.add((mesh, service))
    state.stale_hostnames.add(mesh)


def orphaned(state: ProjectionState, current: MeshServiceRow, at: int, grace: int) -> None:
    """The generated MeshService `current` lost its last Dataplane at `at`: it goes at once
    (`grace` <= 0), else it waits until `at` + `grace` (`expires_at`); one already waiting
    keeps its time. Shared with `projections.remote`, which passes the origin zone's grace."""
    mesh, service = current.mesh, current.name
    if grace <= 0:
        state.delete_meshservice(mesh, service)
    elif current.expires_at is None:
        state.put("meshservice", ms_key(mesh, service), msgspec.structs.replace(
            current, expires_at=at + grace))
        state.stale_services.add((mesh, service))


def winner(
    dataplanes: list[DataplaneRow], service: str, current: MeshServiceRow | None,
) -> tuple[DataplaneRow, list[MeshServicePort]]:
    """The oldest Dataplane (first registered, then by name: one answer whatever the order of
    `dataplanes`) and the winning ports: the current ones while a Dataplane has them, else the
    oldest's. One pass: this runs for every deregistration and port change. Shared with
    `projections.remote` (another zone's Dataplanes, its generated MeshService as `current`),
    so a zone's service has the same ports in every log."""
    have = current.spec.ports if current is not None else None
    held = False
    oldest = dataplanes[0]
    first, name = oldest.first_seq, oldest.dataplane.name
    for row in dataplanes:
        if have is not None and not held and _ports(row.dataplane, service) == have:
            held = True
        if row.first_seq < first or (row.first_seq == first and row.dataplane.name < name):
            oldest, first, name = row, row.first_seq, row.dataplane.name
    if have is not None and held:
        return oldest, have
    return oldest, ports_of(oldest.dataplane, service)
