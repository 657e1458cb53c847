"""The read models `meshlog up` projects into and serves from, swappable (blue/green).

`meshlog replay --swap` builds a fresh store beside the live one, then asks for a swap. The live
projector stops between batches (a commit is all or nothing); a projector on the new store
reconciles the published rows with it (gateways see only the differences) and catches up to
the live checkpoint; then the API switches to the new store in one assignment, the choice is
recorded in `<data-dir>/readmodels.url` for restarts, and projection goes on in the new store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from events import EventLog
from events.identity import SecretKey
from projections import Projector, ReadModelStore, StoreError, open_store
from projections.worker import ProjectionPublisher

__all__ = ["POINTER", "RefusedSwap", "SwappableReadModels", "pointed_database"]

log = logging.getLogger("meshlog.readmodels")
POINTER = "readmodels.url"


def pointed_database(data_dir: Path) -> str | None:
    """The store a previous swap chose for this data dir, if any."""
    path = data_dir / POINTER
    return path.read_text().strip() if path.exists() else None


class SwappableReadModels:
    def __init__(self, event_log: EventLog, publisher: ProjectionPublisher, *, zone: str,
                 data_dir: Path, url: str, on_swap: Callable[[ReadModelStore], None],
                 secret_key: SecretKey | None = None) -> None:
        self._log = event_log
        self._secret_key = secret_key
        self._publisher = publisher
        self._zone = zone
        self._data_dir = data_dir
        self.url = url
        self._on_swap = on_swap
        self._requests: asyncio.Queue[tuple[str, asyncio.Future[int]]] = asyncio.Queue(1)
        self.projector: Projector | None = None

    async def swap(self, url: str) -> int:
        """Ask for a swap to `url`; return the sequence the new store was caught up to."""
        if url == self.url:
            raise StoreError(f"{url} is already the live store")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            self._requests.put_nowait((url, done))
        except asyncio.QueueFull:
            raise StoreError("a swap is already under way") from None
        return await done

    async def run(self, run_projector: Callable[[Projector], Coroutine[Any, Any, None]],
                  api_store: ReadModelStore) -> None:
        """Project into the live store until cancelled, swapping stores on request."""
        store = await open_store(self.url)
        old_api: ReadModelStore | None = None
        try:
            while True:
                self.projector = Projector(self._log, store, self._publisher, zone=self._zone,
                                           secret_key=self._secret_key)
                async with asyncio.TaskGroup() as tg:
                    running = tg.create_task(run_projector(self.projector), name="projector")
                    url, done = await self._requests.get()
                    running.cancel()  # stops between awaits; a commit is all or nothing
                try:
                    store, api_store, old_api = await self._switch(store, api_store, url)
                except Exception as exc:
                    done.set_exception(exc)
                    continue
                done.set_result(await store.checkpoint())
                if old_api is not None:
                    await asyncio.sleep(1.0)  # let requests that hold the old store finish
                    await old_api.close()
        finally:
            await store.close()

    async def _switch(self, store: ReadModelStore, api_store: ReadModelStore, url: str
                      ) -> tuple[ReadModelStore, ReadModelStore, ReadModelStore]:
        live_at = await store.checkpoint()
        new = await open_store(url)
        try:
            if await new.checkpoint() == 0 and not await new.rows():
                raise StoreError(f"{url} is empty: build it first (meshlog replay)")
            # Catch up silently: the new store may be behind the live one, and gateways must
            # not see its older states. The live projector started next on the new store
            # reconciles the bus once, publishing only the real differences.
            catch_up = Projector(self._log, new, None, zone=self._zone,
                                 secret_key=self._secret_key)
            await catch_up.run(until_seq=live_at)
            new_api = await open_store(url)
        except BaseException:
            await new.close()
            raise
        self._on_swap(new_api)
        (self._data_dir / POINTER).write_text(url + "\n")
        log.info("read models swapped to %s at sequence %d", url, live_at)
        await store.close()
        self.url = url
        return new, new_api, api_store


class RefusedSwap:
    """The swap under `meshlog up --projectors N` (N >= 2): refused, with why (HTTP 409).

    A swap stops the one projector between batches, catches the new store up and starts the
    projector again on it; with N contenders for the lease, each on its own store handle, a
    standby taking over meanwhile would fold into the old store. One projector swaps."""

    def __init__(self, projectors: int) -> None:
        self._projectors = projectors

    async def swap(self, url: str) -> int:
        raise StoreError(
            f"cannot swap the read models to {url}: meshlog up runs {self._projectors} "
            f"projectors contending for a lease (--projectors {self._projectors}), and the "
            f"blue/green swap needs the single projector it stops and moves; restart "
            f"meshlog up with --projectors 1 to swap")
