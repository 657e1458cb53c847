"""`meshlog bench multizone`: how long a Dataplane registered in one zone takes to reach what
another zone's gateways serve.

Real parts on one host: three `meshlog up` processes (a global control plane and zones `east`
and `west`, each with its own embedded nats-server and JetStream domain, the zones joined over
leafnodes). Each round registers, through west's API, a Dataplane of a new service, and
measures from just before the request to the moment east's projection bucket (what east's
gateways watch and push from) holds that service's synced MeshService with its VIP and
hostname: west's append, JetStream's sources (west to global, global to east), east's fold
and its publication are in the path; west's projector is not (the API's wait for it runs
beside the sync). Proxies' ACKs are not included here: `--proxies N`
(services/bench/multizone_proxies.py) measures up to every proxy's ACK of the new endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

from events import connect_nats
from events.bus.projection_bus import JetStreamProjectionBus
from events.kds_hash import hashed_name
from services.bench._env import machine, report
from services.bench._fleet import meshlog_process, progress
from services.bench.propagation import percentile
from services.runtime.nats_users import role_credentials

__all__ = ["bench_multizone", "up", "wait_present"]

_TIMEOUT_S = 60.0


async def up(stack: AsyncExitStack, work: Path, name: str, *args: str) -> dict[str, str]:
    data = work / name
    await stack.enter_async_context(meshlog_process(
        work, name, "up", "--data-dir", str(data), "--api-port", "0", "--xds-port", "0", *args))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _TIMEOUT_S
    while loop.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            where: dict[str, str] = json.loads((data / "up.json").read_text())
            return where
        await asyncio.sleep(0.1)
    raise RuntimeError(f"meshlog up {name} did not start; see {work / f'{name}.log'}")


async def wait_present(http: httpx.AsyncClient, url: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _TIMEOUT_S
    while (await http.get(url)).status_code != 200:
        if loop.time() > deadline:
            raise RuntimeError(f"{url} did not appear within {_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)


async def _arrivals(bus: JetStreamProjectionBus, seen: dict[str, float]) -> None:
    """Note when each synced MeshService first shows in east's bucket with an address."""
    async for batch in bus.watch():
        now = time.time()
        for key, value in batch:
            if key.startswith("meshservice/") and value and b'"addresses"' in value:
                seen.setdefault(key, now)


async def bench_multizone(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meshlog-bench-multizone-") as tmp:
        work = Path(tmp)
        async with AsyncExitStack() as stack:
            central = await up(stack, work, "global", "--mode", "global", "--leaf-port", "0")
            zones = {z: await up(stack, work, z, "--zone", z, "--global",
                                  central["global_url"]) for z in ("east", "west")}
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
            mesh = await http.put(f"{central['api']}/meshes/default",
                                  json={"type": "Mesh", "name": "default"})
            mesh.raise_for_status()
            for zone in zones.values():
                await wait_present(http, f"{zone['api']}/meshes/default")
            progress("global and two zones up, the Mesh synced; measuring")
            nc = await connect_nats(zones["east"]["nats"], name="meshlog-bench-multizone",
                                    credentials=role_credentials(work / "east", "admin"))
            stack.push_async_callback(nc.close)
            bus = await JetStreamProjectionBus.open(nc)
            seen: dict[str, float] = {}
            watching = asyncio.create_task(_arrivals(bus, seen))
            try:
                latencies = [await _round(http, zones["west"]["api"], r, seen)
                             for r in range(rounds)]
            finally:
                watching.cancel()
                await asyncio.wait([watching])
    # the first change after start-up pays for the sources' first deliveries (measured up to
    # ~0.9 s): shown apart, the percentiles are of the steady state
    steady = latencies[1:] or latencies
    figures = {"rounds": rounds, "first_ms": round(latencies[0], 1),
               "p50_ms": round(percentile(steady, 0.50), 1),
               "p99_ms": round(percentile(steady, 0.99), 1),
               "max_ms": round(max(steady), 1), **machine()}
    report("meshlog bench multizone", figures)
    return figures


async def _round(http: httpx.AsyncClient, west: str, r: int, seen: dict[str, float]
                 ) -> float:
    service = f"probe-{r}"
    key = f"meshservice/default/{hashed_name('default', service, 'west')}"
    dataplane = {"type": "Dataplane", "mesh": "default", "name": f"{service}-1",
                 "networking": {"address": f"10.2.{r // 250}.{r % 250 + 1}", "inbound": [
                     {"port": 8080, "tags": {"kuma.io/service": service}}]}}
    t0 = time.time()
    response = await http.put(f"{west}/meshes/default/dataplanes/{service}-1", json=dataplane)
    response.raise_for_status()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _TIMEOUT_S
    while key not in seen:
        if loop.time() > deadline:
            raise RuntimeError(f"{key} did not reach east within {_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.002)
    latency_ms = (seen[key] - t0) * 1000
    progress(f"round {r + 1}: {service} in east after {latency_ms:.1f} ms")
    return latency_ms
