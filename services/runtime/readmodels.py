"""The read models `meshlog up` projects into and serves from, swappable (blue/green).

`meshlog replay --swap` builds a fresh store beside the live one, then asks for a swap. The live
projector stops between batches (a commit is all or nothing); a projector on the new store
reconciles the published rows with it (gateways see only the differences) and catches up to
the live checkpoint; then the API switches to the new store in one assignment, the choice is
recorded in `<data-dir>/readmodels.url` for restarts, and projection goes on in the new store.

Read models folded by an earlier release's fold (projections.foldversion) are rebuilt the same
way without being asked, when they are SQLite and `meshlog up` chose them itself (no
`--database`): a rebuild from sequence 1 into a file beside them (`readmodels-fold<N>.db`),
with its progress in the log, while the live projector goes on serving the old ones; then a
swap to it, as if `meshlog replay --swap` had asked. The old file is kept, as a swap keeps it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from events import EventLog
from events.identity import SecretKey
from projections import (
    FOLD_VERSION,
    Progress,
    Projector,
    ProjectorHalted,
    ReadModelStore,
    SequenceGap,
    StoreError,
    fold_versions,
    open_store,
    rebuild,
    sqlite_path,
)
from projections.worker import ProjectionPublisher

__all__ = ["POINTER", "RefusedSwap", "SwappableReadModels", "pointed_database",
           "rebuild_path"]

log = logging.getLogger("meshlog.readmodels")
POINTER = "readmodels.url"

_PROGRESS_S = 5.0
"""How often a rebuild of outdated read models logs its progress."""
_NEAR_TAIL = 1_000
"""A rebuilt store this close to the log's end is swapped in: the swap's own catch-up, while
the live projector is stopped, folds the rest."""
_CATCH_UP_ROUNDS = 3
"""Catch-ups of a rebuilt store before the swap, each to the end of the log as it was (a log
written to faster than a rebuild folds would never let it get near the tail)."""
_RETRY_MIN_S, _RETRY_MAX_S = 5.0, 300.0
"""Waits before a failed rebuild (NATS lost, disk full) is tried again, doubled each time."""


async def _close_later(store: ReadModelStore) -> None:
    """Close the API's old store once the requests that hold it have had time to finish."""
    await asyncio.sleep(1.0)
    await store.close()


def pointed_database(data_dir: Path) -> str | None:
    """The store a previous swap chose for this data dir, if any."""
    path = data_dir / POINTER
    return path.read_text().strip() if path.exists() else None


