"""Stored events stay readable: the upcasting path, and a committed log in today's format that
must replay to a committed export forever.

Regenerate the golden export (only for a deliberate change of the read models, never of the
stored format) with MESHLOG_REGENERATE_GOLDEN=1. The committed log itself is written only when
it is missing: it is the old log that must keep replaying. Deliberate changes so far: the
HostnameGenerator rows and the MeshService grace period (issue 5) changed the export, not the
log: its events still decode and fold, they now keep orphaned generated MeshServices for the
default grace period and carry the zone's default generators. Provenance from the event
(issue 9): rows are labelled with the zone of their events' subjects (`default` in this log),
no longer with the zone the replaying projector is configured with. Multi-zone (issue 12): a
log is replayed by its own control plane (zone `default` here); folded by another zone's, its
events would be that zone's remote resources (projections.remote). Fold version 4: every
Dataplane inbound with tags carries `kuma.io/zone: default`, the zone of its event.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any, assert_never

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    SCHEMA_VERSION,
    AnyEvent,
    CaCreated,
    ClockTicked,
    DataplaneDeregistered,
    DataplaneRegistered,
    GracePeriodConfigured,
    HostnameGeneratorApplied,
    HostnameGeneratorDeleted,
    IpamConfigured,
    JetStreamEventLog,
    MeshApplied,
    MeshDeleted,
    MeshMultiZoneServiceApplied,
    MeshMultiZoneServiceDeleted,
    MeshServiceApplied,
    MeshServiceDeleted,
    PolicyApplied,
    PolicyDeleted,
    SequenceSkipped,
    SigningKeyCreated,
    SigningKeyRetired,
    TokenRevoked,
    UndecodableEvent,
    ZoneApplied,
    ZoneDeleted,
    ZoneIngressDeleted,
    ZoneIngressRegistered,
    ca_subject,
    clock_subject,
    decode_event,
    encode_event,
    grace_period_subject,
    ipam_subject,
    kind_of_event,
    resource_subject,
    revocation_subject,
    signing_key_subject,
    skip_subject,
)
from events.commands.zones import zone_subject
from projections import Projector, export_store, open_store

FIXTURES = Path(__file__).parents[1] / "fixtures"
LOG = FIXTURES / "log-v1.jsonl"
EXPORT = FIXTURES / "log-v1.export.json"
REGENERATE = bool(os.environ.get("MESHLOG_REGENERATE_GOLDEN"))

_DP = {"type": "Dataplane", "mesh": "default", "name": "a",
       "networking": {"address": "10.0.0.1", "inbound": [{"port": 80}]}}


def test_upcasters_turn_an_old_shape_into_todays_event() -> None:
    # a made-up schema 1 where the Dataplane travelled as "resource"; today is schema 2
    old = msgspec.json.encode({"event": "dataplane.registered", "at": 5, "resource": _DP})

    def rename(raw: dict[str, Any]) -> dict[str, Any]:
        raw["dataplane"] = raw.pop("resource")
        return raw

    event = decode_event(old, seq=1, subject="s", schema_version=1, upcasters={1: rename},
                         current=2)
    assert isinstance(event, DataplaneRegistered) and event.dataplane.name == "a"


def test_a_missing_upcaster_is_an_undecodable_event_not_garbage() -> None:
    old = msgspec.json.encode({"event": "dataplane.registered", "at": 5, "resource": _DP})
    with pytest.raises(UndecodableEvent, match="no upcaster from schema 1"):
        decode_event(old, seq=7, subject="s", schema_version=1, upcasters={}, current=2)


def test_a_newer_schema_than_this_reader_is_refused() -> None:
    with pytest.raises(UndecodableEvent, match=f"schema version {SCHEMA_VERSION + 1} is not"):
        decode_event(b"{}", seq=1, subject="s", schema_version=SCHEMA_VERSION + 1)


def _write_fixture() -> None:
    from tests.projections._histories import realistic_history

    lines = [json.dumps({"subject": _subject_of(event), "schema": SCHEMA_VERSION,
                         "data": encode_event(event).decode()}, sort_keys=True)
             for event in realistic_history()]
    LOG.write_text("\n".join(lines) + "\n")


def _subject_of(event: AnyEvent) -> str:
    match event:
        case MeshApplied(mesh=mesh):
            return resource_subject("Mesh", None, mesh.name)
        case MeshDeleted(name=name):
            return resource_subject("Mesh", None, name)
        case DataplaneRegistered(dataplane=dp):
            return resource_subject("Dataplane", dp.mesh, dp.name)
        case DataplaneDeregistered(mesh=mesh, name=name):
            return resource_subject("Dataplane", mesh, name)
        case MeshServiceApplied(meshservice=ms):
            return resource_subject("MeshService", ms.mesh, ms.name)
        case MeshServiceDeleted(mesh=mesh, name=name):
            return resource_subject("MeshService", mesh, name)
        case IpamConfigured(kind=kind):
            return ipam_subject(kind)
        case HostnameGeneratorApplied(hostname_generator=hg):
            return resource_subject("HostnameGenerator", None, hg.name)
        case HostnameGeneratorDeleted(name=name):
            return resource_subject("HostnameGenerator", None, name)
        case GracePeriodConfigured(kind=kind):
            return grace_period_subject(kind)
        case ClockTicked(at=at):
            return clock_subject(at)
        case PolicyApplied(policy=policy):  # every policy kind
            return resource_subject(kind_of_event(event).type_name, policy.mesh, policy.name)
        case PolicyDeleted(mesh=mesh, name=name):
            return resource_subject(kind_of_event(event).type_name, mesh, name)
        case MeshMultiZoneServiceApplied(meshmultizoneservice=mmzs):
            return resource_subject("MeshMultiZoneService", mmzs.mesh, mmzs.name)
        case MeshMultiZoneServiceDeleted(mesh=mesh, name=name):
            return resource_subject("MeshMultiZoneService", mesh, name)
        case CaCreated(mesh=mesh, backend=backend):
            return ca_subject(mesh, backend)
        case (SigningKeyCreated(purpose=purpose, mesh=key_mesh, serial=serial)
              | SigningKeyRetired(purpose=purpose, mesh=key_mesh, serial=serial)):
            return signing_key_subject(purpose, key_mesh, serial)
        case TokenRevoked(mesh=token_mesh, jti=jti):
            return revocation_subject(token_mesh, jti)
        case ZoneApplied(name=name) | ZoneDeleted(name=name):
            return zone_subject(name)
        case ZoneIngressRegistered(zoneingress=zi):
            return resource_subject("ZoneIngress", None, zi.name)
        case ZoneIngressDeleted(name=name):
            return resource_subject("ZoneIngress", None, name)
        case SequenceSkipped(seq=seq):
            return skip_subject(seq)
        case _:
            assert_never(event)


async def test_committed_log_replays_to_the_committed_export(nc: NATS, tmp_path: Path) -> None:
    if REGENERATE and not LOG.exists():
        _write_fixture()
    log = await JetStreamEventLog.open(nc)
    js = nc.jetstream()
    records = [json.loads(line) for line in LOG.read_text().splitlines()]
    for record in records:
        await js.publish(record["subject"], record["data"].encode(),
                         headers={"Meshlog-Schema": str(record["schema"])})
    store = await open_store(f"sqlite:///{tmp_path / 'golden.db'}")
    try:
        await asyncio.wait_for(
            Projector(log, store, None, zone="default").run(until_seq=len(records)), timeout=60)
        exported = await export_store(store)
    finally:
        await store.close()
    if REGENERATE:
        EXPORT.write_bytes(exported)
    assert exported == EXPORT.read_bytes(), (
        "the committed log no longer replays to the committed export: a stored format or "
        "the fold changed (see this module's docstring)")


def test_a_failing_upcaster_is_an_undecodable_event() -> None:
    def broken(raw: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("bug")

    with pytest.raises(UndecodableEvent, match="upcaster from schema 1 failed"):
        decode_event(b"{}", seq=1, subject="s", schema_version=1, upcasters={1: broken},
                     current=2)
