"""MeshTimeouts in the fold: rows keyed `<mesh>/<name>` with Kuma's computed labels, as
MeshTrafficPermissions; published for the gateways; deterministic (invariant 4)."""

from __future__ import annotations

from events import MeshTimeoutApplied, Provenance
from projections import PUBLISHED, MeshTimeoutRow
from projections.fold import apply_event
from projections.state import ProjectionState
from projections.views import RowMeta
from tests.projections._histories import (
    ZONE,
    History,
    fold,
    fold_all,
    persisted,
    random_sizes,
    realistic_history,
    restart,
    rows,
    split,
    timeout,
)

SLOW_WEB = timeout("default", "slow-web", ({"kind": "MeshService", "name": "web"},
                                           {"http": {"requestTimeout": "30s"}}),
                   target={"kind": "MeshSubset", "tags": {"team": "a"}})


def _row(state: ProjectionState, mesh: str, name: str) -> MeshTimeoutRow | None:
    row = persisted(state, "meshtimeout", f"{mesh}/{name}")
    assert row is None or isinstance(row, MeshTimeoutRow)
    return row


def test_an_applied_meshtimeout_is_a_row_with_kumas_computed_labels() -> None:
    h = History().mesh("default").apply_timeout(SLOW_WEB)

    row = _row(fold_all(h.events), "default", "slow-web")

    assert row is not None
    assert row.policy.spec == SLOW_WEB.spec
    assert row.policy.labels == {
        "kuma.io/display-name": "slow-web", "kuma.io/mesh": "default",
        "kuma.io/origin": "zone", "kuma.io/zone": ZONE, "kuma.io/env": "universal"}
    at = h.events[1].at
    assert row.meta == RowMeta(version=2, creation_time=at, modification_time=at)


def test_a_change_keeps_the_creation_time_and_a_delete_leaves_no_row() -> None:
    changed = timeout("default", "slow-web", ({"kind": "Mesh"}, {"idleTimeout": "1m"}))
    h = History().mesh("default").apply_timeout(SLOW_WEB).apply_timeout(changed)

    row = _row(fold_all(h.events), "default", "slow-web")

    assert row is not None
    assert row.policy.spec == changed.spec
    assert row.meta == RowMeta(version=3, creation_time=h.events[1].at,
                               modification_time=h.events[2].at)
    assert _row(fold_all(h.delete_timeout("default", "slow-web").events), "default",
                "slow-web") is None


def test_a_meshtimeout_from_global_has_no_zone() -> None:
    state = ProjectionState()
    apply_event(state, 1, MeshTimeoutApplied(at=5, policy=SLOW_WEB),
                Provenance(zone="", origin="global"))
    row = state.get("meshtimeout", "default/slow-web")

    assert isinstance(row, MeshTimeoutRow)
    assert row.policy.labels == {"kuma.io/display-name": "slow-web", "kuma.io/mesh": "default",
                                 "kuma.io/origin": "global"}


def test_gateways_get_the_meshtimeouts() -> None:
    assert "meshtimeout" in PUBLISHED


def test_replay_gives_the_same_meshtimeout_rows_whatever_the_batches_and_restarts() -> None:
    events = realistic_history()
    expected = [r for r in rows(fold_all(events)) if r[0] == "meshtimeout"]
    cut = len(events) - 3  # between the MeshTimeouts' events
    before = fold(split(events[:cut], random_sizes(cut, seed=5)))
    after = fold(split(events[cut:], [1, 2]), state=restart(before), first_seq=cut + 1)

    assert [k for _, k, _ in expected] == ["default/slow-web"]
    slow_web = _row(after, "default", "slow-web")
    assert slow_web is not None
    assert slow_web.policy.spec.to[0].default.http is not None
    assert slow_web.policy.spec.to[0].default.http.request_timeout == "1m"
    assert [r for r in rows(after) if r[0] == "meshtimeout"] == expected
