"""MeshTrafficPermissions in the fold: what every policy kind does is
tests/projections/test_policy_fold.py; here, that a replay gives the same rows (invariant 4)."""

from __future__ import annotations

from projections import PolicyRow
from tests.projections._histories import (
    SERVICE_TAG,
    fold,
    fold_all,
    persisted,
    random_sizes,
    realistic_history,
    restart,
    rows,
    split,
)


def test_replay_gives_the_same_policy_rows_whatever_the_batches_and_restarts() -> None:
    events = realistic_history()
    expected = [r for r in rows(fold_all(events)) if r[0] == "meshtrafficpermission"]
    cut = len(events) - 4  # between the policies' events
    before = fold(split(events[:cut], random_sizes(cut, seed=3)))
    after = fold(split(events[cut:], [1, 2, 1]), state=restart(before), first_seq=cut + 1)

    assert [k for _, k, _ in expected] == ["default/allow-web"]
    allow_web = persisted(after, "meshtrafficpermission", "default/allow-web")
    assert isinstance(allow_web, PolicyRow)
    assert allow_web.policy.spec.from_[0].target_ref.tags == {SERVICE_TAG: "web"}
    assert [r for r in rows(after) if r[0] == "meshtrafficpermission"] == expected
