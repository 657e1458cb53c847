"""Zone tokens issued on global, as Kuma does (`kumactl generate zone-token` against global),
on the command path against a real nats-server: global signs one for a zone registered in its
log, with its own `zone-token` key, whose kid names global (`_global/zone-token/_/<serial>`);
a zone it does not know is refused, naming it and the zones it knows. The key is made once,
opens again after a restart, rotates and retires as every key does."""

from __future__ import annotations

import asyncio

import pytest

from events import GLOBAL_ZONE, InvalidResource, JetStreamEventLog, signing_key_subject
from events.commands import TokenCommands
from events.commands.zones import ZoneCommands
from events.identity import ZONE_TOKEN, SecretKey, ZoneClaims, read_header, verify

NOW_MS = 1_700_000_000_000


async def _global_with(event_log: JetStreamEventLog, *zones: str) -> None:
    for zone in zones:
        await ZoneCommands(event_log).register(zone)


async def test_global_signs_a_registered_zones_token_with_its_own_key(
        event_log: JetStreamEventLog) -> None:
    await _global_with(event_log, "west", "east")
    secret = SecretKey.generate()
    replicas = [TokenCommands(event_log, zone=GLOBAL_ZONE, secret_key=secret) for _ in range(2)]
    issued = await asyncio.gather(*(r.issue_zone_token(
        zone=zone, scope=["ingress"], valid_for_s=60, now_ms=NOW_MS)
        for r, zone in zip(replicas, ("west", "east"), strict=True)))
    key = await replicas[0].signing_key(ZONE_TOKEN, None, NOW_MS)
    assert str(key.kid) == "_global/zone-token/_/1"
    for (token, claims), zone in zip(issued, ("west", "east"), strict=True):
        assert str(read_header(token)) == "_global/zone-token/_/1"
        assert verify(token, key.public_key, ZoneClaims, now_s=NOW_MS / 1000) == claims
        assert (claims.zone, claims.scope) == (zone, ["ingress"])
    record = await event_log.last(signing_key_subject(ZONE_TOKEN, None, 1, GLOBAL_ZONE))
    assert record is not None  # on global's subject, which every zone sources
    # a restart opens the same key (sealed as every key is, under `zone-token/_/1`)
    restarted = TokenCommands(event_log, zone=GLOBAL_ZONE, secret_key=secret)
    again = await restarted.signing_key(ZONE_TOKEN, None, NOW_MS)
    assert str(again.kid) == str(key.kid)
    token, claims = await restarted.issue_zone_token(zone="west", scope=["ingress"],
                                                     valid_for_s=60, now_ms=NOW_MS)
    assert verify(token, key.public_key, ZoneClaims, now_s=NOW_MS / 1000) == claims


async def test_global_refuses_a_zone_it_does_not_know_naming_it(
        event_log: JetStreamEventLog) -> None:
    await _global_with(event_log, "west", "east")
    await ZoneCommands(event_log).delete("east", online=False)
    commands = TokenCommands(event_log, zone=GLOBAL_ZONE, secret_key=SecretKey.generate())
    for zone in ("north", "east"):
        with pytest.raises(InvalidResource) as raised:
            await commands.issue_zone_token(zone=zone, scope=["ingress"], valid_for_s=60,
                                            now_ms=NOW_MS)
        assert (f"zone: {zone!r} is not a zone registered on global (registered: west)"
                in str(raised.value))
    assert await event_log.last(signing_key_subject(ZONE_TOKEN, None, 1, GLOBAL_ZONE)) is None


async def test_globals_zone_token_key_rotates_and_retires_under_its_kid(
        event_log: JetStreamEventLog) -> None:
    await _global_with(event_log, "west")
    commands = TokenCommands(event_log, zone=GLOBAL_ZONE, secret_key=SecretKey.generate())
    await commands.issue_zone_token(zone="west", scope=["ingress"], valid_for_s=60,
                                    now_ms=NOW_MS)
    rotated = await commands.rotate_signing_key(ZONE_TOKEN, None, NOW_MS)
    assert str(rotated.kid) == "_global/zone-token/_/2"
    token, _ = await commands.issue_zone_token(zone="west", scope=["ingress"], valid_for_s=60,
                                               now_ms=NOW_MS)
    assert str(read_header(token)) == "_global/zone-token/_/2"
    _, appended = await commands.retire_signing_key(ZONE_TOKEN, None, 1, NOW_MS)
    assert appended
