"""Hostnames of MeshServices and MeshMultiZoneServices from HostnameGenerators (Kuma's
hostname generator, per mesh).

Generators are the `hostnamegenerator` rows: the zone's defaults (`local-universal-mesh-service`:
`{{ .DisplayName }}.svc.mesh.local`, `local-mesh-external-service`,
`synced-mesh-multi-zone-service`: `{{ .DisplayName }}.mzsvc.mesh.local`) unless overridden, and
the user's. Kuma's order: generators of origin `zone` first, then by creation time, then
name; services by creation time, then name. A generator whose `selector.meshService` matches
a service's labels (`selector.meshMultiZoneService` for a MeshMultiZoneService) renders its
template for it (`events.hostname_template`):

- `Generated=True, reason Generated`: the hostname is in `status.addresses`;
- `Generated=False, reason TemplateError`: the template failed for this service (a missing
  label, not a hostname); the message says why;
- `Generated=False, reason Collision`: another MeshService of the mesh got that hostname first
  (collisions are per kind: only MeshServices compete, and MeshMultiZoneServices among
  themselves); the message names it.

Per service, `status.hostnameGenerators` and `status.addresses` are sorted by generator name,
as Kuma writes them. The result is a pure function of the rows: batch boundaries do not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from events import (
    HostnameGenerator,
    TemplateContext,
    TemplateError,
    TemplateSyntaxError,
    render_template,
)
from events.resources import LabelSelector
from projections.state import ProjectionState
from projections.views import (
    Address,
    Condition,
    HostnameGeneratorRef,
    HostnameGeneratorRow,
    HostnameGeneratorStatus,
    MeshMultiZoneServiceRow,
)

__all__ = ["Assigned", "assign_hostnames", "assign_mmzs_hostnames"]

Assigned = tuple[list[Address], list[HostnameGeneratorStatus]]
_NAMESPACE_LABEL = "k8s.kuma.io/namespace"


class _Target(NamedTuple):
    """A service that generators may name: a MeshService or a MeshMultiZoneService."""

    name: str
    created: int
    labels: dict[str, str]
    mesh: str


def _generator_order(row: HostnameGeneratorRow) -> tuple[bool, int, str]:
    return (row.generator.labels.get("kuma.io/origin") != "zone", row.meta.creation_time,
            row.generator.name)


def _context(target: _Target) -> TemplateContext:
    return TemplateContext(
        name=target.name, display_name=target.labels.get("kuma.io/display-name", target.name),
        namespace=target.labels.get(_NAMESPACE_LABEL, ""), mesh=target.mesh,
        zone=target.labels.get("kuma.io/zone", ""), labels=target.labels)


def assign_hostnames(state: ProjectionState, mesh: str) -> dict[str, Assigned]:
    """The hostnames of `mesh`'s MeshServices, by service name."""
    return _assign(state, lambda g: g.spec.selector.mesh_service, "MeshService",
                   (_Target(r.name, r.meta.creation_time, r.labels, r.mesh)
                    for r in state.meshservices_of(mesh)))


def assign_mmzs_hostnames(state: ProjectionState, rows: Iterable[MeshMultiZoneServiceRow]
                          ) -> dict[str, Assigned]:
    """The hostnames of one mesh's MeshMultiZoneServices `rows`, by name: generators with a
    `selector.meshMultiZoneService` (the default `synced-mesh-multi-zone-service`:
    `{{ .DisplayName }}.mzsvc.mesh.local`); they collide among themselves only."""
    return _assign(state, lambda g: g.spec.selector.mesh_multi_zone_service,
                   "MeshMultiZoneService",
                   (_Target(r.name, r.meta.creation_time, r.labels, r.mesh) for r in rows))


def _assign(state: ProjectionState,
            selector_of: Callable[[HostnameGenerator], LabelSelector | None],
            kind: str, targets: Iterable[_Target]) -> dict[str, Assigned]:
    generators = [(g, selector) for g in sorted(state.hostname_generators(), key=_generator_order)
                  if (selector := selector_of(g.generator)) is not None]
    services = sorted(targets, key=lambda t: (t.created, t.name))
    taken: dict[str, str] = {}
    # service -> generator name -> (hostname or None, condition)
    found: dict[str, dict[str, tuple[str | None, Condition]]] = {t.name: {} for t in services}
    for generator, selector in generators:
        name = generator.generator.name
        for target in services:
            if all(target.labels.get(k) == v for k, v in selector.match_labels.items()):
                found[target.name][name] = _generate(generator, target, taken, kind)
    result: dict[str, Assigned] = {}
    for service, by_generator in found.items():
        addresses, statuses = [], []
        for name in sorted(by_generator):
            hostname, condition = by_generator[name]
            ref = HostnameGeneratorRef(core_name=name)
            if hostname is not None:
                addresses.append(Address(hostname=hostname, origin="HostnameGenerator",
                                         hostname_generator_ref=ref))
            statuses.append(HostnameGeneratorStatus(hostname_generator_ref=ref,
                                                    conditions=[condition]))
        result[service] = (addresses, statuses)
    return result


def _generate(generator: HostnameGeneratorRow, target: _Target, taken: dict[str, str],
              kind: str) -> tuple[str | None, Condition]:
    try:
        hostname = render_template(generator.generator.spec.template, _context(target))
    except (TemplateError, TemplateSyntaxError) as exc:  # syntax: checked at apply already
        return None, Condition(type="Generated", status="False", reason="TemplateError",
                               message=str(exc))
    owner = taken.setdefault(hostname, target.name)
    if owner != target.name:
        return None, Condition(type="Generated", status="False", reason="Collision",
                               message=f"{hostname} is already used by {kind} {owner}")
    return hostname, Condition(type="Generated", status="True", reason="Generated")
