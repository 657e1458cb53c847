"""A zone deleted on global and installed afresh under the same name shows none of its old
install's insights on global (Kuma deletes a zone's insights with the zone): a real global
and two installs of zone `west` one after the other, each a `meshlog up` with its own
nats-server and data dir. The old install's redis-1 connects; west stops and is deleted on
global; the fresh install registers redis-1 again. Before, global showed the old install's
insight, its session and counters, with `syncedFrom.current: true`. Global now refuses a
new install of a registered name (its events could not be resynced from their start:
tests/integration/test_zone_reinstall_events.py), so it shows no redis-1 of west at all,
and none of the old install's insight keys are left in its bucket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.js.errors import NoKeysError

from events import connect_nats
from events.bus.zone_insights import ZONE_INSIGHTS_BUCKET
from events.kds_hash import hashed_name
from tests.harness import ControlPlane, eventually, meshlog_up
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

REDIS: dict[str, Any] = {"type": "Dataplane", "mesh": "default", "name": "redis-1",
         "networking": {"address": "10.2.0.1", "inbound": [
             {"port": 6379, "tags": {"kuma.io/service": "redis"}}]}}
SYNCED = hashed_name("default", "redis-1", "west")


def _insight(central: ControlPlane) -> dict[str, Any] | None:
    """Global's `dataplaneInsight` of west's redis-1, once listed with it."""
    page = central.api.get("/meshes/default/dataplanes+insights?size=1000").json()
    item = next((i for i in page.get("items", []) if i["name"] == SYNCED), None)
    return None if item is None else dict(item["dataplaneInsight"])


async def _redis_in(west: ControlPlane, address: str) -> None:
    """redis-1 registered in `west` at `address`: the fresh install's at another one, so its
    event is not the old install's (with the same content it did not reach global: the same
    decision's Msg-Id within global's duplicate window; docs/status.md, a zone installed
    afresh under a deleted zone's name)."""
    async def mesh() -> bool:
        return west.api.get("/meshes/default").status_code == 200

    await eventually(mesh, "the Mesh in west", within=60)
    west.apply({**REDIS, "networking": {**REDIS["networking"], "address": address}})


async def _west_keys(central: ControlPlane) -> list[str]:
    """West's keys in global's zone-insights bucket."""
    nc = await connect_nats(central.where["nats"], name="test",
                            credentials=central.nats_creds, reconnect=False)
    try:
        kv = await nc.jetstream().key_value(ZONE_INSIGHTS_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        return [k for k in keys if k.startswith("west.")]
    finally:
        await nc.close()


@asynccontextmanager
async def _stream(west: ControlPlane) -> AsyncIterator[None]:
    """redis-1 on an ADS stream to west's gateway, its first clusters ACKed."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{west.xds_port}") as channel:
        ads = AdsClient(channel)
        ads.send(CLUSTER, node_id="default.redis-1")
        ads.ack(await ads.recv())
        try:
            yield
        finally:
            ads.close()


async def test_a_zone_installed_afresh_after_its_deletion_shows_no_old_insight(
        tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "global", "--mode", "global", "--leaf-port", "0") as central:
        url = central.where["global_url"]
        assert central.api.put("/meshes/default", json={"type": "Mesh", "name": "default"}
                               ).status_code in (200, 201)
        with meshlog_up(tmp_path / "west-1", "--zone", "west", "--no-auth",
                        "--global", url) as west:
            await _redis_in(west, "10.2.0.1")
            async with _stream(west):
                async def connected() -> dict[str, Any] | None:
                    insight = _insight(central)
                    return insight if insight and insight.get("connected") else None

                old = await eventually(connected, "redis-1 connected, seen on global",
                                       within=60)
        assert old["subscriptions"]

        async def deleted() -> bool:  # refused (409) while global calls west online
            return central.api.delete("/zones/west").status_code == 200

        await eventually(deleted, "west deleted on global once offline", within=90)

        with meshlog_up(tmp_path / "west-2", "--zone", "west", "--no-auth",
                        "--global", url) as fresh:
            await _redis_in(fresh, "10.2.0.2")

            async def refused() -> bool:
                doc = central.api.get("/zones/west").json()
                return bool(doc.get("refusedInstall"))

            await eventually(refused, "global refusing west's new install", within=60)
            async with _stream(fresh):
                assert _insight(central) is None  # neither install's redis-1 on global
                assert not await _west_keys(central)
