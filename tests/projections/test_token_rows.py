"""Signing keys and revocations in the read models: the public half only, published for the
gateways, until a retirement removes the row; deterministic like every fold (DESIGN.md
invariant 4). A revocation goes once its token has expired `REVOCATION_KEPT_AFTER_EXPIRY_MS`
ago, by event time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TypeVar

from events import (
    GLOBAL_ZONE,
    AnyEvent,
    ClockTicked,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    MeshDeleted,
    SigningKeyCreated,
    SigningKeyRetired,
    TokenRevoked,
    clock_subject,
    decode_event,
    provenance_of,
    resource_subject,
    signing_key_subject,
)
from events.commands import TokenCommands
from events.event_types import TokenPurpose
from events.identity import REVOCATION_KEPT_AFTER_EXPIRY_MS, SecretKey
from events.identity.tokens import NOT_BEFORE_SKEW_S, generate_key_pair
from projections import PUBLISHED, Projector, RevocationRow, SigningKeyRow, open_store, rebuild
from projections.fold import apply_event
from projections.state import ProjectionState
from tests.harness import cancel_until_done, eventually
from tests.projections._histories import (
    JTIS,
    fold,
    fold_all,
    persisted,
    random_sizes,
    realistic_history,
    restart,
    rows,
    split,
)

JTI = "0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f10"
T_ = TypeVar("T_")
MESH = MeshApplied(at=0, mesh=Mesh(name="default"))
"""A mesh's signing key is folded only while its Mesh exists (`_signing_key_created`)."""


def _key_event(at: int = 1, serial: int = 1) -> SigningKeyCreated:
    private, public = generate_key_pair()
    return SigningKeyCreated(at=at, purpose="dataplane-token", mesh="default", serial=serial,
                             public_key=public, private_key=SecretKey.generate().seal(
                                 private, purpose="signingkey:dataplane-token/default/1"))


def test_a_signing_key_row_holds_the_public_key_only() -> None:
    event = _key_event()
    state = fold_all([MESH, event])
    assert persisted(state, "signingkey", "default/dataplane-token-1") == SigningKeyRow(
        kid="dataplane-token/default/1", purpose="dataplane-token", serial=1,
        public_key=event.public_key, created_at=1, mesh="default")
    assert all(event.private_key.encode() not in body for _, _, body in state.persisted())


def test_a_key_once_folded_never_changes() -> None:
    first, other = _key_event(at=1), _key_event(at=2)
    state = fold_all([MESH, first, other])  # the same kid again (another log's copy)
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
    events: list[AnyEvent] = [MESH, _key_event(), TokenRevoked(at=5, purpose="dataplane-token",
                                                               mesh="default", jti=JTI)]
    state = fold_all(events)
    assert rows(restart(state)) == rows(state)


def _retired(serial: int, at: int = 10) -> SigningKeyRetired:
    return SigningKeyRetired(at=at, purpose="dataplane-token", mesh="default", serial=serial)


def test_a_retired_key_loses_its_row_and_the_newer_one_stays() -> None:
    state = fold_all([MESH, _key_event(at=1), _key_event(at=2, serial=2), _retired(1)])
    assert state.get("signingkey", "default/dataplane-token-1") is None
    assert persisted(state, "signingkey", "default/dataplane-token-1") is None
    row = persisted(state, "signingkey", "default/dataplane-token-2")
    assert isinstance(row, SigningKeyRow) and row.kid == "dataplane-token/default/2"


