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
import contextlib
import hashlib
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec

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
    connect_nats,
    encode_event,
    resource_subject,
)
from events.bus.projection_bus import CHECKPOINT_KEY, JetStreamProjectionBus
from events.commands import TokenCommands
from events.identity import SecretKey
from events.resources import DataplaneNetworking
from services.bench._env import bench_nats, machine, report
from services.bench._lb import run_lb
from services.runtime.spawn import spawn

__all__ = ["bench_propagation"]

MESH = "default"
TARGET = "target"
PROXIES_PER_WORKER = 250
_SETUP_TIMEOUT_S = 600.0
_ROUND_TIMEOUT_S = 60.0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _dataplane(name: str, address: str, service: str) -> Dataplane:
    return Dataplane(mesh=MESH, name=name, networking=DataplaneNetworking(
        address=address, inbound=[Inbound(port=8080, name="main", protocol="http",
                                          tags={"kuma.io/service": service})]))


def _address(i: int, net: int = 10) -> str:
    return f"{net}.{(i >> 16) & 255}.{(i >> 8) & 255}.{(i & 255) or 1}"


def _append(subject: str, event: AnyEvent, expected: int = 0) -> PendingAppend:
    msg_id = hashlib.sha256(subject.encode() + encode_event(event)).hexdigest()[:32]
    return PendingAppend(subject, event, expected, msg_id)


def _marker(address: str) -> bytes:
    """The address as protobuf encodes SocketAddress.address (field 2): an exact match."""
    return b"\x12" + bytes([len(address)]) + address.encode()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


