"""Token signing keys and revocations on the one command path, against a real nats-server:
a key is created once and found again (kuma#3762), sealed with the secret key, and revoking
twice appends once."""

from __future__ import annotations

import asyncio

import pytest

from events import (
    InvalidResource,
    JetStreamEventLog,
    Mesh,
    NotFound,
    SigningKeyCreated,
    decode_event,
    revocation_subject,
    signing_key_subject,
)
from events.commands import Commands, TokenCommands
from events.identity import (
    DATAPLANE_TOKEN,
    USER_TOKEN,
    ZONE_TOKEN,
    DataplaneClaims,
    SealedSecretError,
    SecretKey,
    UserClaims,
    ZoneClaims,
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


async def test_a_zone_token_is_signed_with_the_zones_own_key_made_once(
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


async def test_a_zone_signs_no_token_of_another_zone_or_unknown_scope(
        event_log: JetStreamEventLog) -> None:
    commands = TokenCommands(event_log, zone="west", secret_key=SecretKey.generate())
    with pytest.raises(InvalidResource) as raised:
        await commands.issue_zone_token(zone="east", scope=["ingress", "sidecar"],
                                        valid_for_s=60, now_ms=NOW_MS)
    message = str(raised.value)
    assert "zone: 'east' is not this control plane's zone ('west')" in message
    assert "scope[1]: 'sidecar' is not a scope" in message
    assert await event_log.last(signing_key_subject(ZONE_TOKEN, None, 1, "west")) is None


async def test_a_zone_token_revocation_belongs_to_no_mesh(event_log: JetStreamEventLog
                                                          ) -> None:
    commands = TokenCommands(event_log, zone="west", secret_key=SecretKey.generate())
    jti = "0b4c7f2e-9a59-4f7c-8a53-2f4f3a7d2f10"
    with pytest.raises(InvalidResource, match="a zone-token belongs to no mesh"):
        await commands.revoke(ZONE_TOKEN, "default", jti, expires_at_ms=0, at=NOW_MS)
    assert await commands.revoke(ZONE_TOKEN, None, jti, expires_at_ms=0, at=NOW_MS) == (1, True)
    assert await commands.is_revoked(None, jti)
