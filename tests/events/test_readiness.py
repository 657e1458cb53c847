"""Readiness changes (events.readiness): which registrations are one, the `Meshlog-Readiness-Of`
header the one command path gives them on a real nats-server, and the log's reader that
hands it to the projector."""

from __future__ import annotations

import msgspec
import pytest

from events import (
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    JetStreamEventLog,
    Mesh,
    Record,
    decode_resource,
    resource_subject,
)
from events.commands import Commands, ProxyCommands
from events.readiness import READINESS_HEADER, readiness_change, readiness_in
from events.resources import Health
from tests.projections._histories import dataplane, inbound

WEB = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"), inbound(81, "admin"))


def _with_health(dp: Dataplane, *ready: bool | None) -> Dataplane:
    inbounds = [msgspec.structs.replace(i, health=None if r is None else Health(ready=r))
                for i, r in zip(dp.networking.inbound, ready, strict=True)]
    return msgspec.structs.replace(dp, networking=msgspec.structs.replace(
        dp.networking, inbound=inbounds))


def _registered(dp: Dataplane, origin: str = "api") -> DataplaneRegistered:
    return DataplaneRegistered(at=1, dataplane=dp, origin=origin)  # type: ignore[arg-type]


def test_only_inbound_health_may_change() -> None:
    before = _registered(WEB)
    assert readiness_change(before, _registered(_with_health(WEB, False, None)))
    assert readiness_change(before, _registered(_with_health(WEB, True, False)))
    assert readiness_change(before, _registered(WEB))  # nothing changed at all
    first = WEB.networking.inbound[0]
    moved = msgspec.structs.replace(WEB, networking=msgspec.structs.replace(
        WEB.networking, inbound=[msgspec.structs.replace(first, port=82),
                                 WEB.networking.inbound[1]]))
    not_ready = msgspec.structs.replace(WEB, networking=msgspec.structs.replace(
        WEB.networking, inbound=[msgspec.structs.replace(first, state="NotReady"),
                                 WEB.networking.inbound[1]]))
    fewer = msgspec.structs.replace(WEB, networking=msgspec.structs.replace(
        WEB.networking, inbound=[first]))
    elsewhere = msgspec.structs.replace(WEB, networking=msgspec.structs.replace(
        WEB.networking, address="10.0.0.2"))
    labelled = msgspec.structs.replace(WEB, labels={"team": "a"})
    for other in (moved, not_ready, fewer, elsewhere, labelled):
        assert not readiness_change(before, _registered(other)), other
    assert not readiness_change(before, _registered(WEB, origin="proxy"))
    assert not readiness_change(None, before)
    assert not readiness_change(DataplaneDeregistered(at=1, mesh="default", name="web-1"),
                                before)
    assert not readiness_change(before, DataplaneDeregistered(at=2, mesh="default",
                                                              name="web-1"))


@pytest.mark.parametrize(("raw", "seq"), [
    (b"NATS/1.0\r\nMeshlog-Schema: 1\r\nMeshlog-Readiness-Of: 42\r\n\r\n", 42),
    (b"NATS/1.0\r\nMeshlog-Readiness-Of:7", 7),
    (b"NATS/1.0\r\nMeshlog-Schema: 1\r\n\r\n", 0),
    (b"NATS/1.0\r\nMeshlog-Readiness-Of: x\r\n\r\n", 0),
    (b"NATS/1.0\r\nMeshlog-Readiness-Of: -3\r\n\r\n", 0),
    (b"NATS/1.0\r\nMeshlog-Readiness-Of: 0\r\n\r\n", 0),
])
def test_the_header_is_read_from_the_raw_block(raw: bytes, seq: int) -> None:
    assert readiness_in(raw) == seq


async def _records(log: JetStreamEventLog) -> list[Record]:
    async for batch in log.read(1, max_batch=100):
        return list(batch)
    raise AssertionError("nothing read")


async def test_the_command_path_says_which_event_a_readiness_change_is_one_of(
        event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))  # 1
    probed = decode_resource({
        "type": "Dataplane", "mesh": "default", "name": "p-1", "networking": {
            "address": "127.0.0.1", "inbound": [{
                "port": 80, "tags": {"kuma.io/service": "web"}, "serviceProbe": {"tcp": {}}}]}})
    assert isinstance(probed, Dataplane)
    proxies = ProxyCommands(event_log, zone="default")
    assert await proxies.register(probed, at=1)  # 2
    assert await proxies.report_readiness("default", "p-1", {("127.0.0.1", 80): False},
                                          at=2)  # 3: a readiness change of 2
    assert await proxies.report_readiness("default", "p-1", {("127.0.0.1", 80): True},
                                          at=3)  # 4: of 3
    await commands.apply(WEB)  # 5: a new Dataplane
    await commands.apply(_with_health(WEB, False, True))  # 6: a PUT of readiness only, of 5
    moved = msgspec.structs.replace(WEB, networking=msgspec.structs.replace(
        WEB.networking, address="10.0.0.9"))
    await commands.apply(moved)  # 7: more than readiness

    records = await _records(event_log)
    assert [r.readiness_of for r in records] == [0, 0, 2, 3, 0, 5, 0]
    # the header as stored, which any reader of the log may check
    last = await event_log.last(resource_subject("Dataplane", "default", "p-1"))
    assert last is not None and last.headers.get(READINESS_HEADER) == "3"
    assert records[3].headers.get(READINESS_HEADER) == "3"
    assert READINESS_HEADER not in records[6].headers
