"""MeshTrafficPermissions in the fold: rows keyed `<mesh>/<name>`, Kuma's computed labels,
times from the events, published for the gateways; deterministic (invariant 4)."""

from __future__ import annotations

from events import MeshTrafficPermissionApplied, Provenance
from projections import PUBLISHED, MeshTrafficPermissionRow
from projections.fold import apply_event
from projections.state import ProjectionState
from projections.views import RowMeta
from tests.projections._histories import (
    SERVICE_TAG,
    ZONE,
    History,
    fold,
    fold_all,
    permission,
    persisted,
    random_sizes,
    realistic_history,
    restart,
    rows,
    split,
)

ALLOW_WEB = permission("default", "allow-web", ({"kind": "MeshService", "name": "web"}, "Allow"),
                       target={"kind": "MeshService", "name": "backend"})


def _row(state: ProjectionState, mesh: str, name: str) -> MeshTrafficPermissionRow | None:
    row = persisted(state, "meshtrafficpermission", f"{mesh}/{name}")
    assert row is None or isinstance(row, MeshTrafficPermissionRow)
    return row


def test_an_applied_policy_is_a_row_with_kumas_computed_labels() -> None:
    h = History().mesh("default").permit(ALLOW_WEB)

    row = _row(fold_all(h.events), "default", "allow-web")

    assert row is not None
    assert row.policy.spec == ALLOW_WEB.spec
    assert row.policy.labels == {
        "kuma.io/display-name": "allow-web", "kuma.io/mesh": "default",
        "kuma.io/origin": "zone", "kuma.io/zone": ZONE, "kuma.io/env": "universal"}
    at = h.events[1].at
    assert row.meta == RowMeta(version=2, creation_time=at, modification_time=at)


def test_the_control_planes_labels_win_and_the_users_stay() -> None:
    mtp = permission("default", "p", ({"kind": "Mesh"}, "Allow"),
                     labels={"kuma.io/mesh": "other", "kuma.io/display-name": "allow-web-v2",
                             "team": "a"})

    row = _row(fold_all(History().mesh("default").permit(mtp).events), "default", "p")

    assert row is not None
    assert row.policy.labels["kuma.io/mesh"] == "default"
    assert row.policy.labels["kuma.io/display-name"] == "allow-web-v2"
    assert row.policy.labels["team"] == "a"


def test_a_change_keeps_the_creation_time_and_moves_the_version() -> None:
    changed = permission("default", "allow-web", ({"kind": "Mesh"}, "Deny"))
    h = History().mesh("default").permit(ALLOW_WEB).permit(changed)

    row = _row(fold_all(h.events), "default", "allow-web")

    assert row is not None
    assert row.policy.spec == changed.spec
    assert row.meta == RowMeta(version=3, creation_time=h.events[1].at,
                               modification_time=h.events[2].at)


def test_a_deleted_policy_leaves_no_row() -> None:
    h = History().mesh("default").permit(ALLOW_WEB).delete_permission("default", "allow-web")

    assert _row(fold_all(h.events), "default", "allow-web") is None


def test_policies_of_two_meshes_with_one_name_are_two_rows() -> None:
    other = permission("other", "allow-web", ({"kind": "Mesh"}, "Deny"))
    h = History().mesh("default").mesh("other").permit(ALLOW_WEB).permit(other)

    state = fold_all(h.events)

    assert [k for c, k, _ in rows(state) if c == "meshtrafficpermission"] == [
        "default/allow-web", "other/allow-web"]


def test_a_policy_from_global_has_no_zone() -> None:
    state = ProjectionState()
    apply_event(state, 1, MeshTrafficPermissionApplied(at=5, policy=ALLOW_WEB),
                Provenance(zone="", origin="global"))
    row = state.get("meshtrafficpermission", "default/allow-web")

    assert isinstance(row, MeshTrafficPermissionRow)
    assert row.policy.labels == {"kuma.io/display-name": "allow-web", "kuma.io/mesh": "default",
                                 "kuma.io/origin": "global"}


def test_gateways_get_the_policies() -> None:
    assert "meshtrafficpermission" in PUBLISHED


def test_replay_gives_the_same_policy_rows_whatever_the_batches_and_restarts() -> None:
    events = realistic_history()
    expected = [r for r in rows(fold_all(events)) if r[0] == "meshtrafficpermission"]
    cut = len(events) - 4  # between the policies' events
    before = fold(split(events[:cut], random_sizes(cut, seed=3)))
    after = fold(split(events[cut:], [1, 2, 1]), state=restart(before), first_seq=cut + 1)

    assert [k for _, k, _ in expected] == ["default/allow-web"]
    allow_web = _row(after, "default", "allow-web")
    assert allow_web is not None
    assert allow_web.policy.spec.from_[0].target_ref.tags == {SERVICE_TAG: "web"}
    assert [r for r in rows(after) if r[0] == "meshtrafficpermission"] == expected
