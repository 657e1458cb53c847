"""The refusal of writes to synced resources (`events.commands.synced`) where the other
control plane's record cannot be read by this release: a real nats-server, one log."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from events import (
    GLOBAL_ZONE,
    Conflict,
    JetStreamEventLog,
    Mesh,
    WrongControlPlane,
    encode_event,
    now_ms,
    resource_subject,
)
from events.commands import Commands
from events.event_types import MeshTrafficPermissionApplied
from tests.events.test_mtp_commands import policy


async def _zone(event_log: JetStreamEventLog) -> Commands:
    await Commands(event_log, zone="east").apply(Mesh(name="default"))
    return Commands(event_log, zone="east", deployment="zone")


async def test_a_zone_refuses_the_name_of_globals_resource(event_log: JetStreamEventLog,
                                                           nc: NATS) -> None:
    commands = await _zone(event_log)
    subject = resource_subject("MeshTrafficPermission", "default", "allow-all", GLOBAL_ZONE)
    await nc.jetstream().publish(subject, encode_event(MeshTrafficPermissionApplied(
        at=now_ms(), policy=policy())), headers={"Meshlog-Schema": "1"})

    with pytest.raises(WrongControlPlane, match="synced from the global control plane"):
        await commands.apply(policy(action="Deny"))
    assert await event_log.last(resource_subject(
        "MeshTrafficPermission", "default", "allow-all", "east")) is None


async def test_a_record_of_globals_this_release_cannot_read_refuses_the_write(
        event_log: JetStreamEventLog, nc: NATS) -> None:
    """As when global is upgraded first: its record may be a live resource of that name."""
    commands = await _zone(event_log)
    subject = resource_subject("MeshTrafficPermission", "default", "allow-all", GLOBAL_ZONE)
    await nc.jetstream().publish(subject, b'{"type": "meshtrafficpermission.applied.v9"}',
                                 headers={"Meshlog-Schema": "99"})

    with pytest.raises(Conflict, match=rf"{subject} cannot be read by this release"):
        await commands.apply(policy())
    with pytest.raises(Conflict, match="cannot be read by this release"):
        await commands.delete("MeshTrafficPermission", "default", "allow-all")
    assert await event_log.last(resource_subject(
        "MeshTrafficPermission", "default", "allow-all", "east")) is None
    # another name is the zone's to write
    assert (await commands.apply(policy(name="zone-own"))).created
