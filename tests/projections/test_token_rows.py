"""Signing keys and revocations in the read models: the public half only, published for the
gateways, until a retirement removes the row; deterministic like every fold (DESIGN.md
invariant 4)."""

from __future__ import annotations

from events import (
    GLOBAL_ZONE,
    AnyEvent,
    SigningKeyCreated,
    SigningKeyRetired,
    TokenRevoked,
    provenance_of,
    signing_key_subject,
)
from events.identity import SecretKey
from events.identity.tokens import generate_key_pair
from projections import PUBLISHED, RevocationRow, SigningKeyRow
from projections.fold import apply_event
from projections.state import ProjectionState
from tests.projections._histories import (
    fold,
    fold_all,
    persisted,
    random_sizes,
    restart,
    rows,
    split,
)

JTI = "0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f10"


def _key_event(at: int = 1, serial: int = 1) -> SigningKeyCreated:
    private, public = generate_key_pair()
    return SigningKeyCreated(at=at, purpose="dataplane-token", mesh="default", serial=serial,
                             public_key=public, private_key=SecretKey.generate().seal(
                                 private, purpose="signingkey:dataplane-token/default/1"))


def test_a_signing_key_row_holds_the_public_key_only() -> None:
    event = _key_event()
    state = fold_all([event])
    assert persisted(state, "signingkey", "default/dataplane-token-1") == SigningKeyRow(
        kid="dataplane-token/default/1", purpose="dataplane-token", serial=1,
        public_key=event.public_key, created_at=1, mesh="default")
    assert all(event.private_key.encode() not in body for _, _, body in state.persisted())


def test_a_key_once_folded_never_changes() -> None:
    first, other = _key_event(at=1), _key_event(at=2)
    state = fold_all([first, other])  # the same kid again (another log's copy)
    row = state.get("signingkey", "default/dataplane-token-1")
    assert isinstance(row, SigningKeyRow) and row.public_key == first.public_key


def test_a_revocation_is_a_row() -> None:
    state = fold_all([TokenRevoked(at=5, purpose="dataplane-token", mesh="default", jti=JTI,
                                   expires_at=99)])
    row = state.get("revocation", f"default/{JTI}")
    assert row == RevocationRow(purpose="dataplane-token", jti=JTI, revoked_at=5,
                                expires_at=99, mesh="default")
    user = fold_all([TokenRevoked(at=5, purpose="user-token", jti=JTI)])
    assert user.get("revocation", f"_/{JTI}") is not None


def test_keys_and_revocations_reach_the_gateways() -> None:
    assert {"signingkey", "revocation"} <= set(PUBLISHED)


def test_a_restart_keeps_them_byte_for_byte() -> None:
    events = [_key_event(), TokenRevoked(at=5, purpose="dataplane-token", mesh="default",
                                         jti=JTI)]
    state = fold_all(events)
    assert rows(restart(state)) == rows(state)


def _retired(serial: int, at: int = 10) -> SigningKeyRetired:
    return SigningKeyRetired(at=at, purpose="dataplane-token", mesh="default", serial=serial)


def test_a_retired_key_loses_its_row_and_the_newer_one_stays() -> None:
    state = fold_all([_key_event(at=1), _key_event(at=2, serial=2), _retired(1)])
    assert state.get("signingkey", "default/dataplane-token-1") is None
    assert persisted(state, "signingkey", "default/dataplane-token-1") is None
    row = persisted(state, "signingkey", "default/dataplane-token-2")
    assert isinstance(row, SigningKeyRow) and row.kid == "dataplane-token/default/2"


def test_rotation_and_retirement_replay_to_the_same_rows_whatever_the_batches() -> None:
    """Invariant 4: a replay, in any batches or after a restart, gives identical rows."""
    events: list[AnyEvent] = [
        _key_event(at=1), TokenRevoked(at=2, purpose="dataplane-token", mesh="default",
                                       jti=JTI),
        _key_event(at=3, serial=2), _retired(1, at=4), _key_event(at=5, serial=3),
        _retired(2, at=6)]
    whole = rows(fold_all(events))
    for seed in range(5):
        assert rows(fold(split(events, random_sizes(len(events), seed, max_size=3)))) == whole
    halfway = fold([events[:3]])
    assert rows(fold([events[3:]], state=restart(halfway), first_seq=4)) == whole
    assert [key for collection, key, _ in whole if collection == "signingkey"] == [
        "default/dataplane-token-3"]


def test_another_control_planes_retirement_is_not_folded_here() -> None:
    """Signing keys are local (projections.fold `_LOCAL_ONLY`): global's log retiring its own
    serial 1 says nothing about a zone's key of the same kid."""
    state = ProjectionState("east")
    key, retired = _key_event(), _retired(1)
    for seq, (event, zone) in enumerate(((key, "east"), (retired, GLOBAL_ZONE)), start=1):
        subject = signing_key_subject(event.purpose, event.mesh, event.serial, zone)
        apply_event(state, seq, event, provenance_of(subject))
    assert state.get("signingkey", "default/dataplane-token-1") is not None
