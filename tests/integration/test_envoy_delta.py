"""A real Envoy against an in-process gateway over Delta ADS (and SotW for the shared rules).

The gateway runs in its own thread and event loop, serving a view fed with rows made by the
real fold (tests/xds_gateway/_ads.py `Projection`), so the test body can poll Envoy's admin
API with `wait_for`. Envoy runs from `sidecar_bootstrap(..., delta=True)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.bus.projection_bus import CHECKPOINT_KEY
from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import Envoy, free_port, run_envoy, wait_for
from tests.xds_gateway._ads import Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.resources import clusters
from xds_gateway.server.subscription import AdsStream
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER

pytestmark = pytest.mark.integration

BACKEND_ADDRESS = "127.0.0.2"
UNBINDABLE = "192.0.2.1"  # TEST-NET-1: never a local address, so Envoy cannot bind it


class GatewayThread:
    """An in-process `Gateway` in a thread of its own; `apply` hands it projection rows."""

    def __init__(self, rows: list, port: int = 0) -> None:
        self._rows = rows
        self._port = port
        self._serving = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._serving.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.gateway = Gateway(None, port=self._port, no_auth=True)
        self.gateway.view.apply(self._rows)
        task = asyncio.create_task(self.gateway.serve())
        await self.gateway.serving.wait()
        self._serving.set()
        await self._stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def start(self) -> GatewayThread:
        self._thread.start()
        if not self._serving.wait(30) or self._error is not None:
            raise RuntimeError(f"gateway did not start: {self._error!r}")
        return self

    @property
    def port(self) -> int:
        assert self.gateway is not None and self.gateway.port is not None
        return self.gateway.port

    def apply(self, rows: list) -> None:
        assert self._loop is not None and self.gateway is not None
        self._loop.call_soon_threadsafe(self.gateway.view.apply, rows)

    def call(self, fn) -> None:
        """Run `fn()` in the gateway's loop, between two stream steps."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def stream(self, node_id: str) -> AdsStream | None:
        assert self.gateway is not None
        return next((s for s in list(self.gateway.streams) if s.node_id == node_id), None)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextlib.contextmanager
def serving(rows: list, port: int = 0) -> Iterator[GatewayThread]:
    gw = GatewayThread(rows, port).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def projection() -> Projection:
    return Projection()


@pytest.fixture
def web_port() -> int:
    return free_port()


def _web(port: int, *extra_inbounds: dict) -> dict:
    doc = dataplane("web-1", "127.0.0.1", port, "web")
    doc["networking"]["inbound"].extend(extra_inbounds)
    return doc


def _mesh(projection: Projection, web_port: int) -> list:
    return projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", BACKEND_ADDRESS, 8080, "backend")),
        event_for(_web(web_port)),
    ])


@contextlib.contextmanager
def _envoy(gw: GatewayThread, tmp_path: Path, *, delta: bool) -> Iterator[Envoy]:
    bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                  xds_port=gw.port, admin_port=0, delta=delta)
    with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
        yield envoy


def _stat(envoy: Envoy, name: str) -> int | None:
    return envoy.stats(name).get(name)


def _cluster_hosts(envoy: Envoy, cluster: str) -> set[str]:
    """Hosts of `cluster` in /clusters (`<cluster>::<host>::health_flags::<flags>` lines)."""
    parts = (line.split("::") for line in envoy.admin.get("/clusters").text.splitlines())
    return {p[1] for p in parts if len(p) == 4 and p[0] == cluster and p[2] == "health_flags"}


def _synced(envoy: Envoy, web_port: int) -> bool:
    return (f"inbound:127.0.0.1:{web_port}" in envoy.listeners()
            and _cluster_hosts(envoy, "default_backend___msvc_8080") == {
                f"{BACKEND_ADDRESS}:8080"})


def _no_rejections(envoy: Envoy) -> None:
    rejected = envoy.stats("update_rejected")
    assert rejected, "Envoy reported no update_rejected counters"
    assert all(v == 0 for v in rejected.values()), rejected