def test_rotation_and_retirement_replay_to_the_same_rows_whatever_the_batches() -> None:
    """Invariant 4: a replay, in any batches or after a restart, gives identical rows."""
    events: list[AnyEvent] = [
        MESH, _key_event(at=1), TokenRevoked(at=2, purpose="dataplane-token", mesh="default",
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
    apply_event(state, 1, MESH, provenance_of(resource_subject("Mesh", None, "default",
                                                               GLOBAL_ZONE)))
    key, retired = _key_event(), _retired(1)
    keys: list[tuple[SigningKeyCreated | SigningKeyRetired, str]] = [
        (key, "east"), (retired, GLOBAL_ZONE)]
    for seq, (event, zone) in enumerate(keys, start=2):
        subject = signing_key_subject(event.purpose, event.mesh, event.serial, zone)
        apply_event(state, seq, event, provenance_of(subject))
    assert state.get("signingkey", "default/dataplane-token-1") is not None


# --- a revocation goes once its token has long expired ---------------------------------------

T = 1_700_000_000_000
EXP = T + 60_000
"""The revoked token's expiry, a minute after the revocation."""
DROP = EXP + REVOCATION_KEPT_AFTER_EXPIRY_MS
"""When its revocation goes: a verifier whose clock is this far behind refuses it as expired."""


def _revoked(jti: str = JTI, *, at: int = T, expires_at: int = EXP,
             mesh: str | None = "default") -> TokenRevoked:
    purpose: TokenPurpose = "dataplane-token" if mesh is not None else "user-token"
    return TokenRevoked(at=at, purpose=purpose, jti=jti, expires_at=expires_at, mesh=mesh)


def _revocations(state: ProjectionState) -> list[str]:
    return [key for collection, key, _ in state.persisted() if collection == "revocation"]


def test_the_margin_is_far_beyond_any_verifiers_clock_skew() -> None:
    assert REVOCATION_KEPT_AFTER_EXPIRY_MS >= 3600 * 1000 > 100 * NOT_BEFORE_SKEW_S * 1000


def test_a_revocation_stays_until_its_drop_time() -> None:
    state = fold_all([_revoked(), ClockTicked(at=EXP), ClockTicked(at=DROP - 1)])
    assert _revocations(state) == [f"default/{JTI}"]


def test_a_tick_at_the_drop_time_removes_it() -> None:
    state = fold_all([_revoked(), ClockTicked(at=DROP)])
    assert _revocations(state) == []


def test_any_event_past_the_drop_time_removes_it_before_it_is_applied() -> None:
    state = fold_all([_revoked(), MeshApplied(at=DROP + 5000, mesh=Mesh(name="default"))])
    assert _revocations(state) == []
    assert persisted(state, "mesh", "default") is not None


def test_the_projector_ticks_for_it() -> None:
    """`next_expiry` is what the live projector schedules its ticker with."""
    state = fold_all([_revoked()])
    assert state.next_expiry() == DROP
    fold([[ClockTicked(at=DROP)]], state=state, first_seq=2)
    assert state.next_expiry() is None


def test_a_revocation_of_an_unknown_expiry_stays_for_ever() -> None:
    state = fold_all([_revoked(expires_at=0, mesh=None),
                      ClockTicked(at=T + 100 * 365 * 24 * REVOCATION_KEPT_AFTER_EXPIRY_MS)])
    assert _revocations(state) == [f"_/{JTI}"]
    assert state.next_expiry() is None


def test_a_revocation_recorded_at_its_drop_time_is_no_row() -> None:
    """Revoked an hour after its token expired: nothing left to say."""
    state = fold_all([_revoked(at=DROP)])
    assert _revocations(state) == []
    assert state.next_expiry() is None
    assert _revocations(fold_all([_revoked(at=DROP - 1)])) == [f"default/{JTI}"]


def test_revocations_go_one_after_the_other_whatever_the_order_they_came_in() -> None:
    """The earliest drop time is cached: one that comes earlier replaces it, one that goes
    makes the next one due."""
    a, b, c = JTIS
    state = fold_all([_revoked(a, expires_at=EXP + 2000), _revoked(b, expires_at=EXP + 3000),
                      _revoked(c, expires_at=EXP + 1000)])
    assert state.next_expiry() == DROP + 1000
    fold([[ClockTicked(at=DROP + 1000)]], state=state, first_seq=4)
    assert _revocations(state) == [f"default/{a}", f"default/{b}"]
    assert state.next_expiry() == DROP + 2000
    fold([[ClockTicked(at=DROP + 2500)]], state=state, first_seq=5)
    assert _revocations(state) == [f"default/{b}"]
    assert state.next_expiry() == DROP + 3000


def test_a_restarted_projector_drops_them_at_the_same_events() -> None:
    """`ProjectionState.load` indexes the revocations' drop times, as the MeshServices'
    expiries: a projector restarted from its store drops each at the event that one folding
    from sequence 1 does (invariant 4)."""
    a, b, c = JTIS
    events: list[AnyEvent] = [
        _revoked(a), _revoked(b, expires_at=EXP + 5000, mesh=None),
        _revoked(c, expires_at=0), ClockTicked(at=DROP),
        MeshApplied(at=DROP + 4999, mesh=Mesh(name="default")),
        MeshApplied(at=DROP + 5000, mesh=Mesh(name="default"))]
    for cut in range(1, len(events)):
        before = fold([events[:cut]])
        after = restart(before)
        assert after.next_expiry() == before.next_expiry()
        fold([events[cut:]], state=after, first_seq=cut + 1)
        assert rows(after) == rows(fold_all(events)), f"restarted before event {cut + 1}"
    assert _revocations(fold_all(events)) == [f"default/{c}"]
    assert _revocations(fold_all(events[:-1])) == [f"_/{b}", f"default/{c}"]


def test_the_realistic_history_drops_one_revocation_and_keeps_the_others() -> None:
    state = fold_all(realistic_history())
    assert _revocations(state) == [f"_/{JTIS[1]}", f"edge/{JTIS[2]}"]


# --- a mesh's keys and revocations go with it (Kuma deletes a mesh's secrets with it) ----------


def _mesh_key(mesh: str, serial: int, at: int = 1) -> SigningKeyCreated:
    private, public = generate_key_pair()
    return SigningKeyCreated(at=at, purpose="dataplane-token", mesh=mesh, serial=serial,
                             public_key=public, private_key=SecretKey.generate().seal(
                                 private, purpose=f"signingkey:dataplane-token/{mesh}/{serial}"))


def _user_key(serial: int = 1) -> SigningKeyCreated:
    private, public = generate_key_pair()
    return SigningKeyCreated(at=1, purpose="user-token", serial=serial, public_key=public,
                             private_key=SecretKey.generate().seal(
                                 private, purpose=f"signingkey:user-token/_/{serial}"))


def _keys(state: ProjectionState) -> list[str]:
    return [key for collection, key, _ in state.persisted() if collection == "signingkey"]


def test_a_deleted_mesh_takes_its_keys_and_revocations_and_nothing_else() -> None:
    a, b, c = JTIS
    state = fold_all([
        MESH, MeshApplied(at=0, mesh=Mesh(name="other")),
        _mesh_key("default", 1), _mesh_key("default", 2), _mesh_key("other", 1), _user_key(),
        _revoked(a), _revoked(b, mesh="other", expires_at=EXP + 2000),
        _revoked(c, mesh=None, expires_at=EXP + 1000), MeshDeleted(at=T + 1, name="default")])
    assert _keys(state) == ["_/user-token-1", "other/dataplane-token-1"]
    assert _revocations(state) == [f"_/{c}", f"other/{b}"]
    assert state.next_expiry() == DROP + 1000  # a's drop went with its row


def test_a_key_made_while_its_mesh_does_not_exist_is_no_key_of_the_mesh_made_again() -> None:
    """A token request that raced the Mesh's deletion: the command side, which finds the
    current life from the log (`events.commands.meshes`), does not take that key either."""
    state = fold_all([MESH, _mesh_key("default", 1), MeshDeleted(at=2, name="default"),
                      _mesh_key("default", 2, at=3), MeshApplied(at=4, mesh=Mesh(
                          name="default")), _mesh_key("default", 3, at=5)])
    assert _keys(state) == ["default/dataplane-token-3"]


def test_a_mesh_deleted_and_made_again_many_times_replays_to_the_same_rows() -> None:
    """Invariant 4 across lives: keys, rotations, retirements and revocations of each life,
    folded whole, in random batches, and restarted anywhere, give identical rows."""
    a, b, c = JTIS
    events: list[AnyEvent] = [
        MESH, _mesh_key("default", 1), _revoked(a), _mesh_key("default", 2, at=T),
        _retired(1, at=T), MeshDeleted(at=T + 1, name="default"),
        MeshApplied(at=T + 2, mesh=Mesh(name="default")), _mesh_key("default", 3, at=T + 3),
        _revoked(b, at=T + 3), MeshDeleted(at=T + 4, name="default"),
        _mesh_key("default", 4, at=T + 5),  # raced the deletion: no row
        MeshApplied(at=T + 6, mesh=Mesh(name="default")), _revoked(c, at=T + 7),
        _mesh_key("default", 5, at=T + 7), _retired(3, at=T + 8)]  # an earlier life's: nothing
    whole = fold_all(events)
    assert _keys(whole) == ["default/dataplane-token-5"]
    assert _revocations(whole) == [f"default/{c}"]
    for seed in range(5):
        assert rows(fold(split(events, random_sizes(len(events), seed, max_size=4)))) == rows(
            whole)
    for cut in range(1, len(events)):
        before = fold([events[:cut]])
        after = fold([events[cut:]], state=restart(before), first_seq=cut + 1)
        assert rows(after) == rows(whole), f"restarted before event {cut + 1}"


# --- the live projector keeps the log's clock for them ---------------------------------------


async def test_the_live_projector_ticks_for_a_revocation_and_a_replay_agrees(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    """A revocation whose drop time comes 300 ms after it was recorded, on a quiet log: the
    projector's ticker appends `ClockTicked(at=drop time)`, and the row goes."""
    now = time.time_ns() // 1_000_000
    expires_at = now - REVOCATION_KEPT_AFTER_EXPIRY_MS + 300
    tokens = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await tokens.revoke("dataplane-token", "default", JTI, expires_at_ms=expires_at, at=now)
    store = await open_store(f"sqlite:///{tmp_path / 'live.db'}")
    projector = asyncio.create_task(Projector(event_log, store, None, zone="default").run())
    try:
        drop = expires_at + REVOCATION_KEPT_AFTER_EXPIRY_MS
        tick = await eventually(lambda: event_log.last(clock_subject(drop)),
                                 what="the ticker's tick at the drop time")
        assert (tick.seq, await event_log.last_seq()) == (2, 2)
        assert decode_event(tick.data, seq=tick.seq, subject=tick.subject).at == drop

        async def folded() -> bool:
            return await store.checkpoint("main") == 2

        await eventually(folded, what="the projector to fold the tick")
        assert await store.get("revocation", f"default/{JTI}") is None
        replayed = await open_store(f"sqlite:///{tmp_path / 'replay.db'}")
        try:
            assert await rebuild(event_log, replayed, zone="default") == 2
            assert await replayed.rows() == await store.rows()
        finally:
            await replayed.close()
    finally:
        await cancel_until_done(projector)
        await store.close()
