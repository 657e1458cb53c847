"""Signing keys and revocations in the read models: the public half only, published for the
gateways; deterministic like every fold (DESIGN.md invariant 4)."""

from __future__ import annotations

from events import SigningKeyCreated, TokenRevoked
from events.identity import SecretKey
from events.identity.tokens import generate_key_pair
from projections import PUBLISHED, RevocationRow, SigningKeyRow
from tests.projections._histories import fold_all, persisted, restart, rows

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
