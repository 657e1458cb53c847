"""Token signing keys and revocations on the one command path, against a real nats-server:
a key is created once and found again (kuma#3762), sealed with the secret key, and revoking
twice appends once. Rotation makes the next serial, which signs on every replica; retiring an
older serial is recorded once, and the newest one cannot be retired."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from events import (
    Conflict,
    EventLog,
    InvalidResource,
    JetStreamEventLog,
    Mesh,
    NotFound,
    Record,
    SigningKeyCreated,
    SigningKeyRetired,
    TokenPurpose,
    WrongControlPlane,
    decode_event,
    revocation_subject,
    signing_key_subject,
)
from events.commands import Commands, TokenCommands
from events.commands.signing_keys import SigningKeys
from events.identity import (
    DATAPLANE_TOKEN,
    USER_TOKEN,
    ZONE_TOKEN,
    DataplaneClaims,
    SealedSecretError,
    SecretKey,
    UserClaims,
    ZoneClaims,
    load_public_key,
    read_header,
    verify,
)

NOW_MS = 1_700_000_000_000


async def _with_mesh(event_log: JetStreamEventLog) -> None:
    await Commands(event_log, zone="default").apply(Mesh(name="default"))


async def test_a_signing_key_is_created_once_when_replicas_race(
        event_log: JetStreamEventLog) -> None:
    secret = SecretKey.generate()
    replicas = [TokenCommands(event_log, zone="default", secret_key=secret) for _ in range(4)]
    keys = await asyncio.gather(*(r.signing_key(USER_TOKEN, None, NOW_MS) for r in replicas))
    publics = {k.public_key.public_numbers() for k in keys}
    assert len(publics) == 1
    record = await event_log.last(signing_key_subject(USER_TOKEN, None, 1))
    assert record is not None and record.seq == 1  # one event on the key's subject


async def test_a_restart_signs_with_the_key_in_the_log(event_log: JetStreamEventLog) -> None:
    """kuma#3762: keys re-made on a restart invalidated every token."""
    await _with_mesh(event_log)
    secret = SecretKey.generate()
    before, _ = await TokenCommands(event_log, zone="default", secret_key=secret
                                    ).issue_dataplane_token(mesh="default", name="web-1",
                                                            tags={}, valid_for_s=60,
                                                            now_ms=NOW_MS)
    restarted = TokenCommands(event_log, zone="default", secret_key=secret)
    key = await restarted.signing_key(DATAPLANE_TOKEN, "default", NOW_MS)
    assert str(read_header(before)) == str(key.kid) == "dataplane-token/default/1"
    assert verify(before, key.public_key, DataplaneClaims, now_s=NOW_MS / 1000).name == "web-1"


