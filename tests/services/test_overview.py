"""`_overview`, `_config` and `dataplaneProxies.connected`, in process on a real nats-server.

The API app, the projector and (when a test starts one) a gateway with its config responder
share one event loop and one real NATS; requests go through the ASGI app, not a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import httpx
import pytest
from nats.aio.client import Client as NATS

from events import JetStreamEventLog, connect_nats
from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight, TypeInsight
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.requests import XDS_CONFIG_QUEUE, XDS_CONFIG_SUBJECTS, serve_requests
from events.commands import Commands
from projections import Projector, open_store
from services.api.app import create_app
from services.api.proxy_inspector import ProxyInspector
from tests.harness import eventually, run_gateway_process
from tests.xds_gateway._ads import AdsClient
from xds_gateway import Gateway
from xds_gateway.proxies.config_service import ConfigService
from xds_gateway.type_urls import CLUSTER, LISTENER, SECRET

pytestmark = [
    pytest.mark.integration,
    # services/api.py's list routes use litestar's inferred query style; not this test's topic
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]
T = TypeVar("T")
NOW = 1_700_000_000_000


class Plane:
    def __init__(self, nc: NATS, bus: JetStreamProjectionBus, api: httpx.AsyncClient,
                 insights: JetStreamInsights) -> None:
        self.nc, self.bus, self.api, self.insights = nc, bus, api, insights

    async def apply(self, doc: dict[str, Any]) -> None:
        path = ("/meshes/" + doc["name"] if doc["type"] == "Mesh" else
                f"/meshes/{doc['mesh']}/{doc['type'].lower()}s/{doc['name']}")
        response = await self.api.put(path, json=doc)
        assert response.status_code in (200, 201), response.text

    @contextlib.asynccontextmanager
    async def gateway(self) -> AsyncIterator[Gateway]:
        """A gateway following the bus, answering config requests like `meshlog gateway`."""
        gw = Gateway(self.bus, port=0, insights=self.insights, insight_interval_s=0.05,
                     no_auth=True)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(gw.run())]
            await gw.serving.wait()
            tasks.append(tg.create_task(serve_requests(
                self.nc, XDS_CONFIG_SUBJECTS, XDS_CONFIG_QUEUE,
                ConfigService(gw.view, gw.cache).handle)))
            await self.nc.flush()
            try:
                yield gw
            finally:
                for task in tasks:
                    task.cancel()


def _dp(name: str, service: str = "web", port: int = 7070, ip: str = "10.0.0.9") -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": {
        "address": ip, "inbound": [{"port": port, "tags": {"kuma.io/service": service}}]}}


@pytest.fixture
async def plane(nc: NATS, tmp_path: Path) -> AsyncIterator[Plane]:
    event_log = await JetStreamEventLog.open(nc)
    bus = await JetStreamProjectionBus.open(nc)
    db = f"sqlite:///{tmp_path / 'rm.db'}"
    writer, reader = await open_store(db), await open_store(db)
    # a heartbeat counts for 10 minutes here: no test depends on how fast the machine is
    inspector = ProxyInspector(nc, config_timeout_s=2, snapshot_ttl_s=0.2, stale_after_s=600)
    app = create_app(Commands(event_log, zone="default"), reader, inspector=inspector)
    projector = asyncio.create_task(Projector(event_log, writer, bus, zone="default").run())
    # Litestar's scope is a TypedDict, httpx wants a MutableMapping:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            p = Plane(nc, bus, api, await JetStreamInsights.open(nc))
            now = time.time_ns() // 1_000_000
            await p.insights.beat(GatewayHeartbeat(instance="gw-a", address="127.0.0.1:1",
                                                   started_at=now, beat_at=now))
            await p.apply({"type": "Mesh", "name": "default"})
            await p.apply(_dp("web-1"))
            yield p
    finally:
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
        await reader.close()
        await writer.close()


def _insight(name: str = "web-1", **extra: Any) -> ProxyInsight:
    fields: dict[str, Any] = {"mesh": "default", "name": name, "gateway": "gw-a",
                              "session": "s1", "connected_at": NOW, **extra}
    return ProxyInsight(**fields)


async def test_overview_of_a_missing_dataplane_is_a_404_problem(plane: Plane) -> None:
    response = await plane.api.get("/meshes/default/dataplanes/ghost/_overview")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"] == "Dataplane 'ghost' not found in mesh 'default'"


async def test_overview_of_a_proxy_that_never_connected(plane: Plane) -> None:
    doc = (await plane.api.get("/meshes/default/dataplanes/web-1/_overview")).json()
    assert doc["type"] == "DataplaneOverview"
    assert doc["dataplane"] == (await plane.api.get("/meshes/default/dataplanes/web-1")).json()
    assert doc["dataplaneInsight"] == {"connected": False, "subscriptions": []}


async def test_overview_shows_the_subscription_and_per_type_counters(plane: Plane) -> None:
    await plane.insights.put(_insight(protocol="delta", user_agent="envoy/1.40.0", types={
        CLUSTER: TypeInsight(responses_sent=2, acks=1, nacks=1, last_acked_version="v1",
                             last_nack_message="bad cluster"),
        LISTENER: TypeInsight(responses_sent=1, acks=1, last_acked_version="v2"),
        SECRET: TypeInsight(responses_sent=2, acks=2)}))
    insight = (await plane.api.get("/meshes/default/dataplanes/web-1/_overview")
               ).json()["dataplaneInsight"]
    assert insight["connected"] is True
    [sub] = insight["subscriptions"]
    assert sub["controlPlaneInstanceId"] == "gw-a"
    assert sub["connectTime"] == "2023-11-14T22:13:20Z"
    assert "disconnectTime" not in sub
    assert (sub["protocol"], sub["userAgent"]) == ("delta", "envoy/1.40.0")
    assert sub["status"]["cds"] == {"responsesSent": 2, "responsesAcknowledged": 1,
                                    "responsesRejected": 1, "lastAckedVersion": "v1",
                                    "lastNackMessage": "bad cluster"}
    assert sub["status"]["sds"] == {"responsesSent": 2, "responsesAcknowledged": 2,
                                    "responsesRejected": 0}  # Kuma's short names, as cds
    assert sub["status"]["total"] == {"responsesSent": 5, "responsesAcknowledged": 4,
                                      "responsesRejected": 1}


async def test_dataplanes_plus_insights_lists_overviews_from_one_snapshot(plane: Plane) -> None:
    """Kuma's `dataplanes+insights`: each item is what `_overview` answers for it."""
    await plane.apply(_dp("web-2", ip="10.0.0.10"))
    await plane.insights.put(_insight(user_agent="envoy"))
    page = (await plane.api.get("/meshes/default/dataplanes+insights?size=1")).json()
    assert page["total"] == 2 and page["next"] is not None
    [first] = page["items"]
    assert first == (await plane.api.get("/meshes/default/dataplanes/web-1/_overview")).json()
    assert first["dataplaneInsight"]["connected"] is True
    [second] = (await plane.api.get(page["next"])).json()["items"]
    assert second["name"] == "web-2"
    assert second["dataplaneInsight"] == {"connected": False, "subscriptions": []}


