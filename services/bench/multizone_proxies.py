"""`meshlog bench multizone --proxies N`: from a Dataplane change in zone west until every
proxy in zone east has ACKed the new endpoints.

Real parts on one host: three `meshlog up` processes (a global control plane and zones `east`
and `west`, each with its own embedded nats-server and JetStream domain, the zones joined over
leafnodes and running with global's secret key), a Mesh with builtin mTLS applied on global
(cross-zone traffic goes through zone ingress, which Kuma allows only with mTLS), a
ZoneIngress registered in west (advertised at 12.0.0.1:10001; no Envoy behind it: nothing
dials it), N Dataplanes `dp-<i>` registered in east over N/10 services, and N simulated
proxies (services/bench/_proxies.py: raw State-of-the-World ADS streams that ACK every
response) connected to east's gateway. East runs `--no-auth`: its proxies send no tokens.

Each round registers (even rounds) or deregisters (odd rounds), through west's API, the one
Dataplane of west's service `target` (the zones run with a grace period of 0, so the
generated `target` goes with it), and measures from just before the request until the
last proxy in east has ACKed an EDS response that shows the change: the synced
`target-<hash>` appearing with west's ingress as its endpoint, or going with it. In the path:
west's append, two JetStream sources (west to global, global to east), east's fold and
publication, east's gateway's push (a new CDS cluster and LDS listener, then its EDS) and
the proxies' ACKs. Each round also notes when east's projection bucket showed the change
(`bucket_*`: the sync's share; the rest is the push to every proxy).

With `--mmzs` the change moves endpoints only: west's `target` is an explicit MeshService
(it stays while its Dataplane goes, Unavailable), a MeshMultiZoneService `target` on global
selects it, and each proxy reaches only that MeshMultiZoneService and its own service
(`reachableBackends`), so a round is west's `target` becoming Available or not, which adds or
removes the MeshMultiZoneService's ingress endpoint group: an EDS-only push.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from events import connect_nats
from events.bus.projection_bus import JetStreamProjectionBus
from events.kds_hash import hashed_name
from services.bench._env import machine, report
from services.bench._fleet import Worker, progress, ready_workers
from services.bench.multizone import up, wait_present
from services.bench.propagation import percentile
from services.runtime.nats_users import role_credentials

__all__ = ["bench_multizone_proxies"]

_ROUND_TIMEOUT_S = 60.0
_INGRESS = "12.0.0.1"
_KEY = f"meshservice/default/{hashed_name('default', 'target', 'west')}"
_MESH = {"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [
    {"name": "ca-1", "type": "builtin", "mode": "STRICT"}]}}


def _marker(address: str) -> bytes:
    """The address as protobuf encodes SocketAddress.address (field 2): an exact match."""
    return b"\x12" + bytes([len(address)]) + address.encode()


def _dataplane(name: str, address: str, service: str, *, mmzs: bool = False
               ) -> dict[str, Any]:
    networking: dict[str, Any] = {
        "address": address, "inbound": [{"port": 8080, "tags": {"kuma.io/service": service}}]}
    if mmzs:
        networking["transparentProxying"] = {"reachableBackends": {"refs": [
            {"kind": "MeshMultiZoneService", "name": "target"},
            {"kind": "MeshService", "name": service}]}}
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": networking}


def _address(i: int, net: int = 10) -> str:
    return f"{net}.{(i >> 16) & 255}.{(i >> 8) & 255}.{(i & 255) or 1}"


async def _put(http: httpx.AsyncClient, url: str, doc: dict[str, Any]) -> None:
    response = await http.put(url, json=doc)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"PUT {url}: {response.status_code} {response.text}")


async def _register_fleet(http: httpx.AsyncClient, east: str, proxies: int, mmzs: bool
                         ) -> None:
    services = max(1, proxies // 10)
    limit = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with limit:
            await _put(http, f"{east}/meshes/default/dataplanes/dp-{i}",
                       _dataplane(f"dp-{i}", _address(i), f"svc-{i % services}", mmzs=mmzs))

    async with asyncio.TaskGroup() as tg:
        for i in range(proxies):
            tg.create_task(one(i))


async def _bucket_changes(bus: JetStreamProjectionBus, changes: list[tuple[float, bool]],
                          mmzs: bool) -> None:
    """(time, present) of every change of west's synced `target` in east's bucket (with
    `mmzs`: present = Available)."""
    async for batch in bus.watch():
        now = time.time()
        for key, value in batch:
            if key == _KEY:
                shown = value is not None and value != b""
                changes.append((now, shown and (not mmzs or b'"Available"' in (value or b""))))


async def bench_multizone_proxies(proxies: int, rounds: int, *, mmzs: bool = False
                                  ) -> dict[str, Any]:
    with TemporaryDirectory(prefix="meshlog-bench-multizone-") as tmp:
        work = Path(tmp)
        async with AsyncExitStack() as stack:
            central = await up(stack, work, "global", "--mode", "global", "--leaf-port", "0")
            key = str(work / "global" / "secret.key")
            # west's generated `target` goes with its Dataplane, in east too: a synced
            # generated MeshService waits out its zone's grace period (default 1 h)
            zones = {z: await up(stack, work, z, "--zone", z, "--global", central["global_url"],
                                 "--secret-key-file", key, "--no-auth",
                                 "--meshservice-grace-period", "0s")
                     for z in ("east", "west")}
            east, west = zones["east"]["api"], zones["west"]["api"]
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            await _put(http, f"{central['api']}/meshes/default", _MESH)
            for zone in zones.values():
                await wait_present(http, f"{zone['api']}/meshes/default")
            await _put(http, f"{west}/zoneingresses/west-ingress", {
                "type": "ZoneIngress", "name": "west-ingress", "networking": {
                    "address": "127.0.0.1", "port": 10001, "advertisedAddress": _INGRESS,
                    "advertisedPort": 10001}})
            if mmzs:
                await _put(http, f"{central['api']}/meshes/default/meshmultizoneservices/target",
                           {"type": "MeshMultiZoneService", "mesh": "default", "name": "target",
                            "spec": {"selector": {"meshService": {"matchLabels": {
                                "kuma.io/display-name": "target"}}}, "ports": [{"port": 8080}]}})
                await _put(http, f"{west}/meshes/default/meshservices/target", {
                    "type": "MeshService", "mesh": "default", "name": "target", "spec": {
                        "selector": {"dataplaneTags": {"kuma.io/service": "target"}},
                        "ports": [{"port": 8080}]}})
                await wait_present(http, f"{east}/meshes/default/meshmultizoneservices/target")
            progress(f"global and two zones up, the Mesh synced; registering {proxies} "
                     "Dataplanes in east")
            await _register_fleet(http, east, proxies, mmzs)
            xds_port = int(zones["east"]["xds"].rpartition(":")[2])
            started = time.monotonic()
            workers = await ready_workers(stack, work, xds_port, proxies)
            progress(f"{proxies} proxies connected to east's gateway and ACKed CDS, EDS, LDS "
                     f"in {time.monotonic() - started:.1f} s; measuring")
            nc = await connect_nats(zones["east"]["nats"], name="meshlog-bench-multizone",
                                    credentials=role_credentials(work / "east", "admin"))
            stack.push_async_callback(nc.close)
            changes: list[tuple[float, bool]] = []
            watching = asyncio.create_task(_bucket_changes(
                await JetStreamProjectionBus.open(nc), changes, mmzs))
            try:
                measured = [await _round(http, west, workers, r, changes)
                            for r in range(rounds)]
            finally:
                watching.cancel()
                await asyncio.wait([watching])
    # the first change after start-up pays for the sources' first deliveries: shown apart
    latencies = [m[0] for m in measured]
    steady = latencies[1:] or latencies
    bucket = [m[1] for m in measured[1:]] or [measured[0][1]]
    figures = {"proxies": proxies, "rounds": rounds, "mmzs": mmzs,
               "first_ms": round(latencies[0], 1),
               "p50_ms": round(percentile(steady, 0.50), 1),
               "p99_ms": round(percentile(steady, 0.99), 1),
               "max_ms": round(max(steady), 1),
               "bucket_p50_ms": round(percentile(bucket, 0.50), 1),
               "bucket_p99_ms": round(percentile(bucket, 0.99), 1), **machine()}
    report("meshlog bench multizone --proxies", figures)
    return figures


async def _round(http: httpx.AsyncClient, west: str, workers: list[Worker], r: int,
                 changes: list[tuple[float, bool]]) -> tuple[float, float]:
    """(ms until every proxy ACKed, ms until east's bucket showed it)."""
    present = r % 2 == 0
    for worker in workers:
        worker.send({"round": r, "marker": _marker(_INGRESS).hex(), "present": present})
    for worker in workers:
        await worker.expect("armed", _ROUND_TIMEOUT_S)
    url = f"{west}/meshes/default/dataplanes/target-1"
    t0 = time.time()
    if present:
        await _put(http, url, _dataplane("target-1", "10.2.0.1", "target"))
    else:
        response = await http.delete(url)
        if response.status_code != 200:
            raise RuntimeError(f"DELETE {url}: {response.status_code} {response.text}")
    done = [await worker.expect("done", _ROUND_TIMEOUT_S) for worker in workers]
    latency_ms = (max(d["max_t"] for d in done) - t0) * 1000
    # the proxies got it from east's bucket, so it is there; this process's watcher of that
    # bucket may only not have told `changes` yet (a loaded machine: seen in a CI run)
    deadline = time.monotonic() + _ROUND_TIMEOUT_S
    while (seen := next((t for t, p in changes if t >= t0 and p == present), None)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("every proxy ACKed a change east's bucket never showed")
        await asyncio.sleep(0.01)
    bucket_ms = (seen - t0) * 1000
    progress(f"round {r + 1}: {'register' if present else 'deregister'} west's target-1: "
             f"in east's bucket after {bucket_ms:.1f} ms, ACKed by every proxy in east "
             f"after {latency_ms:.1f} ms")
    return latency_ms, bucket_ms
