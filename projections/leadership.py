"""Active/standby projectors: only the holder of the lease folds, and only with its token.

N projector processes run `Leadership.run`; each waits as a standby until it holds the lease
(events.bus.lease: a JetStream KV key, compare-and-set on its revision). A new leader first
claims its fencing token in the store (`ReadModelStore.claim`), then folds as a restart does
today: load the store, resume at checkpoint + 1, reconcile the bus. From the claim on:

- a commit of an older leader (paused, then late) is refused by the store, in the commit's
  own transaction (`Fenced`): nothing it folded after losing the lease reaches the store;
- a publish of an older leader is refused by JetStream (`LeaseLost`), whatever it carries,
  because every publish expects the lease key's revision the publisher last wrote;
- the term ends when the lease cannot be renewed (taken over, or no renewal for a TTL): the
  fold task is cancelled at once (a commit in flight finishes, fenced like any other) and the
  process goes back to standby. A stop (cancel) ends the fold the same way, but the lease is
  renewed until it has: the last commit's publish goes out under a lease still held.

So at most one projector's writes land at a time, each leader starts from what the previous
one committed, and nothing is folded twice into the store (the checkpoint still only moves
forward, invariant 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from events import LeaseLost
from projections.errors import Fenced
from projections.metrics import leadership_changed
from projections.state import Change
from projections.store import ReadModelStore

__all__ = ["FencedStore", "Leadership", "Lease"]

log = logging.getLogger("meshlog.projector")

Role = Literal["standby", "active"]


class Lease(Protocol):
    holder: str
    token: int

    async def acquire(self) -> int:
        """Wait until held; the term's fencing token (higher than every earlier term's)."""
        ...

    async def keep(self) -> None:
        """Renew until the term ends, then return."""
        ...

    async def release(self) -> None: ...

    def fencing(self) -> AbstractAsyncContextManager[dict[str, str]]: ...


class FencedStore:
    """A store whose commits carry the term's fencing token."""

    def __init__(self, store: ReadModelStore, token: int) -> None:
        self._store = store
        self.token = token

    async def checkpoint(self, projector: str = "main") -> int:
        return await self._store.checkpoint(projector)

    async def fold_version(self, projector: str = "main") -> int | None:
        return await self._store.fold_version(projector)

    async def commit(self, changes: Sequence[Change], checkpoint: int,
                     projector: str = "main", *, fence: int | None = None,
                     fold_version: int | None = None) -> None:
        await self._store.commit(changes, checkpoint, projector, fence=self.token,
                                 fold_version=fold_version)

    async def claim(self, projector: str, fence: int) -> None:
        await self._store.claim(projector, fence)

    async def get(self, collection: str, key: str) -> bytes | None:
        return await self._store.get(collection, key)

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, bytes]]:
        return await self._store.scan(collection, prefix)

    async def quarantine(self, key: str, body: bytes) -> None:
        await self._store.quarantine(key, body)

    async def rows(self) -> list[tuple[str, str, bytes]]:
        return await self._store.rows()

    async def close(self) -> None:
        """The underlying store outlives the term: closed by its owner."""


Fold = Callable[[FencedStore], Awaitable[None]]
"""Runs the projector on the fenced store until cancelled (or a permanent error)."""


class Leadership:
    def __init__(self, lease: Lease, store: ReadModelStore, *, name: str = "main") -> None:
        self._lease = lease
        self._store = store
        self._name = name
        self.role: Role = "standby"
        self.token = 0
        """The fencing token of the current term; 0 as standby."""
        leadership_changed(name, 0, lease.holder)
        self.terms = 0
        """How many terms this process has led."""

    async def run(self, fold: Fold) -> None:
        """Contend for the lease for ever; fold while holding it."""
        try:
            while True:
                log.info("projector %s: STANDBY (%s waits for the lease)", self._name,
                         self._lease.holder)
                token = await self._lease.acquire()
                await self._term(token, fold)
        finally:
            self._set("standby", 0)
            await asyncio.shield(self._lease.release())

    def _set(self, role: Role, token: int) -> None:
        self.role, self.token = role, token
        leadership_changed(self._name, token, self._lease.holder)

    async def _term(self, token: int, fold: Fold) -> None:
        try:
            await self._store.claim(self._name, token)
        except Fenced as exc:  # a later term claimed the store already: we were too slow
            log.warning("projector %s: %s", self._name, exc)
            return
        self._set("active", token)
        self.terms += 1
        log.info("projector %s: ACTIVE (%s, fencing token %d)", self._name,
                 self._lease.holder, token)
        folding = asyncio.ensure_future(fold(FencedStore(self._store, token)))
        keeping = asyncio.ensure_future(self._lease.keep())
        try:
            await asyncio.wait([folding, keeping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                # The fold first, the renewals after it has ended: a commit in flight finishes
                # and publishes (projections.worker) under a lease still renewed. Cancelled
                # together, a renewal cut short after the server stored it left this holder
                # with a stale revision, its last publish refused (gateways a batch behind
                # until the next leader reconciled); a long commit let a standby take over.
                folding.cancel()
                await asyncio.wait([folding])  # its CancelledError is not ours
            finally:
                keeping.cancel()
                await asyncio.wait([keeping])
                self._set("standby", 0)
        if not folding.cancelled() and (error := folding.exception()) is not None:
            if not isinstance(error, Fenced | LeaseLost):
                raise error
            log.warning("projector %s: superseded (%s)", self._name, error)
        else:
            log.warning("projector %s: lease lost; stopped folding", self._name)
        await self._lease.release()