async def test_a_proxy_whose_gateway_stopped_beating_is_disconnected(plane: Plane) -> None:
    path = "/meshes/default/dataplanes/web-1/_overview"
    await plane.insights.put(_insight(gateway="gw-dead"))  # it died before its first beat
    insight = (await plane.api.get(path)).json()["dataplaneInsight"]
    assert insight["connected"] is False
    assert insight["subscriptions"][0]["disconnectTime"] == "2023-11-14T22:13:20Z"
    await plane.insights.beat(GatewayHeartbeat(instance="gw-dead", address="127.0.0.1:1",
                                               started_at=NOW, beat_at=NOW + 60_000))
    insight = (await plane.api.get(path)).json()["dataplaneInsight"]
    assert insight["connected"] is False
    assert insight["subscriptions"][0]["disconnectTime"] == "2023-11-14T22:14:20Z"


async def test_overview_answers_when_insights_are_unavailable(plane: Plane, nats_url: str,
                                                              tmp_path: Path) -> None:
    own = await connect_nats(nats_url, name="api-2")
    reader = await open_store(f"sqlite:///{tmp_path / 'rm.db'}")
    app = create_app(Commands(await JetStreamEventLog.open(own), zone="default"), reader,
                     inspector=ProxyInspector(own))
    try:
        # Litestar's scope is a TypedDict, httpx wants a MutableMapping:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                     base_url="http://api") as api:
            path = "/meshes/default/dataplanes/web-1/_overview"
            assert "connected" in (await api.get(path)).json()["dataplaneInsight"]
            await own.close()  # the API lost NATS
            response = await api.get(path)
            assert response.status_code == 200
            doc = response.json()
            assert doc["dataplane"]["name"] == "web-1"
            assert doc["dataplaneInsight"]["unavailable"].startswith("insights unavailable")
        fresh = create_app(Commands(await JetStreamEventLog.open(plane.nc), zone="default"),
                           reader, inspector=ProxyInspector(own))  # never opened the bucket
        # as above:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fresh),  # type: ignore[arg-type]
                                     base_url="http://api") as api:
            doc = (await api.get("/meshes/default/dataplanes/web-1/_overview")).json()
            assert "cannot open insights bucket" in doc["dataplaneInsight"]["unavailable"]
    finally:
        await reader.close()


