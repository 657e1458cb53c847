"""`meshlog bench rotation`: a rotation wave, from the log to every proxy's ACK.

Real parts on one host, as `bench propagation` (services/bench/propagation.py): an embedded
nats-server, a `meshlog projector` process with the secret key, `meshlog gateway` process(es)
behind an Envoy TCP load balancer, and N simulated proxies that subscribe, as Envoy does in a
mesh with mTLS, to their secrets by SDS (`_proxies.py --sds`). The mesh has mTLS on with a
builtin CA.

Each round re-issues every certificate of the mesh: it applies the Mesh with another
`dpCert.rotation.expiration` (24h, then 23h, ...), which starts a new issuing window, the
same work as a natural renewal (`ClockTicked` at `renew_at`) but at a moment the benchmark
chooses. Measured: from just before the append to the moment the last proxy has ACKed an SDS
response with a new identity certificate; the CPU the projector (issuing N certificates) and
the gateways (pushing N secrets) used meanwhile.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from events import (
    CaCreated,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    ca_purpose,
    ca_subject,
    decode_resource,
    resource_subject,
)
from events.bus.projection_bus import JetStreamProjectionBus
from events.identity import SecretKey
from events.identity.pki import create_ca
from services.bench._env import bench_nats, machine, report
from services.bench._fleet import (
    Worker,
    cpu_s,
    gateways_behind_lb,
    meshlog_process,
    progress,
    projected,
    ready_workers,
    while_alive,
)
from services.bench.propagation import (
    MESH,
    dataplane_tokens,
    pending_append,
    percentile,
    seed_fleet,
    seq_of,
)

__all__ = ["bench_rotation"]

_ROUND_TIMEOUT_S = 120.0
BACKEND = "ca-1"


def _mesh(expiration_h: int) -> Mesh:
    mesh = decode_resource({"type": "Mesh", "name": MESH, "mtls": {
        "enabledBackend": BACKEND, "backends": [{
            "name": BACKEND, "type": "builtin",
            "dpCert": {"rotation": {"expiration": f"{expiration_h}h"}}}]}})
    assert isinstance(mesh, Mesh)
    return mesh


async def bench_rotation(proxies: int, *, gateways: int = 1, rounds: int = 3,
                         nats_url: str | None = None,
                         nats_creds: Path | None = None) -> dict[str, Any]:
    services = max(1, proxies // 10)
    with tempfile.TemporaryDirectory(prefix="meshlog-bench-rotation-") as tmp:
        work = Path(tmp)
        key_file = work / "secret.key"
        secret_key = SecretKey.load_or_create(key_file)
        async with bench_nats(nats_url, nats_creds) as nats, AsyncExitStack() as stack:
            nc = await nats.connect("meshlog-bench-rotation")
            stack.push_async_callback(nc.close)
            log = await JetStreamEventLog.open(nc)
            bus = await JetStreamProjectionBus.open(nc)
            at = int(time.time() * 1000)
            cert, ca_key = create_ca(MESH, BACKEND, at)
            ca = pending_append(ca_subject(MESH, BACKEND), CaCreated(
                at=at, mesh=MESH, backend=BACKEND, type="builtin", cert=cert,
                key=secret_key.seal(ca_key, purpose=ca_purpose(MESH, BACKEND))))
            progress(f"registering {proxies} Dataplanes in a mesh with mTLS")
            await seed_fleet(log, proxies, services, mesh=_mesh(24), before=[ca])
            tokens = await dataplane_tokens(log, proxies, work / "tokens.json")
            last = await log.last_seq()
            projector = await stack.enter_async_context(meshlog_process(
                work, "projector", "projector", *nats.flags(), "--secret-key-file",
                str(key_file), "--database", f"sqlite:///{work / 'readmodels.db'}"))
            started = time.monotonic()
            await while_alive(projected(bus, last), projector, work / "projector.log")
            issue_s = time.monotonic() - started
            progress(f"projected up to sequence {last} ({proxies + 4} certificates issued) in "
                     f"{issue_s:.1f} s; starting {gateways} gateway(s)")
            pids, lb_port = await gateways_behind_lb(stack, work, nats, gateways)
            workers = await ready_workers(stack, work, lb_port, proxies, "--sds", "--tokens",
                                          str(tokens))
            progress(f"{proxies} proxies connected and ACKed CDS, EDS, LDS and SDS")
            mesh_seq = [await _mesh_seq(log)]
            waves = [await _wave(log, workers, r, mesh_seq, projector.pid, pids)
                     for r in range(rounds)]
    latencies = [w[0] for w in waves]
    figures = {
        "proxies": proxies,
        "gateways": gateways,
        "rounds": rounds,
        "wave_p50_ms": round(percentile(latencies, 0.5), 1),
        "wave_max_ms": round(max(latencies), 1),
        "projector_cpu_s_per_wave": round(max(w[1] for w in waves), 2),
        "gateway_cpu_s_per_wave": round(max(w[2] for w in waves), 2),
        "gateway_cpu_share_during_wave": round(max(w[2] / (w[0] / 1000) for w in waves), 2),
        **machine(),
    }
    report("meshlog bench rotation", figures)
    return figures


async def _mesh_seq(log: JetStreamEventLog) -> int:
    record = await log.last(resource_subject("Mesh", None, MESH))
    assert record is not None
    return record.seq


async def _wave(log: JetStreamEventLog, workers: list[Worker], r: int, mesh_seq: list[int],
                projector: int, gateways: list[int]) -> tuple[float, float, float]:
    """(ms until every proxy ACKed its new certificate, projector CPU s, gateways CPU s)."""
    for worker in workers:
        worker.send({"round": r, "secret": True})
    for worker in workers:
        await worker.expect("armed", _ROUND_TIMEOUT_S)
    cpu_before = cpu_s(projector), sum(cpu_s(pid) for pid in gateways)
    subject = resource_subject("Mesh", None, MESH)
    t0 = time.time()
    [result] = await log.append_many([pending_append(subject, MeshApplied(
        at=int(t0 * 1000), mesh=_mesh(23 - r % 2)), mesh_seq[-1])])
    mesh_seq.append(seq_of(result))
    done = await asyncio.gather(*(w.expect("done", _ROUND_TIMEOUT_S) for w in workers))
    latency_ms = (max(d["max_t"] for d in done) - t0) * 1000
    projector_s = cpu_s(projector) - cpu_before[0]
    gateway_s = sum(cpu_s(pid) for pid in gateways) - cpu_before[1]
    progress(f"wave {r + 1}: every proxy ACKed its new certificate in {latency_ms:.0f} ms "
             f"(projector {projector_s:.2f} s CPU, gateways {gateway_s:.2f} s CPU)")
    return latency_ms, projector_s, gateway_s