async def bench_propagation(proxies: int, *, gateways: int = 1, rounds: int = 20,
                            nats_url: str | None = None) -> dict[str, Any]:
    services = max(1, proxies // 10)
    with tempfile.TemporaryDirectory(prefix="meshlog-bench-propagation-") as tmp:
        work = Path(tmp)
        async with bench_nats(nats_url) as url, AsyncExitStack() as stack:
            nc = await connect_nats(url, name="meshlog-bench-propagation")
            stack.push_async_callback(nc.close)
            log = await JetStreamEventLog.open(nc)
            bus = await JetStreamProjectionBus.open(nc)
            _progress(f"registering {proxies} Dataplanes over {services} services")
            await _seed(log, proxies, services)
            tokens = await _tokens(log, proxies, work / "tokens.json")
            last = await log.last_seq()
            projector = await stack.enter_async_context(_process(
                work, "projector", "projector", "--nats-url", url,
                "--database", f"sqlite:///{work / 'readmodels.db'}"))
            await _while_alive(_projected(bus, last), projector, work / "projector.log")
            _progress(f"projected up to sequence {last}; starting {gateways} gateway(s)")
            pids, ports = [], []
            for g in range(gateways):
                pid, port = await stack.enter_async_context(_gateway(work, url, g))
                pids.append(pid)
                ports.append(port)
            lb_port = await stack.enter_async_context(run_lb(ports, work / "lb"))
            rss_before = sum(_rss_kb(pid) for pid in pids)
            started = time.monotonic()
            workers = [await stack.enter_async_context(_worker(work, lb_port, first, count,
                                                               tokens))
                       for first, count in _slices(proxies)]
            for worker in workers:
                await worker.expect("ready", _SETUP_TIMEOUT_S)
            connect_s = time.monotonic() - started
            rss_after = sum(_rss_kb(pid) for pid in pids)
            _progress(f"{proxies} proxies connected and ACKed CDS, EDS, LDS in {connect_s:.1f} s")
            probes: dict[str, int] = {}
            latencies = [await _round(log, workers, r, probes) for r in range(rounds)]
    figures = {
        "proxies": proxies,
        "gateways": gateways,
        "rounds": rounds,
        "services": services + 1,
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "connect_all_s": round(connect_s, 2),
        "gateway_rss_before_mb": round(rss_before / 1024, 1),
        "rss_kb_per_proxy": round((rss_after - rss_before) / proxies, 1),
        **machine(),
    }
    report("meshlog bench propagation", figures)
    return figures


def _slices(proxies: int) -> list[tuple[int, int]]:
    return [(first, min(PROXIES_PER_WORKER, proxies - first))
            for first in range(0, proxies, PROXIES_PER_WORKER)]


async def _seed(log: JetStreamEventLog, proxies: int, services: int) -> int:
    at = int(time.time() * 1000)
    appends = [_append(resource_subject("Mesh", None, MESH),
                       MeshApplied(at=at, mesh=Mesh(name=MESH)))]
    for i in range(proxies):
        dp = _dataplane(f"dp-{i}", _address(i), f"svc-{i % services}")
        appends.append(_append(resource_subject("Dataplane", MESH, dp.name),
                               DataplaneRegistered(at=at, dataplane=dp)))
    for k in range(4):
        dp = _dataplane(f"{TARGET}-{k}", _address(k, net=11), TARGET)
        appends.append(_append(resource_subject("Dataplane", MESH, dp.name),
                               DataplaneRegistered(at=at, dataplane=dp)))
    results = await log.append_many(appends)
    return max(_seq(r) for r in results)


async def _tokens(log: JetStreamEventLog, proxies: int, path: Path) -> Path:
    """A dataplane token per proxy (the mesh's signing key made in the log first), in a file
    of `{node id: token}` for the proxy workers."""
    commands = TokenCommands(log, zone="default", secret_key=SecretKey.generate())
    now = int(time.time() * 1000)
    tokens = {}
    for i in range(proxies):
        tokens[f"{MESH}.dp-{i}"], _ = await commands.issue_dataplane_token(
            mesh=MESH, name=f"dp-{i}", tags={}, valid_for_s=24 * 3600, now_ms=now)
    await asyncio.to_thread(path.write_text, json.dumps(tokens))
    return path


def _seq(result: Appended | Conflict) -> int:
    if isinstance(result, Conflict):
        raise RuntimeError(f"append refused: {result}")
    return result.seq


async def _projected(bus: JetStreamProjectionBus, seq: int) -> None:
    async for batch in bus.watch():
        for key, value in batch:
            if key == CHECKPOINT_KEY and value is not None and int(value) >= seq:
                return


async def _round(log: JetStreamEventLog, workers: list[_Worker], r: int,
                 probes: dict[str, int]) -> float:
    """Even rounds register probe-<r/2> in `target`; odd rounds deregister it. `probes` holds
    each probe subject's last sequence (the expected sequence of its next append)."""
    k = r // 2
    name = f"probe-{k}"
    address = _address(k + 1, net=12)
    present = r % 2 == 0
    for worker in workers:
        worker.send({"round": r, "marker": _marker(address).hex(), "present": present})
    for worker in workers:
        await worker.expect("armed", _ROUND_TIMEOUT_S)
    subject = resource_subject("Dataplane", MESH, name)
    at = int(time.time() * 1000)
    event: AnyEvent = (DataplaneRegistered(at=at, dataplane=_dataplane(name, address, TARGET))
                       if present else DataplaneDeregistered(at=at, mesh=MESH, name=name))
    t0 = time.time()
    [result] = await log.append_many([_append(subject, event, probes.get(subject, 0))])
    probes[subject] = _seq(result)
    done = [await worker.expect("done", _ROUND_TIMEOUT_S) for worker in workers]
    latency_ms = (max(d["max_t"] for d in done) - t0) * 1000
    _progress(f"round {r + 1}: {'register' if present else 'deregister'} {name}: "
              f"{latency_ms:.1f} ms to every proxy")
    return latency_ms


_WORKER_MESSAGE = msgspec.json.Decoder(dict[str, float])
"""What a proxy worker says: `{"ready": n}`, `{"armed": r}`, `{"done": r, "max_t": t}`."""


class _Worker:
    """A proxy worker process, spoken to over its stdin and stdout (see _proxies.py)."""

    def __init__(self, proc: asyncio.subprocess.Process, stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader) -> None:
        self.proc = proc
        self._stdin = stdin
        self._stdout = stdout

    def send(self, message: dict[str, int | str | bool]) -> None:
        self._stdin.write((json.dumps(message) + "\n").encode())

    async def expect(self, key: str, within_s: float) -> dict[str, float]:
        line = await asyncio.wait_for(self._stdout.readline(), within_s)
        if not line:
            raise RuntimeError(f"proxy worker {self.proc.pid} exited {self.proc.returncode}")
        message = _WORKER_MESSAGE.decode(line)
        if key not in message:
            raise RuntimeError(f"proxy worker said {message}, expected {key!r}")
        return message


@contextlib.asynccontextmanager
async def _worker(work: Path, lb_port: int, first: int, count: int, tokens: Path
                  ) -> AsyncIterator[_Worker]:
    with open(work / f"proxies-{first}.log", "ab") as err:  # noqa: ASYNC230 - set-up only
        proc = await spawn(
            [sys.executable, "-m", "services.bench._proxies", "--xds", f"127.0.0.1:{lb_port}",
             "--first", str(first), "--count", str(count), "--tokens", str(tokens)],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            start_new_session=True)
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("a proxy worker without pipes")
    try:
        yield _Worker(proc, stdin, stdout)
    finally:
        stdin.close()  # the worker ends when its stdin does
        await _stop(proc, within_s=10)


@contextlib.asynccontextmanager
async def _process(work: Path, name: str, *args: str
                   ) -> AsyncIterator[asyncio.subprocess.Process]:
    """`meshlog <args>` as a child in its own session; SIGTERM at the end."""
    with open(work / f"{name}.log", "ab") as out:  # noqa: ASYNC230 - set-up only
        proc = await spawn([sys.executable, "-m", "services.cli.main", *args],
                           stdout=out, stderr=out, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await _stop(proc, within_s=20)


@contextlib.asynccontextmanager
async def _gateway(work: Path, url: str, g: int) -> AsyncIterator[tuple[int, int]]:
    """A `meshlog gateway` on a free port; yields (pid, port) once it serves."""
    name = f"gateway-{g}"
    async with _process(work, name, "gateway", "--nats-url", url, "--xds-port", "0",
                        "--max-connection-age", "0", "--health-port", "0") as proc:
        path = work / f"{name}.log"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SETUP_TIMEOUT_S
        while loop.time() < deadline and proc.returncode is None:
            for line in path.read_text().splitlines():
                if line.startswith("xDS gateway serving on "):
                    yield proc.pid, int(line.rpartition(":")[2])
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} did not start serving (exit code {proc.returncode}); "
                           f"see {path}: {path.read_text()[-2000:]}")


async def _while_alive(waiting: Coroutine[Any, Any, None], proc: asyncio.subprocess.Process,
                      log: Path) -> None:
    """Await `waiting` (set-up) unless the process it depends on exits first, or time is up."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(waiting)
        exited = tg.create_task(proc.wait())
        await asyncio.wait((task, exited), timeout=_SETUP_TIMEOUT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        exited.cancel()
    if not task.done() or task.cancelled():
        raise RuntimeError(f"{log.stem} exited with {proc.returncode} or stalled; see {log}")


async def _stop(proc: asyncio.subprocess.Process, *, within_s: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