async def test_an_unreadable_insight_degrades_reads_instead_of_failing_them(
        plane: Plane) -> None:
    kv = await plane.nc.jetstream().key_value("meshlog_insights")
    await kv.put("proxy.default.web-1", b'{"mesh": "default", "name": 7}')
    response = await plane.api.get("/meshes/default/dataplanes/web-1/_overview")
    assert response.status_code == 200
    assert "Expected `str`, got `int` - at `$.name`" in (
        response.json()["dataplaneInsight"]["unavailable"])
    response = await plane.api.get("/meshes/default/meshservices")
    assert response.status_code == 200
    assert response.json()["items"][0]["status"]["dataplaneProxies"]["connected"] == 0


async def test_meshservice_counts_its_connected_dataplanes(plane: Plane) -> None:
    await plane.apply(_dp("web-2", ip="10.0.0.10"))
    await plane.apply(_dp("other-1", service="other", ip="10.0.0.11"))
    await plane.insights.put(_insight("web-1"))
    await plane.insights.put(_insight("other-1"))
    await plane.insights.put(_insight("web-2", disconnected_at=NOW + 1))

    async def counts() -> dict[str, dict[str, Any]] | None:
        one = (await plane.api.get("/meshes/default/meshservices/web")).json()
        items = (await plane.api.get("/meshes/default/meshservices")).json()["items"]
        listed = {i["name"]: i["status"]["dataplaneProxies"] for i in items}
        ok = one["status"]["dataplaneProxies"]["connected"] == 1 and listed["web"] == (
            one["status"]["dataplaneProxies"])
        return listed if ok else None

    listed = await eventually(counts, "web's connected count")
    assert listed["web"] == {"total": 2, "connected": 1, "healthy": 2}
    assert listed["other"]["connected"] == 1

    await plane.insights.put(_insight("web-1", disconnected_at=NOW + 2))

    async def web_gone() -> bool:
        ms = (await plane.api.get("/meshes/default/meshservices/web")).json()
        return cast(int, ms["status"]["dataplaneProxies"]["connected"]) == 0

    await eventually(web_gone, "web's connected count back to 0")


async def test_config_without_a_gateway_is_a_503(plane: Plane) -> None:
    response = await plane.api.get("/meshes/default/dataplanes/web-1/_config")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "no responders" in response.json()["detail"]


async def test_config_of_a_missing_dataplane_is_a_404(plane: Plane) -> None:
    response = await plane.api.get("/meshes/default/dataplanes/ghost/_config")
    assert response.status_code == 404


async def test_config_comes_from_a_gateway(plane: Plane) -> None:
    await plane.apply(_dp("backend-1", service="backend", port=8080, ip="10.0.0.1"))
    async with plane.gateway():
        async def config() -> dict[str, Any] | None:
            response = await plane.api.get("/meshes/default/dataplanes/web-1/_config")
            doc = response.json() if response.status_code == 200 else {}
            clusters = [c["name"] for c in doc.get("xds", {}).get("clusters", [])]
            return doc if "default_backend___msvc_8080" in clusters else None

        doc = await eventually(config, "web-1's config with the backend cluster")
    listeners = {entry["name"]: entry["resource"] for entry in doc["xds"]["listeners"]}
    assert listeners["inbound:10.0.0.9:7070"]["address"]["socketAddress"]["portValue"] == 7070
    assert doc["projectedSequence"] >= 3


async def test_config_of_a_grpc_client_is_computed_as_its_stream_gets_it(plane: Plane) -> None:
    """The API passes the user agent from the proxy's insight: a proxyless gRPC client's
    `_config` holds the api_listener of each target, as its stream does."""
    await plane.apply(_dp("backend-1", service="backend", port=8080, ip="10.0.0.1"))
    await plane.insights.put(_insight(user_agent="gRPC Python 1.70"))
    async with plane.gateway():
        async def config() -> dict[str, Any] | None:
            response = await plane.api.get("/meshes/default/dataplanes/web-1/_config")
            doc = response.json() if response.status_code == 200 else {}
            names = [r["name"] for r in doc.get("xds", {}).get("listeners", [])]
            return doc if "backend:8080" in names else None

        doc = await eventually(config, "web-1's config with its gRPC target")
    assert "backend:8080" in [r["name"] for r in doc["xds"]["routes"]]


