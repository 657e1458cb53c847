"""API set-ups that several test modules share:

- `serve_until_answered`: a real `ApiServer` (uvicorn on a real socket) run until one request
  is answered, then stopped (what it logs at start, per request and at stop is the test's);
- `multizone_commands` and `folded_apis`: one log that global, east and west write (each on
  its own subjects, as stream sources bring them together), folded by global's and east's
  projectors into their own read models, each served in process by an API app with its own
  deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from events import GLOBAL_ZONE, JetStreamEventLog
from events.commands import Commands
from projections import Projector, ReadModelStore, open_store
from services.api.app import create_app
from services.api.proxy_inspector import ProxyInspector
from services.runtime.api_server import ApiServer
from tests.harness import eventually

__all__ = ["folded_apis", "multizone_commands", "serve_until_answered"]


async def serve_until_answered(server: ApiServer, port: int, path: str, *,
                               headers: dict[str, str] | None = None) -> httpx.Response:
    """Run `server` (listening on loopback `port`) until a GET of `path` is answered, then
    stop it and wait for it to end; the answer, for the caller to check."""
    base = f"http://127.0.0.1:{port}"
    async with asyncio.TaskGroup() as tg, httpx.AsyncClient(base_url=base, timeout=5) as client:
        serving = tg.create_task(server.run())

        async def answered() -> httpx.Response | None:
            try:
                return await client.get(path, headers=headers)
            except httpx.TransportError:
                return None  # not listening yet: uvicorn still starting

        try:  # an httpx.Response is truthy whatever its status: any answer ends the wait
            response = await eventually(answered, "the API answering", within=10)
        finally:
            server.stop()
        await asyncio.wait_for(serving, timeout=10)
    return response


def multizone_commands(log: JetStreamEventLog) -> tuple[Commands, Commands, Commands]:
    """The command sides of global (`GLOBAL_ZONE`), east and west, writing to `log`."""
    return (Commands(log, zone=GLOBAL_ZONE, deployment="global"),
            Commands(log, zone="east", deployment="zone"),
            Commands(log, zone="west", deployment="zone"))


@asynccontextmanager
async def folded_apis(log: JetStreamEventLog, planes: Sequence[tuple[str, Commands]],
                      tmp_path: Path, *, until_seq: int,
                      inspector: Callable[[], ProxyInspector] | None = None
                      ) -> AsyncIterator[list[httpx.AsyncClient]]:
    """For each (zone, commands) of `planes`: a SQLite store that zone's projector folds
    `log` into up to `until_seq`, and an in-process client of an API app serving it with
    `commands` (and a new `inspector()`, if given). No projector follows what the tests
    write afterwards, so no API waits for one."""
    stores: list[ReadModelStore] = []
    clients = []
    try:
        for zone, commands in planes:
            store = await open_store(f"sqlite:///{tmp_path / f'{zone}.db'}")
            stores.append(store)
            await Projector(log, store, None, zone=zone, export_metrics=False).run(
                until_seq=until_seq)
            app = create_app(commands, store, projection_wait_s=0,
                             inspector=None if inspector is None else inspector())
            # Litestar's scope is a TypedDict, httpx wants a MutableMapping:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            clients.append(httpx.AsyncClient(transport=transport, base_url="http://api"))
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for store in stores:
            await store.close()
