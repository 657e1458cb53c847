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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from events import ClockTicked, DataplaneDeregistered
from events.bus.projection_bus import CHECKPOINT_KEY, ProjectionUpdate
from services.cli.bootstrap import sidecar_bootstrap
from tests._tcp_proxy import tcp_proxy
from tests.harness import Envoy, free_port, run_envoy, wait_for
from tests.xds_gateway._ads import Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.resources import clusters
from xds_gateway.server.callbacks import NoCallbacks, StreamCallbacks, StreamInfo
from xds_gateway.server.subscription import AdsStream
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER

pytestmark = pytest.mark.integration

BACKEND_ADDRESS = "127.0.0.2"
UNBINDABLE = "192.0.2.1"  # TEST-NET-1: never a local address, so Envoy cannot bind it


class GatewayThread:
    """An in-process `Gateway` in a thread of its own; `apply` hands it projection rows."""

    def __init__(self, rows: list[ProjectionUpdate], port: int = 0,
                 callbacks: Sequence[StreamCallbacks] = ()) -> None:
        self._rows = rows
        self._port = port
        self._callbacks = callbacks
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
        self.gateway = Gateway(None, port=self._port, no_auth=True, callbacks=self._callbacks)
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

    def apply(self, rows: list[ProjectionUpdate]) -> None:
        assert self._loop is not None and self.gateway is not None
        self._loop.call_soon_threadsafe(self.gateway.view.apply, rows)

    def call(self, fn: Callable[[], object]) -> None:
        """Run `fn()` in the gateway's loop, between two stream steps."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def stream(self, node_id: str) -> AdsStream[Any] | None:
        assert self.gateway is not None
        return next((s for s in list(self.gateway.streams) if s.node_id == node_id), None)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@contextlib.contextmanager
def serving(rows: list[ProjectionUpdate], port: int = 0,
            callbacks: Sequence[StreamCallbacks] = ()) -> Iterator[GatewayThread]:
    gw = GatewayThread(rows, port, callbacks).start()
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


def _web(port: int, *extra_inbounds: dict[str, Any]) -> dict[str, Any]:
    doc = dataplane("web-1", "127.0.0.1", port, "web")
    doc["networking"]["inbound"].extend(extra_inbounds)
    return doc


def _mesh(projection: Projection, web_port: int) -> list[ProjectionUpdate]:
    return projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", BACKEND_ADDRESS, 8080, "backend")),
        event_for(_web(web_port)),
    ])


@contextlib.contextmanager
def _envoy(gw: GatewayThread, tmp_path: Path, *, delta: bool, xds_port: int | None = None
           ) -> Iterator[Envoy]:
    """Envoy for web-1 against `gw` (or whatever listens on `xds_port`)."""
    bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                  xds_port=xds_port or gw.port, admin_port=0, delta=delta)
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


def test_envoy_gets_clusters_and_listeners_over_delta(
        tmp_path: Path, projection: Projection, web_port: int) -> None:
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=True) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="listeners and endpoints over Delta")
        assert "outbound:241.0.0.1:8080" in envoy.listeners()
        assert type(gw.stream("default.web-1")).__name__ == "DeltaStream"
        wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 1, what="connected")
        _no_rejections(envoy)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_changed_clusters_warm_without_waiting_for_a_timeout(
        tmp_path: Path, projection: Projection, web_port: int, delta: bool) -> None:
    """Rule 9: a port change replaces the backend's cluster; EDS is sent for it, so Envoy
    warms it from the response instead of the 15 s init_fetch_timeout."""
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=delta) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="the initial config")
        stream = gw.stream("default.web-1")
        assert stream is not None
        eds_before = stream.types[ENDPOINT].responses
        gw.apply(projection.fold([
            event_for(dataplane("backend-1", BACKEND_ADDRESS, 8081, "backend"))]))
        # bounds past the 15 s init_fetch_timeout (a loaded machine is slow): that the cluster
        # warmed from a response, not from giving up, is the timeout's counter staying 0
        wait_for(lambda: _cluster_hosts(envoy, "default_backend___msvc_8081") == {
            f"{BACKEND_ADDRESS}:8081"}, timeout=60, what="the new cluster's endpoints")
        wait_for(lambda: _stat(envoy, "cluster_manager.warming_clusters") == 0, timeout=60,
                 what="no warming clusters")
        wait_for(lambda: "default_backend___msvc_8080" not in envoy.admin.get("/clusters").text,
                 timeout=60, what="the old cluster to go")
        assert stream.types[ENDPOINT].responses > eds_before
        assert _stat(envoy, "cluster.default_backend___msvc_8081.init_fetch_timeout") == 0
        assert _stat(envoy, "cluster_manager.cds.init_fetch_timeout") in (0, None)
        _no_rejections(envoy)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_cluster_changed_in_place_warms_from_resent_eds(
        tmp_path: Path, projection: Projection, web_port: int, delta: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
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

        def slower(name: str, *args: Any, **kwargs: Any) -> Any:
            cluster = original(name, *args, **kwargs)
            cluster.connect_timeout.FromSeconds(7)
            return cluster

        def change() -> None:
            monkeypatch.setattr(clusters, "eds_cluster", slower)
            assert gw.gateway is not None
            gw.gateway.cache._entries.clear()  # forget the encoded clusters: rebuild them
            gw.gateway.view.apply([(CHECKPOINT_KEY, b"1000")])  # a new generation

        gw.call(change)

        def timeout_in_envoy() -> bool:
            dump = envoy.config_dump("dynamic_active_clusters")["configs"]
            return any(c["cluster"]["name"] == "default_backend___msvc_8080"
                       and c["cluster"].get("connect_timeout") == "7s" for c in dump)

        # bounds past the 15 s init_fetch_timeout (a loaded machine is slow): that the cluster
        # warmed from a response, not from giving up, is the timeout's counter staying 0
        wait_for(timeout_in_envoy, timeout=60, what="the changed cluster active in Envoy")
        wait_for(lambda: _stat(envoy, "cluster_manager.warming_clusters") == 0, timeout=60,
                 what="no warming clusters")
        wait_for(lambda: cds.acked_version == cds.sent_version, timeout=60,
                 what="the CDS ACK Envoy holds while clusters warm")
        assert _stat(envoy, "cluster.default_backend___msvc_8080.init_fetch_timeout") == 0
        assert eds.responses > eds_before
        assert _cluster_hosts(envoy, "default_backend___msvc_8080") == {f"{BACKEND_ADDRESS}:8080"}
        assert _stat(envoy, "cluster_manager.cluster_modified") == 2
        _no_rejections(envoy)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_rejected_listener_is_nacked_once_without_a_resend_loop(
        tmp_path: Path, projection: Projection, web_port: int, delta: bool) -> None:
    """Rule 3: an inbound on an address Envoy cannot bind makes it NACK the LDS response;
    the gateway books one NACK and sends nothing more; Envoy stays connected."""
    with serving(_mesh(projection, web_port)) as gw, _envoy(gw, tmp_path, delta=delta) as envoy:
        wait_for(lambda: _synced(envoy, web_port), what="the initial config")
        stream = gw.stream("default.web-1")
        assert stream is not None
        gw.apply(projection.fold([event_for(_web(web_port, {
            "port": free_port(), "address": UNBINDABLE, "tags": {"kuma.io/service": "web"}}))]))
        wait_for(lambda: stream.types[LISTENER].nacks == 1, timeout=60, what="one LDS NACK")
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


def test_reconnect_with_initial_versions_changes_nothing(
        tmp_path: Path, projection: Projection, web_port: int) -> None:
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

            def resubscribed() -> AdsStream[Any] | None:
                stream = gw.stream("default.web-1")
                return stream if stream and {CLUSTER, LISTENER, ENDPOINT} <= stream.types.keys() \
                    else None

            stream = wait_for(resubscribed, timeout=60, what="Envoy to reconnect")
            wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 1, what="connected")
            assert {t: s.resources_sent for t, s in stream.types.items()} == {
                CLUSTER: 0, ENDPOINT: 0, LISTENER: 0}
            assert _stat(envoy, "cluster_manager.cluster_modified") == 0
            assert _stat(envoy, "listener_manager.listener_modified") == 0
            _no_rejections(envoy)
    finally:
        gw.stop()


DB_ADDRESS = "127.0.0.3"
DB_CLUSTER = "default_db___msvc_5432"
DB_LISTENER = "outbound:241.0.0.3:5432"
_AFTER_GRACE = 10 * 3_600_000  # ms: past the default 1 h MeshService grace period
_DB_GONE = (DataplaneDeregistered(at=2, mesh="default", name="db-1"),
            ClockTicked(at=_AFTER_GRACE))  # the generated MeshService outlives its Dataplane


class ResponseLog(NoCallbacks):
    """Per ADS stream of web-1, in order: each CDS and LDS response with the names the proxy
    holds once it applies it, and each ACK of an LDS response (by its nonce)."""

    def __init__(self) -> None:
        self.streams: list[list[tuple[str, str, str, frozenset[str]]]] = []
        self._of: dict[StreamInfo, list[tuple[str, str, str, frozenset[str]]]] = {}

    async def on_stream_open(self, stream: StreamInfo) -> None:
        if stream.protocol != "hds" and stream.node is not None \
                and stream.node.id == "default.web-1":
            self._of[stream] = []
            self.streams.append(self._of[stream])

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        log = self._of.get(stream)
        message: Any = request  # a (Delta)DiscoveryRequest: xds-protos ship no types
        if (log is not None and getattr(message, "type_url", "") == LISTENER
                and message.response_nonce and not message.HasField("error_detail")):
            log.append(("ack", LISTENER, message.response_nonce, frozenset()))

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        log = self._of.get(stream)
        if log is None or type_url not in (CLUSTER, LISTENER):
            return
        state = stream.types[type_url]
        holds = (frozenset(n for n, v in state.held.items() if v is not None)
                 if stream.protocol == "delta" else frozenset(state.sent))
        log.append(("response", type_url, nonce, holds))


def _db_left_after_its_listener(log: list[tuple[str, str, str, frozenset[str]]]) -> None:
    """Rule 10 on one stream: no CDS response without db's cluster before the proxy ACKed an
    LDS response without db's listener; and one such CDS response in the end."""
    acked_without_listener = False
    lds_without: set[str] = set()  # nonces of LDS responses without db's listener
    for kind, type_url, nonce, holds in log:
        if kind == "ack":
            acked_without_listener |= nonce in lds_without
        elif type_url == LISTENER and DB_LISTENER not in holds:
            lds_without.add(nonce)
        elif type_url == CLUSTER and DB_CLUSTER not in holds:
            assert acked_without_listener, f"db's cluster left before its listener: {log}"
            return
    raise AssertionError(f"db's cluster never left: {log}")