async def test_config_comes_from_a_meshlog_gateway_process(plane: Plane, nats_url: str,
                                                           tmp_path: Path) -> None:
    stack = contextlib.ExitStack()
    # started and stopped from a thread: the harness polls, this loop keeps serving NATS
    await asyncio.to_thread(stack.enter_context,
                            run_gateway_process(nats_url, tmp_path, "gw-process"))
    try:
        response = await plane.api.get("/meshes/default/dataplanes/web-1/_config")
        assert response.status_code == 200, response.text
        listeners = [entry["name"] for entry in response.json()["xds"]["listeners"]]
        assert "inbound:10.0.0.9:7070" in listeners
    finally:
        await asyncio.to_thread(stack.close)


async def test_overview_follows_a_real_ads_stream_through_the_gateways_insights(
        plane: Plane) -> None:
    path = "/meshes/default/dataplanes/web-1/_overview"

    async def insight_where(check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        async def read() -> dict[str, Any] | None:
            doc = (await plane.api.get(path)).json()["dataplaneInsight"]
            return doc if doc.get("subscriptions") and check(doc) else None

        return await eventually(read, what)

    async with plane.gateway() as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            client = AdsClient(channel)
            client.send(CLUSTER, node_id="default.web-1")
            client.ack(await client.recv())
            doc = await insight_where(
                lambda d: d["subscriptions"][0]["status"].get("cds", {}).get(
                    "responsesAcknowledged") == 1, "the CDS ACK in the overview")
            sub = doc["subscriptions"][0]
            assert doc["connected"] is True
            assert sub["controlPlaneInstanceId"] == gw.lifecycle.instance
            assert sub["status"]["cds"]["responsesSent"] == 1
            assert "disconnectTime" not in sub

            client.send(LISTENER)
            lds = await client.recv()
            client.send(LISTENER, nonce=lds.nonce, error="listener rejected by the test")
            doc = await insight_where(
                lambda d: d["subscriptions"][0]["status"].get("lds", {}).get(
                    "responsesRejected") == 1, "the LDS NACK in the overview")
            assert doc["subscriptions"][0]["status"]["lds"]["lastNackMessage"] == (
                "listener rejected by the test")

            async def web_connected() -> bool:
                ms = (await plane.api.get("/meshes/default/meshservices/web")).json()
                return cast(int, ms["status"]["dataplaneProxies"]["connected"]) == 1

            await eventually(web_connected, "MeshService web counting the stream")
            client.close()
            doc = await insight_where(lambda d: not d["connected"], "the disconnect")
            assert "disconnectTime" in doc["subscriptions"][0]


@contextlib.contextmanager
def _nats_paused(tmp_path: Path) -> Iterator[None]:
    """The test's nats-server stopped (SIGSTOP) then resumed: a bus that hangs, for real."""
    [ports] = (tmp_path / "nats" / "ports").glob("*.ports")
    pid = int(ports.stem.rpartition("_")[2])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_reads_waiting_on_a_hung_insights_scan_do_not_each_wait_it_out(
        plane: Plane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await plane.apply({"type": "MeshService", "mesh": "default", "name": "api", "spec": {
        "selector": {"dataplaneTags": {"kuma.io/service": "web"}},
        "ports": [{"port": 80, "targetPort": 7070}]}})
    assert (await plane.api.get("/meshes/default/meshservices")).status_code == 200
    scans = 0
    snapshot = JetStreamInsights.snapshot

    async def counted(insights: JetStreamInsights) -> tuple[
            dict[tuple[str, str], ProxyInsight], dict[str, GatewayHeartbeat]]:
        nonlocal scans
        scans += 1
        return await snapshot(insights)

    monkeypatch.setattr(JetStreamInsights, "snapshot", counted)
    with _nats_paused(tmp_path):
        await asyncio.sleep(0.3)  # past the snapshot's 0.2 s ttl: the next read scans
        responses = await asyncio.gather(*(plane.api.get("/meshes/default/meshservices/api")
                                           for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    # one bounded scan (2 s here) for the burst, not one per queued read: counted, not timed
    # (how long the burst took depends on how loaded the machine is)
    assert scans == 1
