"""Short attempts, made again, instead of one long wait.

While a JetStream group elects a leader (a stream's, a bucket's, the meta layer's), a request
gets "no responders" at once or no answer at all (one in flight when its leader died); an
attempt with a short timeout, made again a moment later, gets through as soon as the new
leader is there, where one long timeout would outlast the election (docs/benchmarks.md,
Faults). Only for what is safe to make twice (the same consumer start, the same fenced rows,
a read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["RETRY_PAUSE_S", "raise_if_cancelled", "retried"]

T = TypeVar("T")

RETRY_PAUSE_S = 0.1


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop. On Python 3.11 a cancel can be
    lost inside `asyncio.wait_for` (CPython gh-86296), which nats-py uses for its requests:
    the task then still counts the cancel (`cancelling()`) but is never interrupted again,
    and a later `asyncio.timeout` ends as a TimeoutError instead. Loops that can wait for
    ever check it at each turn."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def retried(attempt: Callable[[], Awaitable[T]], *,
                  on: type[BaseException] | tuple[type[BaseException], ...], for_s: float,
                  pause_s: float = RETRY_PAUSE_S,
                  failed: Callable[[BaseException], None] | None = None) -> T:
    """`attempt()` until it returns; an error of the kinds `on` is followed by another attempt
    `pause_s` later, until `for_s` seconds have passed (then it is raised). `failed` is told of
    the first such error (to say so once, not at every attempt)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_s
    told = False
    while True:
        try:
            return await attempt()
        except on as exc:
            raise_if_cancelled()  # a cancel lost in the attempt is not another attempt
            if loop.time() >= deadline:
                raise
            if failed is not None and not told:
                failed(exc)
                told = True
        await asyncio.sleep(pause_s)