def test_envoy_gets_clusters_and_listeners_over_delta(tmp_path, projection, web_port) -> None:
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=True) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="listeners and endpoints over Delta")
        assert "outbound:241.0.0.1:8080" in envoy.listeners()
        assert type(gw.stream("default.web-1")).__name__ == "DeltaStream"
        wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 1, what="connected")
        _no_rejections(envoy)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_changed_clusters_warm_without_waiting_for_a_timeout(tmp_path, projection, web_port,
                                                             delta) -> None:
    """Rule 9: a port change replaces the backend's cluster; EDS is sent for it, so Envoy
    warms it from the response instead of the 15 s init_fetch_timeout."""
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=delta) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="the initial config")
        stream = gw.stream("default.web-1")
        assert stream is not None
        eds_before = stream.types[ENDPOINT].responses
        gw.apply(projection.fold([
            event_for(dataplane("backend-1", BACKEND_ADDRESS, 8081, "backend"))]))
        wait_for(lambda: _cluster_hosts(envoy, "default_backend___msvc_8081") == {
            f"{BACKEND_ADDRESS}:8081"}, timeout=10, what="the new cluster's endpoints")
        wait_for(lambda: _stat(envoy, "cluster_manager.warming_clusters") == 0, timeout=10,
                 what="no warming clusters")
        wait_for(lambda: "default_backend___msvc_8080" not in envoy.admin.get("/clusters").text,
                 timeout=10, what="the old cluster to go")
        assert stream.types[ENDPOINT].responses > eds_before
        assert _stat(envoy, "cluster_manager.cds.init_fetch_timeout") in (0, None)
        _no_rejections(envoy)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_cluster_changed_in_place_warms_from_resent_eds(tmp_path, projection, web_port, delta,
                                                        monkeypatch) -> None:
    """Rule 9, the warming trap: an EDS cluster whose content changes under the same name is
    re-created warming in Envoy, which needs its ClusterLoadAssignment again; without it the
    cluster stays warming for the 15 s init_fetch_timeout and (SotW) the CDS ACK is held.

    No read-model change alters an EDS cluster today, so the generation step changes: the
    cluster builder gets a longer connect timeout, as a new cluster option would."""
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=delta) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="the initial config")
        stream = gw.stream("default.web-1")
        assert stream is not None
        cds, eds = stream.types[CLUSTER], stream.types[ENDPOINT]
        wait_for(lambda: cds.acked_version == cds.sent_version, what="the CDS ACK")
        eds_before = eds.responses
        original = clusters.eds_cluster

        def slower(name: str):
            cluster = original(name)
            cluster.connect_timeout.FromSeconds(7)
            return cluster

        def change() -> None:
            monkeypatch.setattr(clusters, "eds_cluster", slower)
            gw.gateway.cache._entries.clear()  # forget the encoded clusters: rebuild them
            gw.gateway.view.apply([(CHECKPOINT_KEY, b"1000")])  # a new generation

        gw.call(change)

        def timeout_in_envoy() -> bool:
            dump = envoy.config_dump("dynamic_active_clusters")["configs"]
            return any(c["cluster"]["name"] == "default_backend___msvc_8080"
                       and c["cluster"].get("connect_timeout") == "7s" for c in dump)

        wait_for(timeout_in_envoy, timeout=10, what="the changed cluster active in Envoy")
        # well inside the 15 s init_fetch_timeout: warmed from a response, not given up on
        wait_for(lambda: _stat(envoy, "cluster_manager.warming_clusters") == 0, timeout=10,
                 what="no warming clusters")
        wait_for(lambda: cds.acked_version == cds.sent_version, timeout=10,
                 what="the CDS ACK Envoy holds while clusters warm")
        assert eds.responses > eds_before
        assert _cluster_hosts(envoy, "default_backend___msvc_8080") == {f"{BACKEND_ADDRESS}:8080"}
        assert _stat(envoy, "cluster_manager.cluster_modified") == 2
        _no_rejections(envoy)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_rejected_listener_is_nacked_once_without_a_resend_loop(tmp_path, projection, web_port,
                                                                delta) -> None:
    """Rule 3: an inbound on an address Envoy cannot bind makes it NACK the LDS response;
    the gateway books one NACK and sends nothing more; Envoy stays connected."""
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=delta) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="the initial config")
        stream = gw.stream("default.web-1")
        assert stream is not None
        gw.apply(projection.fold([event_for(_web(web_port, {
            "port": free_port(), "address": UNBINDABLE, "tags": {"kuma.io/service": "web"}}))]))
        wait_for(lambda: stream.types[LISTENER].nacks == 1, timeout=10, what="one LDS NACK")
        assert UNBINDABLE in stream.types[LISTENER].last_nack
        assert _stat(envoy, "listener_manager.lds.update_rejected") == 1
        responses = {t: s.responses for t, s in stream.types.items()}
        deadline = time.monotonic() + 2.0  # an observation window: nothing may be re-sent
        while time.monotonic() < deadline:
            assert {t: s.responses for t, s in stream.types.items()} == responses
            assert stream.types[LISTENER].nacks == 1
            time.sleep(0.1)
        assert _stat(envoy, "control_plane.connected_state") == 1
        assert gw.stream("default.web-1") is stream  # the same stream, no reconnect


def test_reconnect_with_initial_versions_changes_nothing(tmp_path, projection, web_port) -> None:
    """Rules 11 and 12: a restarted gateway (same port) gets Envoy's initial_resource_versions
    and sends nothing Envoy already holds."""
    rows = _mesh(projection, web_port)
    port = free_port()
    gw = GatewayThread(rows, port).start()
    try:
        with _envoy(gw, tmp_path, delta=True) as envoy:
            wait_for(lambda: _synced(envoy, web_port), what="the initial config")
            wait_for(lambda: _stat(envoy, "cluster_manager.warming_clusters") == 0,
                     what="no warming clusters")
            gw.stop()
            wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 0,
                     what="Envoy to see the gateway go")
            gw = GatewayThread(rows, port).start()

            def resubscribed() -> AdsStream | None:
                stream = gw.stream("default.web-1")
                return stream if stream and {CLUSTER, LISTENER, ENDPOINT} <= stream.types.keys() \
                    else None

            stream = wait_for(resubscribed, timeout=20, what="Envoy to reconnect")
            wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 1, what="connected")
            assert {t: s.resources_sent for t, s in stream.types.items()} == {
                CLUSTER: 0, ENDPOINT: 0, LISTENER: 0}
            assert _stat(envoy, "cluster_manager.cluster_modified") == 0
            assert _stat(envoy, "listener_manager.listener_modified") == 0
            _no_rejections(envoy)
    finally:
        gw.stop()
