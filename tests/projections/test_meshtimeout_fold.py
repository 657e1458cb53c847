"""MeshTimeouts in the fold: what every policy kind does is tests/projections/test_policy_fold.py;
here, that a replay gives the same rows (invariant 4)."""

from __future__ import annotations

from events import MESH_TIMEOUT
from projections import PolicyRow
from tests.projections._histories import (
    fold,
    fold_all,
    persisted,
    random_sizes,
    realistic_history,
    restart,
    rows,
    split,
)


def test_replay_gives_the_same_meshtimeout_rows_whatever_the_batches_and_restarts() -> None:
    events = realistic_history()
    expected = [r for r in rows(fold_all(events)) if r[0] == MESH_TIMEOUT.collection]
    cut = len(events) - 3  # between the MeshTimeouts' events
    before = fold(split(events[:cut], random_sizes(cut, seed=5)))
    after = fold(split(events[cut:], [1, 2]), state=restart(before), first_seq=cut + 1)

    assert [k for _, k, _ in expected] == ["default/slow-web"]
    slow_web = persisted(after, MESH_TIMEOUT.collection, "default/slow-web")
    assert isinstance(slow_web, PolicyRow)
    assert slow_web.policy.spec.to[0].default.http is not None
    assert slow_web.policy.spec.to[0].default.http.request_timeout == "1m"
    assert [r for r in rows(after) if r[0] == MESH_TIMEOUT.collection] == expected
