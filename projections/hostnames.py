"""Hostnames of MeshServices from HostnameGenerators (Kuma's hostname generator, per mesh).

Generators are the `hostnamegenerator` rows: the zone's defaults (`local-universal-mesh-service`:
`{{ .DisplayName }}.svc.mesh.local`, `local-mesh-external-service`) unless overridden, and
the user's. Kuma's order: generators of origin `zone` first, then by creation time, then
name; services by creation time, then name. A generator whose `selector.meshService` matches
a service's labels renders its template for it (`events.hostname_template`):

- `Generated=True, reason Generated`: the hostname is in `status.addresses`;
- `Generated=False, reason TemplateError`: the template failed for this service (a missing
  label, not a hostname); the message says why;
- `Generated=False, reason Collision`: another MeshService of the mesh got that hostname first
  (collisions are per kind: only MeshServices compete); the message names it.

Per service, `status.hostnameGenerators` and `status.addresses` are sorted by generator name,
as Kuma writes them. The result is a pure function of the rows: batch boundaries do not matter.
"""

from __future__ import annotations

from events import TemplateContext, TemplateError, TemplateSyntaxError, render_template
from projections.state import ProjectionState
from projections.views import (
    Address,
    Condition,
    HostnameGeneratorRef,
    HostnameGeneratorRow,
    HostnameGeneratorStatus,
    MeshServiceRow,
)

__all__ = ["Assigned", "assign_hostnames"]

Assigned = tuple[list[Address], list[HostnameGeneratorStatus]]
_NAMESPACE_LABEL = "k8s.kuma.io/namespace"


def _generator_order(row: HostnameGeneratorRow) -> tuple[bool, int, str]:
    return (row.generator.labels.get("kuma.io/origin") != "zone", row.meta.creation_time,
            row.generator.name)


def _context(row: MeshServiceRow) -> TemplateContext:
    return TemplateContext(
        name=row.name, display_name=row.labels.get("kuma.io/display-name", row.name),
        namespace=row.labels.get(_NAMESPACE_LABEL, ""), mesh=row.mesh,
        zone=row.labels.get("kuma.io/zone", ""), labels=row.labels)


def _selects(generator: HostnameGeneratorRow, row: MeshServiceRow) -> bool:
    selector = generator.generator.spec.selector.mesh_service
    return selector is not None and all(
        row.labels.get(k) == v for k, v in selector.match_labels.items())


def assign_hostnames(state: ProjectionState, mesh: str) -> dict[str, Assigned]:
    generators = sorted((g for g in state.hostname_generators()
                         if g.generator.spec.selector.mesh_service is not None),
                        key=_generator_order)
    services = sorted(state.meshservices_of(mesh), key=lambda r: (r.meta.creation_time, r.name))
    taken: dict[str, str] = {}
    # service -> generator name -> (hostname or None, condition)
    found: dict[str, dict[str, tuple[str | None, Condition]]] = {r.name: {} for r in services}
    for generator in generators:
        name = generator.generator.name
        for row in services:
            if not _selects(generator, row):
                continue
            found[row.name][name] = _generate(generator, row, taken)
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


def _generate(generator: HostnameGeneratorRow, row: MeshServiceRow, taken: dict[str, str]
              ) -> tuple[str | None, Condition]:
    try:
        hostname = render_template(generator.generator.spec.template, _context(row))
    except (TemplateError, TemplateSyntaxError) as exc:  # syntax: checked at apply already
        return None, Condition(type="Generated", status="False", reason="TemplateError",
                               message=str(exc))
    owner = taken.setdefault(hostname, row.name)
    if owner != row.name:
        return None, Condition(type="Generated", status="False", reason="Collision",
                               message=f"{hostname} is already used by MeshService {owner}")
    return hostname, Condition(type="Generated", status="True", reason="Generated")
