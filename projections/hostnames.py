"""Hostnames of MeshServices from the default generator of a universal zone.

`local-universal-mesh-service`: `{{ .DisplayName }}.svc.mesh.local`, DisplayName being the label
`kuma.io/display-name`, else the name. Services are taken by creation time, then name; a
hostname already taken in the mesh gives `Generated=False, reason Collision` (Kuma's rule).
"""

from __future__ import annotations

from projections.state import ProjectionState
from projections.views import Address, Condition, HostnameGeneratorRef, HostnameGeneratorStatus

__all__ = ["DEFAULT_GENERATOR", "Assigned", "assign_hostnames"]

DEFAULT_GENERATOR = "local-universal-mesh-service"
_SUFFIX = ".svc.mesh.local"

Assigned = tuple[list[Address], list[HostnameGeneratorStatus]]


def assign_hostnames(state: ProjectionState, mesh: str) -> dict[str, Assigned]:
    ref = HostnameGeneratorRef(core_name=DEFAULT_GENERATOR)
    services = sorted(state.meshservices_of(mesh), key=lambda r: (r.meta.creation_time, r.name))
    taken: dict[str, str] = {}
    result: dict[str, Assigned] = {}
    for row in services:
        hostname = row.labels.get("kuma.io/display-name", row.name) + _SUFFIX
        owner = taken.setdefault(hostname, row.name)
        if owner == row.name:
            condition = Condition(type="Generated", status="True", reason="Generated")
            addresses = [Address(hostname=hostname, origin="HostnameGenerator",
                                 hostname_generator_ref=ref)]
        else:
            condition = Condition(type="Generated", status="False", reason="Collision",
                                  message=f"{hostname} is already used by MeshService {owner}")
            addresses = []
        result[row.name] = (addresses, [HostnameGeneratorStatus(hostname_generator_ref=ref,
                                                                conditions=[condition])])
    return result