def _db_served(envoy: Envoy) -> bool:
    return (DB_LISTENER in envoy.listeners()
            and _cluster_hosts(envoy, DB_CLUSTER) == {f"{DB_ADDRESS}:5432"}
            and _stat(envoy, "cluster_manager.warming_clusters") == 0)


def _db_gone(envoy: Envoy) -> bool:
    return (DB_LISTENER not in envoy.listeners()
            and DB_CLUSTER not in envoy.admin.get("/clusters").text)


def _all_acked(gw: GatewayThread) -> bool:
    stream = gw.stream("default.web-1")
    return stream is not None and all(
        stream.types[t].acked_version == stream.types[t].sent_version
        for t in (CLUSTER, LISTENER))


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_a_reconnect_removes_a_cluster_only_after_its_listener(
        tmp_path: Path, projection: Projection, web_port: int, delta: bool) -> None:
    """Rule 10 across a reconnect: Envoy holds db's cluster and listener; its link to the
    gateway is cut; db goes meanwhile; Envoy reconnects. On the new stream db's cluster
    leaves only after Envoy ACKed the listeners without db's. Delta: from Envoy's
    initial_resource_versions; SotW: from its CDS version_info, a set this gateway sent."""
    rows = [*_mesh(projection, web_port),
            *projection.fold([event_for(dataplane("db-1", DB_ADDRESS, 5432, "db"))])]
    responses = ResponseLog()
    with serving(rows, callbacks=(responses,)) as gw, \
            tcp_proxy(("127.0.0.1", gw.port)) as link, \
            _envoy(gw, tmp_path, delta=delta, xds_port=link.port) as envoy:
        wait_for(lambda: _db_served(envoy) and _all_acked(gw), what="db served, all ACKed")
        link.cut()
        wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 0,
                 what="Envoy to see the link go")
        wait_for(lambda: gw.stream("default.web-1") is None, what="the stream to end")
        gw.apply(projection.fold(_DB_GONE))
        wait_for(lambda: gw.gateway is not None
                 and "db" not in gw.gateway.view.meshservices["default"],
                 what="db gone from the gateway's view")
        link.restore()
        wait_for(lambda: _db_gone(envoy), timeout=30, what="db gone from Envoy")
        assert len(responses.streams) == 2
        _db_left_after_its_listener(responses.streams[1])
        _no_rejections(envoy)


def test_a_delta_reconnect_to_a_new_gateway_removes_a_cluster_only_after_its_listener(
        tmp_path: Path, projection: Projection, web_port: int) -> None:
    """The same when the gateway is restarted (so it remembers nothing): Delta needs only
    what Envoy says it holds."""
    rows = [*_mesh(projection, web_port),
            *projection.fold([event_for(dataplane("db-1", DB_ADDRESS, 5432, "db"))])]
    port = free_port()
    gw = GatewayThread(rows, port).start()
    try:
        with _envoy(gw, tmp_path, delta=True) as envoy:
            wait_for(lambda: _db_served(envoy) and _all_acked(gw), what="db served, all ACKed")
            gw.stop()
            wait_for(lambda: _stat(envoy, "control_plane.connected_state") == 0,
                     what="Envoy to see the gateway go")
            responses = ResponseLog()
            gw = GatewayThread([*rows, *projection.fold(_DB_GONE)], port, (responses,)).start()
            wait_for(lambda: _db_gone(envoy), timeout=30, what="db gone from Envoy")
            assert len(responses.streams) == 1
            _db_left_after_its_listener(responses.streams[0])
            _no_rejections(envoy)
    finally:
        gw.stop()