async def test_the_private_key_is_recorded_sealed(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await commands.signing_key(USER_TOKEN, None, NOW_MS)
    record = await event_log.last(signing_key_subject(USER_TOKEN, None, 1))
    assert record is not None
    event = decode_event(record.data, seq=record.seq, subject=record.subject)
    assert isinstance(event, SigningKeyCreated)
    assert event.private_key.startswith("v1.") and b"PRIVATE KEY" not in record.data
    assert event.public_key.startswith("-----BEGIN PUBLIC KEY-----")


async def test_another_secret_key_cannot_sign(event_log: JetStreamEventLog) -> None:
    await TokenCommands(event_log, zone="default", secret_key=SecretKey.generate()
                        ).signing_key(USER_TOKEN, None, NOW_MS)
    other = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    with pytest.raises(SealedSecretError, match="sealed with secret key"):
        await other.issue_user_token(name="jane", groups=[], valid_for_s=60, now_ms=NOW_MS)


async def test_a_dataplane_token_needs_its_mesh(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    with pytest.raises(NotFound, match="mesh 'nope' does not exist"):
        await commands.issue_dataplane_token(mesh="nope", name="web-1", tags={},
                                             valid_for_s=60, now_ms=NOW_MS)


async def test_each_mesh_has_its_own_key(event_log: JetStreamEventLog) -> None:
    await _with_mesh(event_log)
    await Commands(event_log, zone="default").apply(Mesh(name="other"))
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    token, _ = await commands.issue_dataplane_token(mesh="other", name="web-1", tags={},
                                                    valid_for_s=60, now_ms=NOW_MS)
    default = await commands.signing_key(DATAPLANE_TOKEN, "default", NOW_MS)
    assert str(read_header(token)) == "dataplane-token/other/1"
    assert default.public_key.public_numbers() != (
        await commands.signing_key(DATAPLANE_TOKEN, "other", NOW_MS)).public_key.public_numbers()


async def test_a_user_token_verifies_with_the_key(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    token, claims = await commands.issue_user_token(name="jane", groups=["ops"],
                                                    valid_for_s=60, now_ms=NOW_MS)
    key = await commands.signing_key(USER_TOKEN, None, NOW_MS)
    assert verify(token, key.public_key, UserClaims, now_s=NOW_MS / 1000) == claims


async def test_revoking_twice_appends_once(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    jti = "0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f10"
    first = await commands.revoke(DATAPLANE_TOKEN, "default", jti, expires_at_ms=NOW_MS,
                                  at=NOW_MS)
    again = await commands.revoke(DATAPLANE_TOKEN, "default", jti, expires_at_ms=NOW_MS,
                                  at=NOW_MS + 1)
    assert first == (1, True) and again == (1, False)
    record = await event_log.last(revocation_subject("default", jti))
    assert record is not None and record.seq == 1


async def test_a_revocation_names_a_token_id(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    with pytest.raises(InvalidResource, match=r"jti: 'x\.y' is not a token id"):
        await commands.revoke(DATAPLANE_TOKEN, "default", "x.y", expires_at_ms=0, at=NOW_MS)


async def test_a_standalone_zone_token_is_signed_with_its_own_key_made_once(
        event_log: JetStreamEventLog) -> None:
    secret = SecretKey.generate()
    replicas = [TokenCommands(event_log, zone="west", secret_key=secret) for _ in range(2)]
    issued = await asyncio.gather(*(r.issue_zone_token(
        zone="west", scope=["ingress"], valid_for_s=60, now_ms=NOW_MS) for r in replicas))
    key = await replicas[0].signing_key(ZONE_TOKEN, None, NOW_MS)
    assert str(key.kid) == "zone-token/_/1"
    for token, claims in issued:
        assert str(read_header(token)) == "zone-token/_/1"
        assert verify(token, key.public_key, ZoneClaims, now_s=NOW_MS / 1000) == claims
        assert (claims.zone, claims.scope) == ("west", ["ingress"])
    record = await event_log.last(signing_key_subject(ZONE_TOKEN, None, 1, "west"))
    assert record is not None and record.seq == 1  # one key, appended at sequence 0


async def test_a_standalone_signs_no_token_of_another_zone_or_unknown_scope(
        event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="west", secret_key=SecretKey.generate())
    with pytest.raises(InvalidResource) as raised:
        await commands.issue_zone_token(zone="east", scope=["ingress", "sidecar"],
                                        valid_for_s=60, now_ms=NOW_MS)
    message = str(raised.value)
    assert "zone: 'east' is not this control plane's zone ('west')" in message
    assert "scope[1]: 'sidecar' is not a scope" in message
    assert await event_log.last(signing_key_subject(ZONE_TOKEN, None, 1, "west")) is None


async def test_a_zone_of_a_multizone_deployment_signs_no_zone_token_and_makes_no_key(
        event_log: JetStreamEventLog) -> None:
    secret = SecretKey.generate()
    # west's own key, made by an earlier release's API at its first zone token
    before = TokenCommands(event_log, zone="west", secret_key=secret)
    old, _ = await before.issue_zone_token(zone="west", scope=["ingress"], valid_for_s=60,
                                           now_ms=NOW_MS)
    west = TokenCommands(event_log, zone="west", secret_key=secret, deployment="zone")
    with pytest.raises(WrongControlPlane) as raised:
        await west.issue_zone_token(zone="west", scope=["ingress"], valid_for_s=60,
                                    now_ms=NOW_MS)
    assert ("zone tokens are issued by the global control plane, not by zone 'west': "
            "generate it there (`meshlog --api <global API> generate zone-token --zone west`"
            ) in str(raised.value)
    with pytest.raises(WrongControlPlane, match="rotate global's key there"):
        await west.rotate_signing_key(ZONE_TOKEN, None, NOW_MS)
    assert await event_log.last(signing_key_subject(ZONE_TOKEN, None, 2, "west")) is None
    # what the earlier key signed is still the zone's to revoke, and the key (the newest of
    # west's, yet it signs nothing) the zone's to retire once global's tokens replaced it
    assert str(read_header(old)) == "zone-token/_/1"
    jti = "0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f11"
    assert await west.revoke(ZONE_TOKEN, None, jti, expires_at_ms=0, at=NOW_MS) == (2, True)
    with pytest.raises(Conflict, match="is the newest"):  # a standalone's newest signs
        await before.retire_signing_key(ZONE_TOKEN, None, 1, NOW_MS)
    assert await west.retire_signing_key(ZONE_TOKEN, None, 1, NOW_MS) == (3, True)
    # other tokens are the zone's as before
    user_token, _ = await west.issue_user_token(name="ops", groups=[], valid_for_s=60,
                                                now_ms=NOW_MS)
    assert str(read_header(user_token)) == "user-token/_/1"


async def test_a_zone_token_revocation_belongs_to_no_mesh(event_log: JetStreamEventLog
                                                          ) -> None:
    commands = TokenCommands(event_log, zone="west", secret_key=SecretKey.generate())
    jti = "0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f10"
    with pytest.raises(InvalidResource, match="a zone-token belongs to no mesh"):
        await commands.revoke(ZONE_TOKEN, "default", jti, expires_at_ms=0, at=NOW_MS)
    assert await commands.revoke(ZONE_TOKEN, None, jti, expires_at_ms=0, at=NOW_MS) == (1, True)
    assert await commands.is_revoked(None, jti)


# --- rotation and retirement (Kuma: the next serial signs; deleting the old key refuses its
# tokens) -------------------------------------------------------------------------------------


async def _key_event(event_log: JetStreamEventLog, purpose: TokenPurpose, mesh: str | None,
                     serial: int) -> SigningKeyCreated:
    record = await event_log.last(signing_key_subject(purpose, mesh, serial))
    assert record is not None
    event = decode_event(record.data, seq=record.seq, subject=record.subject)
    assert isinstance(event, SigningKeyCreated)
    return event


async def test_a_rotation_makes_the_next_serial_which_signs_and_the_old_tokens_still_verify(
        event_log: JetStreamEventLog) -> None:
    await _with_mesh(event_log)
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    before, _ = await commands.issue_dataplane_token(mesh="default", name="web-1", tags={},
                                                     valid_for_s=60, now_ms=NOW_MS)
    rotated = await commands.rotate_signing_key(DATAPLANE_TOKEN, "default", NOW_MS)
    assert (str(rotated.kid), rotated.appended) == ("dataplane-token/default/2", True)
    after, _ = await commands.issue_dataplane_token(mesh="default", name="web-1", tags={},
                                                    valid_for_s=60, now_ms=NOW_MS)
    assert str(read_header(before)) == "dataplane-token/default/1"
    assert str(read_header(after)) == "dataplane-token/default/2"
    for token, serial in ((before, 1), (after, 2)):  # each with the public key its kid names
        event = await _key_event(event_log, DATAPLANE_TOKEN, "default", serial)
        assert verify(token, load_public_key(event.public_key), DataplaneClaims,
                      now_s=NOW_MS / 1000).name == "web-1"


async def test_another_replica_signs_with_the_new_serial_at_its_next_token(
        event_log: JetStreamEventLog) -> None:
    secret = SecretKey.generate()
    rotating, other = (TokenCommands(event_log, zone="default", secret_key=secret)
                       for _ in range(2))
    assert str((await other.signing_key(USER_TOKEN, None, NOW_MS)).kid) == "user-token/_/1"
    await rotating.rotate_signing_key(USER_TOKEN, None, NOW_MS)
    token, _ = await other.issue_user_token(name="jane", groups=[], valid_for_s=60,
                                            now_ms=NOW_MS)
    assert str(read_header(token)) == "user-token/_/2"


class _ReadsTogether:
    """The real log, whose `latest` (the read a rotation decides its serial on) answers
    each of `parties` callers only once all of them have read: the interleaving in which
    racing replicas all see the same keys before any of them writes, made certain instead
    of left to the scheduler."""

    def __init__(self, log: JetStreamEventLog, parties: int) -> None:
        self._log = log
        self._barrier = asyncio.Barrier(parties)

    def __getattr__(self, name: str) -> object:
        return getattr(self._log, name)

    async def latest(self, subject_filter: str) -> list[Record]:
        try:
            records = await self._log.latest(subject_filter)
        except BaseException:
            # the others would wait for this read forever (until pytest-timeout): they get
            # BrokenBarrierError now, and the test fails with this read's error
            await self._barrier.abort()
            raise
        await self._barrier.wait()
        return records


async def test_replicas_that_saw_the_same_keys_agree_on_one_new_serial(
        event_log: JetStreamEventLog) -> None:
    secret = SecretKey.generate()
    await TokenCommands(event_log, zone="default", secret_key=secret).signing_key(
        ZONE_TOKEN, None, NOW_MS)
    together = cast(EventLog, _ReadsTogether(event_log, 3))
    replicas = [TokenCommands(together, zone="default", secret_key=secret) for _ in range(3)]
    rotated = await asyncio.gather(*(r.rotate_signing_key(ZONE_TOKEN, None, NOW_MS)
                                     for r in replicas))
    assert {str(r.kid) for r in rotated} == {"zone-token/_/2"}
    assert sum(r.appended for r in rotated) == 1
    assert await event_log.last(signing_key_subject(ZONE_TOKEN, None, 3)) is None


async def test_replicas_racing_to_rotate_never_make_one_serial_twice(
        event_log: JetStreamEventLog) -> None:
    """Left to the scheduler, a replica whose read comes after another's write rotates
    past it (a later rotation, rightly); whatever the interleaving, each serial is made
    once, the serials made follow on from 1 without a gap, and every replica signs with
    the key the log holds under the serial it got."""
    secret = SecretKey.generate()
    replicas = [TokenCommands(event_log, zone="default", secret_key=secret) for _ in range(3)]
    await replicas[0].signing_key(ZONE_TOKEN, None, NOW_MS)
    rotated = await asyncio.gather(*(r.rotate_signing_key(ZONE_TOKEN, None, NOW_MS)
                                     for r in replicas))
    serials = sorted({r.kid.serial for r in rotated})
    assert serials == list(range(2, 2 + len(serials)))
    assert sum(r.appended for r in rotated) == len(serials)
    for replica, r in zip(replicas, rotated, strict=True):
        record = await event_log.last(signing_key_subject(ZONE_TOKEN, None, r.kid.serial))
        assert record is not None and record.seq == r.seq
        token, claims = await replica.issue_zone_token(zone="default", scope=["ingress"],
                                                       valid_for_s=60, now_ms=NOW_MS)
        signer = read_header(token).serial
        assert signer >= r.kid.serial
        event = await _key_event(event_log, ZONE_TOKEN, None, signer)
        assert verify(token, load_public_key(event.public_key), ZoneClaims,
                      now_s=NOW_MS / 1000) == claims
    assert await event_log.last(signing_key_subject(ZONE_TOKEN, None, 2 + len(serials))
                                ) is None


async def test_a_retired_key_is_recorded_on_its_own_subject_once(
        event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await commands.signing_key(USER_TOKEN, None, NOW_MS)
    await commands.rotate_signing_key(USER_TOKEN, None, NOW_MS)
    first = await commands.retire_signing_key(USER_TOKEN, None, 1, NOW_MS)
    again = await commands.retire_signing_key(USER_TOKEN, None, 1, NOW_MS + 1)
    assert first[1] is True and again == (first[0], False)
    record = await event_log.last(signing_key_subject(USER_TOKEN, None, 1))
    assert record is not None and record.seq == first[0]
    assert decode_event(record.data, seq=record.seq, subject=record.subject) == (
        SigningKeyRetired(at=NOW_MS, purpose=USER_TOKEN, serial=1))
    # the next rotation counts the retired serial: serial 3, never 1 again
    assert str((await commands.rotate_signing_key(USER_TOKEN, None, NOW_MS)).kid) == (
        "user-token/_/3")


async def test_the_newest_serial_cannot_be_retired(event_log: JetStreamEventLog) -> None:
    await _with_mesh(event_log)
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await commands.rotate_signing_key(DATAPLANE_TOKEN, "default", NOW_MS)  # serial 1
    with pytest.raises(Conflict, match=r"signing key dataplane-token/default/1 is the newest "
                                       r"of the dataplane-token keys of mesh default"):
        await commands.retire_signing_key(DATAPLANE_TOKEN, "default", 1, NOW_MS)
    await commands.rotate_signing_key(DATAPLANE_TOKEN, "default", NOW_MS)
    with pytest.raises(Conflict, match=r"rotate first .*then retire serial 2"):
        await commands.retire_signing_key(DATAPLANE_TOKEN, "default", 2, NOW_MS)
    assert (await commands.retire_signing_key(DATAPLANE_TOKEN, "default", 1, NOW_MS))[1]


async def test_an_unknown_serial_is_not_found(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    with pytest.raises(NotFound, match=r"signing key user-token/_/1 does not exist \(the "
                                       r"serials of the user-token keys: none yet\)"):
        await commands.retire_signing_key(USER_TOKEN, None, 1, NOW_MS)
    await commands.signing_key(USER_TOKEN, None, NOW_MS)
    with pytest.raises(NotFound, match=r"signing key user-token/_/7 does not exist \(the "
                                       r"serials of the user-token keys: 1\)"):
        await commands.retire_signing_key(USER_TOKEN, None, 7, NOW_MS)


async def test_a_dataplane_key_rotation_needs_its_mesh(event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    with pytest.raises(NotFound, match="mesh 'nope' does not exist"):
        await commands.rotate_signing_key(DATAPLANE_TOKEN, "nope", NOW_MS)
    with pytest.raises(InvalidResource, match="mesh: a user-token belongs to no mesh"):
        await commands.rotate_signing_key(USER_TOKEN, "default", NOW_MS)
    assert await event_log.last_seq() == 0


# --- a mesh's keys go with it (Kuma deletes a mesh's secrets with the mesh) ------------------


async def _recreate(event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.delete("Mesh", None, "default")
    await commands.apply(Mesh(name="default"))


async def _dataplane_kid(commands: TokenCommands) -> str:
    token, _ = await commands.issue_dataplane_token(mesh="default", name="web-1", tags={},
                                                    valid_for_s=60, now_ms=NOW_MS)
    return str(read_header(token))


async def test_a_mesh_made_again_signs_with_a_new_serial_each_time(
        event_log: JetStreamEventLog) -> None:
    """Serials go on across lives (a subject is never written at sequence 0 twice), so no
    kid names two keys: a token of an earlier life names a key the new one never holds."""
    await _with_mesh(event_log)
    secret = SecretKey.generate()
    signing = TokenCommands(event_log, zone="default", secret_key=secret)
    assert await _dataplane_kid(signing) == "dataplane-token/default/1"
    first = (await signing.signing_key(DATAPLANE_TOKEN, "default", NOW_MS)).public_key
    for life in (2, 3):
        await _recreate(event_log)
        # the replica that signed before (its newest key remembered) and a fresh one agree
        fresh = TokenCommands(event_log, zone="default", secret_key=secret)
        assert {await _dataplane_kid(signing), await _dataplane_kid(fresh)} == {
            f"dataplane-token/default/{life}"}
    newest = (await signing.signing_key(DATAPLANE_TOKEN, "default", NOW_MS)).public_key
    assert newest.public_numbers() != first.public_numbers()


async def test_an_update_of_the_mesh_keeps_its_key(event_log: JetStreamEventLog) -> None:
    await _with_mesh(event_log)
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    assert await _dataplane_kid(commands) == "dataplane-token/default/1"
    await Commands(event_log, zone="default").apply(Mesh(name="default", labels={"a": "1"}))
    fresh = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    assert await _dataplane_kid(commands) == "dataplane-token/default/1"
    with pytest.raises(SealedSecretError):  # found the same key, sealed with the first secret
        await _dataplane_kid(fresh)


async def test_replicas_racing_after_the_mesh_is_made_again_make_one_key(
        event_log: JetStreamEventLog) -> None:
    await _with_mesh(event_log)
    secret = SecretKey.generate()
    replicas = [TokenCommands(event_log, zone="default", secret_key=secret) for _ in range(4)]
    await asyncio.gather(*(_dataplane_kid(r) for r in replicas[:2]))  # they remember serial 1
    await _recreate(event_log)
    kids = await asyncio.gather(*(_dataplane_kid(r) for r in replicas))
    assert set(kids) == {"dataplane-token/default/2"}
    assert await event_log.last(signing_key_subject(DATAPLANE_TOKEN, "default", 3)) is None


async def test_a_key_made_while_the_mesh_was_gone_is_not_the_new_meshs(
        event_log: JetStreamEventLog) -> None:
    """A rotation that raced the deletion (past its mesh check, appended after the
    `MeshDeleted`): the fold gives that key no row, and the command side skips it too."""
    await _with_mesh(event_log)
    secret = SecretKey.generate()
    commands = TokenCommands(event_log, zone="default", secret_key=secret)
    await _dataplane_kid(commands)
    await Commands(event_log, zone="default").delete("Mesh", None, "default")
    raced = await SigningKeys(commands.handler, zone="default", secret_key=secret).rotate(
        DATAPLANE_TOKEN, "default", NOW_MS)
    assert str(raced.kid) == "dataplane-token/default/2"
    await Commands(event_log, zone="default").apply(Mesh(name="default"))
    assert await _dataplane_kid(commands) == "dataplane-token/default/3"


async def test_a_key_of_an_earlier_life_cannot_be_retired(event_log: JetStreamEventLog
                                                          ) -> None:
    await _with_mesh(event_log)
    commands = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await commands.rotate_signing_key(DATAPLANE_TOKEN, "default", NOW_MS)
    await commands.rotate_signing_key(DATAPLANE_TOKEN, "default", NOW_MS)
    await Commands(event_log, zone="default").delete("Mesh", None, "default")
    with pytest.raises(NotFound, match="mesh 'default' does not exist: the signing keys of a "
                                       "deleted mesh went with it"):
        await commands.retire_signing_key(DATAPLANE_TOKEN, "default", 1, NOW_MS)
    await Commands(event_log, zone="default").apply(Mesh(name="default"))
    with pytest.raises(NotFound, match=r"signing key dataplane-token/default/1 does not exist "
                                       r"\(the serials of the dataplane-token keys of mesh "
                                       r"default: none yet\); it went with mesh default"):
        await commands.retire_signing_key(DATAPLANE_TOKEN, "default", 1, NOW_MS)
    assert await _dataplane_kid(commands) == "dataplane-token/default/3"
    with pytest.raises(Conflict, match="dataplane-token/default/3 is the newest"):
        await commands.retire_signing_key(DATAPLANE_TOKEN, "default", 3, NOW_MS)
