"""Children start cleanly from a process busy with gRPC (services/runtime/spawn.py).

With a pre-exec hook, CPython forks and runs gRPC's at-fork handlers in the child; with gRPC
threads at work that child could abort (SIGABRT after "epoll_wait error: Bad file
descriptor") or crash before exec. Here one process serves and calls gRPC without pause while
it starts and stops nats-server and Envoy many times; every start must reach exec and serve,
every stop must be a clean exit on our SIGTERM, and no gRPC call may fail meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest

from services.runtime import embedded_nats
from services.runtime.spawn import ChildOptions, spawn
from tests.harness import envoy_binary

if TYPE_CHECKING:
    from typing_extensions import Unpack

pytestmark = pytest.mark.integration

STARTS = 100  # of each program
AT_ONCE = 2  # of each program running at a time
CHANNELS = 4
BUDGET_S = 100.0
START_TIMEOUT_S = 15.0
_ECHO = "/stress.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


@contextlib.asynccontextmanager
async def _echo_server() -> AsyncIterator[int]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "stress.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def _call_until(port: int, stop: asyncio.Event, calls: Counter[str]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_ECHO)
        while not stop.is_set():
            try:
                answer = await echo(b"ping", timeout=5)
            except grpc.aio.AioRpcError as exc:
                calls[f"failed: {exc.code().name}"] += 1
            else:
                calls["ok" if answer == b"ping" else f"wrong answer: {answer!r}"] += 1


async def _nats_servers(workdir: Path, count: int, progress: list[int],
                        calls: Counter[str]) -> None:
    """Start nats-server `count` times, one after the other, each until it reports its port."""
    for _ in range(count):
        async with embedded_nats.run_nats_server(workdir):
            progress.append(calls["ok"])


async def _envoys(workdir: Path, count: int, progress: list[int], calls: Counter[str],
                  exits: list[int]) -> None:
    """Start Envoy `count` times, one after the other, each until its admin says it is ready;
    stop each with SIGTERM."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - set-up only
    config = workdir / "envoy.json"
    config.write_text(json.dumps({"admin": {"address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 0}}}}))
    admin_path = workdir / "envoy.admin"
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(count):
            admin_path.unlink(missing_ok=True)
            with open(workdir / "envoy.log", "ab") as log:  # noqa: ASYNC230 - a local log file
                proc = await spawn(
                    [envoy_binary(), "-c", str(config), "--disable-hot-restart",
                     "--concurrency", "1", "-l", "error", "--admin-address-path",
                     str(admin_path)], stdout=log, stderr=log, start_new_session=True)
            try:
                await _until_ready(proc, admin_path, client)
                progress.append(calls["ok"])
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    exits.append(await asyncio.wait_for(proc.wait(), 10))
                except TimeoutError:
                    proc.kill()
                    exits.append(await proc.wait())


async def _until_ready(proc: asyncio.subprocess.Process, admin_path: Path,
                       client: httpx.AsyncClient) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while proc.returncode is None:
        assert loop.time() < deadline, f"envoy not ready within {START_TIMEOUT_S} s"
        with contextlib.suppress(OSError, httpx.HTTPError):
            admin = admin_path.read_text().strip()  # noqa: ASYNC240 - a tiny local file
            if admin and (await client.get(f"http://{admin}/ready")).status_code == 200:
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"envoy exited {proc.returncode} before it was ready")


async def test_children_start_and_stop_cleanly_while_grpc_is_busy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nats_servers: list[asyncio.subprocess.Process] = []

    async def recording_spawn(argv: Sequence[str], **options: Unpack[ChildOptions]
                              ) -> asyncio.subprocess.Process:
        proc = await spawn(argv, **options)
        nats_servers.append(proc)
        return proc

    monkeypatch.setattr(embedded_nats, "spawn", recording_spawn)
    calls: Counter[str] = Counter()
    progress: list[int] = []  # successful gRPC calls so far, at each child's start
    envoy_exits: list[int] = []
    stop = asyncio.Event()
    async with asyncio.timeout(BUDGET_S), _echo_server() as port, \
            asyncio.TaskGroup() as callers:
        for _ in range(CHANNELS):
            callers.create_task(_call_until(port, stop, calls))
        try:
            async with asyncio.TaskGroup() as starts:
                for i in range(AT_ONCE):
                    starts.create_task(_nats_servers(
                        tmp_path / f"nats-{i}", STARTS // AT_ONCE, progress, calls))
                    starts.create_task(_envoys(
                        tmp_path / f"envoy-{i}", STARTS // AT_ONCE, progress, calls,
                        envoy_exits))
        finally:
            stop.set()

    # every start reached exec and served; every stop was a clean exit on our SIGTERM
    assert Counter(p.returncode for p in nats_servers) == {0: STARTS}
    assert Counter(envoy_exits) == {0: STARTS}
    assert set(calls) == {"ok"}, calls
    # and the calls went on throughout: some between every 20 starts
    samples = [*progress[::20], calls["ok"]]
    assert all(later > earlier for earlier, later in itertools.pairwise(samples)), samples
