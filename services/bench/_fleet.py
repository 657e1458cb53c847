"""What the fleet benchmarks share (`propagation`, `rotation`): `meshlog` processes, gateways,
and proxy worker processes (services/bench/_proxies.py) spoken to over pipes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec

from events.bus.projection_bus import CHECKPOINT_KEY, JetStreamProjectionBus
from services.bench._env import BenchNats
from services.bench._lb import run_lb
from services.runtime.spawn import spawn

__all__ = [
    "PROXIES_PER_WORKER",
    "SETUP_TIMEOUT_S",
    "Worker",
    "cpu_s",
    "gateway_process",
    "gateways_behind_lb",
    "meshlog_process",
    "progress",
    "projected",
    "proxy_worker",
    "ready_workers",
    "rss_kb",
    "slices",
    "while_alive",
]

PROXIES_PER_WORKER = 250
SETUP_TIMEOUT_S = 600.0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slices(proxies: int) -> list[tuple[int, int]]:
    return [(first, min(PROXIES_PER_WORKER, proxies - first))
            for first in range(0, proxies, PROXIES_PER_WORKER)]


async def projected(bus: JetStreamProjectionBus, seq: int) -> None:
    async for batch in bus.watch():
        for key, value in batch:
            if key == CHECKPOINT_KEY and value is not None and int(value) >= seq:
                return


_WORKER_MESSAGE = msgspec.json.Decoder(dict[str, float])
"""What a proxy worker says: `{"ready": n}`, `{"armed": r}`, `{"done": r, "max_t": t}`."""


class Worker:
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
async def proxy_worker(work: Path, lb_port: int, first: int, count: int, *extra: str
                       ) -> AsyncIterator[Worker]:
    with open(work / f"proxies-{first}.log", "ab") as err:  # noqa: ASYNC230 - set-up only
        proc = await spawn(
            [sys.executable, "-m", "services.bench._proxies", "--xds", f"127.0.0.1:{lb_port}",
             "--first", str(first), "--count", str(count), *extra],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            start_new_session=True)
    stdin, stdout = proc.stdin, proc.stdout
    if stdin is None or stdout is None:
        raise RuntimeError("a proxy worker without pipes")
    try:
        yield Worker(proc, stdin, stdout)
    finally:
        stdin.close()  # the worker ends when its stdin does
        await _stop(proc, within_s=10)


@contextlib.asynccontextmanager
async def meshlog_process(work: Path, name: str, *args: str
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
async def gateway_process(work: Path, nats: BenchNats, g: int
                          ) -> AsyncIterator[tuple[int, int]]:
    """A `meshlog gateway` on a free port; yields (pid, port) once it serves."""
    name = f"gateway-{g}"
    async with meshlog_process(work, name, "gateway", *nats.flags(), "--xds-port", "0",
                        "--max-connection-age", "0", "--health-port", "0") as proc:
        path = work / f"{name}.log"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETUP_TIMEOUT_S
        while loop.time() < deadline and proc.returncode is None:
            for line in path.read_text().splitlines():
                if line.startswith("xDS gateway serving on "):
                    yield proc.pid, int(line.rpartition(":")[2])
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} did not start serving (exit code {proc.returncode}); "
                           f"see {path}: {path.read_text()[-2000:]}")


async def while_alive(waiting: Coroutine[Any, Any, None], proc: asyncio.subprocess.Process,
                      log: Path) -> None:
    """Await `waiting` (set-up) unless the process it depends on exits first, or time is up."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(waiting)
        exited = tg.create_task(proc.wait())
        await asyncio.wait((task, exited), timeout=SETUP_TIMEOUT_S,
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


async def gateways_behind_lb(stack: AsyncExitStack, work: Path, nats: BenchNats,
                             gateways: int) -> tuple[list[int], int]:
    """`gateways` gateway processes and the Envoy load balancer in front of them, kept in
    `stack`: (the gateways' pids, the LB's port)."""
    pids, ports = [], []
    for g in range(gateways):
        pid, port = await stack.enter_async_context(gateway_process(work, nats, g))
        pids.append(pid)
        ports.append(port)
    return pids, await stack.enter_async_context(run_lb(ports, work / "lb"))


async def ready_workers(stack: AsyncExitStack, work: Path, lb_port: int, proxies: int,
                        *extra: str) -> list[Worker]:
    """Proxy worker processes for `proxies` simulated proxies (`extra`: their flags), each
    once its streams are all ready."""
    workers = [await stack.enter_async_context(proxy_worker(work, lb_port, first, count, *extra))
               for first, count in slices(proxies)]
    for worker in workers:
        await worker.expect("ready", SETUP_TIMEOUT_S)
    return workers
