"""`meshlog bench propagation`: how long an endpoint change takes to reach every proxy.

Real parts on one host: an embedded nats-server, a `meshlog projector` process, G `meshlog
gateway` processes behind a real Envoy TCP load balancer (services/bench/_lb.py), and N
simulated proxies (services/bench/_proxies.py: raw SotW ADS streams that ACK every response,
250 per worker process). The fleet: N Dataplanes `dp-<i>`, each of one of N/10 services, and
a `target` service with 4 endpoints; every proxy gets every service of the mesh, the target
included. Each round appends one change to the log (register or deregister a `target`
Dataplane) and measures from just before the append to the moment the last proxy has ACKed
an EDS response that shows it. Also: gateway RSS per connected proxy. Every proxy sends its
own dataplane token, as in a default deployment (the gateways check them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from events import (
    AnyEvent,
    Appended,
    Conflict,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    Inbound,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    PendingAppend,
    encode_event,
    resource_subject,
)
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.trace_context import tracer
from events.commands import TokenCommands
from events.identity import SecretKey
from events.resources import DataplaneNetworking
from services.bench._env import bench_nats, machine, report
from services.bench._fleet import (
    Worker,
    gateways_behind_lb,
    meshlog_process,
    progress,
    projected,
    ready_workers,
    rss_kb,
    while_alive,
)
from services.bench._traces import end_all, traced

__all__ = ["MESH", "TARGET", "address_marker", "bench_propagation", "dataplane_tokens",
           "pending_append", "percentile",
           "seed_fleet", "seq_of"]

MESH = "default"
TARGET = "target"
_ROUND_TIMEOUT_S = 60.0


def _dataplane(name: str, address: str, service: str) -> Dataplane:
    return Dataplane(mesh=MESH, name=name, networking=DataplaneNetworking(
        address=address, inbound=[Inbound(port=8080, name="main", protocol="http",
                                          tags={"kuma.io/service": service})]))


def _address(i: int, net: int = 10) -> str:
    return f"{net}.{(i >> 16) & 255}.{(i >> 8) & 255}.{(i & 255) or 1}"


def pending_append(subject: str, event: AnyEvent, expected: int = 0) -> PendingAppend:
    msg_id = hashlib.sha256(subject.encode() + encode_event(event)).hexdigest()[:32]
    return PendingAppend(subject, event, expected, msg_id)


def address_marker(address: str) -> bytes:
    """The address as protobuf encodes SocketAddress.address (field 2): an exact match."""
    return b"\x12" + bytes([len(address)]) + address.encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


async def bench_propagation(proxies: int, *, gateways: int = 1, rounds: int = 20,
                            nats_url: str | None = None,
                            nats_creds: Path | None = None) -> dict[str, Any]:
    services = max(1, proxies // 10)
    with tempfile.TemporaryDirectory(prefix="meshlog-bench-propagation-") as tmp:
        work = Path(tmp)
        async with bench_nats(nats_url, nats_creds) as nats, AsyncExitStack() as stack:
            nc = await nats.connect("meshlog-bench-propagation")
            stack.push_async_callback(nc.close)
            log = await JetStreamEventLog.open(nc)
            bus = await JetStreamProjectionBus.open(nc)
            progress(f"registering {proxies} Dataplanes over {services} services")
            await seed_fleet(log, proxies, services)
            tokens = await dataplane_tokens(log, proxies, work / "tokens.json")
            last = await log.last_seq()
            projector = await stack.enter_async_context(meshlog_process(
                work, "projector", "projector", *nats.flags(),
                "--database", f"sqlite:///{work / 'readmodels.db'}"))
            await while_alive(projected(bus, last), projector, work / "projector.log")
            progress(f"projected up to sequence {last}; starting {gateways} gateway(s)")
            pids, lb_port = await gateways_behind_lb(stack, work, nats, gateways)
            rss_before = sum(rss_kb(pid) for pid in pids)
            started = time.monotonic()
            workers = await ready_workers(stack, work, lb_port, proxies, "--tokens", str(tokens))
            connect_s = time.monotonic() - started
            rss_after = sum(rss_kb(pid) for pid in pids)
            progress(f"{proxies} proxies connected and ACKed CDS, EDS, LDS in {connect_s:.1f} s")
            probes: dict[str, int] = {}
            latencies = [await _round(log, workers, r, probes) for r in range(rounds)]
    figures = {
        "proxies": proxies,
        "gateways": gateways,
        "rounds": rounds,
        "services": services + 1,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "connect_all_s": round(connect_s, 2),
        "gateway_rss_before_mb": round(rss_before / 1024, 1),
        "rss_kb_per_proxy": round((rss_after - rss_before) / proxies, 1),
        "traced": tracer() is not None,
        **machine(),
    }
    report("meshlog bench propagation", figures)
    return figures


async def seed_fleet(log: JetStreamEventLog, proxies: int, services: int, *,
                     mesh: Mesh | None = None, before: Sequence[PendingAppend] = (),
                     at: int | None = None) -> int:
    """N Dataplanes `dp-<i>` over `services` services, the `target` service's 4, and their
    Mesh (`mesh`, after the `before` appends); the last sequence. With the same `at` (ms;
    default now) the same events with the same Msg-Ids: a seed made again is stored once."""
    at = int(time.time() * 1000) if at is None else at
    appends = [*before, pending_append(resource_subject("Mesh", None, MESH),
                                       MeshApplied(at=at, mesh=mesh or Mesh(name=MESH)))]
    for i in range(proxies):
        dp = _dataplane(f"dp-{i}", _address(i), f"svc-{i % services}")
        appends.append(pending_append(resource_subject("Dataplane", MESH, dp.name),
                               DataplaneRegistered(at=at, dataplane=dp)))
    for k in range(4):
        dp = _dataplane(f"{TARGET}-{k}", _address(k, net=11), TARGET)
        appends.append(pending_append(resource_subject("Dataplane", MESH, dp.name),
                               DataplaneRegistered(at=at, dataplane=dp)))
    results = await log.append_many(appends)
    return max(seq_of(r) for r in results)


async def dataplane_tokens(log: JetStreamEventLog, proxies: int, path: Path) -> Path:
    """A dataplane token per proxy `dp-<i>` (the mesh's signing key made in the log first),
    in a file of `{node id: token}` for the proxy workers: gateways refuse streams without
    one, as a default deployment has it."""
    commands = TokenCommands(log, zone="default", secret_key=SecretKey.generate())
    now = int(time.time() * 1000)
    tokens = {}
    for i in range(proxies):
        tokens[f"{MESH}.dp-{i}"], _ = await commands.issue_dataplane_token(
            mesh=MESH, name=f"dp-{i}", tags={}, valid_for_s=24 * 3600, now_ms=now)
    await asyncio.to_thread(path.write_text, json.dumps(tokens))
    return path


def seq_of(result: Appended | Conflict) -> int:
    if isinstance(result, Conflict):
        raise RuntimeError(f"append refused: {result}")
    return result.seq


async def _round(log: JetStreamEventLog, workers: list[Worker], r: int,
                 probes: dict[str, int]) -> float:
    """Even rounds register probe-<r/2> in `target`; odd rounds deregister it. `probes` holds
    each probe subject's last sequence (the expected sequence of its next append)."""
    k = r // 2
    name = f"probe-{k}"
    address = _address(k + 1, net=12)
    present = r % 2 == 0
    for worker in workers:
        worker.send({"round": r, "marker": address_marker(address).hex(), "present": present})
    for worker in workers:
        await worker.expect("armed", _ROUND_TIMEOUT_S)
    subject = resource_subject("Dataplane", MESH, name)
    at = int(time.time() * 1000)
    event: AnyEvent = (DataplaneRegistered(at=at, dataplane=_dataplane(name, address, TARGET))
                       if present else DataplaneDeregistered(at=at, mesh=MESH, name=name))
    t0 = time.time()
    writes, spans = traced([pending_append(subject, event, probes.get(subject, 0))])
    [result] = await log.append_many(writes)
    end_all(spans)
    probes[subject] = seq_of(result)
    done = [await worker.expect("done", _ROUND_TIMEOUT_S) for worker in workers]
    latency_ms = (max(d["max_t"] for d in done) - t0) * 1000
    progress(f"round {r + 1}: {'register' if present else 'deregister'} {name}: "
              f"{latency_ms:.1f} ms to every proxy")
    return latency_ms


