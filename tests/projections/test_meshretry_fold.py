"""MeshRetries in the fold: rows keyed `<mesh>/<name>` with Kuma's computed labels, as
MeshTimeouts; published for the gateways."""

from __future__ import annotations

from projections import PUBLISHED, MeshRetryRow
from projections.state import ProjectionState
from projections.views import RowMeta
from tests.projections._histories import ZONE, History, fold_all, persisted, retry

FLAKY = retry("default", "flaky", ({"kind": "MeshService", "name": "web"},
                                   {"http": {"numRetries": 2, "retryOn": ["5xx"]}}),
              target={"kind": "MeshSubset", "tags": {"team": "a"}})


def _row(state: ProjectionState, mesh: str, name: str) -> MeshRetryRow | None:
    row = persisted(state, "meshretry", f"{mesh}/{name}")
    assert row is None or isinstance(row, MeshRetryRow)
    return row


def test_an_applied_meshretry_is_a_published_row_with_kumas_computed_labels() -> None:
    h = History().mesh("default").apply_retry(FLAKY)

    row = _row(fold_all(h.events), "default", "flaky")

    assert "meshretry" in PUBLISHED
    assert row is not None
    assert row.policy.spec == FLAKY.spec
    assert row.policy.labels == {
        "kuma.io/display-name": "flaky", "kuma.io/mesh": "default",
        "kuma.io/origin": "zone", "kuma.io/zone": ZONE, "kuma.io/env": "universal"}
    at = h.events[1].at
    assert row.meta == RowMeta(version=2, creation_time=at, modification_time=at)


def test_a_change_keeps_the_creation_time_and_a_delete_leaves_no_row() -> None:
    changed = retry("default", "flaky", ({"kind": "Mesh"}, {"tcp": {"maxConnectAttempt": 3}}))
    h = History().mesh("default").apply_retry(FLAKY).apply_retry(changed)

    row = _row(fold_all(h.events), "default", "flaky")

    assert row is not None
    assert row.policy.spec == changed.spec
    assert row.meta == RowMeta(version=3, creation_time=h.events[1].at,
                               modification_time=h.events[2].at)
    assert _row(fold_all(h.delete_retry("default", "flaky").events), "default",
                "flaky") is None
