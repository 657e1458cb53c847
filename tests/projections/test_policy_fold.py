"""Every policy kind in the fold (`events.POLICY_KINDS`, one path): rows keyed `<mesh>/<name>`
in the kind's collection, with Kuma's computed labels, times from the events, published for
the gateways. Each kind's own checks (its replay in a realistic history) stay in its file."""

from __future__ import annotations

from typing import Any

import pytest

from events import POLICY_KINDS, PolicyKind, Provenance
from projections import PUBLISHED, PolicyRow
from projections.fold import apply_event
from projections.state import ProjectionState
from projections.views import RowMeta, decode_policy_row, decode_typed
from tests._policy_samples import resource, sample
from tests.projections._histories import ZONE, History, fold_all, persisted, rows

pytestmark = pytest.mark.parametrize("kind", POLICY_KINDS, ids=lambda k: k.type_name)


def _row(state: ProjectionState, kind: PolicyKind[Any], mesh: str, name: str
         ) -> PolicyRow[Any] | None:
    row = persisted(state, kind.collection, f"{mesh}/{name}")
    assert row is None or (isinstance(row, PolicyRow) and isinstance(row.policy, kind.schema))
    return row


def test_an_applied_policy_is_a_published_row_with_kumas_computed_labels(
        kind: PolicyKind[Any]) -> None:
    policy = resource(kind, "p1")
    h = History().mesh("default").apply_policy(policy)

    row = _row(fold_all(h.events), kind, "default", "p1")

    assert kind.collection in PUBLISHED
    assert row is not None
    assert row.policy.spec == policy.spec
    assert row.policy.labels == {
        "kuma.io/display-name": "p1", "kuma.io/mesh": "default",
        "kuma.io/origin": "zone", "kuma.io/zone": ZONE, "kuma.io/env": "universal"}
    at = h.events[1].at
    assert row.meta == RowMeta(version=2, creation_time=at, modification_time=at)


def test_the_control_planes_labels_win_and_the_users_stay(kind: PolicyKind[Any]) -> None:
    policy = resource(kind, "p", labels={"kuma.io/mesh": "other",
                                         "kuma.io/display-name": "p-v2", "team": "a"})

    row = _row(fold_all(History().mesh("default").apply_policy(policy).events), kind,
               "default", "p")

    assert row is not None
    assert row.policy.labels["kuma.io/mesh"] == "default"
    assert row.policy.labels["kuma.io/display-name"] == "p-v2"
    assert row.policy.labels["team"] == "a"


def test_a_change_keeps_the_creation_time_and_a_delete_leaves_no_row(
        kind: PolicyKind[Any]) -> None:
    changed = resource(kind, "p1", spec=sample(kind).changed)
    h = History().mesh("default").apply_policy(resource(kind, "p1")).apply_policy(changed)

    row = _row(fold_all(h.events), kind, "default", "p1")

    assert row is not None
    assert row.policy.spec == changed.spec
    assert row.meta == RowMeta(version=3, creation_time=h.events[1].at,
                               modification_time=h.events[2].at)
    deleted = h.delete_policy(kind, "default", "p1")
    assert _row(fold_all(deleted.events), kind, "default", "p1") is None


def test_policies_of_two_meshes_with_one_name_are_two_rows(kind: PolicyKind[Any]) -> None:
    h = (History().mesh("default").mesh("other").apply_policy(resource(kind, "p1"))
         .apply_policy(resource(kind, "p1", mesh="other")))

    state = fold_all(h.events)

    assert [k for c, k, _ in rows(state) if c == kind.collection] == [
        "default/p1", "other/p1"]
    others = {c for c, _, _ in rows(state)} & {k.collection for k in POLICY_KINDS}
    assert others == {kind.collection}  # no row in another kind's collection


def test_a_policy_from_global_has_no_zone(kind: PolicyKind[Any]) -> None:
    state = ProjectionState()
    apply_event(state, 1, kind.applied_event(resource(kind, "p1"), 5),
                Provenance(zone="", origin="global"))
    row = state.get(kind.collection, "default/p1")

    assert isinstance(row, PolicyRow)
    assert row.policy.labels == {"kuma.io/display-name": "p1", "kuma.io/mesh": "default",
                                 "kuma.io/origin": "global"}


def test_a_row_is_read_back_by_its_kind_never_as_any_policy_row(kind: PolicyKind[Any]) -> None:
    state = fold_all(History().mesh("default").apply_policy(resource(kind, "p")).events)
    [body] = [b for c, _, b in state.persisted() if c == kind.collection]
    assert decode_policy_row(kind, body).policy.name == "p"
    with pytest.raises(TypeError, match="PolicyRow rows are decoded by their kind"):
        decode_typed(PolicyRow, body)  # one row type, many collections: which decoder?
