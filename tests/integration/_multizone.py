"""What test_multizone.py and test_multizone_cut.py share: one global and two zones (east,
west), each a real `meshlog up` with its own embedded nats-server, zones joined to global over
leafnodes, east's link through a proxy the tests can cut, and the helpers both use. The
fixtures are module-scoped: a module that takes them (`planes = _multizone.planes`, not an
import, which ruff would call unused) has control planes of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import connect_nats
from events.bus.sources import zone_filter
from tests._tcp_proxy import TcpProxy, tcp_proxy
from tests.harness import VENV_BIN, ControlPlane, meshlog_up

__all__ = ["WEST_GRACE_S", "_dataplane", "_get", "_meshlog", "joined", "link", "msg_ids_of",
           "planes"]


def _meshlog(*args: str) -> str:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=120, check=True).stdout


WEST_GRACE_S = 15
"""West's grace period for generated MeshServices (east's and global's are the default 1 h):
long enough to see a service waiting in every log on a loaded machine, short enough to see
it go."""


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[dict[str, ControlPlane], TcpProxy]]:
    """Global, east and west by name, and east's leafnode link to global, through a proxy the
    tests can cut."""
    with ExitStack() as stack:
        central = stack.enter_context(meshlog_up(tmp_path_factory.mktemp("global"), "--mode",
                                                 "global", "--leaf-port", "0"))
        url = central.where["global_url"]
        link = stack.enter_context(tcp_proxy(("127.0.0.1", int(url.rpartition(":")[2]))))
        through_proxy = f"{url.rpartition(':')[0]}:{link.port}"
        zones = {zone: stack.enter_context(meshlog_up(
            tmp_path_factory.mktemp(zone), "--zone", zone,
            "--global", through_proxy if zone == "east" else url,
            *(["--meshservice-grace-period", f"{WEST_GRACE_S}s"] if zone == "west" else [])))
            for zone in ("east", "west")}
        yield {"global": central, **zones}, link


@pytest.fixture(scope="module")
def planes(joined: tuple[dict[str, ControlPlane], TcpProxy]) -> dict[str, ControlPlane]:
    return joined[0]


@pytest.fixture(scope="module")
def link(joined: tuple[dict[str, ControlPlane], TcpProxy]) -> TcpProxy:
    """East's leafnode link to global, through a proxy the tests can cut."""
    return joined[1]


def _get(cp: ControlPlane, path: str) -> dict[str, Any] | None:
    response = cp.api.get(path)
    return response.json() if response.status_code == 200 else None


def _dataplane(name: str, service: str, address: str, *, port: int = 8080) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "tags": {"kuma.io/service": service}}]}}


async def msg_ids_of(cp: ControlPlane, zone: str) -> list[str]:
    """The `Nats-Msg-Id` of every event of `zone` in the stream of `cp`, in stream order."""
    nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds,
                            reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info("MESHLOG_EVENTS", subjects_filter=zone_filter(zone))
        total = sum((info.state.subjects or {}).values())
        ids: list[str] = []
        sub = await js.pull_subscribe(zone_filter(zone), stream="MESHLOG_EVENTS",
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE,
                                                            deliver_policy=DeliverPolicy.ALL))
        while len(ids) < total:
            for msg in await sub.fetch(min(256, total - len(ids)), timeout=10):
                ids.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        await sub.unsubscribe()
        return ids
    finally:
        await nc.close()
