"""One read per ttl, however many requests: the API's cached scans of an insights bucket.

`TtlCache.get` runs `read` (bounded by a timeout) when its last answer is older than `ttl_s`
and hands every request that came meanwhile the same answer. A failed read is kept too: the
requests queued behind it get its failure at once, not one timeout each (a scan of a stopped
bus takes the whole timeout). Used by the proxy inspector (this control plane's insights) and,
on global, by the zones' insights (services.api._zone_insights).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from events import EventLogUnavailable, TransientError

__all__ = ["TtlCache"]

T = TypeVar("T")


class TtlCache(Generic[T]):
    def __init__(self, *, ttl_s: float, timeout_s: float, what: str) -> None:
        """`what`: what a read reads, as a timeout's error names it ("insights")."""
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._what = what
        self._answer: tuple[float, T] | None = None
        self._failed: tuple[float, str] | None = None
        """The last read's failure, answered for `ttl` to the reads queued behind it."""
        self._lock = asyncio.Lock()

    async def get(self, read: Callable[[], Awaitable[T]]) -> T:
        """The answer of a `read` at most `ttl` old, or that ended after this call came;
        `EventLogUnavailable` (or the read's `TransientError`) when that read failed."""
        loop = asyncio.get_running_loop()
        asked = loop.time()

        def answers(at: float) -> bool:
            """A read that ended at `at` answers this call: at most `ttl` old, or ended after
            the call came (it queued behind that read, however long the loop then took to
            hand it the lock: a loaded machine's, not a second read)."""
            return at >= asked or loop.time() - at <= self._ttl_s

        async with self._lock:
            if self._answer is not None and answers(self._answer[0]):
                return self._answer[1]
            # calls queued behind a failed read get its failure, not one timeout each
            if self._failed is not None and answers(self._failed[0]):
                raise EventLogUnavailable(self._failed[1])
            try:
                async with asyncio.timeout(self._timeout_s):  # a scan, bounded
                    answer = await read()
            except TimeoutError as exc:
                why = f"{self._what} not read within {self._timeout_s:g} s"
                self._failed = (loop.time(), why)
                raise EventLogUnavailable(why) from exc
            except TransientError as exc:
                self._failed = (loop.time(), str(exc))
                raise
            self._answer = (loop.time(), answer)
            return answer
