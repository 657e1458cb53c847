"""Global's zone-token keys and revocations in a zone's read models: global signs the zone
tokens of every zone's ingresses (Kuma's global `zone-token-signing-key-<n>`), so a zone's
fold keeps global's zone-token keys, their retirements and global's revocations of zone tokens
(its other keys and revocations stay global's own), under a row key of their own beside the
zone's own zone-token keys, whose kids are unchanged. Deterministic like every fold
(DESIGN.md invariant 4)."""

from __future__ import annotations

from events import (
    GLOBAL_ZONE,
    SigningKeyCreated,
    SigningKeyRetired,
    TokenRevoked,
    revocation_subject,
    signing_key_subject,
)
from events.event_types import TokenPurpose
from events.identity import SecretKey
from events.identity.tokens import generate_key_pair
from projections import RevocationRow, SigningKeyRow
from projections.state import ProjectionState
from tests.projections._histories import (
    JTIS,
    Logged,
    fold_logged,
    persisted,
    random_sizes,
    restart,
    rows,
)

_SEALER = SecretKey.generate()


def _key(zone: str, purpose: TokenPurpose = "zone-token", serial: int = 1, at: int = 1,
         mesh: str | None = None) -> Logged:
    """`zone`'s signing key `serial` of `purpose`, on that control plane's subject."""
    private, public = generate_key_pair()
    event = SigningKeyCreated(at=at, purpose=purpose, mesh=mesh, serial=serial,
                              public_key=public, private_key=_SEALER.seal(
                                  private, purpose=f"signingkey:{purpose}/_/{serial}"))
    return signing_key_subject(purpose, mesh, serial, zone), event


def _retired(zone: str, serial: int, at: int = 10) -> Logged:
    return (signing_key_subject("zone-token", None, serial, zone),
            SigningKeyRetired(at=at, purpose="zone-token", mesh=None, serial=serial))


def _revoked(zone: str, jti: str, purpose: TokenPurpose = "zone-token", at: int = 5
             ) -> Logged:
    return revocation_subject(None, jti, zone), TokenRevoked(at=at, purpose=purpose, mesh=None,
                                                             jti=jti)


def _keys(state: ProjectionState) -> dict[str, str]:
    """Row key -> kid of every signing key row."""
    return {key: row.kid for key, row in state.rows["signingkey"].items()
            if isinstance(row, SigningKeyRow)}


def test_a_zone_keeps_globals_zone_token_key_beside_its_own() -> None:
    logged = [_key("east"), _key(GLOBAL_ZONE), _key(GLOBAL_ZONE, "user-token"),
              _key(GLOBAL_ZONE, "dataplane-token", mesh=None), _key("west")]
    state = fold_logged(logged, ProjectionState("east"))
    assert _keys(state) == {"_/zone-token-1": "zone-token/_/1",
                            "_global/zone-token-1": "_global/zone-token/_/1"}
    globals_key = logged[1][1]
    assert isinstance(globals_key, SigningKeyCreated)
    row = persisted(state, "signingkey", "_global/zone-token-1")
    assert row == SigningKeyRow(kid="_global/zone-token/_/1", purpose="zone-token", serial=1,
                                public_key=globals_key.public_key, created_at=1)
    assert all(globals_key.private_key.encode() not in body
               for _, _, body in state.persisted())


def test_globals_log_names_its_zone_token_key_as_the_zones_do() -> None:
    logged = [_key(GLOBAL_ZONE), _key(GLOBAL_ZONE, "user-token")]
    state = fold_logged(logged, ProjectionState(""))
    assert _keys(state) == {"_global/zone-token-1": "_global/zone-token/_/1",
                            "_/user-token-1": "user-token/_/1"}


def test_globals_retirement_takes_its_key_and_not_the_zones_own() -> None:
    logged = [_key("east"), _key(GLOBAL_ZONE), _key(GLOBAL_ZONE, serial=2, at=2),
              _retired(GLOBAL_ZONE, 1)]
    state = fold_logged(logged, ProjectionState("east"))
    assert _keys(state) == {"_/zone-token-1": "zone-token/_/1",
                            "_global/zone-token-2": "_global/zone-token/_/2"}
    own = fold_logged([_key("east"), _key(GLOBAL_ZONE), _retired("east", 1)],
                      ProjectionState("east"))
    assert _keys(own) == {"_global/zone-token-1": "_global/zone-token/_/1"}


def test_globals_revocation_of_a_zone_token_is_folded_and_of_a_user_token_not() -> None:
    logged = [_revoked(GLOBAL_ZONE, JTIS[0]), _revoked(GLOBAL_ZONE, JTIS[1], "user-token"),
              _revoked("west", JTIS[2])]
    state = fold_logged(logged, ProjectionState("east"))
    assert sorted(state.rows["revocation"]) == [f"_/{JTIS[0]}"]
    row = persisted(state, "revocation", f"_/{JTIS[0]}")
    assert isinstance(row, RevocationRow) and row.purpose == "zone-token"


def test_a_zones_rows_replay_the_same_whatever_the_batches() -> None:
    logged: list[Logged] = [
        _key("east"), _key(GLOBAL_ZONE), _revoked(GLOBAL_ZONE, JTIS[0]),
        _key(GLOBAL_ZONE, serial=2, at=3), _retired(GLOBAL_ZONE, 1, at=4),
        _revoked("east", JTIS[1], at=6), _key("east", serial=2, at=7)]
    whole = rows(fold_logged(logged, ProjectionState("east")))
    for seed in range(5):
        state = ProjectionState("east")
        seq = 1
        for size in random_sizes(len(logged), seed, max_size=3):
            batch = logged[seq - 1:seq - 1 + size]
            state = fold_logged(batch, restart(state) if seed % 2 else state, first_seq=seq)
            seq += len(batch)
        assert rows(state) == whole
    assert [key for collection, key, _ in whole if collection == "signingkey"] == [
        "_/zone-token-1", "_/zone-token-2", "_global/zone-token-2"]

