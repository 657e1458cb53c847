"""How a meshlog process stops: SIGINT and SIGTERM, handled explicitly, within a bounded grace.

Both signals are handled by the event loop itself rather than left to Python's defaults: a
shell starts a background job (`make up &`) with SIGINT ignored, and Python then installs no
KeyboardInterrupt handler, so `kill -INT` or Ctrl-C would do nothing. Installing a handler
makes the signal count again, whatever the parent set.

Until the process says it drains (`Shutdown.wait`), a signal cancels its main task: during
start-up there is nothing in flight, and every component closes in its `finally`. Once it
drains, the first signal only ends that wait: the process stops accepting work, finishes what
is in flight, then closes its store and NATS, in that order. A second signal, or `grace_s`
after the first, cancels the main task after all; if even that has not ended the process
`_GIVE_UP_AFTER_S` later, the stuck tasks are logged and the process exits 1 (read-model
commits are transactional and appends acknowledged, so nothing half-written is left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator

__all__ = ["Shutdown", "handle_signals"]

log = logging.getLogger("meshlog.shutdown")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_GIVE_UP_AFTER_S = 5.0
"""After the main task was cancelled (grace over): how long its `finally` blocks may take."""


class Shutdown:
    """The stop of one process: made by `handle_signals`, awaited with `wait`."""

    def __init__(self, task: asyncio.Task[object], grace_s: float) -> None:
        self._task = task
        self._grace_s = grace_s
        self._requested = asyncio.Event()
        self._draining = False
        self._signalled = False

    async def wait(self) -> None:
        """Wait for SIGINT or SIGTERM. From this call on, the first signal ends the wait
        instead of cancelling the main task: the caller drains, then returns."""
        self._draining = True
        await self._requested.wait()

    def _on_signal(self, sig: signal.Signals) -> None:
        loop = asyncio.get_running_loop()
        if self._signalled:
            log.warning("%s again: stopping now", sig.name)
            self._task.cancel()
            return
        self._signalled = True
        if self._draining:
            log.info("%s: draining (at most %.0f s), then stopping", sig.name, self._grace_s)
            self._requested.set()
        else:
            log.info("%s: stopping", sig.name)
            self._task.cancel()
        loop.call_later(self._grace_s, self._grace_over)

    def _grace_over(self) -> None:
        if self._task.done():
            return
        log.error("not drained within %.0f s; cancelling what is left", self._grace_s)
        self._task.cancel()
        asyncio.get_running_loop().call_later(_GIVE_UP_AFTER_S, self._give_up)

    def _give_up(self) -> None:
        if self._task.done():
            return
        stuck = [t for t in asyncio.all_tasks() if not t.done()]
        log.error("did not stop within %.0f s of the signal; exiting. Still running: %s",
                  self._grace_s + _GIVE_UP_AFTER_S,
                  "; ".join(f"{t.get_name()} at {t.get_stack(limit=1)}" for t in stuck))
        logging.shutdown()
        os._exit(1)


@contextlib.contextmanager
def handle_signals(grace_s: float) -> Iterator[Shutdown]:
    """Handle SIGINT and SIGTERM for the calling task (the process's main task) until the
    event loop closes. Call it first thing in `main`, so a signal during start-up stops too."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("handle_signals() must be called from the process's main task")
    shutdown = Shutdown(task, grace_s)
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        # replaces any handler set before (asyncio.run's, the CLI's); un-ignores an ignored one
        loop.add_signal_handler(sig, shutdown._on_signal, sig)
    # The handlers stay until the loop closes (it removes them): a signal while the last
    # resources close must not kill the process half-way through closing them.
    yield shutdown
