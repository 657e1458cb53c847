"""MeshTrafficPermissions through the one resource command path, against a real nats-server."""

from __future__ import annotations

import pytest

from events import (
    Conflict,
    JetStreamEventLog,
    Mesh,
    MeshTrafficPermission,
    MeshTrafficPermissionApplied,
    MeshTrafficPermissionDeleted,
    NotFound,
    decode_resource,
    resource_subject,
)
from events.commands import Commands, current_of, live_resource


def policy(name: str = "allow-all", mesh: str = "default",
           action: str = "Allow") -> MeshTrafficPermission:
    mtp = decode_resource({
        "type": "MeshTrafficPermission", "mesh": mesh, "name": name,
        "spec": {"from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": action}}]}})
    assert isinstance(mtp, MeshTrafficPermission)
    return mtp


def test_each_policy_has_its_own_subject() -> None:
    assert resource_subject("MeshTrafficPermission", "default", "allow.web") == (
        "meshlog.ev.default.meshtrafficpermission.default.allow_web")


async def test_a_policy_needs_its_mesh(event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    with pytest.raises(NotFound, match="mesh 'nowhere' does not exist"):
        await commands.apply(policy(mesh="nowhere"))


async def test_apply_then_reapply_then_change(event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))

    created = await commands.apply(policy())
    again = await commands.apply(policy())
    changed = await commands.apply(policy(action="Deny"))

    assert created.created and again.unchanged and again.seq == created.seq
    assert changed.seq > created.seq and not changed.created
    record = await event_log.last(resource_subject("MeshTrafficPermission", "default",
                                                   "allow-all"))
    assert record is not None
    event = current_of(record).event
    assert isinstance(event, MeshTrafficPermissionApplied)
    assert live_resource(event) == policy(action="Deny")


async def test_delete_appends_a_deletion_and_then_it_is_gone(
        event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    await commands.apply(policy("short-lived"))

    await commands.delete("MeshTrafficPermission", "default", "short-lived")

    record = await event_log.last(resource_subject("MeshTrafficPermission", "default",
                                                   "short-lived"))
    assert record is not None
    event = current_of(record).event
    assert isinstance(event, MeshTrafficPermissionDeleted)
    assert (event.mesh, event.name) == ("default", "short-lived")
    with pytest.raises(NotFound, match="MeshTrafficPermission 'short-lived' in mesh 'default' "
                                       "does not exist"):
        await commands.delete("MeshTrafficPermission", "default", "short-lived")


async def test_a_mesh_with_policies_cannot_be_deleted(event_log: JetStreamEventLog) -> None:
    """Its policies would otherwise come back, unseen, with the next Mesh of that name."""
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="guarded"))
    await commands.apply(policy("allow-all", mesh="guarded"))

    with pytest.raises(Conflict, match="still has 1 meshtrafficpermissions"):
        await commands.delete("Mesh", None, "guarded")
    await commands.delete("MeshTrafficPermission", "guarded", "allow-all")
    assert (await commands.delete("Mesh", None, "guarded")).seq > 0
