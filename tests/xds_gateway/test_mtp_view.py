"""The gateway's view keeps the MeshTrafficPermissions the projector publishes, by mesh."""

from __future__ import annotations

from events import MESH_TRAFFIC_PERMISSION, Mesh, MeshApplied
from tests.projections._histories import History, permission
from tests.xds_gateway._ads import Projection
from xds_gateway.view import ProjectionView

ALLOW = permission("default", "allow.web", ({"kind": "MeshService", "name": "web"}, "Allow"))
DENY = permission("other", "deny-all", ({"kind": "Mesh"}, "Deny"))


def test_published_policies_reach_the_view_by_mesh_and_name() -> None:
    projection, view = Projection(), ProjectionView()
    h = History().mesh("default").mesh("other").permit(ALLOW).permit(DENY)

    view.apply(projection.fold(h.events))

    assert {mesh: sorted(view.policies(MESH_TRAFFIC_PERMISSION, mesh))
            for mesh in ("default", "other")} == {"default": ["allow.web"], "other": ["deny-all"]}
    row = view.policies(MESH_TRAFFIC_PERMISSION, "default")["allow.web"]
    assert row.policy.spec == ALLOW.spec
    assert row.policy.labels["kuma.io/mesh"] == "default"


def test_a_changed_policy_replaces_the_old_one_and_a_deleted_one_goes() -> None:
    projection, view = Projection(), ProjectionView()
    view.apply(projection.fold(History().mesh("default").mesh("other").permit(ALLOW)
                               .permit(DENY).events))
    changed = permission("default", "allow.web", ({"kind": "Mesh"}, "Deny"))

    view.apply(projection.fold(History(start=1_800_000_000_000).permit(changed)
                               .delete_permission("other", "deny-all").events))

    assert view.policies(MESH_TRAFFIC_PERMISSION, "default")["allow.web"].policy.spec == (
        changed.spec)
    assert view.policies(MESH_TRAFFIC_PERMISSION, "other") == {}


def test_a_batch_without_policies_leaves_them_alone() -> None:
    projection, view = Projection(), ProjectionView()
    view.apply(projection.fold(History().mesh("default").permit(ALLOW).events))

    view.apply(projection.fold([MeshApplied(at=1_800_000_000_000, mesh=Mesh(name="third"))]))

    assert list(view.policies(MESH_TRAFFIC_PERMISSION, "default")) == ["allow.web"]
