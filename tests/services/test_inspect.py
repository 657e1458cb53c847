"""`meshlog inspect dataplane` against a real `meshlog up` (embedded NATS, gateway, API)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest

from events import connect_nats
from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight, TypeInsight
from services.cli.main import main
from tests.harness import ControlPlane, meshlog_up, wait_for
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER, LISTENER, SECRET

pytestmark = pytest.mark.integration


def _dp(name: str, service: str, port: int, ip: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": {
        "address": ip, "inbound": [{"port": port, "tags": {"kuma.io/service": service}}]}}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("inspect")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        plane.apply(_dp("web-1", "web", 7070, "10.0.0.9"))
        plane.apply(_dp("backend-1", "backend", 8080, "10.0.0.1"))
        plane.apply(_dp("idle-1", "idle", 9090, "10.0.0.2"))
        yield plane


def _put_insight(cp: ControlPlane, insight: ProxyInsight) -> None:
    """Write an insight and a fresh heartbeat of its gateway, as a live gateway would."""
    async def put() -> None:
        nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds)
        try:
            insights = await JetStreamInsights.open(nc)
            await insights.put(insight)
            now = time.time_ns() // 1_000_000
            await insights.beat(GatewayHeartbeat(instance=insight.gateway, address="-",
                                                 started_at=now, beat_at=now))
        finally:
            await nc.close()

    asyncio.run(put())


def _inspect(cp: ControlPlane, capsys: pytest.CaptureFixture[str], *args: str
             ) -> tuple[int, str, str]:
    code = main(["--api", cp.where["api"], "inspect", "dataplane", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _row(out: str, first: str) -> list[str]:
    """The whitespace-separated cells of the table line starting with `first`."""
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [first])


def test_a_proxy_that_never_connected(cp: ControlPlane, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    code, out, _ = _inspect(cp, capsys, "idle-1")
    assert code == 0
    assert _row(out, "DATAPLANE") == ["DATAPLANE", "default/idle-1"]
    assert _row(out, "CONNECTED")[1:] == ["no", "(never", "connected)"]


def test_a_connected_proxy_shows_gateway_and_per_type_counters(
        cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
    _put_insight(cp, ProxyInsight(
        mesh="default", name="web-1", gateway="gw-test", session="s1",
        connected_at=1_700_000_000_000, types={
            CLUSTER: TypeInsight(responses_sent=2, acks=1, nacks=1, last_acked_version="v1",
                                 last_nack_message="bad cluster"),
            LISTENER: TypeInsight(responses_sent=1, acks=1, last_acked_version="v2"),
            SECRET: TypeInsight(responses_sent=2, acks=2, last_acked_version="v3")}))
    code, out, _ = _inspect(cp, capsys, "web-1", "--mesh", "default")
    assert code == 0
    assert _row(out, "CONNECTED") == ["CONNECTED", "yes"]
    assert _row(out, "GATEWAY") == ["GATEWAY", "gw-test"]
    assert "CONNECTED SINCE  2023-11-14T22:13:20Z" in out
    assert _row(out, "cds") == ["cds", "2", "1", "1", "v1", "bad", "cluster"]
    assert _row(out, "lds") == ["lds", "1", "1", "0", "v2", "-"]
    assert _row(out, "sds") == ["sds", "2", "2", "0", "v3", "-"]  # short, like cds and lds
    assert _row(out, "total") == ["total", "5", "4", "1"]
    assert "type.googleapis.com" not in out


def test_json_output_is_the_api_overview(cp: ControlPlane,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _inspect(cp, capsys, "backend-1", "-o", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc == cp.api.get("/meshes/default/dataplanes/backend-1/_overview").json()
    assert doc["dataplane"]["networking"]["address"] == "10.0.0.1"


def test_config_lists_the_resources_the_gateway_computes(
        cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _inspect(cp, capsys, "web-1", "--config")
    assert code == 0
    assert _row(out, "default/web-1")[:3] == ["default/web-1", "at", "sequence"]
    rows = [line.split() for line in out.splitlines()]
    assert ["listeners", "inbound:10.0.0.9:7070"] in [r[:2] for r in rows]
    assert ["clusters", "default_backend___msvc_8080"] in [r[:2] for r in rows]
    assert ["endpoints", "default_backend___msvc_8080"] in [r[:2] for r in rows]


def test_config_as_yaml_holds_the_envoy_resources(
        cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    code, out, _ = _inspect(cp, capsys, "web-1", "--config", "-o", "yaml")
    assert code == 0
    doc = yaml.safe_load(out)
    inbound = next(e for e in doc["xds"]["listeners"] if e["name"] == "inbound:10.0.0.9:7070")
    assert inbound["resource"]["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"


def test_an_unknown_dataplane_is_a_clear_error(cp: ControlPlane,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _inspect(cp, capsys, "ghost")
    assert code == 1
    assert "Dataplane 'ghost' not found in mesh 'default'" in err


def test_only_dataplanes_zone_ingresses_and_zones_can_be_inspected(cp: ControlPlane) -> None:
    with pytest.raises(SystemExit, match="inspect knows dataplane, zoneingress and zone only"):
        main(["--api", cp.where["api"], "inspect", "meshservice", "web"])


def test_inspect_sees_a_live_ads_stream_on_the_gateway_of_meshlog_up(
        cp: ControlPlane, capsys: pytest.CaptureFixture[str]) -> None:
    def acked() -> bool:
        doc = cp.api.get("/meshes/default/dataplanes/backend-1/_overview").json()
        subs = doc["dataplaneInsight"].get("subscriptions") or [{}]
        acks = subs[0].get("status", {}).get("cds", {}).get("responsesAcknowledged")
        return cast("int | None", acks) == 1

    token = cp.dataplane_token("backend-1")

    async def stream_then_inspect() -> tuple[int, str, str]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
            client = AdsClient(channel, (("authorization", token),))
            client.send(CLUSTER, node_id="default.backend-1")
            client.ack(await client.recv())
            # the API is polled from a thread: this loop keeps the stream going meanwhile
            await asyncio.to_thread(wait_for, acked, what="the CDS ACK in the overview")
            result = await asyncio.to_thread(_inspect, cp, capsys, "backend-1")
            client.close()
            return result

    code, out, _ = asyncio.run(stream_then_inspect())
    assert code == 0
    assert _row(out, "CONNECTED") == ["CONNECTED", "yes"]
    assert _row(out, "GATEWAY")[1].startswith("gw-")
    assert _row(out, "cds")[1:4] == ["1", "1", "0"]
