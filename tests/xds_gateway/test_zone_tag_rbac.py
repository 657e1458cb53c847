"""A MeshTrafficPermission `from` on the inbound `kuma.io/zone` tag, end to end from the fold:
Kuma's zone control plane tags every inbound with its zone (projections._provenance
.zone_tagged), the workload certificate the fold issues carries it as a tag SAN, so a
MeshSubset on it admits the workloads of that zone (Kuma's MeshTrafficPermission by zone).
Asked of the RBAC `inbound_rbac` builds with test_rbac's evaluator."""

from __future__ import annotations

from tests.projections._histories import ZONE, History, dataplane, fold_all, inbound
from tests.xds_gateway.test_rbac import API, MESH, cert, mtp, rbac, subset, who


def test_a_mesh_subset_on_the_zone_tag_lets_in_the_workloads_of_that_zone() -> None:
    h = History()
    h.mtls(MESH, "ca-1", enabled="ca-1")
    h.register(dataplane(MESH, "api-1", "10.0.0.2", inbound(8080, "api")))
    identity = fold_all(h.events).identity(MESH, "api-1")
    assert identity is not None
    assert f"kuma://kuma.io/zone/{ZONE}" in identity.uris
    config = rbac(mtp("p", (subset(**{"kuma.io/zone": ZONE}), "Allow")))

    assert who(config, here=frozenset(identity.uris),
               west=cert("api", **{"kuma.io/zone": "west"}), untagged=API) == {"here"}