class SwappableReadModels:
    def __init__(self, event_log: EventLog, publisher: ProjectionPublisher, *, zone: str,
                 data_dir: Path, url: str, on_swap: Callable[[ReadModelStore], None],
                 secret_key: SecretKey | None = None, rebuild_outdated: bool = False) -> None:
        """`rebuild_outdated`: rebuild SQLite read models of an older fold and swap to them
        (what `meshlog up` does for the read models it chose itself)."""
        self._log = event_log
        self._rebuild_outdated = rebuild_outdated
        self._rebuild_failures = 0
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
        closing: set[asyncio.Task[None]] = set()
        try:
            while True:
                self.projector = Projector(self._log, store, self._publisher, zone=self._zone,
                                           secret_key=self._secret_key)
                async with asyncio.TaskGroup() as tg:
                    running = tg.create_task(run_projector(self.projector), name="projector")
                    rebuilding = tg.create_task(self._rebuild_if_outdated(store),
                                                name="read-model rebuild")
                    url, done = await self._requests.get()
                    running.cancel()  # stops between awaits; a commit is all or nothing
                    rebuilding.cancel()  # done if it asked for this swap; else its file goes
                # its lag, frozen at its last position, must not be read beside the next one's
                self.projector.metrics.stood_down()
                try:
                    store, api_store, old_api = await self._switch(store, api_store, url)
                except Exception as exc:
                    done.set_exception(exc)
                    continue
                done.set_result(await store.checkpoint())
                if old_api is not None:  # the next projector folds on the new store meanwhile
                    task = asyncio.create_task(_close_later(old_api))
                    closing.add(task)
                    task.add_done_callback(closing.discard)
        finally:
            await asyncio.gather(*closing, return_exceptions=True)  # within a second: closed
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
                                 secret_key=self._secret_key, export_metrics=False)
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

    async def _rebuild_if_outdated(self, store: ReadModelStore) -> None:
        """If `store` is SQLite read models of an older fold, rebuild them beside it and ask
        for a swap to the rebuilt ones. Raises nothing but CancelledError: a rebuild that
        fails is logged and tried again later, and the live read models serve meanwhile."""
        path = sqlite_path(self.url)
        if not self._rebuild_outdated or path is None:
            return
        try:
            versions = await fold_versions(store)
        except StoreError as exc:  # a newer fold: the live projector refuses it, saying so
            log.debug("no rebuild: %s", exc)
            return
        if not versions.outdated:
            return
        delay = _retry_delay(self._rebuild_failures)
        if self._rebuild_failures:
            log.info("rebuilding the outdated read models again in %.0f s", delay)
            await asyncio.sleep(delay)
        target = rebuild_path(path)
        log.warning("read models at %s were folded with fold version %s, this release folds "
                    "with %d: rebuilding them from the log into %s beside them (the live ones "
                    "serve meanwhile), then swapping to it", path, versions.read_models,
                    FOLD_VERSION, target)
        while True:
            try:
                url = await self._rebuild_into(target)
                break
            except (ProjectorHalted, SequenceGap) as exc:
                _remove_sqlite(target)
                log.error("rebuild of the outdated read models stopped: %s. The live read "
                          "models stay as they are", exc)
                return
            except Exception as exc:
                _remove_sqlite(target)
                self._rebuild_failures += 1
                delay = _retry_delay(self._rebuild_failures)
                log.error("rebuild of the outdated read models into %s failed (%r); trying "
                          "again in %.0f s", target, exc, delay)
                await asyncio.sleep(delay)
            except BaseException:  # cancelled: a swap asked for meanwhile, or a shutdown
                _remove_sqlite(target)
                raise
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.add_done_callback(functools.partial(self._swapped, path, target))
        try:
            self._requests.put_nowait((url, done))
        except asyncio.QueueFull:  # an operator's swap, asked for meanwhile, goes first
            log.info("a swap asked for meanwhile goes first; %s is dropped", target)
            done.cancel()

    def _swapped(self, old: Path, new: Path, done: asyncio.Future[int]) -> None:
        if done.cancelled():
            _remove_sqlite(new)
            return
        exc = done.exception()
        if exc is None:
            self._rebuild_failures = 0
            log.warning("outdated read models replaced: %s serves now, rebuilt with fold "
                        "version %d; the old ones at %s are kept (delete them once you no "
                        "longer need them)", new, FOLD_VERSION, old)
            return
        self._rebuild_failures += 1
        _remove_sqlite(new)
        log.error("swap to the rebuilt read models at %s failed (%s); the outdated ones "
                  "serve, and are rebuilt again", new, exc)

    async def _rebuild_into(self, target: Path) -> str:
        """Fold the log into a fresh SQLite file `target`, to near its end; its URL."""
        _remove_sqlite(target)  # what an interrupted rebuild left
        url = f"sqlite:///{target}"
        new = await open_store(url)
        try:
            def report(progress: Progress) -> None:
                eta = "" if progress.eta_s is None else f", {progress.eta_s:.0f} s to go"
                log.info("rebuilding read models into %s: sequence %d of %d (%.0f events/s%s)",
                         target, progress.position, progress.target, progress.events_per_s,
                         eta)

            last = await rebuild(self._log, new, zone=self._zone, secret_key=self._secret_key,
                                 on_progress=report, interval_s=_PROGRESS_S)
            for _ in range(_CATCH_UP_ROUNDS):
                head = await self._log.last_seq()
                if head - last <= _NEAR_TAIL:
                    break
                await Projector(self._log, new, None, zone=self._zone,
                                secret_key=self._secret_key,
                                export_metrics=False).run(until_seq=head)
                last = head
            log.info("read models rebuilt into %s up to sequence %d; swapping to them",
                     target, last)
            return url
        finally:
            await new.close()


def rebuild_path(live: Path) -> Path:
    """Where outdated read models at `live` are rebuilt: `<stem>-fold<N>.db` beside them (a
    `-fold<M>` that `live` has from an earlier rebuild replaced), never `live` itself."""
    stem = re.sub(r"-fold\d+$", "", live.stem)
    target = live.with_name(f"{stem}-fold{FOLD_VERSION}.db")
    return target if target != live else live.with_name(f"{stem}-fold{FOLD_VERSION}-1.db")


def _remove_sqlite(path: Path) -> None:
    """A SQLite file and its WAL and shared-memory files, if there. One that cannot be removed
    (permissions, a read-only disk) is logged, never raised: the callers keep the live read
    models serving whatever happens to a rebuild's file."""
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            part.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s (%s); remove it by hand", part, exc)


def _retry_delay(failures: int) -> float:
    return min(_RETRY_MIN_S * (1 << min(max(failures - 1, 0), 10)), _RETRY_MAX_S)


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
