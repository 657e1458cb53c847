"""Connections to NATS: `connect_nats` (bounded time, credentials, reconnection for the
processes that run for long) and the errors that mean "try again" (`TRANSIENT`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.aio.client
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from events.bus.nats_access import Refusals, credential_options, register
from events.errors import EventLogUnavailable

__all__ = ["MSG_ID_IN_PROCESS", "TRANSIENT", "connect_nats", "server_urls", "unavailable"]

log = logging.getLogger("meshlog.nats")

TRANSIENT = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
"""What a NATS or JetStream request raises when it may go through if made again: no answer in
time, no responder (a leader being elected), a connection being re-established."""


async def connect_nats(url: str, *, name: str, credentials: Path | None = None,
                       reconnect: bool = True,
                       reconnected_cb: nats.aio.client.Callback | None = None) -> NATS:
    """Connect with bounded time; raise EventLogUnavailable naming the URL.

    `credentials`: a NATS `.creds` file or an nkey seed file (`events.bus.nats_access`), for
    a server with permissions per role (README, NATS permissions); None for one without
    authentication. `name` says the role in NATS's monitoring and in the errors of refused
    operations (`NatsPermissionDenied`, also raised here when NATS refuses the credentials).

    `reconnect` (processes that run for long): the first connection is tried until it
    succeeds, and a lost one re-established for ever; `reconnected_cb` is awaited each time.
    Without it (commands): one attempt, and a lost connection stays closed, so the command
    ends with a clear error instead of waiting for a NATS that may never come back."""
    auth = credential_options(credentials)
    refusals = Refusals(name, url, credentials=credentials, quiet=not reconnect)
    servers = server_urls(url)
    nc = NATS()
    try:
        if reconnect:
            await nc.connect(
                servers, name=name, connect_timeout=5, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnected_cb=reconnected_cb,
                error_cb=_logging(refusals, name), **auth)
        else:
            # nats-py tries the first connection for ever unless max_reconnect_attempts > 0
            # (0 does not stop it): one attempt per server, then NoServersError
            await nc.connect(
                servers, name=name, connect_timeout=5, allow_reconnect=False,
                max_reconnect_attempts=1,
                # nats-py annotates it int; it is seconds, slept with asyncio.sleep
                reconnect_time_wait=0.1,  # type: ignore[arg-type]
                error_cb=_noting(refusals), **auth)
    except BaseException as exc:
        # a refused connection leaves nats-py's socket open (also when cancelled meanwhile)
        with contextlib.suppress(Exception):
            await nc.close()
        if not isinstance(exc, (OSError, nats.errors.Error, *TRANSIENT)):
            raise
        if refusals.authorization_refused or refusals.refuses_connection(exc):
            raise refusals.connection_refused() from exc
        raise EventLogUnavailable(f"cannot reach NATS at {url}: {exc}") from exc
    register(nc, refusals)
    return nc


def server_urls(url: str) -> list[str]:
    """The servers of a `--nats-url`: one URL, or several separated by commas (a cluster's
    nodes, as the nats CLI and compose.yaml give them). nats-py takes a list; a string with
    commas it refuses ("invalid connect url option")."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    return servers or [url]


def _noting(refusals: Refusals) -> Callable[[Exception], Awaitable[None]]:
    """A command's error callback: its failure is raised, not logged; refusals are noted
    (for the error raised)."""

    async def on_error(exc: Exception) -> None:
        await refusals.on_error(exc)

    return on_error


def _logging(refusals: Refusals, name: str) -> Callable[[Exception], Awaitable[None]]:
    """A long-running connection's error callback: refusals (of a permission, of the
    credentials) are logged by `refusals`; anything else (the connection lost, a failed
    reconnection attempt) as one line naming the connection, instead of nats-py's default
    traceback: `meshlog up` has one connection per task, and the line says whose it was."""

    async def on_error(exc: Exception) -> None:
        if not await refusals.on_error(exc):
            log.warning("NATS connection %s: %s: %s", name, type(exc).__name__, exc)

    return on_error


MSG_ID_IN_PROCESS = 10158
"""An append whose Msg-Id an earlier attempt still holds at the stream leader (proposed, not
yet stored: a leader without quorum, or being replaced). Neither stored nor refused yet:
transient, retried with the same Msg-Id later."""


def unavailable(stream: str, what: str, exc: BaseException, *, timeout_s: float) -> str:
    """Why JetStream did not answer (`exc`, within `timeout_s`) when asked `what` of
    `stream`, in words an operator can act on."""
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == MSG_ID_IN_PROCESS:
        why = ("an earlier attempt with the same Msg-Id is still in process at the stream "
               "leader (a leader without quorum, or being replaced)")
    elif isinstance(exc, (nats.js.errors.NoStreamResponseError,
                        nats.js.errors.ServiceUnavailableError,
                        nats.errors.NoRespondersError)):
        why = (f"no leader or replica of stream {stream} answered: a new leader is being "
               f"elected, or fewer than a majority of its replicas are up (quorum lost)")
    elif isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        why = (f"no answer within {timeout_s:.0f} s (a stream leader being elected, or one "
               f"without quorum)")
    else:
        why = f"NATS is not reachable ({type(exc).__name__})"
    return f"JetStream is unavailable: {what}: {why}"
